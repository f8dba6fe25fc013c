"""The small interface every backend implements.

The orchestrator owns states, ordering and events; a backend only knows how to
start one instance, tell whether it is alive and ready, read its logs and stop
it. Keeping the interface this small is what lets Docker and local processes
share one orchestrator (architecture.md, step 4).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from ..spec import Appliance, Container, Problem
from ..state import ApplianceRecord, Endpoint, Instance


class BackendUnavailable(RuntimeError):
    """The backend cannot be used at all on this machine (HTTP 503)."""


class StartFailed(RuntimeError):
    """An instance could not be started; the message is shown to the user."""


@dataclass
class StartedInstance:
    endpoints: list[Endpoint]
    info: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    name: str = ""

    def check(self, appliance: Appliance) -> list[Problem]:
        """Problems that make ``appliance`` impossible on this backend (HTTP 400)."""
        return []

    def available(self) -> None:
        """Raise BackendUnavailable with a user-facing reason if unusable."""

    async def prepare(self, record: ApplianceRecord) -> None:
        """Appliance-wide setup before any instance starts (a network, a dir)."""

    async def cleanup(self, record: ApplianceRecord) -> None:
        """Appliance-wide teardown after every instance stopped."""

    @abc.abstractmethod
    async def start(self, record: ApplianceRecord, container: Container, instance: Instance) -> StartedInstance:
        """Start one instance; return its endpoints and the facts to find it again."""

    @abc.abstractmethod
    async def ready(self, record: ApplianceRecord, container: Container, instance: Instance) -> bool:
        """One readiness probe; the orchestrator repeats it until true or timeout."""

    @abc.abstractmethod
    def exit_status(self, instance: Instance) -> str | None:
        """None while the instance is alive; otherwise why it is not (for the user)."""

    @abc.abstractmethod
    async def stop(self, record: ApplianceRecord, instance: Instance) -> None:
        """Stop the instance and wait until it is gone; idempotent."""

    @abc.abstractmethod
    def logs(self, record: ApplianceRecord, instance: Instance, tail: int) -> list[str]:
        """The last ``tail`` lines the instance wrote."""

    async def shutdown(self) -> None:
        """The server is stopping: release clients and threads."""
