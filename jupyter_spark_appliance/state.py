"""Runtime records of appliances and their container instances.

Only instance states are stored; container and appliance states are derived
(architecture.md: "never stored separately"), so they cannot disagree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .capacity import Capacity
from .credentials import Credentials
from .handles import Handle, handle_from_json
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
    # The backend's own facts to find the instance again (pid, container id);
    # None until it started.
    handle: Handle | None = None
    updated: float = field(default_factory=time.time)
    # Self-healing: how often this slot was restarted, why it last died, and
    # when the next restart is due while it backs off (wall-clock seconds).
    restarts: int = 0
    last_reason: str | None = None
    restart_at: float | None = None
    running_since: float | None = None
    crash_streak: int = 0  # deaths in a row without a stable run (drives the back-off)

    @property
    def name(self) -> str:
        return f"{self.container}-{self.index}"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["handle"] = self.handle.to_json() if self.handle else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instance:
        data = dict(data)
        if "info" in data:  # a record of version 1: untyped backend facts
            data["handle"] = _legacy_handle(data.pop("info"))
        data["endpoints"] = [Endpoint(**e) for e in data.get("endpoints", [])]
        data["handle"] = handle_from_json(data.get("handle"))
        return cls(**data)


def _legacy_handle(info: dict[str, Any]) -> dict[str, Any] | None:
    if "pid" in info:
        return {"kind": "process", "pid": info["pid"], "create_time": info.get("create_time", 0.0),
                "log": info.get("log", ""), "ports": info.get("ports", {})}
    if "container_id" in info:
        return {"kind": "container", "container_id": info["container_id"], "name": info.get("name", ""),
                "ports": info.get("ports", {}), "peer_host": info.get("name", "")}
    return None


def _sparkmagic_status(data: dict[str, Any]) -> SparkmagicStatus | None:
    raw = data.get("sparkmagic") or data.get("extra", {}).get("public", {}).get("sparkmagic")  # or version 1's
    if not raw:
        return None
    return SparkmagicStatus(**{k: v for k, v in raw.items() if k in SparkmagicStatus.__dataclass_fields__})


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
class SparkmagicStatus:
    """Where the appliance pointed Sparkmagic, for the panel, the magic and the widget."""

    url: str
    config: str
    username: str = ""
    warning: str | None = None
    error: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    roles: dict[str, str | None] = field(default_factory=dict)  # container id -> role it runs as
    sparkmagic: SparkmagicStatus | None = None
    launched: bool = False  # the launch finished: from now on the reconciler keeps the declared state
    deleting: bool = False  # a DELETE is under way: other changes get a 409
    # The appliance's secret (credentials.py): read from its own 0600 files, never in record.json.
    credentials: Credentials | None = field(default=None, repr=False, compare=False)
    # Whether Livy statements wait for cores now (capacity.py): asked of the gateway, not persisted.
    capacity: Capacity | None = field(default=None, repr=False, compare=False)

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
            "version": 2,
            "document": self.document,
            "backend": self.backend,
            "desired": self.desired,
            "instances": {k: [i.to_json() for i in v] for k, v in self.instances.items()},
            "created": self.created,
            "template": self.template,
            "reason": self.reason,
            "owner": self.owner,
            "roles": self.roles,
            "launched": self.launched,
            "sparkmagic": self.sparkmagic.to_json() if self.sparkmagic else None,
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
            roles=dict(data.get("roles") or {}),
            launched=bool(data.get("launched", data.get("version") == 1)),
            sparkmagic=_sparkmagic_status(data),
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
