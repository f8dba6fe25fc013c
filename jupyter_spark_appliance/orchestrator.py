"""Drive one appliance's instances through PIVOT's states, and keep its declared state.

Backend-agnostic by design: it decides *when* (dependency order, readiness,
scaling, restarts, teardown) and the backend decides *how*. Every state change
goes through :meth:`Orchestrator.set_state`, which emits events and persists
the record, so nothing changes state silently.

Two phases, as users of Kubernetes, Marathon or Compose know them:

- **Launch** brings every container up in dependency order and fails fast: a
  first start that fails tears everything down and shows why (a mistyped JVM
  option must not loop).
- Then a **reconciler** (:meth:`Orchestrator.reconcile`, run every second by
  the manager and after every scale request) converges the instances toward
  ``record.desired``: it starts missing instances, stops surplus ones, and
  replaces instances that die (SIGKILL, OOM, a container that exits) according
  to the container's restart policy, backing off 1, 2, 4 ... 60 s in a crash
  loop. While a restart waits, the instance is ``pending`` (PIVOT's state for
  "accepted, not started") with the reason and the time of the next attempt.

A backend that cannot be reached (an engine that went away: BackendUnavailable)
is not a death: its running instances are ``failed`` with that reason and are
neither restarted nor stopped, since their containers may well run on; each
tick asks again, and once the engine answers they are ``running`` again (or
dead, and handled as any death).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .backends.base import Backend, BackendUnavailable, Exit, Started, StartFailed, StartRequest
from .handles import Handle
from .plan import stop_order
from .spark.roles import ROLES, Role
from .spec import Container
from .state import ApplianceRecord, Instance

log = logging.getLogger(__name__)

OnChange = Callable[[ApplianceRecord, Instance | None], None]
OnEvent = Callable[[ApplianceRecord, Instance | None, str], None]
LOG_TAIL_IN_REASON = 15
MAX_BACKOFF = 60.0
#: an instance that ran this long is healthy again: its next death restarts at once
STABLE_AFTER = 60.0
RESTART_POLICIES = ("on-failure", "always", "never")


class LaunchFailed(RuntimeError):
    pass


def backoff(streak: int) -> float:
    """Seconds before restart number ``streak`` of a crash loop: 0, 1, 2, 4 ... 60."""
    return 0.0 if streak <= 1 else min(MAX_BACKOFF, 2.0 ** (streak - 2))


async def gather_or_cancel(coros: list[Coroutine[Any, Any, Any]]) -> None:
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
            raise t.exception()  # type: ignore[misc]


class Orchestrator:
    def __init__(self, record: ApplianceRecord, backend: Backend, on_change: OnChange,
                 on_event: OnEvent | None = None, start_timeout: float = 300.0, poll_interval: float = 0.05,
                 restart_policy: str = "on-failure", clock: Callable[[], float] = time.time):
        self.record = record
        self.backend = backend
        self.on_change = on_change
        self.on_event = on_event or (lambda record, inst, kind: None)
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.restart_policy = restart_policy
        self.clock = clock
        self.lock = asyncio.Lock()
        self._stopping: set[tuple[str, int]] = set()
        self._starting: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._running: dict[str, asyncio.Event] = {c.id: asyncio.Event() for c in record.appliance.containers}
        #: why the backend could not be reached on the last try (None: it answered); PATCH is a 503 meanwhile
        self.unreachable: str | None = None
        self._lost: list[Instance] = []  # failed only because the backend was unreachable

    # ------------------------------------------------------------------ state

    def set_state(self, inst: Instance, state: str, reason: str | None = None) -> None:
        if inst.state == state and inst.reason == reason:
            return
        inst.state, inst.reason, inst.updated = state, reason, self.clock()
        inst.running_since = inst.updated if state == "running" else None
        self.on_change(self.record, inst)

    def _container(self, cid: str) -> Container:
        c = self.record.appliance.container(cid)
        assert c is not None
        return c

    def role(self, cid: str) -> Role | None:
        return ROLES.get(self.record.roles.get(cid) or "")

    def policy(self, container: Container) -> str:
        if container.restart is not None:
            return container.restart
        return "never" if container.type == "job" else self.restart_policy

    def _peers(self, container: Container) -> dict[str, Handle]:
        """Started handles of what ``container`` may reference (its dependencies)."""
        peers = {}
        for dep in container.all_dependencies:
            inst = next((i for i in self.record.instances[dep] if i.handle and i.live), None)
            if inst is not None and inst.handle is not None:
                peers[dep] = inst.handle
        return peers

    def master_ui(self) -> str | None:
        """The web UI of the appliance's Spark master, as the server reaches it."""
        for cid, role in self.record.roles.items():
            if role == "spark-master":
                for inst in self.record.instances.get(cid, []):
                    if inst.handle is not None and inst.live:
                        return self.backend.ui_url(inst.handle, 8080)
        return None

    # ------------------------------------------------------------------ launch

    async def launch(self) -> None:
        """Bring every container up, each once its dependencies run; on failure, undo."""
        async with self.lock:
            rec = self.record
            for c in rec.appliance.containers:
                rec.instances[c.id] = [Instance(c.id, i) for i in range(rec.desired[c.id])]
            self.on_change(rec, None)
            try:
                await self._prepare()
                await gather_or_cancel([self._bring_up(c) for c in rec.appliance.containers])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure must tear down and be shown
                reason = str(e) if isinstance(e, (LaunchFailed, StartFailed)) else f"{type(e).__name__}: {e}"
                log.warning("Appliance %s failed to start: %s", rec.id, reason)
                rec.reason = reason
                try:
                    await self._stop_all(final="killed")
                except BackendUnavailable as gone:  # what is left is stopped by a DELETE, once it answers
                    for inst in rec.all_instances():
                        if inst.live:
                            self.set_state(inst, "failed", f"not stopped: {gone}")
                self.on_change(rec, None)
                return
            rec.launched = True
            self.on_change(rec, None)

    async def _bring_up(self, container: Container) -> None:
        insts = self.record.instances[container.id]
        for inst in insts:
            self.set_state(inst, "pending")
        for dep in container.all_dependencies:
            await self._running[dep].wait()
        await gather_or_cancel([self._start_instance(container, inst) for inst in insts])
        self._running[container.id].set()

    async def _start_instance(self, container: Container, inst: Instance, previous: Handle | None = None) -> None:
        """Start one instance and wait until it is ready; LaunchFailed (instance failed) if not."""
        self.set_state(inst, "staging")
        request = StartRequest(self.record.id, container, inst.index, self.role(container.id),
                               self._peers(container), previous, self.record.credentials)
        try:
            started = await self._start(request)
        except StartFailed as e:
            self.set_state(inst, "failed", str(e))
            raise LaunchFailed(f"{inst.name}: {e}") from e
        except Exception as e:  # noqa: BLE001 - a backend bug must still fail this instance visibly
            self.set_state(inst, "failed", f"{type(e).__name__}: {e}")
            raise LaunchFailed(f"{inst.name}: {type(e).__name__}: {e}") from e
        inst.endpoints, inst.handle = started.endpoints, started.handle
        self.on_change(self.record, inst)
        await self.wait_ready(container, inst)

    async def _prepare(self) -> None:
        """backend.prepare, but a cancel (a DELETE during the launch) first lets it finish.

        Backends prepare in threads (a network on the engine) that a cancel cannot stop:
        unshielded, the DELETE's teardown would run ``cleanup`` while the thread still
        creates the network, which then outlives the appliance. Waiting here keeps the
        launch, and so the orchestrator's lock, until the prepare is done; the teardown
        takes that lock before its ``cleanup``, so the cleanup always comes after the
        prepare it undoes. One place for every backend, where a lock in each backend
        would still race a cleanup whose thread starts first.
        """
        task = asyncio.ensure_future(self.backend.prepare(self.record.id))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])  # not cancelled with us: the teardown cleans up what it made
            if not task.cancelled():
                task.exception()  # retrieved: a failed prepare is no news to a DELETE
            raise

    async def _start(self, request: StartRequest) -> Started:
        """backend.start, but a cancel (a DELETE during the start) still stops what it started.

        Backends start in threads that a cancel cannot stop; the container or process
        they create a moment later must not outlive the appliance.
        """
        task = asyncio.ensure_future(self.backend.start(request))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                started = await task
            except Exception:  # noqa: BLE001 - it failed: nothing to stop
                raise asyncio.CancelledError from None
            await self.backend.stop(started.handle)
            raise

    async def wait_ready(self, container: Container, inst: Instance) -> None:
        """Probe until ready (then ``running``), or fail the instance and raise LaunchFailed.

        Shared by a launch, a restart, a scale and a re-adoption after a server restart.
        """
        assert inst.handle is not None
        timeout = container.health_check.timeout_seconds if container.health_check else self.start_timeout
        deadline = time.monotonic() + timeout
        role = self.role(container.id)
        while True:
            try:
                status = await asyncio.to_thread(self.backend.exit_status, inst.handle)
            except BackendUnavailable as e:
                self.set_state(inst, "failed", str(e))
                raise LaunchFailed(f"{inst.name}: {e}") from None
            if status is not None:
                if status.success and container.type == "job":
                    self.set_state(inst, "success")
                    return
                reason = await self._reason(inst, status.reason)
                self.set_state(inst, "failed", reason)
                raise LaunchFailed(f"{inst.name}: {reason}")
            try:
                ready = await self.backend.ready(inst.handle, container, role, self.master_ui())
            except Exception as e:  # noqa: BLE001 - a probe that raises is a probe that failed
                log.debug("readiness probe of %s raised %s", inst.name, e)
                ready = False
            if ready:
                break
            if time.monotonic() > deadline:
                reason = await self._reason(inst, f"not ready after {timeout:g} s")
                self.set_state(inst, "failed", reason)
                raise LaunchFailed(f"{inst.name}: {reason}")
            await asyncio.sleep(self.poll_interval)
        self.set_state(inst, "running")

    async def _reason(self, inst: Instance, status: str) -> str:
        """``status`` and the instance's last log lines (its own words: why it died)."""
        tail: list[str] = []
        if inst.handle is not None:
            try:
                tail = await asyncio.to_thread(self.backend.logs, inst.handle, LOG_TAIL_IN_REASON)
            except Exception as e:  # noqa: BLE001 - an engine that went away: the status must still show
                tail = [f"(no logs: {type(e).__name__}: {e})"]
        return status + ("\n" + "\n".join(tail) if tail else "")

    # ------------------------------------------------------------------ scale

    def set_desired(self, container_id: str, instances: int) -> None:
        """Record the wish at once (the caller validated it); :meth:`reconcile` does the rest.

        Instances that ended (failed, killed) are dropped: scaling is also how a
        user replaces what its restart policy left dead.
        """
        rec = self.record
        rec.desired[container_id] = instances
        rec.instances[container_id] = [i for i in rec.instances[container_id] if i.live]
        rec.reason = None
        self.on_change(rec, None)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self) -> None:
        """One pass toward the declared state; cheap when nothing is to be done."""
        rec = self.record
        if rec.deleting or not rec.launched or self.lock.locked():
            return
        async with self.lock:
            if self._lost and not await self._recover_lost():
                return  # still unreachable: starting or stopping anything would fail too
            await self._reap_dead()
            now = self.clock()
            for cid in (c.id for c in rec.appliance.containers):
                container = self._container(cid)
                self._converge_count(container)
                for inst in rec.instances[cid]:
                    key = (cid, inst.index)
                    due = inst.state == "pending" and (inst.restart_at or 0) <= now
                    if due and key not in self._starting and self._dependencies_run(container):
                        self._starting[key] = asyncio.ensure_future(self._replace(container, inst))
            await self._stop_surplus()

    def _dependencies_run(self, container: Container) -> bool:
        return all(any(i.state == "running" for i in self.record.instances[dep])
                   for dep in container.all_dependencies)

    async def _reap_dead(self) -> None:
        """Instances that died behind our back: schedule their restart (or mark them failed)."""
        candidates = [i for i in self.record.all_instances()
                      if i.state == "running" and i.handle is not None
                      and (i.container, i.index) not in self._stopping | set(self._starting)]
        if not candidates:
            return
        try:
            statuses = await asyncio.to_thread(
                lambda: [self.backend.exit_status(i.handle) for i in candidates])  # type: ignore[arg-type]
        except BackendUnavailable as e:
            for inst in candidates:
                self.lost(inst, str(e))
            return
        self.unreachable = None
        for inst, status in zip(candidates, statuses, strict=True):
            if status is not None and inst.state == "running":
                await self.died(inst, status)

    def lost(self, inst: Instance, reason: str) -> None:
        """The backend cannot tell whether running ``inst`` lives: failed with the reason, asked again
        each tick, and ``running`` again if it still lives once the backend answers."""
        self.unreachable = reason
        if all(i is not inst for i in self._lost):  # by identity: instances compare by value
            self._lost.append(inst)
        self.set_state(inst, "failed", reason)

    async def _recover_lost(self) -> bool:
        """Ask again about instances lost with the backend; False while it is still unreachable."""
        current = {id(i) for i in self.record.all_instances()}
        lost = [i for i in self._lost if id(i) in current and i.state == "failed" and i.handle is not None]
        if not lost:
            self._lost, self.unreachable = [], None
            return True
        try:
            statuses = await asyncio.to_thread(
                lambda: [self.backend.exit_status(i.handle) for i in lost])  # type: ignore[arg-type]
        except BackendUnavailable as e:
            self.unreachable = str(e)
            for inst in lost:
                self.set_state(inst, "failed", str(e))  # the latest words of the backend
            return False
        self._lost, self.unreachable = [], None
        for inst, status in zip(lost, statuses, strict=True):
            if status is None:
                log.info("%s of %s is reachable again and running", inst.name, self.record.id)
                self.set_state(inst, "running")
            else:
                await self.died(inst, status, f"gone while its backend was unreachable: {status.reason}")
        return True

    async def died(self, inst: Instance, status: Exit, why: str = "") -> None:
        """An instance is gone: restart it as its policy says (or mark it ended)."""
        container = self._container(inst.container)
        reason = why or await self._reason(inst, status.reason)
        if status.success and container.type == "job":
            self.set_state(inst, "success")
            return
        policy = self.policy(container)
        if policy == "never" or (policy == "on-failure" and status.success):
            self.set_state(inst, "failed" if not status.success else "success", reason)
            return
        self._schedule_restart(inst, reason)
        if self.role(inst.container) is ROLES["spark-master"]:
            self._restart_dependents_of(inst.container)

    def _schedule_restart(self, inst: Instance, reason: str) -> None:
        stable = inst.running_since is not None and self.clock() - inst.running_since >= STABLE_AFTER
        inst.crash_streak = 1 if stable else inst.crash_streak + 1
        delay = backoff(inst.crash_streak)
        inst.last_reason = reason
        inst.restart_at = self.clock() + delay
        wait = f"restarting in {delay:g} s" if delay else "restarting"
        self.set_state(inst, "pending", f"{wait} (restart {inst.restarts + 1}) after: {reason}")

    def _restart_dependents_of(self, master_id: str) -> None:
        """Drivers keep their application in the master: when it restarts they must too."""
        for c in self.record.appliance.containers:
            role = self.role(c.id)
            if role is None or not role.restart_with_master or master_id not in c.all_dependencies:
                continue
            for inst in self.record.instances[c.id]:
                if inst.state == "running":
                    inst.restart_at = self.clock()
                    inst.last_reason = f"the Spark master ({master_id}) restarted"
                    self.set_state(inst, "pending", f"restarting with the Spark master ({master_id})")

    async def _replace(self, container: Container, inst: Instance) -> None:
        """(Re)start one pending instance, on its old ports; back off if it fails again."""
        key = (container.id, inst.index)
        try:
            previous = inst.handle
            if previous is not None:
                self._stopping.add(key)
                try:
                    await self.backend.stop(previous)  # what is left of it (all of it, for a restart-with-master)
                except BackendUnavailable as e:  # try again after the back-off
                    self._schedule_restart(inst, str(e))
                    return
                finally:
                    self._stopping.discard(key)
            if inst.last_reason is not None:  # a restart, not a new instance
                inst.restarts += 1
                self.on_event(self.record, inst, "restart")
            try:
                await self._start_instance(container, inst, previous)
            except LaunchFailed:
                if not self.record.deleting and self.policy(container) != "never":
                    self._schedule_restart(inst, inst.reason or "it did not start")
        finally:
            self._starting.pop(key, None)

    def _converge_count(self, container: Container) -> None:
        """Add pending instances up to ``desired``; their start follows, surplus is stopped later.

        Every kept instance holds a slot, a failed one too (its policy said not to
        restart it): it stays visible until a scale request replaces it.
        """
        insts = self.record.instances[container.id]
        used = {i.index for i in insts}
        free = (n for n in range(len(insts) + self.record.desired[container.id] + 1) if n not in used)
        for _ in range(self.record.desired[container.id] - len(insts)):
            inst = Instance(container.id, next(free), restart_at=0.0)
            insts.append(inst)
            self.set_state(inst, "pending")
        insts.sort(key=lambda i: i.index)

    async def _stop_surplus(self) -> None:
        doomed: list[Instance] = []
        for c in self.record.appliance.containers:
            live = sorted((i for i in self.record.instances[c.id] if i.live), key=lambda i: i.index)
            doomed += live[self.record.desired[c.id]:]
        if not doomed:
            return
        for inst in doomed:
            task = self._starting.pop((inst.container, inst.index), None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(self._stop_instance(i, "killed") for i in doomed))
        for inst in doomed:
            self.record.instances[inst.container].remove(inst)
        self.on_change(self.record, None)

    # ------------------------------------------------------------------ stop

    async def _stop_instance(self, inst: Instance, final: str) -> None:
        key = (inst.container, inst.index)
        self._stopping.add(key)
        try:
            if inst.handle is not None:
                await self.backend.stop(inst.handle)
        finally:
            self._stopping.discard(key)
        if inst.state != "failed":
            self.set_state(inst, final)

    async def _stop_all(self, final: str) -> None:
        for cid in stop_order(self.record.appliance):
            await asyncio.gather(*(self._stop_instance(i, final) for i in self.record.instances[cid]),
                                 return_exceptions=False)
        await self.backend.cleanup(self.record.id)

    async def cancel_starts(self) -> None:
        """Cancel the reconciler's (re)starts under way; each stops what it had started."""
        tasks = list(self._starting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def teardown(self) -> None:
        """Stop everything in reverse dependency order (the caller cancels a launch first)."""
        await self.cancel_starts()
        async with self.lock:
            await self._stop_all(final="killed")
