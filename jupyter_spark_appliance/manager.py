"""One manager per Jupyter server: the appliances, their orchestrators and events.

Like dask-labextension's manager it is async, keeps its objects in a dict and
returns None for unknown ids; unlike it, every record is persisted on change so
a restarted server re-adopts what still runs (ipyparallel's approach).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .backends.base import Backend, BackendUnavailable
from .capacity import POLL_SECONDS, ask_gateway
from .credentials import ensure_credentials
from .handles import handle_from_json
from .model import make_appliance_model, unreadable_model
from .orchestrator import LaunchFailed, Orchestrator
from .spec import MAX_INSTANCES, Appliance, Container, Problem, SpecError, check_instances, parse_appliance
from .state import ApplianceRecord, Instance
from .store import Store, Unreadable
from .templates import list_templates, render_template

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The data dir cannot be written (full, read-only): a 507 that says so."""


class TooMany(RuntimeError):
    """A limit of the server is reached: a 429 naming it."""


class Conflict(Exception):
    """An appliance with this id exists already (HTTP 409)."""


Listener = Callable[[ApplianceRecord, "Instance | None", str], None]


class ApplianceManager:
    def __init__(
        self,
        store: Store,
        backends: Mapping[str, Callable[[], Backend]],
        default_backend: str = "local",
        template_defaults: Mapping[str, Any] | None = None,
        start_timeout: float = 300.0,
        stop_on_shutdown: bool = True,
        monitor_interval: float = 1.0,
        owner: str = "",
        restart_policy: str = "on-failure",
        max_appliances: int = 0,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self._backend_factories = dict(backends)
        self._backends: dict[str, Backend] = {}
        self.default_backend = default_backend
        self.template_defaults = dict(template_defaults or {})
        self.start_timeout = start_timeout
        self.stop_on_shutdown = stop_on_shutdown
        self.monitor_interval = monitor_interval
        self.owner = owner
        self.restart_policy = restart_policy
        self.max_appliances = max_appliances
        self.clock = clock
        self.records: dict[str, ApplianceRecord] = {}
        self.orchestrators: dict[str, Orchestrator] = {}
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.listeners: list[Listener] = []
        self._monitor: asyncio.Task[None] | None = None
        self._loaded = False  # every record was read (so leftovers can be told from ours)
        self.unreadable: dict[str, Unreadable] = {}  # records that could not be read: listed as failed

    # ------------------------------------------------------------------ backends

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            factory = self._backend_factories.get(name)
            if factory is None:
                known = ", ".join(self._backend_factories)
                raise SpecError([Problem("backend", f"unknown backend {name!r} (known: {known})")])
            backend = factory()
            backend.available()  # raises BackendUnavailable before caching
            self._backends[name] = backend
            if self._loaded:  # made after start-up: every record is known already
                self._after_adoption(backend, set(self.records))
        return self._backends[name]

    @staticmethod
    def _after_adoption(backend: Backend, known: set[str]) -> None:
        """The backend's leftover hunt, which must never make it unusable (blocking).

        A leftover the engine will not remove, or an engine that goes away meanwhile,
        is a warning: the backend is usable all the same (at start-up as at first use).
        """
        try:
            backend.after_adoption(known)
        except Exception as e:  # noqa: BLE001 - leftovers are a clean-up, not a condition of use
            log.warning("checking the %s backend for leftovers failed (%s: %s); it is used all the same",
                        backend.name, type(e).__name__, e)

    async def usable_backend(self, name: str) -> Backend:
        """The backend, checked again if it was made before: an engine may have gone away since.

        In a thread: the check is a round trip to the engine.
        """
        backend = self._backends.get(name)
        if backend is None:
            return self.backend(name)
        await asyncio.to_thread(backend.available)
        return backend

    def credentials_model(self, record: ApplianceRecord) -> dict[str, Any]:
        """The Credentials wire shape: how a client logs in to the Livy gateway and to the master.

        A route of its own (not part of the model, which every event carries), behind
        Jupyter's authentication like every route.
        """
        creds = record.credentials
        livy = master = None
        for inst in record.all_instances():
            if inst.state != "running":
                continue
            role = record.roles.get(inst.container)
            for ep in inst.endpoints:
                if livy is None and (ep.name == "livy" or (role == "livy" and ep.container_port == 8998)):
                    livy = f"http://{ep.host}:{ep.host_port}"
                if master is None and role == "spark-master" and ep.container_port == 7077:
                    master = f"spark://{ep.host}:{ep.host_port}"
        return {
            "livy": {"url": livy, "username": creds.username if creds else "",
                     "password": creds.password if creds else "", "auth": "Basic_Access" if creds else "None"},
            "spark": {"master": master, "conf": creds.spark_conf() if creds else {}},
        }

    async def backend_statuses(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Each configured backend and whether it can be used now (the launch form's select).

        Checking makes the backend (a Docker client and a ping): in a thread, with a
        deadline, so an engine that hangs cannot hang the request.
        """
        def check(name: str) -> None:
            made = self._backends.get(name)
            if made is None:
                self.backend(name)
            else:
                made.available()  # made before: its engine may have gone away since

        async def status(name: str) -> dict[str, Any]:
            try:
                await asyncio.wait_for(asyncio.to_thread(check, name), timeout)
            except BackendUnavailable as e:
                return {"name": name, "available": False, "reason": str(e)}
            except asyncio.TimeoutError:
                return {"name": name, "available": False, "reason": f"no answer within {timeout:g} s"}
            except Exception as e:  # noqa: BLE001 - any other failure is a reason to show
                return {"name": name, "available": False, "reason": f"{type(e).__name__}: {e}"}
            return {"name": name, "available": True, "reason": None}

        return list(await asyncio.gather(*(status(n) for n in self._backend_factories)))

    async def templates_model(self) -> dict[str, Any]:
        """The Templates wire shape: templates with this server's defaults, backends, limits."""
        return {"templates": list_templates(self.template_defaults), "backends": await self.backend_statuses(),
                "default_backend": self.default_backend, "max_instances": MAX_INSTANCES}

    # ------------------------------------------------------------------ life cycle

    async def ensure_started(self) -> None:
        """Idempotent start: from the server's start hook, or the first request."""
        if self._monitor is None:
            await self.start()

    async def start(self) -> None:
        """Load records and re-adopt what still runs; start the reconciling monitor."""
        self._monitor = asyncio.ensure_future(self._watch())
        records, unreadable = self.store.load()
        self.unreadable = {u.id: u for u in unreadable}
        for record in records:
            await self._adopt(record)
        self._loaded = True
        known = set(self.records)
        for backend in list(self._backends.values()):
            await asyncio.to_thread(self._after_adoption, backend, known)  # an engine gone must not stop us

    async def _adopt(self, record: ApplianceRecord) -> None:
        self.records[record.id] = record
        record.credentials = ensure_credentials(self.store.dir(record.id))
        try:
            backend = self.backend(record.backend)
        except (BackendUnavailable, SpecError) as e:
            for inst in record.all_instances():
                if inst.live:
                    inst.state, inst.reason = "failed", f"cannot re-adopt: {e}"
            record.reason = f"cannot re-adopt: {e}"
            self._save(record)
            return
        for c in record.appliance.containers:
            if c.id not in record.roles:
                record.roles[c.id] = role.name if (role := backend.role_of(c)) else None
        orch = self._orchestrator(record, backend)
        for inst in record.all_instances():
            if not inst.live:
                continue
            if inst.handle is None:  # the server died before it started: the reconciler starts it
                inst.restart_at = 0.0
                orch.set_state(inst, "pending")
                continue
            try:
                status = await asyncio.to_thread(backend.exit_status, inst.handle)
            except BackendUnavailable as e:  # its engine went away since available()
                if inst.state == "running":
                    orch.lost(inst, f"cannot re-adopt: {e}")  # asked again each tick
                else:
                    orch.set_state(inst, "failed", f"cannot re-adopt: {e}")
                continue
            if status is not None:
                await orch.died(inst, status, f"gone while the server was down: {status.reason}")
            elif inst.state != "running":
                container = record.appliance.container(inst.container)
                assert container is not None
                self._spawn(record.id, self._await_ready(orch, container, inst))
        if not record.launched and not any(i.state in ("pending", "staging") for i in record.all_instances()):
            record.launched = True  # the launch finished while the server was down
        self._save(record)
        log.info("Re-adopted appliance %s (%s)", record.id, record.state)

    @staticmethod
    async def _await_ready(orch: Orchestrator, container: Container, inst: Instance) -> None:
        try:
            await orch.wait_ready(container, inst)
        except LaunchFailed:
            pass  # the instance is failed, with its reason
        orch.record.launched = True

    async def _watch(self) -> None:
        last_capacity = 0.0
        while True:
            await asyncio.sleep(self.monitor_interval)
            for orch in list(self.orchestrators.values()):
                try:
                    await orch.reconcile()
                except Exception:  # noqa: BLE001 - the monitor must survive anything
                    log.exception("reconciling %s failed", orch.record.id)
            if time.monotonic() - last_capacity >= POLL_SECONDS:
                last_capacity = time.monotonic()
                await asyncio.gather(*(self._check_capacity(r) for r in list(self.records.values())),
                                     return_exceptions=True)

    async def _check_capacity(self, record: ApplianceRecord) -> None:
        """Ask the appliance's gateway whether statements wait for cores; an event when that changes."""
        livy = self.credentials_model(record)["livy"] if record.state == "running" else None
        capacity = await ask_gateway(livy["url"], livy["username"], livy["password"]) \
            if livy and livy["url"] else None
        before = record.capacity
        record.capacity = capacity
        if (before is None) != (capacity is None) or (before and capacity and (
                before.short, before.message, before.cores_free) != (capacity.short, capacity.message,
                                                                     capacity.cores_free)):
            self._emit(record, None, "update")

    async def shutdown(self) -> None:
        if self._monitor:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        for app_id in list(self.records):
            record = self.records[app_id]
            for task in self._tasks.pop(app_id, set()):
                task.cancel()
            if self.stop_on_shutdown:
                log.info("Stopping appliance %s (stop_on_shutdown)", app_id)
                try:
                    await self.delete(app_id)
                except BackendUnavailable as e:  # the others must still be stopped
                    log.warning("Could not stop appliance %s: %s", app_id, e)
            else:
                orch = self.orchestrators.get(app_id)
                if orch is not None:
                    await orch.cancel_starts()
                self._save(record)
        for backend in self._backends.values():
            await backend.shutdown()

    # ------------------------------------------------------------------ queries

    def list(self) -> list[dict[str, Any]]:
        return [self.model(r) for r in self.records.values()] + [unreadable_model(u) for u in self.unreadable.values()]

    def get(self, app_id: str) -> ApplianceRecord | None:
        return self.records.get(app_id)

    def model(self, record: ApplianceRecord) -> dict[str, Any]:
        return make_appliance_model(record)

    async def logs(self, app_id: str, container_id: str, instance: int | None,
                   tail: int) -> list[dict[str, Any]] | None:
        record = self.records.get(app_id)
        if record is None or record.appliance.container(container_id) is None:
            return None
        backend = self._backends.get(record.backend)
        out = []
        for inst in record.instances[container_id]:
            if instance is not None and inst.index != instance:
                continue
            lines: list[str] = []
            if backend is not None and inst.handle is not None:
                try:
                    lines = await asyncio.to_thread(backend.logs, inst.handle, tail)
                except Exception as e:  # noqa: BLE001 - an engine that went away: say so in the logs
                    lines = [f"(logs unavailable: {type(e).__name__}: {e})"]
            out.append({"index": inst.index, "name": inst.name, "state": inst.state, "lines": lines})
        return out

    # ------------------------------------------------------------------ create

    def parse_request(self, body: Any) -> tuple[Appliance, str, dict[str, Any] | None]:
        """A POST body -> (appliance, backend name, template info); SpecError if bad."""
        if not isinstance(body, dict):
            raise SpecError([Problem("$", "the request body must be a JSON object")])
        body = dict(body)
        backend = body.pop("backend", self.default_backend)
        if not isinstance(backend, str):
            raise SpecError([Problem("backend", "must be a string")])
        template = None
        if "template" in body:
            name = body.pop("template")
            if not isinstance(name, str):
                raise SpecError([Problem("template", "must be a string")])
            params = body.pop("parameters", {}) if isinstance(body.get("parameters"), dict) else {}
            params = {**params, **body}
            document = render_template(name, params, self.template_defaults.get(name))
            template = {"name": name, "parameters": params}
        else:
            document = body
        return parse_appliance(document), backend, template

    async def create(self, body: Any) -> ApplianceRecord:
        appliance, backend_name, template = self.parse_request(body)
        backend = await self.usable_backend(backend_name)
        problems = backend.check(appliance)
        if problems:
            raise SpecError(problems)
        # These checks happen before any await, so two concurrent POSTs cannot both pass.
        if self.max_appliances and appliance.id not in self.records and len(self.records) >= self.max_appliances:
            raise TooMany(f"this server runs {len(self.records)} appliances, its limit "
                          f"(c.SparkApplianceApp.max_appliances = {self.max_appliances}): stop one first")
        if appliance.id in self.unreadable:
            raise Conflict(f"appliance {appliance.id!r} has a record this server cannot read: DELETE it first")
        if appliance.id in self.records or not self.store.claim(appliance.id):
            raise Conflict(f"an appliance with id {appliance.id!r} exists already")
        record = ApplianceRecord.new(appliance, backend_name, template=template, owner=self.owner)
        record.roles = {c.id: role.name if (role := backend.role_of(c)) else None for c in appliance.containers}
        try:
            record.credentials = ensure_credentials(self.store.dir(record.id))
            self.store.save(record)
        except OSError as e:  # a full or read-only disk: nothing is started, the id stays free
            self.store.remove(record.id)
            raise StorageError(f"cannot write the appliance's record in {self.store.root}: {e}") from None
        self.records[record.id] = record
        orch = self._orchestrator(record, backend)
        self._spawn(record.id, orch.launch())
        return record

    def _orchestrator(self, record: ApplianceRecord, backend: Backend) -> Orchestrator:
        orch = Orchestrator(record, backend, self._changed, self._notify, start_timeout=self.start_timeout,
                            restart_policy=self.restart_policy, clock=self.clock)
        self.orchestrators[record.id] = orch
        return orch

    def _spawn(self, app_id: str, coro: Any) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        tasks = self._tasks.setdefault(app_id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    # ------------------------------------------------------------------ scale / delete

    def scale(self, app_id: str, container_id: str, instances: Any) -> None:
        """Validate and record the new count at once (the reply shows it); reconcile in the background."""
        record = self.records[app_id]
        if record.deleting:
            raise Conflict(f"appliance {app_id!r} is being deleted")
        index = [c.id for c in record.appliance.containers].index(container_id)
        container = record.appliance.containers[index]
        problem = check_instances(container, instances, f"containers[{index}].instances")
        if problem is not None:
            raise SpecError([Problem("instances", f"{problem.message} ({problem.path})")])
        orch = self.orchestrators[app_id]
        if orch.unreachable is not None:  # scaling would start or stop nothing
            raise BackendUnavailable(orch.unreachable)
        orch.set_desired(container_id, instances)
        self._spawn(app_id, orch.reconcile())

    async def delete(self, app_id: str) -> bool:
        """Stop everything and forget the appliance; Conflict if a DELETE is already under way."""
        if app_id in self.unreadable:
            await self._delete_unreadable(self.unreadable.pop(app_id))
            return True
        record = self.records.get(app_id)
        if record is None:
            return False
        if record.deleting:
            raise Conflict(f"appliance {app_id!r} is being deleted")
        record.deleting = True
        for task in list(self._tasks.pop(app_id, set())):
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled or already failed
                pass
        orch = self.orchestrators.get(app_id)
        if orch is not None:
            try:
                await orch.teardown()
            except Exception:
                # Its containers cannot be stopped now (BackendUnavailable: a 503 until the engine
                # answers again; or the engine refused): the record stays, for another DELETE, and
                # the reconciler keeps watching.
                record.deleting = False
                raise
        self.records.pop(app_id, None)
        self.orchestrators.pop(app_id, None)
        self.store.remove(app_id)
        self._notify(record, None, "deleted")
        return True

    async def _delete_unreadable(self, bad: Unreadable) -> None:
        """Stop what an unreadable record still describes (the handles that parse), then free its id."""
        data = bad.data or {}
        try:
            backend = self.backend(str(data.get("backend") or self.default_backend))
        except (SpecError, BackendUnavailable) as e:
            log.warning("Cannot stop what %s describes: %s", bad.id, e)
            backend = None
        instances = data.get("instances") if isinstance(data.get("instances"), dict) else {}
        for insts in instances.values():
            for raw in insts if isinstance(insts, list) else []:
                try:
                    handle = handle_from_json(raw.get("handle") if isinstance(raw, dict) else None)
                except (ValueError, TypeError) as e:
                    log.warning("Skipping an instance of %s: %s", bad.id, e)
                    continue
                if handle is not None and backend is not None:
                    try:
                        await backend.stop(handle)
                    except Exception as e:  # noqa: BLE001 - stop all that can be stopped
                        log.warning("Could not stop an instance of %s: %s", bad.id, e)
        if backend is not None:
            try:
                await backend.cleanup(bad.id)
            except Exception as e:  # noqa: BLE001
                log.warning("Could not clean up %s: %s", bad.id, e)
        self.store.remove(bad.id)
        self._emit_deleted(bad.id)

    # ------------------------------------------------------------------ events

    def _changed(self, record: ApplianceRecord, inst: Instance | None) -> None:
        self._run_listeners(record, inst, "update")
        if record.id in self.records:
            self._save(record)
        self._emit(record, inst, "update")

    def _save(self, record: ApplianceRecord) -> None:
        """Persist, but never let a failed write (a full disk) stop what is under way.

        A teardown that raised halfway would leave processes running and the
        record behind; the state in memory stays right, and the next change that
        can be written brings the record up to date.
        """
        try:
            self.store.save(record)
        except OSError as e:
            log.error("Could not write the record of %s (%s); the state in memory is kept", record.id, e)

    def _notify(self, record: ApplianceRecord, inst: Instance | None, kind: str) -> None:
        self._run_listeners(record, inst, kind)
        self._emit(record, inst, kind)

    def _run_listeners(self, record: ApplianceRecord, inst: Instance | None, kind: str) -> None:
        for listener in self.listeners:
            try:
                listener(record, inst, kind)
            except Exception:  # noqa: BLE001 - a listener must not break orchestration
                log.exception("appliance listener failed")

    def _emit(self, record: ApplianceRecord, inst: Instance | None, kind: str) -> None:
        if not self._subscribers:
            return  # building the model costs a topological sort; nobody would read it
        event: dict[str, Any] = {"type": kind, "id": record.id, "time": time.time(),
                                 "state": record.state if kind != "deleted" else "deleted"}
        if inst is not None:
            event["instance"] = {"container": inst.container, "index": inst.index,
                                 "state": inst.state, "reason": inst.reason}
        if kind != "deleted":
            event["appliance"] = self.model(record)
        self._publish(event)

    def _emit_deleted(self, app_id: str) -> None:
        self._publish({"type": "deleted", "id": app_id, "time": time.time(), "state": "deleted"})

    def _publish(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                pass  # a stalled client misses events; it re-reads on reconnect

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)
