"""Livy's sessions and statements: state machines and JSON shapes.

Sessions are mapped onto driver processes by their driver-level settings
(driverMemory, executor sizes, conf, ...): equal settings share a driver, so
six default sessions cost one JVM, not six. One default driver is started
with the gateway ("warm"), so a default session is idle as soon as it exists.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cds import ClassDataSharing, spark_app_conf
from ..spark_home import SparkNotFound, find_spark_home
from .driver import DriverProcess

log = logging.getLogger(__name__)

SUPPORTED_KINDS = {"pyspark": "pyspark", "python": "pyspark", "sql": "sql"}
UNSUPPORTED_KINDS = {"spark", "scala", "sparkr", "r"}
CREATE_FIELDS = {
    "kind", "proxyUser", "jars", "pyFiles", "files", "driverMemory", "driverCores", "executorMemory",
    "executorCores", "numExecutors", "archives", "queue", "name", "conf", "heartbeatTimeoutInSecond",
    "ttl", "idleTimeout",
}
FINAL_SESSION_STATES = {"error", "dead", "killed", "success", "shutting_down"}
MAX_STATEMENTS = 1000


class LivyError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status, self.msg = status, msg


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_duration(value: Any, field_name: str) -> float | None:
    """Livy durations: seconds as a number, or '10m', '1h', '30s'."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*", value)
        if m:
            n = float(m.group(1))
            return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
    raise LivyError(400, f"{field_name}: {value!r} is not a duration (e.g. 600, '10m', '1h')")


@dataclass
class Statement:
    id: int
    code: str
    kind: str | None
    state: str = "waiting"
    output: dict[str, Any] | None = None
    progress: float = 0.0
    started: int = 0
    completed: int = 0
    sent: bool = False  # handed to the driver (it may still be waiting there)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "code": self.code, "state": self.state, "output": self.output,
                "progress": self.progress, "started": self.started, "completed": self.completed}


@dataclass
class Session:
    id: int
    kind: str
    name: str | None
    request: dict[str, Any]
    owner: str | None
    driver_key: tuple
    state: str = "starting"
    statements: list[Statement] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    heartbeat_timeout: float = 0
    idle_timeout: float | None = None
    last_heartbeat: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    driver: DriverProcess | None = None
    created: float = field(default_factory=time.time)

    def to_json(self, log_lines: int = 10) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.id, "name": self.name,
            "appId": self.driver.app_id if self.driver else None,
            "owner": self.owner, "proxyUser": r.get("proxyUser"),
            "state": self.state, "kind": self.kind,
            "appInfo": {"driverLogUrl": None, "sparkUiUrl": self.driver.ui if self.driver else None,
                        "executorLogUrls": None},
            "log": self.all_log()[-log_lines:] if log_lines else [],
            "ttl": r.get("ttl"), "idleTimeout": r.get("idleTimeout"),
            "driverMemory": r.get("driverMemory"), "driverCores": r.get("driverCores"),
            "executorMemory": r.get("executorMemory"), "executorCores": r.get("executorCores"),
            "numExecutors": r.get("numExecutors"), "conf": r.get("conf", {}),
            "heartbeatTimeoutInSecond": self.heartbeat_timeout,
            "jars": r.get("jars", []), "pyFiles": r.get("pyFiles", []), "files": r.get("files", []),
            "archives": r.get("archives", []), "queue": r.get("queue"),
        }

    def all_log(self) -> list[str]:
        driver_log = self.driver.log_lines() if self.driver else []
        return driver_log + self.log

    def statement(self, stmt_id: int) -> Statement | None:
        return next((s for s in self.statements if s.id == stmt_id), None)

    def refresh_state(self) -> None:
        if self.state in FINAL_SESSION_STATES or self.state == "starting":
            return
        busy = any(s.state in ("waiting", "running", "cancelling") for s in self.statements)
        self.state = "busy" if busy else "idle"


@dataclass
class GatewayConfig:
    master: str
    log_dir: Path
    default_conf: dict[str, str] = field(default_factory=dict)
    warm: bool = True
    max_sessions_per_driver: int = 16
    idle_timeout: float | None = None
    cds_dir: Path | None = None  # class-data-sharing archives for drivers and executors


def driver_settings(request: dict[str, Any], defaults: dict[str, str]) -> dict[str, str]:
    """A session request's driver-level Spark conf (what decides driver sharing)."""
    conf = dict(defaults)
    mapping = {
        "driverMemory": "spark.driver.memory", "driverCores": "spark.driver.cores",
        "executorMemory": "spark.executor.memory", "executorCores": "spark.executor.cores",
        "queue": "spark.yarn.queue",
    }
    for key, conf_key in mapping.items():
        if request.get(key) is not None:
            conf[conf_key] = str(request[key])
    for key, conf_key in (("jars", "spark.jars"), ("pyFiles", "spark.submit.pyFiles"),
                          ("files", "spark.files"), ("archives", "spark.archives")):
        if request.get(key):
            conf[conf_key] = ",".join(request[key])
    if request.get("numExecutors") is not None:
        # A fixed size: standalone caps cores, and dynamic allocation would fight it.
        n = int(request["numExecutors"])
        cores = int(request.get("executorCores") or 1)
        conf["spark.dynamicAllocation.enabled"] = "false"
        conf["spark.executor.instances"] = str(n)
        conf["spark.cores.max"] = str(n * cores)
    conf.update({str(k): str(v) for k, v in (request.get("conf") or {}).items()})
    return conf


def validate_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise LivyError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        log.warning("ignoring unknown session fields: %s", ", ".join(unknown))
    request = {k: v for k, v in body.items() if k in CREATE_FIELDS}
    kind = request.get("kind", "pyspark")
    if not isinstance(kind, str):
        raise LivyError(400, "kind: must be a string")
    if kind in UNSUPPORTED_KINDS:
        raise LivyError(400, f"kind {kind!r} is not supported by this gateway: use pyspark, python or sql")
    if kind not in SUPPORTED_KINDS:
        raise LivyError(400, f"kind {kind!r} is unknown (pyspark, python, sql)")
    for key in ("driverMemory", "executorMemory", "name", "proxyUser", "queue"):
        if key in request and request[key] is not None and not isinstance(request[key], str):
            raise LivyError(400, f"{key}: must be a string")
    for key in ("driverMemory", "executorMemory"):
        if request.get(key) and not re.fullmatch(r"\d+[kmgtKMGT]?[bB]?", request[key]):
            raise LivyError(400, f"{key}: {request[key]!r} is not a memory size such as 512m or 2g")
    for key in ("driverCores", "executorCores", "numExecutors", "heartbeatTimeoutInSecond"):
        value = request.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise LivyError(400, f"{key}: must be a non-negative integer")
    for key in ("jars", "pyFiles", "files", "archives"):
        value = request.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise LivyError(400, f"{key}: must be a list of strings")
    conf = request.get("conf")
    if conf is not None and not isinstance(conf, dict):
        raise LivyError(400, "conf: must be an object")
    parse_duration(request.get("ttl"), "ttl")
    parse_duration(request.get("idleTimeout"), "idleTimeout")
    return request


class SessionManager:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.sessions: dict[int, Session] = {}
        self.drivers: dict[tuple, list[DriverProcess]] = {}
        self._next_id = 0
        self._driver_count = 0
        self._watchdog: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ drivers

    async def start(self) -> None:
        if self.config.warm:
            # Warmed at low priority: on a small machine it would otherwise compete with the
            # workers that are starting at the same moment (measured: +0.5 s to cluster ready).
            self._driver_for(self._key(self.config.default_conf), self.config.default_conf, nice=10)
        self._watchdog = asyncio.ensure_future(self._watch())

    @staticmethod
    def _key(conf: dict[str, str]) -> tuple:
        return tuple(sorted(conf.items()))

    def _driver_for(self, key: tuple, conf: dict[str, str], nice: int = 0) -> DriverProcess:
        for driver in self.drivers.get(key, []):
            if driver.state != "dead" and len(driver.sessions) < self.config.max_sessions_per_driver:
                return driver
        self._driver_count += 1
        n = self._driver_count
        # Archives are looked up per driver, so drivers started after the server's
        # background recording finished use them; a session's own conf wins.
        launch_conf = {**self._archive_conf(), **conf}
        driver = DriverProcess(key, self.config.master, launch_conf, self.config.log_dir / f"driver-{n}.log",
                               self._on_driver_event, name=f"livy-gateway-{n}", nice=nice)
        self.drivers.setdefault(key, []).append(driver)
        log.info("started driver %d (pid %d) for %d conf keys", n, driver.pid, len(conf))
        return driver

    def _archive_conf(self) -> dict[str, str]:
        if self.config.cds_dir is None:
            return {}
        try:
            return spark_app_conf(ClassDataSharing(self.config.cds_dir), find_spark_home())
        except SparkNotFound:
            return {}

    def _on_driver_event(self, driver: DriverProcess, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            for sid in list(driver.sessions):
                self.sessions[sid].log.append(f"driver ready: {driver.app_id}")
                driver.send(op="open", sid=sid, kind=self.sessions[sid].kind)
        elif kind == "opened":
            session = self.sessions.get(event["sid"])
            if session and session.state == "starting":
                session.state = "idle"
                self._pump(session)
        elif kind in ("started", "result"):
            session = self.sessions.get(event["sid"])
            stmt = session.statement(event["statement"]) if session else None
            if session is None or stmt is None:
                return
            if kind == "started":
                if stmt.state == "waiting":
                    stmt.state, stmt.started = "running", now_ms()
            else:
                stmt.completed, stmt.progress = now_ms(), 1.0
                if event.get("cancelled"):
                    stmt.state = "cancelled"
                else:
                    stmt.state, stmt.output = "available", event.get("output")
                session.last_activity = time.monotonic()
            session.refresh_state()
        elif kind == "exit":
            for sid in list(driver.sessions):
                session = self.sessions.get(sid)
                if session is None or session.state in ("killed", "shutting_down"):
                    continue
                session.state = "dead"
                session.log.append(f"the interpreter died: {driver.error}")
                for stmt in session.statements:
                    if stmt.state in ("waiting", "running", "cancelling"):
                        stmt.state, stmt.completed = "available", now_ms()
                        stmt.output = {"status": "error", "execution_count": stmt.id,
                                       "ename": "InterpreterError",
                                       "evalue": f"the interpreter died: {driver.error}", "traceback": []}
            siblings = self.drivers.get(driver.key, [])
            if driver in siblings:
                siblings.remove(driver)

    def _pump(self, session: Session) -> None:
        """Send waiting statements once the session is open (FIFO per session)."""
        if session.driver is None:
            return
        for stmt in session.statements:
            if stmt.state == "waiting" and not stmt.sent:
                stmt.sent = True
                session.driver.send(op="execute", sid=session.id, statement=stmt.id, code=stmt.code, kind=stmt.kind)
        session.refresh_state()

    # ------------------------------------------------------------------ sessions

    def create(self, body: Any, owner: str | None) -> Session:
        request = validate_request(body)
        name = request.get("name")
        if name is not None and any(s.name == name for s in self.sessions.values()):
            raise LivyError(400, f"Duplicate session name: {name}")
        conf = driver_settings(request, self.config.default_conf)
        key = self._key(conf)
        sid = self._next_id
        self._next_id += 1
        idle = parse_duration(request.get("ttl") or request.get("idleTimeout"), "ttl") or self.config.idle_timeout
        session = Session(sid, SUPPORTED_KINDS[request.get("kind", "pyspark")], name, request, owner, key,
                          heartbeat_timeout=float(request.get("heartbeatTimeoutInSecond") or 0),
                          idle_timeout=idle)
        self.sessions[sid] = session
        driver = self._driver_for(key, conf)
        session.driver = driver
        driver.sessions.add(sid)
        if driver.state == "ready":
            driver.send(op="open", sid=sid, kind=session.kind)
        elif driver.state == "dead":
            session.state = "dead"
        return session

    def get(self, ident: str) -> Session:
        session = None
        if ident.isdigit():
            session = self.sessions.get(int(ident))
        if session is None:
            session = next((s for s in self.sessions.values() if s.name == ident), None)
        if session is None:
            raise LivyError(404, f"Session '{ident}' not found.")
        session.last_heartbeat = time.monotonic()
        return session

    async def delete(self, session: Session) -> None:
        session.state = "shutting_down"
        driver = session.driver
        if driver is not None:
            driver.send(op="close", sid=session.id)
            driver.sessions.discard(session.id)
            if not driver.sessions and not self._is_warm(driver):
                await asyncio.to_thread(driver.stop)
        session.state = "killed"
        self.sessions.pop(session.id, None)

    def _is_warm(self, driver: DriverProcess) -> bool:
        if not self.config.warm or driver.key != self._key(self.config.default_conf):
            return False
        return self.drivers.get(driver.key, [None])[0] is driver

    # ------------------------------------------------------------------ statements

    def submit(self, session: Session, body: Any) -> Statement:
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            raise LivyError(400, "code: a string is required")
        kind = body.get("kind")
        if kind is not None:
            if kind in UNSUPPORTED_KINDS or kind not in SUPPORTED_KINDS:
                raise LivyError(400, f"statement kind {kind!r} is not supported: use pyspark, python or sql")
            kind = SUPPORTED_KINDS[kind]
        if session.state in FINAL_SESSION_STATES:
            raise LivyError(400, f"Session is in state {session.state}")
        stmt_id = session.statements[-1].id + 1 if session.statements else 0
        stmt = Statement(stmt_id, body["code"], kind)
        session.statements.append(stmt)
        del session.statements[:-MAX_STATEMENTS]
        session.last_activity = time.monotonic()
        if session.state not in ("starting",):
            self._pump(session)
        return stmt

    def cancel(self, session: Session, stmt: Statement) -> None:
        if stmt.state == "waiting":
            stmt.state, stmt.completed = "cancelled", now_ms()
            if session.driver and stmt.sent:
                session.driver.send(op="cancel", sid=session.id, statement=stmt.id)
        elif stmt.state == "running":
            stmt.state = "cancelling"
            if session.driver:
                session.driver.send(op="cancel", sid=session.id, statement=stmt.id)
        session.refresh_state()

    # ------------------------------------------------------------------ watchdog

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.heartbeat_timeout and now - session.last_heartbeat > session.heartbeat_timeout:
                    log.info("session %d missed its heartbeat; deleting", session.id)
                    await self.delete(session)
                elif (session.idle_timeout and session.state == "idle"
                      and now - session.last_activity > session.idle_timeout):
                    log.info("session %d idle for %.0f s; deleting", session.id, session.idle_timeout)
                    await self.delete(session)

    async def shutdown(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        drivers = [d for ds in self.drivers.values() for d in ds]
        await asyncio.gather(*(asyncio.to_thread(d.stop) for d in drivers))
