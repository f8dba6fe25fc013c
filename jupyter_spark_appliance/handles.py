"""Typed handles: what a backend persists to find one of its instances again.

Each backend subclasses :class:`Handle` (a pid and start time, a container id,
a service id) and registers it, so a record written by one server run is read
back into the same types by the next, which re-adopts the instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass
class Handle:
    """A backend's facts about one started instance (subclassed per backend)."""

    kind: ClassVar[str] = ""
    #: container port -> host port where the server (and the user) reach it
    ports: dict[int, int] = field(default_factory=dict)
    #: the name other instances of the appliance reach this one by (``@id``)
    peer_host: str = "127.0.0.1"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ports"] = {str(k): v for k, v in self.ports.items()}
        return {"kind": self.kind, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Handle:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["ports"] = {int(k): int(v) for k, v in dict(data.get("ports", {})).items()}
        return cls(**values)


HANDLE_KINDS: dict[str, type[Handle]] = {}


def handle_kind(cls: type[Handle]) -> type[Handle]:
    """Class decorator: register a Handle subclass so records can be read back."""
    HANDLE_KINDS[cls.kind] = cls
    return cls


def handle_from_json(data: Mapping[str, Any] | None) -> Handle | None:
    if not data:
        return None
    cls = HANDLE_KINDS.get(str(data.get("kind")))
    if cls is None:
        raise ValueError(f"unknown instance handle kind {data.get('kind')!r}")
    return cls.from_json(data)
