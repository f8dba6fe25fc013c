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
from .model import make_appliance_model
from .orchestrator import LaunchFailed, Orchestrator
from .spec import Appliance, Container, Problem, SpecError, parse_appliance
from .state import ApplianceRecord, Instance
from .store import Store
from .templates import render_template

log = logging.getLogger(__name__)


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
        self.records: dict[str, ApplianceRecord] = {}
        self.orchestrators: dict[str, Orchestrator] = {}
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.listeners: list[Listener] = []
        self._monitor: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ backends

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            factory = self._backend_factories.get(name)
            if factory is None:
                raise SpecError([Problem("backend", f"unknown backend {name!r} (known: {', '.join(self._backend_factories)})")])
            backend = factory()
            backend.available()  # raises BackendUnavailable before caching
            self._backends[name] = backend
        return self._backends[name]

    # ------------------------------------------------------------------ life cycle

    async def ensure_started(self) -> None:
        """Idempotent start: from the server's start hook, or the first request."""
        if self._monitor is None:
            await self.start()

    async def start(self) -> None:
        """Load records and re-adopt what still runs; start the liveness monitor."""
        self._monitor = asyncio.ensure_future(self._watch())
        for record in self.store.load_all():
            self._adopt(record)

    def _adopt(self, record: ApplianceRecord) -> None:
        self.records[record.id] = record
        try:
            backend = self.backend(record.backend)
        except (BackendUnavailable, SpecError) as e:
            for inst in record.all_instances():
                if inst.live:
                    inst.state, inst.reason = "failed", f"cannot re-adopt: {e}"
            record.reason = f"cannot re-adopt: {e}"
            self.store.save(record)
            return
        orch = self._orchestrator(record, backend)
        for inst in record.all_instances():
            if not inst.live:
                continue
            status = backend.exit_status(inst) if inst.info else "it had not started"
            if status is not None:
                orch.set_state(inst, "failed", f"gone while the server was down: {status}")
            elif inst.state != "running":
                container = record.appliance.container(inst.container)
                assert container is not None
                self._spawn(record.id, self._await_ready(orch, container, inst))
        self.store.save(record)
        log.info("Re-adopted appliance %s (%s)", record.id, record.state)

    @staticmethod
    async def _await_ready(orch: Orchestrator, container: Container, inst: Instance) -> None:
        try:
            await orch.wait_ready(container, inst)
        except LaunchFailed:
            pass  # the instance is failed, with its reason

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.monitor_interval)
            for orch in list(self.orchestrators.values()):
                try:
                    await orch.check_liveness()
                except Exception:  # noqa: BLE001 - the monitor must survive anything
                    log.exception("liveness check of %s failed", orch.record.id)

    async def shutdown(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        for app_id in list(self.records):
            record = self.records[app_id]
            for task in self._tasks.pop(app_id, set()):
                task.cancel()
            if self.stop_on_shutdown:
                log.info("Stopping appliance %s (stop_on_shutdown)", app_id)
                await self.delete(app_id)
            else:
                self.store.save(record)
        for backend in self._backends.values():
            await backend.shutdown()

    # ------------------------------------------------------------------ queries

    def list(self) -> list[dict[str, Any]]:
        return [self.model(r) for r in self.records.values()]

    def get(self, app_id: str) -> ApplianceRecord | None:
        return self.records.get(app_id)

    def model(self, record: ApplianceRecord) -> dict[str, Any]:
        return make_appliance_model(record, record.extra.get("public"))

    def logs(self, app_id: str, container_id: str, instance: int | None, tail: int) -> list[dict[str, Any]] | None:
        record = self.records.get(app_id)
        if record is None or record.appliance.container(container_id) is None:
            return None
        backend = self._backends.get(record.backend)
        out = []
        for inst in record.instances[container_id]:
            if instance is not None and inst.index != instance:
                continue
            lines = backend.logs(record, inst, tail) if backend and inst.info else []
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
        backend = self.backend(backend_name)
        problems = backend.check(appliance)
        if problems:
            raise SpecError(problems)
        # Both checks happen before any await, so two concurrent POSTs cannot both pass.
        if appliance.id in self.records or not self.store.claim(appliance.id):
            raise Conflict(f"an appliance with id {appliance.id!r} exists already")
        record = ApplianceRecord.new(appliance, backend_name, template=template, owner=self.owner)
        self.records[record.id] = record
        orch = self._orchestrator(record, backend)
        self.store.save(record)
        self._spawn(record.id, orch.launch())
        return record

    def _orchestrator(self, record: ApplianceRecord, backend: Backend) -> Orchestrator:
        orch = Orchestrator(record, backend, self._changed, start_timeout=self.start_timeout)
        self.orchestrators[record.id] = orch
        return orch

    def _spawn(self, app_id: str, coro: Any) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        tasks = self._tasks.setdefault(app_id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    # ------------------------------------------------------------------ scale / delete

    def scale(self, app_id: str, container_id: str, instances: Any) -> asyncio.Task[None]:
        """Validate, then scale in the background (the caller watches events)."""
        record = self.records[app_id]
        path = f"containers[{[c.id for c in record.appliance.containers].index(container_id)}].instances"
        container = record.appliance.container(container_id)
        assert container is not None
        if container.type != "service":
            raise SpecError([Problem(path, "only services can be scaled")])
        if isinstance(instances, bool) or not isinstance(instances, int) or instances < 0:
            raise SpecError([Problem("instances", f"must be an integer of 0 or more, not {instances!r}")])
        if instances > 64:
            raise SpecError([Problem("instances", f"must be at most 64, not {instances}")])
        orch = self.orchestrators[app_id]
        return self._spawn(app_id, orch.scale(container_id, instances))

    async def delete(self, app_id: str) -> bool:
        record = self.records.get(app_id)
        if record is None:
            return False
        for task in list(self._tasks.pop(app_id, set())):
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled or already failed
                pass
        orch = self.orchestrators.get(app_id)
        if orch is not None:
            await orch.teardown()
        self.records.pop(app_id, None)
        self.orchestrators.pop(app_id, None)
        self.store.remove(app_id)
        self._notify(record, None, "deleted")
        return True

    # ------------------------------------------------------------------ events

    def _changed(self, record: ApplianceRecord, inst: Instance | None) -> None:
        self._run_listeners(record, inst, "update")
        if record.id in self.records:
            self.store.save(record)
        self._emit(record, inst, "update")

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
