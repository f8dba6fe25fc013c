"""Drive one appliance's instances through PIVOT's states on some backend.

Backend-agnostic by design: it decides *when* (dependency order, readiness,
scaling, teardown) and the backend decides *how*. Every state change goes
through :meth:`Orchestrator.set_state`, which is what emits events and
persists the record, so nothing can change state silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .backends.base import Backend, StartFailed
from .plan import stop_order
from .spec import Container
from .state import ApplianceRecord, Instance

log = logging.getLogger(__name__)

OnChange = Callable[[ApplianceRecord, Instance | None], None]
LOG_TAIL_IN_REASON = 15


class LaunchFailed(RuntimeError):
    pass


async def gather_or_cancel(coros: list) -> None:
    """Run concurrently; on the first failure cancel the rest, then re-raise it.

    Plain gather() would leave siblings running (a worker still waiting for a
    master that failed), which would race the teardown.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if t.exception() is not None:
            raise t.exception()


class Orchestrator:
    def __init__(self, record: ApplianceRecord, backend: Backend, on_change: OnChange,
                 start_timeout: float = 300.0, poll_interval: float = 0.05):
        self.record = record
        self.backend = backend
        self.on_change = on_change
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.lock = asyncio.Lock()
        self._stopping: set[tuple[str, int]] = set()
        self._running: dict[str, asyncio.Event] = {c.id: asyncio.Event() for c in record.appliance.containers}

    # ------------------------------------------------------------------ state

    def set_state(self, inst: Instance, state: str, reason: str | None = None) -> None:
        if inst.state == state and inst.reason == reason:
            return
        inst.state, inst.reason, inst.updated = state, reason, time.time()
        self.on_change(self.record, inst)

    def _container(self, cid: str) -> Container:
        c = self.record.appliance.container(cid)
        assert c is not None
        return c

    # ------------------------------------------------------------------ launch

    async def launch(self) -> None:
        """Bring every container up, each once its dependencies run; on failure, undo."""
        async with self.lock:
            rec = self.record
            for c in rec.appliance.containers:
                rec.instances[c.id] = [Instance(c.id, i) for i in range(rec.desired[c.id])]
            self.on_change(rec, None)
            try:
                await self.backend.prepare(rec)
                await gather_or_cancel([self._bring_up(c) for c in rec.appliance.containers])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure must tear down and be shown
                reason = str(e) if isinstance(e, (LaunchFailed, StartFailed)) else f"{type(e).__name__}: {e}"
                log.warning("Appliance %s failed to start: %s", rec.id, reason)
                rec.reason = reason
                await self._stop_all(final="killed")
                self.on_change(rec, None)

    async def _bring_up(self, container: Container) -> None:
        insts = self.record.instances[container.id]
        for inst in insts:
            self.set_state(inst, "pending")
        for dep in container.all_dependencies:
            await self._running[dep].wait()
        await gather_or_cancel([self._start_instance(container, inst) for inst in insts])
        self._running[container.id].set()

    async def _start_instance(self, container: Container, inst: Instance) -> None:
        self.set_state(inst, "staging")
        try:
            started = await self.backend.start(self.record, container, inst)
        except StartFailed as e:
            self.set_state(inst, "failed", str(e))
            raise LaunchFailed(f"{inst.name}: {e}") from e
        except Exception as e:  # noqa: BLE001 - a backend bug must still fail this instance visibly
            self.set_state(inst, "failed", f"{type(e).__name__}: {e}")
            raise LaunchFailed(f"{inst.name}: {type(e).__name__}: {e}") from e
        inst.endpoints, inst.info = started.endpoints, started.info
        self.on_change(self.record, inst)
        await self.wait_ready(container, inst)

    async def wait_ready(self, container: Container, inst: Instance) -> None:
        """Probe until ready (then ``running``), or fail the instance and raise LaunchFailed.

        Shared by a launch, a scale and a re-adoption after a server restart.
        """
        timeout = container.health_check.timeout_seconds if container.health_check else self.start_timeout
        deadline = time.monotonic() + timeout
        while True:
            status = self.backend.exit_status(inst)
            if status is not None:
                reason = self._reason(inst, status)
                self.set_state(inst, "failed", reason)
                raise LaunchFailed(f"{inst.name}: {reason}")
            try:
                ready = await self.backend.ready(self.record, container, inst)
            except Exception as e:  # noqa: BLE001 - a probe that raises is a probe that failed
                log.debug("readiness probe of %s raised %s", inst.name, e)
                ready = False
            if ready:
                break
            if time.monotonic() > deadline:
                reason = self._reason(inst, f"not ready after {timeout:g} s")
                self.set_state(inst, "failed", reason)
                raise LaunchFailed(f"{inst.name}: {reason}")
            await asyncio.sleep(self.poll_interval)
        self.set_state(inst, "running")

    def _reason(self, inst: Instance, status: str) -> str:
        tail = self.backend.logs(self.record, inst, LOG_TAIL_IN_REASON)
        return status + ("\n" + "\n".join(tail) if tail else "")

    # ------------------------------------------------------------------ scale

    async def scale(self, container_id: str, instances: int) -> None:
        async with self.lock:
            container = self._container(container_id)
            rec = self.record
            rec.desired[container_id] = instances
            rec.reason = None
            current = [i for i in rec.instances[container_id] if i.live]
            # Dead instances are dropped: scaling is also how a user replaces them.
            rec.instances[container_id] = current
            self.on_change(rec, None)
            if len(current) > instances:
                doomed = sorted(current, key=lambda i: i.index)[instances:]
                await asyncio.gather(*(self._stop_instance(i, "killed") for i in doomed))
                rec.instances[container_id] = [i for i in current if i not in doomed]
                self.on_change(rec, None)
                return
            used = {i.index for i in current}
            free = (n for n in range(instances * 2 + 1) if n not in used)
            new = [Instance(container_id, next(free)) for _ in range(instances - len(current))]
            rec.instances[container_id] = sorted(current + new, key=lambda i: i.index)
            for inst in new:
                self.set_state(inst, "pending")
            try:
                await gather_or_cancel([self._start_instance(container, inst) for inst in new])
            except LaunchFailed as e:
                # Keep the appliance; stop just the new instances that did not make it.
                rec.reason = str(e)
                for inst in new:
                    if inst.state != "running":
                        await self._stop_instance(inst, inst.state if inst.state == "failed" else "killed")
                self.on_change(rec, None)

    # ------------------------------------------------------------------ stop

    async def _stop_instance(self, inst: Instance, final: str) -> None:
        key = (inst.container, inst.index)
        self._stopping.add(key)
        try:
            if inst.info:
                await self.backend.stop(self.record, inst)
        finally:
            self._stopping.discard(key)
        if inst.state != "failed":
            self.set_state(inst, final)

    async def _stop_all(self, final: str) -> None:
        for cid in stop_order(self.record.appliance):
            await asyncio.gather(*(self._stop_instance(i, final) for i in self.record.instances[cid]))
        await self.backend.cleanup(self.record)

    async def teardown(self) -> None:
        """Stop everything in reverse dependency order (caller cancels a launch first)."""
        async with self.lock:
            await self._stop_all(final="killed")

    # ------------------------------------------------------------------ watch

    async def check_liveness(self) -> None:
        """Mark instances whose process/container died behind our back as failed.

        The probes run in a thread (the Docker SDK blocks); states change on the loop.
        """
        candidates = [i for i in self.record.all_instances()
                      if i.state in ("staging", "running") and i.info
                      and (i.container, i.index) not in self._stopping]
        if not candidates:
            return
        statuses = await asyncio.to_thread(lambda: [self.backend.exit_status(i) for i in candidates])
        for inst, status in zip(candidates, statuses, strict=True):
            if status is not None and inst.state == "running" and (inst.container, inst.index) not in self._stopping:
                self.set_state(inst, "failed", self._reason(inst, status))
