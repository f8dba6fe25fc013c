"""Planning: start order and ``@id`` resolution against a backend's address map.

The orchestrator starts every container as soon as its dependencies run, so
order here is the *deterministic* order used for display, for teardown
(reversed) and for backends that want a single sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .graph import topological_order
from .references import resolve
from .spec import Appliance, Container


def dependency_graph(appliance: Appliance) -> dict[str, tuple[str, ...]]:
    """container id -> ids it waits for (declared and implicit from references)."""
    return {c.id: c.all_dependencies for c in appliance.containers}


def start_order(appliance: Appliance) -> list[str]:
    return topological_order(dependency_graph(appliance))


def stop_order(appliance: Appliance) -> list[str]:
    return list(reversed(start_order(appliance)))


def dependents(appliance: Appliance, container_id: str) -> list[str]:
    """Containers that (directly) wait for ``container_id``."""
    return [c.id for c in appliance.containers if container_id in c.all_dependencies]


AddressOf = Callable[[str, "int | None"], str]
"""(referenced id, container port or None) -> "host" or "host:port" as seen by the referrer."""


@dataclass(frozen=True)
class ResolvedCommand:
    """A container's cmd/args/env with every reference replaced."""

    cmd: str | None
    args: list[str]
    env: dict[str, str]


def resolve_container(container: Container, address_of: AddressOf) -> ResolvedCommand:
    return ResolvedCommand(
        cmd=resolve(container.cmd, address_of) if container.cmd is not None else None,
        args=[resolve(a, address_of) for a in container.args],
        env={k: resolve(v, address_of) for k, v in container.env.items()},
    )


def address_map_resolver(hosts: Mapping[str, str], ports: Mapping[tuple[str, int], int]) -> AddressOf:
    """A resolver over plain maps: id -> host, (id, container_port) -> reachable port.

    Backends build these maps from what they started; a missing entry means the
    referenced container is not up, which the orchestrator's ordering prevents,
    so it is a programming error (KeyError), not a user error.
    """

    def address_of(target: str, port: int | None) -> str:
        host = hosts[target]
        if port is None:
            return host
        return f"{host}:{ports[target, port]}"

    return address_of
