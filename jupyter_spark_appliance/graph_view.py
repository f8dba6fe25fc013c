"""The appliance's dependency graph with live states, as a small SVG page.

Served at ``appliance/{id}/ui`` and embedded by the panel. Pure function of the
model, so it needs no template engine and is trivially testable.
"""

from __future__ import annotations

from html import escape
from typing import Any

STATE_COLOURS = {
    "submitted": "#9e9e9e", "pending": "#9e9e9e", "staging": "#f0ad4e", "running": "#2e7d32",
    "success": "#1565c0", "failed": "#c62828", "killed": "#616161",
}
BOX_W, BOX_H, GAP_X, GAP_Y = 190, 58, 60, 24


def _levels(containers: list[dict[str, Any]]) -> dict[str, int]:
    level: dict[str, int] = {}
    for c in containers:  # the model lists containers in dependency order
        level[c["id"]] = 1 + max((level.get(d, 0) for d in c["dependencies"]), default=-1)
    return level


def render_graph_svg(model: dict[str, Any]) -> str:
    containers = model["containers"]
    level = _levels(containers)
    columns: dict[int, list[str]] = {}
    for c in containers:
        columns.setdefault(level[c["id"]], []).append(c["id"])
    pos = {cid: (20 + lv * (BOX_W + GAP_X), 20 + row * (BOX_H + GAP_Y))
           for lv, ids in columns.items() for row, cid in enumerate(ids)}
    width = 40 + (max(columns) + 1) * (BOX_W + GAP_X) - GAP_X if columns else 100
    height = 40 + max(len(v) for v in columns.values()) * (BOX_H + GAP_Y) - GAP_Y if columns else 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="dependency graph of {escape(model["id"])}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
             'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>']
    for c in containers:
        x, y = pos[c["id"]]
        for dep in c["dependencies"]:
            if dep in pos:
                dx, dy = pos[dep]
                parts.append(f'<line x1="{dx + BOX_W}" y1="{dy + BOX_H / 2}" x2="{x}" y2="{y + BOX_H / 2}" '
                             'stroke="#888" marker-end="url(#arrow)"/>')
    for c in containers:
        x, y = pos[c["id"]]
        colour = STATE_COLOURS.get(c["state"], "#9e9e9e")
        running = sum(1 for i in c["instance_states"] if i["state"] == "running")
        parts.append(
            f'<g class="node" data-container="{escape(c["id"])}" data-state="{escape(c["state"])}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="white" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text x="{x + 10}" y="{y + 22}" font-family="sans-serif" font-size="14" font-weight="bold">'
            f'{escape(c["id"])}</text>'
            f'<text x="{x + 10}" y="{y + 44}" font-family="sans-serif" font-size="12" fill="{colour}">'
            f'{escape(c["state"])} · {running}/{c["instances"]} running</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_graph_page(model: dict[str, Any]) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(model['id'])} · {escape(model['state'])}</title></head>"
        f"<body><h3>{escape(model['id'])}: {escape(model['state'])}</h3>{render_graph_svg(model)}</body></html>"
    )
