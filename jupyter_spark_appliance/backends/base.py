"""The small interface every backend implements (dask-gateway's backend interface, smaller).

The orchestrator owns states, ordering, restarts and events; a backend only
knows how to start one instance, tell whether it is alive and ready, read its
logs and stop it. What a backend needs to find an instance again (a pid, a
container id) is its own typed :class:`Handle`, persisted in the record and
handed back to it; the orchestrator hands it everything else (the role, the
started peers it may reference, the master's UI), so no backend reads the
record or another backend's handles.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..credentials import Credentials
from ..handles import Handle
from ..plan import AddressOf
from ..spark.roles import Role
from ..spec import Appliance, Container, Problem
from ..state import Endpoint


class BackendUnavailable(RuntimeError):
    """The backend cannot be used at all on this machine (HTTP 503)."""


class StartFailed(RuntimeError):
    """An instance could not be started; the message is shown to the user."""


@dataclass(frozen=True)
class Exit:
    """Why an instance is not alive any more."""

    reason: str
    success: bool = False  # exited with status 0 (a job that finished)


@dataclass(frozen=True)
class StartRequest:
    """One instance to start, with everything the backend may need to know about the rest."""

    appliance_id: str
    container: Container
    index: int
    role: Role | None
    #: started handles of the containers it may reference, by container id
    peers: Mapping[str, Handle] = field(default_factory=dict)
    #: when replacing a dead instance: its handle, so that it gets the same ports back
    previous: Handle | None = None
    #: the appliance's secret: Spark's RPC authentication, the gateway's password
    credentials: Credentials | None = None

    @property
    def name(self) -> str:
        return f"{self.container.id}-{self.index}"


@dataclass(frozen=True)
class Started:
    handle: Handle
    endpoints: list[Endpoint]


class Backend(abc.ABC):
    name: str = ""
    connect_host: str = "127.0.0.1"  # where the server reaches published ports

    def role_of(self, container: Container) -> Role | None:
        """The role this backend runs ``container`` as, or None for an opaque image."""
        return None

    def check(self, appliance: Appliance) -> list[Problem]:
        """Problems that make ``appliance`` impossible on this backend (HTTP 400)."""
        return []

    def available(self) -> None:
        """Raise BackendUnavailable with a user-facing reason if unusable."""

    async def prepare(self, appliance_id: str) -> None:
        """Appliance-wide setup before any instance starts (a network, a dir)."""

    async def cleanup(self, appliance_id: str) -> None:
        """Appliance-wide teardown after every instance stopped."""

    @abc.abstractmethod
    def resolver(self, peers: Mapping[str, Handle], referrer: Container) -> AddressOf:
        """How ``referrer`` reaches the started ``peers`` (``@id`` and ``@id:PORT``)."""

    @abc.abstractmethod
    async def start(self, request: StartRequest) -> Started:
        """Start one instance; return its handle and endpoints."""

    @abc.abstractmethod
    async def ready(self, handle: Handle, container: Container, role: Role | None,
                    master_ui: str | None) -> bool:
        """One readiness probe; the orchestrator repeats it until true or timeout."""

    @abc.abstractmethod
    def exit_status(self, handle: Handle) -> Exit | None:
        """None while the instance is alive; otherwise why it is not (blocking: run in a thread)."""

    @abc.abstractmethod
    async def stop(self, handle: Handle) -> None:
        """Stop the instance and wait until it is gone; idempotent."""

    @abc.abstractmethod
    def logs(self, handle: Handle, tail: int) -> list[str]:
        """The last ``tail`` lines the instance wrote (blocking: run in a thread)."""

    def ui_url(self, handle: Handle, container_port: int) -> str | None:
        """Where the server reaches an HTTP port of the instance."""
        port = handle.ports.get(container_port)
        return f"http://{self.connect_host}:{port}" if port else None

    def after_adoption(self, known: set[str]) -> None:
        """Every record is loaded (``known`` ids): deal with what a crashed run left (blocking)."""

    async def shutdown(self) -> None:
        """The server is stopping: release clients and threads."""
