"""The wire shape of an appliance, in one place (dask-labextension's make_cluster_model).

Handlers, events, the panel, the magic and the widgets all see exactly this.
"""

from __future__ import annotations

from typing import Any

from .plan import start_order
from .spark.roles import link_labels
from .state import ApplianceRecord, Endpoint

# Endpoints that browsers open: named ports get a URL in "links".
HTTP_PORT_NAMES = link_labels()


def endpoint_model(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": ep.host, "host_port": ep.host_port, "container_port": ep.container_port,
        "protocol": ep.protocol, "name": ep.name,
    }
    if ep.name in HTTP_PORT_NAMES:
        out["url"] = f"http://{ep.host}:{ep.host_port}"
    return out


def make_appliance_model(record: ApplianceRecord) -> dict[str, Any]:
    containers = []
    links: dict[str, str] = {}
    order = start_order(record.appliance)
    for cid in order:
        c = record.appliance.container(cid)
        assert c is not None
        instances = record.instances[cid]
        endpoints = []
        for inst in instances:
            for ep in inst.endpoints:
                model = endpoint_model(ep)
                model["instance"] = inst.index
                endpoints.append(model)
                if "url" in model and inst.state == "running":
                    links.setdefault(ep.name or "", model["url"])
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
        "warnings": list(record.appliance.warnings),
        "sparkmagic": record.sparkmagic.to_json() if record.sparkmagic else None,
    }
    return out
