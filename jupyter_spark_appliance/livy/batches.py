"""Livy's batches: ``spark-submit`` in client mode against the master, one process each.

A batch is Livy's ``POST /batches`` (``file``, ``className``, ``args`` and the
session fields: ``pyFiles``, ``jars``, ``files``, ``archives``, ``conf``,
``driverMemory``, ...). Its settings and the Spark secret go to ``spark-submit``
in a ``--properties-file`` (mode 0600 in a 0700 directory, deleted when the
batch ends), not in argv, which every local user reads in ``ps``; only the
application (``file``), ``--class`` and the application's own ``args`` are on
the command line, as with Livy. The environment is the gateway's without its
credentials.

States as Livy's: ``starting`` (spark-submit is starting the driver),
``running`` (the driver is connected to the master: its log says so, with the
application id), then ``success`` (exit 0), ``dead`` (any other exit, the reason
in the log) or ``killed`` (DELETE). The log is spark-submit's output, kept in
memory (last lines) and in a rotated file, as drivers' logs are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..spark.home import SparkNotFound, find_spark_home
from ..spark.processes import stop_group
from .driver import LogBuffer, driver_environment
from .driver_main import java_properties
from .sessions import MAX_CONF_BYTES, LivyError, driver_settings, parse_id, validate_request

log = logging.getLogger(__name__)

BATCH_FIELDS = {"file", "className", "args"}
FINAL_STATES = {"success", "dead", "killed"}
FETCHABLE = {"hdfs", "viewfs", "s3", "s3a", "s3n", "gs", "abfs", "abfss", "wasb", "wasbs", "http", "https", "ftp"}
KEEP_FINISHED = 100  # finished batches listed before the oldest are forgotten
APP_ID = re.compile(r"Connected to Spark cluster with app ID (\S+)")
RUNNING_WORDS = (b"Connected to Spark cluster with app ID",)


def read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


@dataclass
class Batch:
    id: int
    name: str | None
    request: dict[str, Any]
    owner: str | None
    state: str = "starting"
    app_id: str | None = None
    log: LogBuffer = field(default_factory=lambda: LogBuffer(None))
    proc: subprocess.Popen[bytes] | None = None
    work_dir: Path | None = None
    exit_code: int | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "owner": self.owner,
                "proxyUser": self.request.get("proxyUser"), "state": self.state, "appId": self.app_id,
                "appInfo": {"driverLogUrl": None, "sparkUiUrl": None}, "log": self.log.tail(10)}


def validate_batch(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise LivyError(400, "the request body must be a JSON object")
    session_part = validate_request({k: v for k, v in body.items() if k not in BATCH_FIELDS | {"kind"}})
    request = {**session_part, **{k: body[k] for k in BATCH_FIELDS if k in body}}
    file = request.get("file")
    if not isinstance(file, str) or not file.strip():
        raise LivyError(400, "file: the application to run (a .py file, or a jar with className) is required")
    if len(file) > 4096:
        raise LivyError(400, "file: longer than 4096 characters")
    parsed = urlparse(file)
    if parsed.scheme in ("", "file", "local"):
        path = parsed.path if parsed.scheme else file
        if not os.path.isabs(path):
            raise LivyError(400, f"file: {file[:200]!r} must be an absolute path (or a URL Spark can fetch)")
        if not os.path.isfile(path):
            raise LivyError(400, f"file: {file[:200]!r} does not exist")
    elif parsed.scheme.lower() not in FETCHABLE:
        raise LivyError(400, f"file: {parsed.scheme[:40]!r} is not a scheme Spark fetches from "
                             f"({', '.join(sorted(FETCHABLE | {'file', 'local'}))})")
    class_name = request.get("className")
    if class_name is not None and (not isinstance(class_name, str)
                                   or not re.fullmatch(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*", class_name)):
        raise LivyError(400, "className: must be a Java class name such as com.example.Main")
    if file.endswith(".jar") and not class_name:
        raise LivyError(400, "className: required for a jar")
    args = request.get("args")
    if args is not None:
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise LivyError(400, "args: must be a list of strings")
        if sum(len(a) for a in args) > MAX_CONF_BYTES:
            raise LivyError(400, f"args: more than {MAX_CONF_BYTES // 1024} KB in all")
    return request


class BatchManager:
    def __init__(self, master: str, log_dir: Path, secret_file: str | None = None,
                 default_conf: dict[str, str] | None = None, max_batches: int = 0, python: str = sys.executable):
        self.master, self.log_dir, self.secret_file = master, log_dir, secret_file
        self.default_conf = dict(default_conf or {})
        # A batch is a new Spark application: it owns its executors while it runs.
        self.default_conf.pop("spark.scheduler.mode", None)
        self.max_batches = max_batches
        self.python = python
        self.batches: dict[int, Batch] = {}
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ requests

    def create(self, body: Any, owner: str | None) -> Batch:
        request = validate_batch(body)
        running = [b for b in self.batches.values() if b.state not in FINAL_STATES]
        if self.max_batches and len(running) >= self.max_batches:
            raise LivyError(429, f"too many batches running (limit {self.max_batches}: --max-batches)")
        name = request.get("name")
        if name is not None and any(b.name == name for b in self.batches.values()):
            raise LivyError(400, f"Duplicate batch name: {name}")
        try:
            spark_home = find_spark_home()
        except SparkNotFound as e:
            raise LivyError(503, f"cannot run spark-submit: {e}") from None
        self._loop = asyncio.get_running_loop()
        bid = self._next_id
        self._next_id += 1
        batch = Batch(bid, name, request, owner, log=LogBuffer(self.log_dir / f"batch-{bid}.log"))
        self.batches[bid] = batch
        self._start(batch, spark_home)
        self._forget_old()
        return batch

    def get(self, ident: str) -> Batch:
        number = parse_id(ident)
        batch = self.batches.get(number) if number is not None else None
        if batch is None:
            batch = next((b for b in self.batches.values() if b.name == ident), None)
        if batch is None:
            shown = ident if len(ident) <= 100 else ident[:100] + "..."
            raise LivyError(404, f"Batch '{shown}' not found.")
        return batch

    async def delete(self, batch: Batch) -> None:
        if batch.state not in FINAL_STATES:
            batch.state = "killed"
            if batch.proc is not None:
                await asyncio.to_thread(stop_group, batch.proc.pid, batch.proc, 10.0)
        self.batches.pop(batch.id, None)

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.delete(b) for b in list(self.batches.values()) if b.state not in FINAL_STATES))

    # ------------------------------------------------------------------ spark-submit

    def _properties(self, batch: Batch) -> dict[str, str]:
        conf = driver_settings(batch.request, self.default_conf)
        conf.update({"spark.master": self.master, "spark.submit.deployMode": "client",
                     "spark.app.name": batch.name or f"livy-batch-{batch.id}"})
        if self.secret_file:
            conf["spark.authenticate"] = "true"
            conf["spark.authenticate.secret"] = read_secret(self.secret_file)
        return conf

    def _start(self, batch: Batch, spark_home: Path) -> None:
        work = self.log_dir / f"batch-{batch.id}"
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        work.chmod(0o700)
        batch.work_dir = work
        props = work / "spark.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(java_properties(self._properties(batch)))
        argv = [str(spark_home / "bin" / "spark-submit"), "--properties-file", str(props), "--load-spark-defaults"]
        if batch.request.get("className"):
            argv += ["--class", batch.request["className"]]
        argv += [batch.request["file"], *(batch.request.get("args") or [])]
        env = driver_environment()
        env.setdefault("PYSPARK_PYTHON", self.python)
        env.setdefault("PYSPARK_DRIVER_PYTHON", self.python)
        try:
            batch.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
        except OSError as e:
            shutil.rmtree(work, ignore_errors=True)
            batch.state = "dead"
            batch.log.append(f"spark-submit did not start: {e}")
            return
        log.info("batch %d: spark-submit pid %d", batch.id, batch.proc.pid)
        threading.Thread(target=self._follow, args=(batch,), name=f"batch-{batch.id}", daemon=True).start()

    def _follow(self, batch: Batch) -> None:
        proc = batch.proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            batch.log.append(line)
            if batch.state == "starting" and any(w in raw for w in RUNNING_WORDS):
                m = APP_ID.search(line)
                self._call(self._running, batch, m.group(1) if m else None)
        proc.stdout.close()
        code = proc.wait()
        self._call(self._exited, batch, code)

    def _call(self, fn, *args: Any) -> None:  # noqa: ANN001
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the gateway is shutting down

    def _running(self, batch: Batch, app_id: str | None) -> None:
        if batch.state == "starting":
            batch.state = "running"
        batch.app_id = batch.app_id or app_id
        if batch.work_dir is not None:
            # spark-submit read its properties long ago: the secret leaves the disk.
            (batch.work_dir / "spark.properties").unlink(missing_ok=True)

    def _exited(self, batch: Batch, code: int) -> None:
        batch.exit_code, batch.finished = code, time.time()
        if batch.state != "killed":
            batch.state = "success" if code == 0 else "dead"
            if code != 0:
                reason = f"signal {-code}" if code < 0 else f"code {code}"
                batch.log.append(f"spark-submit exited with {reason}")
        batch.log.close()
        if batch.work_dir is not None:
            shutil.rmtree(batch.work_dir, ignore_errors=True)

    def _forget_old(self) -> None:
        done = sorted((b for b in self.batches.values() if b.state in FINAL_STATES), key=lambda b: b.finished or 0)
        for b in done[:max(0, len(done) - KEEP_FINISHED)]:
            self.batches.pop(b.id, None)
