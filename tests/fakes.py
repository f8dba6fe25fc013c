"""A fake backend, used only by the fast test layer (tests/test_orchestrator.py).

The real backends are tested with real JVMs and a real Docker engine; this
one exists so that the orchestrator's and the manager's logic (launch failure,
scaling, delete during launch, re-adoption, crash-loop back-off) can be driven
in milliseconds, without Java, and with faults on demand. Its "processes"
live in a :class:`FakeMachine` that outlives a backend, as the OS outlives a
Jupyter server, so a second manager can re-adopt them.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from jupyter_spark_appliance.backends.base import Backend, Exit, Started, StartFailed, StartRequest
from jupyter_spark_appliance.handles import Handle, handle_kind
from jupyter_spark_appliance.plan import AddressOf, address_map_resolver, resolve_container
from jupyter_spark_appliance.spark.roles import DEFAULT_ROLE_PATTERNS, Role, role_by_pattern
from jupyter_spark_appliance.spec import Container
from jupyter_spark_appliance.state import Endpoint


@handle_kind
@dataclass
class FakeHandle(Handle):
    kind = "fake"
    pid: int = 0


@dataclass
class FakeProcess:
    pid: int
    name: str  # container-index
    argv: list[str]
    ports: dict[int, int]
    exit: Exit | None = None
    probes: int = 0


@dataclass
class FakeMachine:
    """The fake OS: processes by pid, and the faults to inject into the next starts."""

    processes: dict[int, FakeProcess] = field(default_factory=dict)
    fail_start: set[str] = field(default_factory=set)  # container ids whose start raises StartFailed
    crash_on_start: set[str] = field(default_factory=set)  # container ids that exit right after starting
    probes_until_ready: int = 1
    start_delay: float = 0.0  # seconds a start blocks its thread (to cancel a start mid-way)
    starts: list[str] = field(default_factory=list)  # every start, in order, as "container-index"
    _pids: itertools.count = field(default_factory=lambda: itertools.count(100))
    _ports: itertools.count = field(default_factory=lambda: itertools.count(40000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alive(self, container: str | None = None) -> list[FakeProcess]:
        return [p for p in self.processes.values() if p.exit is None
                and (container is None or p.name.rsplit("-", 1)[0] == container)]

    def kill(self, pid: int, reason: str = "its process was killed by SIGKILL") -> None:
        self.processes[pid].exit = Exit(reason)


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, machine: FakeMachine):
        self.machine = machine

    def role_of(self, container: Container) -> Role | None:
        return role_by_pattern(container.image, container.id, DEFAULT_ROLE_PATTERNS)

    def resolver(self, peers: Mapping[str, Handle], referrer: Container) -> AddressOf:
        return address_map_resolver({cid: h.peer_host for cid, h in peers.items()},
                                    {(cid, p): port for cid, h in peers.items() for p, port in h.ports.items()})

    async def start(self, request: StartRequest) -> Started:
        return await asyncio.to_thread(self._start, request)

    def _start(self, request: StartRequest) -> Started:
        m = self.machine
        if m.start_delay:
            threading.Event().wait(m.start_delay)
        if request.container.id in m.fail_start:
            raise StartFailed(f"{request.name}: refused by the fake machine")
        resolved = resolve_container(request.container, self.resolver(request.peers, request.container))
        with m.lock:
            previous = request.previous.ports if request.previous else {}
            ports = {p.container_port: previous.get(p.container_port) or next(m._ports)
                     for p in request.container.ports}
            proc = FakeProcess(next(m._pids), request.name, resolved.args, ports)
            if request.container.id in m.crash_on_start:
                proc.exit = Exit("its process exited with code 1")
            m.processes[proc.pid] = proc
            m.starts.append(request.name)
        endpoints = [Endpoint("127.0.0.1", port, cport, "tcp", None) for cport, port in ports.items()]
        return Started(FakeHandle(ports=ports, pid=proc.pid), endpoints)

    async def ready(self, handle: Handle, container: Container, role: Role | None, master_ui: str | None) -> bool:
        assert isinstance(handle, FakeHandle)
        proc = self.machine.processes[handle.pid]
        proc.probes += 1
        return proc.probes >= self.machine.probes_until_ready

    def exit_status(self, handle: Handle) -> Exit | None:
        assert isinstance(handle, FakeHandle)
        proc = self.machine.processes.get(handle.pid)
        return Exit("its process is gone") if proc is None else proc.exit

    async def stop(self, handle: Handle) -> None:
        assert isinstance(handle, FakeHandle)
        proc = self.machine.processes.get(handle.pid)
        if proc is not None and proc.exit is None:
            proc.exit = Exit("stopped")

    def logs(self, handle: Handle, tail: int) -> list[str]:
        assert isinstance(handle, FakeHandle)
        return [f"fake log of pid {handle.pid}"][-tail:] if tail else []
