"""Runtime records of appliances and their container instances.

Only instance states are stored; container and appliance states are derived
(architecture.md: "never stored separately"), so they cannot disagree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .spec import INSTANCE_STATES, TERMINAL_STATES, Appliance, parse_appliance

LIVE_STATES = frozenset({"submitted", "pending", "staging", "running"})
# Order of progress: a container is as far along as its least advanced instance.
_PROGRESS = {s: i for i, s in enumerate(("submitted", "pending", "staging", "running"))}


@dataclass
class Endpoint:
    host: str
    host_port: int
    container_port: int
    protocol: str = "tcp"
    name: str | None = None


@dataclass
class Instance:
    container: str
    index: int
    state: str = "submitted"
    reason: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    # Backend-owned facts needed to find the instance again after a restart
    # (pid and start time locally, container id on Docker), plus log path.
    info: dict[str, Any] = field(default_factory=dict)
    updated: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return f"{self.container}-{self.index}"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instance:
        data = dict(data)
        data["endpoints"] = [Endpoint(**e) for e in data.get("endpoints", [])]
        return cls(**data)


def container_state(desired: int, instances: list[Instance]) -> str:
    """PIVOT state of a container from its instances."""
    if any(i.state == "failed" for i in instances):
        return "failed"
    live = [i for i in instances if i.live]
    if not live:
        if desired == 0:
            return "running"  # a service scaled to zero is satisfied
        if instances and all(i.state == "success" for i in instances):
            return "success"
        return "killed" if instances else "submitted"
    least = min(live, key=lambda i: _PROGRESS[i.state]).state
    if least == "running" and len(live) != desired:
        return "staging"  # scaling: instances are being created or removed
    return least


def appliance_state(states: list[str]) -> str:
    if "failed" in states:
        return "failed"
    if "killed" in states:
        return "killed"  # a container was stopped (or is being torn down): not a whole appliance
    progressing = [s for s in states if s in _PROGRESS]
    if not progressing:
        return "success"
    return min(progressing, key=_PROGRESS.__getitem__)


@dataclass
class ApplianceRecord:
    """Everything the server knows about one appliance; persisted on every change."""

    appliance: Appliance
    backend: str
    document: dict[str, Any]  # as submitted (canonical form), for display and re-parse
    desired: dict[str, int]  # container id -> instances wanted (services)
    instances: dict[str, list[Instance]]
    created: float = field(default_factory=time.time)
    template: dict[str, Any] | None = None
    reason: str | None = None  # why the appliance failed, if it did
    owner: str = ""  # server that started it (docker label / record)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-wide facts (network id)

    @property
    def id(self) -> str:
        return self.appliance.id

    def container_state(self, cid: str) -> str:
        return container_state(self.desired[cid], self.instances[cid])

    @property
    def state(self) -> str:
        return appliance_state([self.container_state(c.id) for c in self.appliance.containers])

    def all_instances(self) -> list[Instance]:
        return [i for c in self.appliance.containers for i in self.instances[c.id]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "document": self.document,
            "backend": self.backend,
            "desired": self.desired,
            "instances": {k: [i.to_json() for i in v] for k, v in self.instances.items()},
            "created": self.created,
            "template": self.template,
            "reason": self.reason,
            "owner": self.owner,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApplianceRecord:
        appliance = parse_appliance(data["document"])
        return cls(
            appliance=appliance,
            backend=data["backend"],
            document=data["document"],
            desired=dict(data["desired"]),
            instances={k: [Instance.from_json(i) for i in v] for k, v in data["instances"].items()},
            created=data.get("created", time.time()),
            template=data.get("template"),
            reason=data.get("reason"),
            owner=data.get("owner", ""),
            extra=data.get("extra", {}),
        )

    @classmethod
    def new(cls, appliance: Appliance, backend: str, **kw: Any) -> ApplianceRecord:
        desired = {c.id: (c.instances if c.type == "service" else 1) for c in appliance.containers}
        return cls(
            appliance=appliance,
            backend=backend,
            document=appliance.to_json(),
            desired=desired,
            instances={c.id: [] for c in appliance.containers},
            **kw,
        )


assert set(_PROGRESS) | TERMINAL_STATES == set(INSTANCE_STATES)
