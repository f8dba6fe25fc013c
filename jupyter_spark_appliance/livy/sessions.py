"""Livy's sessions and statements: state machines and JSON shapes.

Sessions are mapped onto driver processes by their driver-level settings
(driverMemory, executor sizes, conf, ...): equal settings share a driver, so
six default sessions cost one JVM, not six. One default driver is started
with the gateway ("warm"), so a default session is idle as soon as it exists.

Packing: a session goes to a compatible driver while that driver hosts fewer
than its limit (by default from its memory, see ``sessions_limit``); past the
limit a new driver is started only if the cluster has room for another
application, else the session is packed onto the least loaded compatible driver
anyway: a new application that gets no executor helps nobody.

Waiting: drivers report their running statements' tasks and their executors
(driver_main.Monitor). A statement with unfinished tasks and none running for
``notice_after`` seconds gets a notice (``notice`` in its JSON), and when the
reason is the cluster (no executor, no free cores), a line in its session's log;
``GET /appliance/resources`` sums it up for the Jupyter server. The master's
``/json/`` (its web UI) gives the cores.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spark.cds import ClassDataSharing, spark_app_conf
from ..spark.home import SparkNotFound, find_spark_home
from ..spark.standalone import master_status
from .driver import DriverProcess

log = logging.getLogger(__name__)

SUPPORTED_KINDS = {"pyspark": "pyspark", "python": "pyspark", "sql": "sql", "spark": "spark", "scala": "spark"}
UNSUPPORTED_KINDS = {"sparkr", "r"}
KINDS_TEXT = "pyspark, python, spark, scala or sql"
CREATE_FIELDS = {
    "kind", "proxyUser", "jars", "pyFiles", "files", "driverMemory", "driverCores", "executorMemory",
    "executorCores", "numExecutors", "archives", "queue", "name", "conf", "heartbeatTimeoutInSecond",
    "ttl", "idleTimeout",
}
FINAL_SESSION_STATES = {"error", "dead", "killed", "success", "shutting_down"}
MAX_STATEMENTS = 1000
STATUS_KEPT_FOR = 30.0  # seconds a last good master status stands in for one that did not answer
MAX_INT = 2**31 - 1  # the largest count or size a request may give
MAX_CONF_BYTES = 64 * 1024  # a session's conf (and each resource list), in all
MAX_DURATION = 10 * 365 * 86400.0  # seconds
REDACT = re.compile(r"(?i)secret|password|token|access[.]?key|credential")  # Spark's spark.redaction.regex, and more
REDACTED = "*********(redacted)"
MAX_ID_DIGITS = 18  # a longer id names nothing (and int() of 4300+ digits raises)
COMPLETION_TIMEOUT = 10.0  # seconds a completion may take in its driver before the gateway answers 504
SESSION_MEMORY_MB = 8  # a session's share of its driver's heap, for the default sessions-per-driver
MIN_SESSIONS_PER_DRIVER = 16


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
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if abs(value) <= MAX_DURATION:
            seconds = float(value)
    elif isinstance(value, str) and len(value) < 40:
        m = re.fullmatch(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*(ms|s|m|min|h|d)?\s*", value)
        if m:
            n = float(m.group(1))
            seconds = n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:60] + "..."
        raise LivyError(400, f"{field_name}: {shown} is not a duration (e.g. 600, '10m', '1h'; "
                             "at most 10 years, not negative)")
    return seconds


def parse_id(text: str) -> int | None:
    """An id in a path: ASCII digits only ('²'.isdigit() is true, int('²') fails); None if it is not one."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_ID_DIGITS:
        return None
    return int(text)


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
    # Why it makes no progress (not Livy's; Sparkmagic ignores it): None while tasks run.
    notice: str | None = None
    stalled_since: float | None = None  # monotonic: unfinished tasks, none running
    waiting_since: float | None = None  # wall clock: waiting for cluster resources (noticed)
    waited: float = 0.0  # seconds spent waiting for cluster resources
    gave_up: str | None = None  # waited past resource_wait_limit: cancelled, and the error it ends with

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "code": self.code, "state": self.state, "output": self.output,
                "progress": self.progress, "started": self.started, "completed": self.completed,
                "notice": self.notice}

    @property
    def active(self) -> bool:
        return self.state in ("waiting", "running", "cancelling")


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
            "log": self.log_tail(log_lines),
            "ttl": r.get("ttl"), "idleTimeout": r.get("idleTimeout"),
            "driverMemory": r.get("driverMemory"), "driverCores": r.get("driverCores"),
            "executorMemory": r.get("executorMemory"), "executorCores": r.get("executorCores"),
            "numExecutors": r.get("numExecutors"), "conf": redact(r.get("conf") or {}),
            "heartbeatTimeoutInSecond": int(self.heartbeat_timeout),
            "jars": r.get("jars", []), "pyFiles": r.get("pyFiles", []), "files": r.get("files", []),
            "archives": r.get("archives", []), "queue": r.get("queue"),
        }

    def log_tail(self, n: int) -> list[str]:
        """The last n lines of driver log + the session's own lines, reading only those."""
        if n <= 0:
            return []
        own = self.log[-n:]
        driver_log = self.driver.log.tail(n - len(own)) if self.driver and len(own) < n else []
        return driver_log + own

    def log_total(self) -> int:
        return (self.driver.log.total if self.driver else 0) + len(self.log)

    def log_slice(self, start: int, size: int) -> tuple[int, list[str]]:
        """Lines numbered start.. of the session's log (driver log lines, then its own lines)."""
        driver_total = self.driver.log.total if self.driver else 0
        if self.driver is not None and start < driver_total:
            first, lines = self.driver.log.slice(start, size)
            return first, lines + self.log[:max(0, size - len(lines))]
        own = start - driver_total
        return start, self.log[own:own + size]

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
    max_sessions_per_driver: int = 0  # 0: by driver memory (sessions_limit)
    idle_timeout: float | None = None
    cds_dir: Path | None = None  # class-data-sharing archives for drivers and executors
    master_ui: str | None = None  # the master's web UI (its /json/); None: guessed from the master's host
    max_drivers: int = 0  # 0: no limit
    notice_after: float = 3.0  # seconds a statement's tasks wait with none running before it gets a notice
    status_interval: float = 2.0  # seconds between reads of the master's /json/
    max_sessions: int = 200  # 0: no limit
    max_output_bytes: int = 1024 * 1024  # a statement's output JSON, truncated past it with a note
    spark_secret_file: str | None = None  # the appliance's Spark RPC secret (a 0600 file): drivers authenticate
    # Seconds a statement may wait for cluster resources before it ends with an error saying so
    # (Sparkmagic shows a statement's output only once it ends); 0: wait for as long as it takes.
    resource_wait_limit: float = 0.0


def supported_kind(kind: Any, what: str) -> str:
    """A statement's or a completion's kind, as the driver names it (python -> pyspark, scala -> spark)."""
    if not isinstance(kind, str):
        raise LivyError(400, f"kind: must be a string ({KINDS_TEXT})")
    if kind not in SUPPORTED_KINDS:
        raise LivyError(400, f"{what} {kind[:100]!r} is not supported: use {KINDS_TEXT}")
    return SUPPORTED_KINDS[kind]


def memory_mb(value: str | None, default_mb: int) -> int:
    """A JVM memory size as Spark reads spark.*.memory (a bare number is MiB)."""
    if not value:
        return default_mb
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", str(value).lower())
    if not m:
        return default_mb
    n, unit = int(m.group(1)), m.group(2) or "m"
    return max(1, int(n * {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]))


def sessions_limit(conf: dict[str, str], configured: int) -> int:
    """Sessions one driver hosts before another is considered: configured, else by its heap."""
    if configured > 0:
        return configured
    return max(MIN_SESSIONS_PER_DRIVER, memory_mb(conf.get("spark.driver.memory"), 1024) // SESSION_MEMORY_MB)


def executor_needs(conf: dict[str, str]) -> tuple[int, int]:
    """(cores, MB) one executor of this conf asks a worker for."""
    return int(conf.get("spark.executor.cores") or 1), memory_mb(conf.get("spark.executor.memory"), 1024)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class ClusterStatus:
    """The parts of the standalone master's ``/json/`` the gateway uses."""

    cores_total: int
    cores_used: int
    workers: list[dict[str, Any]]  # ALIVE ones
    apps: list[dict[str, Any]]  # activeapps: id, name, cores (granted), state
    checked: float = field(default_factory=time.time)

    @property
    def cores_free(self) -> int:
        return max(0, self.cores_total - self.cores_used)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ClusterStatus:
        workers = [w for w in data.get("workers") or [] if w.get("state") == "ALIVE"]
        return cls(cores_total=sum(int(w.get("cores") or 0) for w in workers),
                   cores_used=sum(int(w.get("coresused") or 0) for w in workers),
                   workers=workers, apps=list(data.get("activeapps") or []))

    def fits(self, cores: int, mb: int) -> bool:
        return any(int(w.get("cores", 0)) - int(w.get("coresused", 0)) >= cores
                   and int(w.get("memory", 0)) - int(w.get("memoryused", 0)) >= mb for w in self.workers)

    def app(self, app_id: str | None) -> dict[str, Any] | None:
        return next((a for a in self.apps if a.get("id") == app_id), None) if app_id else None


def guess_master_ui(master: str) -> str | None:
    """http://HOST:8080 for spark://HOST:PORT (the master's default web UI port)."""
    m = re.fullmatch(r"spark://([^:/,]+)(:\d+)?/?", master)
    return f"http://{m.group(1)}:8080" if m else None


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


def redact(conf: dict[str, str]) -> dict[str, str]:
    """A session's conf as its JSON shows it: secret values (S3 keys, tokens) redacted, as Spark's UI does."""
    return {k: REDACTED if REDACT.search(k) else v for k, v in conf.items()}


def current_user() -> str:
    """The user the gateway (and so every driver) runs as: the only proxyUser it accepts."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        import os

        return str(os.getuid())


def _conf_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise LivyError(400, f"conf: the value of {key[:100]!r} must be a string, number or boolean, "
                         f"not {type(value).__name__}")


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
        raise LivyError(400, f"kind {kind!r} is not supported by this gateway: use {KINDS_TEXT}")
    if kind not in SUPPORTED_KINDS:
        raise LivyError(400, f"kind {kind[:100]!r} is unknown ({KINDS_TEXT})")
    for key in ("driverMemory", "executorMemory", "name", "proxyUser", "queue"):
        if key in request and request[key] is not None and not isinstance(request[key], str):
            raise LivyError(400, f"{key}: must be a string")
    proxy = request.get("proxyUser")
    if proxy is not None and proxy != current_user():
        raise LivyError(400, f"proxyUser: {proxy[:100]!r} cannot be impersonated: this gateway runs every "
                             f"session as {current_user()!r} (leave proxyUser out, or give that user)")
    for key in ("driverMemory", "executorMemory"):
        if request.get(key) and not re.fullmatch(r"\d+[kmgtKMGT]?[bB]?", request[key]):
            raise LivyError(400, f"{key}: {request[key]!r} is not a memory size such as 512m or 2g")
    for key in ("driverCores", "executorCores", "numExecutors", "heartbeatTimeoutInSecond"):
        value = request.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT):
            raise LivyError(400, f"{key}: must be an integer from 0 to {MAX_INT}")
    for key in ("jars", "pyFiles", "files", "archives"):
        value = request.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise LivyError(400, f"{key}: must be a list of strings")
        if value and len(json.dumps(value)) > MAX_CONF_BYTES:
            raise LivyError(400, f"{key}: more than {MAX_CONF_BYTES // 1024} KB in all")
    conf = request.get("conf")
    if conf is not None:
        if not isinstance(conf, dict):
            raise LivyError(400, "conf: must be an object")
        request["conf"] = conf = {str(k): _conf_value(str(k), v) for k, v in conf.items()}
        if any(not k.strip() for k in conf):
            raise LivyError(400, "conf: a key is empty")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in conf.items())
        if size > MAX_CONF_BYTES:
            raise LivyError(400, f"conf: {size} bytes, more than the limit of {MAX_CONF_BYTES // 1024} KB")
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
        self._tasks: list[asyncio.Task[None]] = []
        # The master's web UI: given, or guessed (then trusted only once its /json/ names our master).
        self._master_ui = config.master_ui or guess_master_ui(config.master)
        self._ui_guessed = not config.master_ui
        self.cluster: ClusterStatus | None = None
        # Completions waiting for their driver's answer: request number -> (driver, future).
        self._completions: dict[int, tuple[DriverProcess, asyncio.Future[list[str]]]] = {}
        self._next_completion = 0
        self.completion_timeout = COMPLETION_TIMEOUT

    # ------------------------------------------------------------------ drivers

    async def start(self) -> None:
        if self.config.warm:
            # Before the first await: the server listens already, and a session created while the
            # cluster's status is read would otherwise start a driver of its own beside the warm one.
            # Warmed at low priority: on a small machine it would otherwise compete with the
            # workers that are starting at the same moment (measured: +0.5 s to cluster ready).
            self._new_driver(self._key(self.config.default_conf), self.config.default_conf, nice=10)
        await self.refresh_cluster()
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._poll_master())]

    @staticmethod
    def _key(conf: dict[str, str]) -> tuple:
        return tuple(sorted(conf.items()))

    def live_drivers(self) -> list[DriverProcess]:
        return [d for ds in self.drivers.values() for d in ds if d.state != "dead"]

    def _room_for(self, conf: dict[str, str]) -> bool | None:
        """Can the cluster give a new application an executor? None: unknown.

        Cores a worker offers now are not room if this gateway's own drivers that hold
        none yet will want them for their first job: those are counted as taken.
        """
        status = self.cluster
        if status is None:
            return None
        cores, mb = executor_needs(conf)
        reserved = 0
        for driver in self.live_drivers():
            app = status.app(driver.app_id)
            if not driver.executors and not (app and int(app.get("cores") or 0) > 0):
                reserved += executor_needs(driver.conf)[0]
        return status.cores_free - reserved >= cores and status.fits(cores, mb)

    def _place(self, key: tuple, conf: dict[str, str]) -> tuple[DriverProcess, str | None]:
        """The driver for a new session with this conf, and a line for its log if the choice needs one."""
        live = [d for d in self.drivers.get(key, []) if d.state != "dead"]
        limit = sessions_limit(conf, self.config.max_sessions_per_driver)
        roomy = [d for d in live if len(d.sessions) < limit]
        if roomy:
            return roomy[0], None
        capped = 0 < self.config.max_drivers <= len(self.live_drivers())
        room = self._room_for(conf)
        if live and (capped or room is False):
            driver = min(live, key=lambda d: len(d.sessions))
            why = (f"the gateway runs its maximum of {plural(self.config.max_drivers, 'driver')}" if capped
                   else "the cluster has no room for another Spark application")
            log.info("packing a session onto %s beyond %d sessions: %s", driver.name, limit, why)
            return driver, (f"sharing driver {driver.name} with {len(driver.sessions)} other sessions "
                            f"(more than its {limit}): {why}")
        if capped:
            raise LivyError(400, f"cannot start another Spark driver: the gateway already runs "
                                 f"{plural(len(self.live_drivers()), 'driver')} (its limit, --max-drivers). "
                                 "Close other sessions, or create this one with the default settings "
                                 "(no driver or executor sizes, no conf) to share a running driver.")
        driver = self._new_driver(key, conf)
        note = None
        if room is False:
            note = ("waiting for cluster resources: this session's settings need their own Spark "
                    f"application ({driver.name}), and its Spark jobs will wait: the cluster has "
                    f"{self._cluster_words(driver)}")
        return driver, note

    def _new_driver(self, key: tuple, conf: dict[str, str], nice: int = 0) -> DriverProcess:
        self._driver_count += 1
        n = self._driver_count
        # Archives are looked up per driver, so drivers started after the server's
        # background recording finished use them; a session's own conf wins.
        launch_conf = {**self._archive_conf(), **conf}
        options = {"max_output_bytes": self.config.max_output_bytes,
                   "secret_file": self.config.spark_secret_file,
                   "work_dir": str(self.config.log_dir / f"driver-{n}")}
        driver = DriverProcess(key, self.config.master, launch_conf, self.config.log_dir / f"driver-{n}.log",
                               self._on_driver_event, name=f"livy-gateway-{n}", nice=nice, options=options)
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
                if event.get("error"):
                    session.state = "error"
                    session.log.append(f"the session's interpreter did not start: {event['error']}")
                    return
                session.state = "idle"
                self._pump(session)
        elif kind == "executors":
            driver.executors = int(event.get("count") or 0)
            driver.running_tasks = int(event.get("running") or 0)
        elif kind in ("started", "result", "tasks"):
            session = self.sessions.get(event["sid"])
            stmt = session.statement(event["statement"]) if session else None
            if session is None or stmt is None:
                return
            if kind == "tasks":
                self._on_tasks(session, stmt, event)
                return
            if kind == "started":
                if stmt.state == "waiting":
                    stmt.state, stmt.started = "running", now_ms()
            else:
                self._finish(session, stmt, event)
            session.refresh_state()
        elif kind == "completion":
            waiting = self._completions.pop(event.get("request"), None)
            if waiting is not None and not waiting[1].done():
                waiting[1].set_result([str(c) for c in event.get("candidates") or []])
        elif kind == "exit":
            for number, (owner, future) in list(self._completions.items()):
                if owner is driver:
                    del self._completions[number]
                    if not future.done():
                        future.set_exception(LivyError(400, "Session is in state dead"))
            for sid in list(driver.sessions):
                session = self.sessions.get(sid)
                if session is None or session.state in ("killed", "shutting_down"):
                    continue
                session.state = "dead"
                session.log.append(f"the interpreter died: {driver.error}")
                for stmt in session.statements:
                    if stmt.active:
                        stmt.state, stmt.completed = "available", now_ms()
                        stmt.output = {"status": "error", "execution_count": stmt.id,
                                       "ename": "InterpreterError",
                                       "evalue": f"the interpreter died: {driver.error}", "traceback": []}
            siblings = self.drivers.get(driver.key, [])
            if driver in siblings:
                siblings.remove(driver)

    def _on_tasks(self, session: Session, stmt: Statement, event: dict[str, Any]) -> None:
        if stmt.state not in ("running", "cancelling"):
            return
        done, total, running = int(event["done"]), int(event["total"]), int(event["running"])
        if total:
            # Livy's progress: the job group's completed tasks over its tasks; never backwards,
            # and 1.0 only once the statement is done (a later job may add tasks).
            stmt.progress = max(stmt.progress, min(0.99, round(done / total, 4)))
        if event.get("active") and running == 0 and done < total:
            if stmt.stalled_since is None:
                stmt.stalled_since = time.monotonic()
        elif stmt.stalled_since is not None:
            self._unstall(session, stmt)

    def _unstall(self, session: Session, stmt: Statement) -> None:
        stmt.stalled_since, stmt.notice = None, None
        if stmt.waiting_since is not None:
            waited = time.time() - stmt.waiting_since
            stmt.waited += waited
            stmt.waiting_since = None
            session.log.append(f"statement {stmt.id}: cluster resources granted after {waited:.0f} s; running")

    def _finish(self, session: Session, stmt: Statement, event: dict[str, Any]) -> None:
        if stmt.stalled_since is not None:
            self._unstall(session, stmt)
        stmt.completed, stmt.progress = now_ms(), 1.0
        if stmt.gave_up is not None:
            # Livy's shape for a failed statement: "available" with an error output, which
            # Sparkmagic prints (evalue, then traceback) in the cell that waited.
            stmt.state = "available"
            stmt.output = {"status": "error", "execution_count": stmt.id, "ename": "ClusterResourcesUnavailable",
                           "evalue": stmt.gave_up, "traceback": []}
        elif event.get("cancelled"):
            stmt.state = "cancelled"
        else:
            stmt.state, stmt.output = "available", event.get("output")
        if stmt.waited >= 1 and stmt.gave_up is None:
            stmt.notice = f"waited {stmt.waited:.0f} s for cluster resources"
            output = stmt.output
            # Sparkmagic shows an error's evalue and traceback: say there why it took so long. An ok
            # result's data stays exact (Sparkmagic's %%sql parses text/plain line by line).
            if output and output.get("status") == "error":
                output["traceback"] = [f"({stmt.notice})\n"] + list(output.get("traceback") or [])
        session.last_activity = time.monotonic()

    def _pump(self, session: Session) -> None:
        """Send waiting statements once the session is open (FIFO per session)."""
        if session.driver is None:
            return
        for stmt in session.statements:
            if stmt.state == "waiting" and not stmt.sent:
                stmt.sent = True
                session.driver.send(op="execute", sid=session.id, statement=stmt.id, code=stmt.code, kind=stmt.kind)
        session.refresh_state()

    # ------------------------------------------------------------------ resources

    async def refresh_cluster(self) -> None:
        ui = self._master_ui
        if ui is None:
            return
        data = await asyncio.to_thread(master_status, ui, 3.0)
        if data is None:
            # One slow answer on a loaded machine is not a cluster with no cores: the last status
            # stands for a while (its "checked" says how old it is), so a statement whose executor
            # is starting is not counted as waiting for resources (and given up on) meanwhile.
            age = time.time() - self.cluster.checked if self.cluster is not None else 0.0
            if age > STATUS_KEPT_FOR:
                log.info("the master's web UI %s has not answered for %.0f s; cores are unknown", ui, age)
                self.cluster = None
            return
        if self._ui_guessed:
            if str(data.get("url", "")).rstrip("/") != self.config.master.rstrip("/"):
                log.info("%s is not the web UI of %s; cores are unknown (give --master-ui)", ui,
                         self.config.master)
                self._master_ui, self.cluster = None, None
                return
            self._ui_guessed = False
        self.cluster = ClusterStatus.parse(data)

    async def _poll_master(self) -> None:
        while self._master_ui is not None:
            await asyncio.sleep(self.config.status_interval)
            try:
                await self.refresh_cluster()
            except Exception:  # noqa: BLE001 - keep polling; a bad answer is not fatal
                log.exception("reading the master's status")

    def resource_message(self, driver: DriverProcess) -> str:
        """Why an application with no executor has none, in the words a user can act on."""
        return "waiting for cluster resources: " + self._cluster_words(driver)

    def _cluster_words(self, driver: DriverProcess) -> str:
        status = self.cluster
        if status is None:
            return "no executor yet (the cluster may have no free cores); scale the workers"
        text = f"{status.cores_free} of {plural(status.cores_total, 'core')} free"
        if status.cores_free:
            cores, mb = executor_needs(driver.conf)
            text += f", but no worker has {plural(cores, 'core')} and {mb} MB free for an executor"
        holders = [a for a in status.apps if int(a.get("cores") or 0) > 0 and a.get("id") != driver.app_id]
        if holders:
            text += " (held by " + ", ".join(f"{a.get('name')}: {plural(int(a['cores']), 'core')}"
                                            for a in holders) + ")"
        own = [a for a in holders if str(a.get("name", "")).startswith("livy-gateway-")]
        idle = self.config.default_conf.get("spark.dynamicAllocation.executorIdleTimeout")
        if own and idle:
            text += f"; this gateway's idle executors are released after {idle}"
        return text + "; scale the workers"

    def _stall_message(self, driver: DriverProcess) -> tuple[str, bool]:
        """A stalled statement's notice, and whether it waits for the cluster (else within its driver)."""
        status = self.cluster
        if not driver.executors:
            app = status.app(driver.app_id) if status else None
            if app and int(app.get("cores") or 0) > 0:
                return (f"starting an executor: the master granted {plural(int(app['cores']), 'core')}", False)
            if status is not None and status.fits(*executor_needs(driver.conf)):
                # The master grants a free core as soon as it is asked; until its next status says
                # so this is a start, not a wait for the cluster (and not counted toward the limit).
                return "starting an executor: the cluster has a free core for it", False
            return self.resource_message(driver), True
        if not driver.running_tasks:
            return "starting: the executor has joined and runs no task yet", False
        busy = (f"waiting for a free core: this session's Spark application has "
                f"{plural(driver.executors, 'executor')}, busy with other statements' tasks")
        if status is not None and not status.fits(*executor_needs(driver.conf)):
            return f"{busy}, and the cluster has {status.cores_free} of {plural(status.cores_total, 'core')} " \
                   "free; scale the workers", True
        return busy, False

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for session in list(self.sessions.values()):
            driver = session.driver
            if driver is None:
                continue
            for stmt in session.statements:
                if not stmt.active or stmt.stalled_since is None or now - stmt.stalled_since < self.config.notice_after:
                    continue
                message, for_cluster = self._stall_message(driver)
                stmt.notice = message
                if for_cluster and stmt.waiting_since is None:
                    stmt.waiting_since = time.time() - (now - stmt.stalled_since)
                    session.log.append(f"statement {stmt.id}: {message}")
                    log.warning("session %d statement %d: %s", session.id, stmt.id, message)
                limit = self.config.resource_wait_limit
                # Only a driver with no executor at all is given up on: one whose executors are
                # busy with other sessions' statements works through them (FAIR pools), however long.
                if (for_cluster and limit > 0 and not driver.executors and stmt.gave_up is None
                        and stmt.state == "running" and stmt.waiting_since is not None
                        and time.time() - stmt.waiting_since >= limit):
                    self._give_up(session, stmt, message, limit)

    def _give_up(self, session: Session, stmt: Statement, message: str, limit: float) -> None:
        """A statement that waited ``limit`` seconds for the cluster: cancel it, and say why in its output.

        Sparkmagic shows nothing of a statement until it ends, so a cell that
        waits for cores the cluster does not have would look hung; ending it
        with the reason tells the user what to do (add a worker, run it again).
        """
        stmt.gave_up = (f"{message}. Gave up after {limit:.0f} s (the gateway's --resource-wait-limit): "
                        "add a worker (the Spark appliance panel's \"Add a worker\") and run the statement again.")
        session.log.append(f"statement {stmt.id}: cancelled after waiting {limit:.0f} s for cluster resources")
        log.warning("session %d statement %d: cancelled after waiting %.0f s for cluster resources",
                    session.id, stmt.id, limit)
        self.cancel(session, stmt)

    def resources(self) -> dict[str, Any]:
        """``GET /appliance/resources``: who waits for the cluster, and what the cluster has."""
        waiting = [(stmt.waiting_since, stmt, s) for s in self.sessions.values() for stmt in s.statements
                   if stmt.active and stmt.waiting_since is not None]
        waiting.sort(key=lambda w: w[0])
        status = self.cluster
        return {
            "waiting_sessions": len({s.id for _, _, s in waiting}),
            "waiting_since": int(waiting[0][0] * 1000) if waiting else None,
            "cores_total": status.cores_total if status else None,
            "cores_free": status.cores_free if status else None,
            "workers": len(status.workers) if status else None,
            "applications_waiting": sum(a.get("state") == "WAITING" for a in status.apps) if status else None,
            "message": waiting[0][1].notice if waiting else None,
            "drivers": [{"name": d.name, "app_id": d.app_id, "state": d.state, "sessions": len(d.sessions),
                         "executors": d.executors,
                         "cores": int((status.app(d.app_id) or {}).get("cores") or 0) if status else None}
                        for d in self.live_drivers()],
            "master_ui": self._master_ui if status else None,
            "checked": int(status.checked * 1000) if status else None,
        }

    # ------------------------------------------------------------------ sessions

    def create(self, body: Any, owner: str | None) -> Session:
        request = validate_request(body)
        limit = self.config.max_sessions
        if limit and len(self.sessions) >= limit:
            raise LivyError(429, f"too many sessions (limit {limit}: --max-sessions); delete idle sessions first")
        name = request.get("name")
        if name is not None and any(s.name == name for s in self.sessions.values()):
            raise LivyError(400, f"Duplicate session name: {name}")
        conf = driver_settings(request, self.config.default_conf)
        key = self._key(conf)
        driver, note = self._place(key, conf)
        sid = self._next_id
        self._next_id += 1
        idle = parse_duration(request.get("ttl") or request.get("idleTimeout"), "ttl") or self.config.idle_timeout
        session = Session(sid, SUPPORTED_KINDS[request.get("kind", "pyspark")], name, request, owner, key,
                          heartbeat_timeout=float(request.get("heartbeatTimeoutInSecond") or 0),
                          idle_timeout=idle)
        if note:
            session.log.append(note)
        self.sessions[sid] = session
        session.driver = driver
        driver.sessions.add(sid)
        if driver.state == "ready":
            driver.send(op="open", sid=sid, kind=session.kind)
        elif driver.state == "dead":
            session.state = "dead"
        else:
            driver.hurry()  # a user now waits for it
        return session

    def get(self, ident: str) -> Session:
        session = None
        number = parse_id(ident)
        if number is not None:
            session = self.sessions.get(number)
        if session is None:
            session = next((s for s in self.sessions.values() if s.name == ident), None)
        if session is None:
            shown = ident if len(ident) <= 100 else ident[:100] + "..."
            raise LivyError(404, f"Session '{shown}' not found.")
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
            kind = supported_kind(kind, "statement kind")
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

    async def complete(self, session: Session, body: dict[str, Any]) -> list[str]:
        """``POST /sessions/{id}/completion``: Livy's CompletionRequest ``{code, kind, cursor}``.

        Livy asks the session's interpreter for ``kind`` (``ensureRunning``: only a started
        session, else "Session is in state ..."); the driver answers from a thread apart
        from the session's statement thread, so a busy session still completes. ``kind``
        defaults to the session's and ``cursor`` to the end of ``code`` (Livy needs both).
        ``cursor`` counts UTF-16 code units, as Livy's JVM does.
        """
        code = body.get("code")
        if not isinstance(code, str):
            raise LivyError(400, "code: a string is required")
        kind = body.get("kind")
        kind = session.kind if kind is None else supported_kind(kind, "kind:")
        length = len(code.encode("utf-16-le", "surrogatepass")) // 2
        cursor = body.get("cursor", length)
        if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= length:
            raise LivyError(400, f"cursor: must be an integer from 0 to {length} (the length of code)")
        if session.state not in ("idle", "busy") or session.driver is None:
            raise LivyError(400, f"Session is in state {session.state}")
        session.last_activity = time.monotonic()  # Livy's recordActivity
        number = self._next_completion
        self._next_completion += 1
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._completions[number] = (session.driver, future)
        session.driver.send(op="complete", sid=session.id, request=number, code=code,
                            kind=kind, cursor=cursor)
        try:
            return await asyncio.wait_for(future, self.completion_timeout)
        except asyncio.TimeoutError:
            raise LivyError(504, f"completion: the session's driver did not answer within "
                                 f"{self.completion_timeout:.0f} s") from None
        finally:
            self._completions.pop(number, None)

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
            await asyncio.sleep(0.5)
            self._check_stalls()
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
        for task in self._tasks:
            task.cancel()
        drivers = [d for ds in self.drivers.values() for d in ds]
        await asyncio.gather(*(asyncio.to_thread(d.stop) for d in drivers))
