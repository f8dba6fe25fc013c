"""The wire shape of an appliance, in one place (dask-labextension's make_cluster_model).

Handlers, events, the panel, the magic and the widgets all see exactly this.
"""

from __future__ import annotations

from typing import Any

from . import ui
from .plan import start_order
from .spark.roles import NOTEBOOK_PORT, NOTEBOOK_ROUTE, link_labels, link_schemes
from .state import ApplianceRecord, Endpoint
from .store import Unreadable

# Endpoints that browsers open: named ports get a URL in "links".
HTTP_PORT_NAMES = link_labels()
SCHEMES = link_schemes()
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def endpoint_model(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": ep.host, "host_port": ep.host_port, "container_port": ep.container_port,
        "protocol": ep.protocol, "name": ep.name,
    }
    if ep.name in HTTP_PORT_NAMES:
        scheme = SCHEMES.get(ep.name or "", "http")
        # A Spark Connect client with a token uses TLS unless the host is literally "localhost".
        host = "localhost" if scheme == "sc" and ep.host in LOOPBACK else ep.host
        out["url"] = f"{scheme}://{host}:{ep.host_port}"
    return out


def _proxied(record: ApplianceRecord) -> bool:
    """Whether the appliance's Spark runs with its reverse proxy at our route (its links then work)."""
    prefix = ui.spark_ui_prefix(record.id)
    return ui.usable_prefix(prefix) and any(
        c.env.get(ui.UI_PREFIX_ENV, "").rstrip("/") == prefix
        for c in record.appliance.containers if record.roles.get(c.id) == "spark-master")


def ui_path(record: ApplianceRecord, role: str | None, ep: Endpoint, index: int, proxied: bool) -> str | None:
    """The browser's URL of an endpoint, through the Jupyter server's proxy (ui.py), if it has one."""
    root = ui.appliance_path(record.id)
    if role == "livy" and ep.container_port == 8998:
        return root + "livy/"
    if role == "sparkmagic" and ep.container_port == NOTEBOOK_PORT:
        return root + NOTEBOOK_ROUTE
    if proxied and role == "spark-master" and ep.container_port == 8080:
        return root + "sparkui/"
    if proxied and role == "spark-worker" and ep.container_port == 8081:
        return root + f"workerui/{index}/"
    return None


def notebook_link(record: ApplianceRecord, ep: Endpoint) -> str | None:
    """A sparkmagic notebook's own URL, with its token, as ``jupyter server list`` prints it.

    For a user on this machine; everyone else opens ``ui["notebook"]`` (the proxy,
    behind Jupyter's own login), which needs no token. The model is served only
    behind that login, whose holder reaches the notebook through the proxy anyway.
    """
    if record.credentials is None or not record.credentials.password:
        return None
    token = record.credentials.notebook_token()
    return f"http://{ep.host}:{ep.host_port}{ui.appliance_path(record.id)}{NOTEBOOK_ROUTE}?token={token}"


def role_notes(record: ApplianceRecord) -> list[str]:
    """What the project's roles do not take from a container as written (the seed's notebook asks for both).

    A role runs the project's own process, which needs no privilege: ``is_privileged``
    is never granted to it, on any backend, and c.SparkApplianceApp.allow_privileged
    is not needed for it. The sparkmagic role always serves with a token of its own.
    """
    notes = []
    for i, c in enumerate(record.appliance.containers):
        role = record.roles.get(c.id)
        if role is None:
            continue
        if c.is_privileged:
            notes.append(f"containers[{i}].is_privileged: not granted; {c.id!r} runs as the project's {role} role, "
                         "which needs no privilege")
        if role == "sparkmagic" and c.args:
            notes.append(f"containers[{i}].args: ignored; the sparkmagic role always requires its own token "
                         "(GET the appliance: links.notebook)")
    return notes


def unreadable_model(bad: Unreadable) -> dict[str, Any]:
    """An appliance whose record cannot be read: failed, with why, so the user sees it and can DELETE it."""
    data = bad.data or {}
    return {
        "id": bad.id, "state": "failed", "backend": str(data.get("backend") or ""),
        "reason": f"its record cannot be read ({bad.reason}); DELETE stops what it still describes",
        "created": bad.created, "template": None, "containers": [], "links": {}, "ui": {}, "warnings": [],
        "sparkmagic": None, "resources": None,
    }


def make_appliance_model(record: ApplianceRecord) -> dict[str, Any]:
    containers = []
    links: dict[str, str] = {}
    uis: dict[str, str] = {}
    proxied = _proxied(record)
    order = start_order(record.appliance)
    for cid in order:
        c = record.appliance.container(cid)
        assert c is not None
        instances = record.instances[cid]
        role = record.roles.get(cid)
        endpoints = []
        for inst in instances:
            for ep in inst.endpoints:
                model = endpoint_model(ep)
                model["instance"] = inst.index
                path = ui_path(record, role, ep, inst.index, proxied)
                if path:
                    model["ui"] = path
                endpoints.append(model)
                if role == "sparkmagic" and ep.container_port == NOTEBOOK_PORT and "url" in model:
                    model["url"] = notebook_link(record, ep) or model["url"]
                if "url" in model and inst.state == "running":
                    links.setdefault(ep.name or "", model["url"])
                if path and inst.state == "running":
                    uis.setdefault(ep.name or "", path)
        containers.append({
            "id": c.id,
            "type": c.type,
            "image": c.image,
            "state": record.container_state(cid),
            "instances": record.desired[cid],
            "role": record.roles.get(cid),
            "restarts": sum(i.restarts for i in instances),
            "resources": {"cpus": c.resources.cpus, "mem": c.resources.mem},
            "dependencies": list(c.all_dependencies),
            "endpoints": endpoints,
            "instance_states": [
                {"index": i.index, "name": i.name, "state": i.state, "reason": i.reason,
                 "restarts": i.restarts, "last_reason": i.last_reason,
                 "restart_at": i.restart_at if i.state == "pending" else None,
                 "endpoints": [endpoint_model(e) for e in i.endpoints]}
                for i in instances
            ],
        })
    out = {
        "id": record.id,
        "state": record.state,
        "backend": record.backend,
        "reason": record.reason,
        "created": record.created,
        "template": record.template,
        "containers": containers,
        "links": links,
        "ui": uis,
        "warnings": list(record.appliance.warnings) + role_notes(record),
        "sparkmagic": record.sparkmagic.to_json() if record.sparkmagic else None,
        "resources": record.capacity.to_json() if record.capacity else None,
    }
    return out
