"""Dependency-graph algorithms shared by validation (cycles) and planning (order).

Kept free of appliance types so that the spec parser can report cycles without
importing the planner, and so the algorithms can be tested on bare dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle as ``[a, b, c, a]`` (each node depends on the next), or None.

    Edges to nodes outside ``graph`` are ignored: undefined ids are reported
    elsewhere, with their own message. The search visits nodes in the mapping's
    order so that the reported cycle is deterministic.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        # Iterative DFS: appliance graphs are small, but hypothesis feeds deep chains.
        stack: list[tuple[str, list[str]]] = [(root, [d for d in graph[root] if d in graph])]
        path = [root]
        colour[root] = grey
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = black
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop(0)
            if colour[nxt] == grey:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append((nxt, [d for d in graph[nxt] if d in graph]))
    return None


def format_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def topological_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependencies first; ties keep the mapping's (declaration) order.

    Raises ValueError naming the cycle if there is one.
    """
    cycle = find_cycle(graph)
    if cycle:
        raise ValueError(f"dependency cycle: {format_cycle(cycle)}")
    deps = {node: [d for d in graph[node] if d in graph] for node in graph}
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(deps):
        for node, needs in deps.items():
            if node not in done and all(d in done for d in needs):
                done.add(node)
                order.append(node)
                break
    return order
