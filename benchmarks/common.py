"""Shared helpers for the benchmark scripts: a real Jupyter server, appliances on it, hand-run JVMs.

Everything a benchmark starts is torn down even when it fails: the server is
stopped (and with it every appliance it still runs, since ``stop_on_shutdown``
is on), appliances are DELETEd when their ``with`` block ends, hand-run JVMs
and client processes are stopped with their whole process group.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import requests
from requests.adapters import HTTPAdapter

from jupyter_spark_appliance.spark.cds import FAST_DAEMON_JAVA_OPTS
from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.processes import kill_group, stop_group
from jupyter_spark_appliance.spark.standalone import (
    alive_workers,
    master_status,
    new_cluster,
    start_master,
    start_worker,
)

DAEMON_OPTS = FAST_DAEMON_JAVA_OPTS  # the extension's own flags, for the like-for-like baseline
# Container id -> the key its "running" mark has in time_to_running's result (the older scripts' names).
MARKS = {"spark-master": "master", "spark-worker": "workers", "livy": "livy", "spark-connect": "connect"}


def http_session(auth: tuple[str, str] | None = None) -> requests.Session:
    """A client with a connection pool large enough for 20 sessions' threads at once (the default keeps 10)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.auth = auth
    return session


def machine(load: bool = True) -> str:
    """What the figures were measured on: they mean little without it (2 cores are easily oversubscribed).

    The load average says whether something else was running (a CI run, a build).
    """
    out = (f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GB RAM, "
           f"Python {platform.python_version()}")
    return out + (f", load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min)" if load else "")


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def jupyter_server(*extra: str) -> Iterator[tuple[requests.Session, str, Path]]:
    """A real `jupyter server` with the extension, isolated data and Sparkmagic dirs.

    Yields once the server answers and the class-data-sharing archives it records in
    the background (cds.py) exist: the figures are the steady state a user's second
    minute sees. Stopping the server stops every appliance it still runs.
    """
    tmp = Path(tempfile.mkdtemp(prefix="jsa-bench-"))
    token, port = secrets.token_hex(16), allocate_port("127.0.0.1")
    env = {**os.environ, "SPARKMAGIC_CONF_DIR": str(tmp / "sparkmagic"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    with open(tmp / "server.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                                 f"--port={port}", f"--IdentityProvider.token={token}", "--ip=127.0.0.1",
                                 f"--ServerApp.root_dir={tmp}", *extra], env=env, stdout=log, stderr=log)
    try:
        session = http_session()
        session.headers["Authorization"] = f"token {token}"
        base = f"http://127.0.0.1:{port}/spark-appliance"
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(base + "/templates", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((tmp / "server.log").read_text()[-3000:])
            time.sleep(0.2)
        wait_for_recording(tmp)
        yield session, base, tmp
    finally:
        proc.terminate()  # the server stops its appliances (stop_on_shutdown)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()  # its reaper still takes the appliances' processes with it
            proc.wait(30)


CDS_ROLES = ("spark-master", "spark-worker", "spark-driver", "spark-executor")
RECORDING_DONE = (b"Recorded class-data-sharing archives", b"Could not record class-data-sharing archives")


def wait_for_recording(tmp: Path, timeout: float = 300) -> None:
    """Until the server's background recording of the archives has ended (or all four exist).

    Not "until four archives exist": a recording can end without one (an executor
    that Spark's worker kills before its archive is written), and waiting for it
    would only waste the timeout.
    """
    cds = tmp / "data" / "spark_appliance" / "cds"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(archives(cds)) < len(CDS_ROLES):
        log = (tmp / "server.log").read_bytes()
        if any(line in log for line in RECORDING_DONE):
            return
        time.sleep(0.5)


def archive_roles(cds_dir: Path) -> str:
    """Which roles have an archive, and which do not: a missing one slows its role's start."""
    have = {p.name.rsplit("-", 1)[0] for p in archives(cds_dir)}
    missing = [r for r in CDS_ROLES if r not in have]
    return ", ".join(r for r in CDS_ROLES if r in have) + (f" (none for {', '.join(missing)})" if missing else "")


def archives(cds_dir: Path) -> list[Path]:
    """The finished class-data-sharing archives (a recording writes ``*.tmp.jsa`` first)."""
    return [p for p in Path(cds_dir).glob("*.jsa") if not p.name.endswith(".tmp.jsa")]


def backend_status(session: requests.Session, base: str) -> dict[str, str | None]:
    """Backend name -> None when usable, else the server's reason (no engine, not a swarm manager)."""
    out: dict[str, str | None] = {}
    for b in session.get(base + "/templates", timeout=30).json()["backends"]:
        out[b["name"]] = None if b["available"] else (b.get("reason") or "unavailable")
    return out


def container(model: dict, cid: str) -> dict:
    return next(c for c in model["containers"] if c["id"] == cid)


def get_model(session: requests.Session, base: str, app_id: str) -> dict:
    r = session.get(f"{base}/appliance/{app_id}", timeout=30)
    r.raise_for_status()
    return r.json()


def delete_appliance(session: requests.Session, base: str, app_id: str) -> float:
    """DELETE (it answers when everything is stopped); seconds it took. A 404 is fine: already gone."""
    t0 = time.monotonic()
    r = session.delete(f"{base}/appliance/{app_id}", timeout=300)
    if r.status_code != 404:
        r.raise_for_status()
    return time.monotonic() - t0


@contextmanager
def appliance(session: requests.Session, base: str, body: dict) -> Iterator[dict[str, float]]:
    """POST ``body``, yield its time_to_running marks (and ``model``); DELETE it however the block ends."""
    app_id = body["id"]
    try:
        marks, model = time_to_running(session, base, body, app_id)
        yield {**marks, "model": model}  # type: ignore[dict-item]
    finally:
        try:
            delete_appliance(session, base, app_id)
        except requests.RequestException as e:  # keep the block's own error; stopping the server stops it
            print(f"could not DELETE {app_id}: {e}", file=sys.stderr)


def time_to_running(session: requests.Session, base: str, body: dict, app_id: str,
                    timeout: float = 600) -> tuple[dict[str, float], dict]:
    """POST ``body``; seconds until each container runs (20 ms polling), and the model.

    Marks are keyed by MARKS' names ("master", "workers", "livy", "connect") and
    "running" for the whole appliance: the moment `%spark_appliance up` returns.
    """
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    session.post(base + "/appliance", json=body, timeout=60).raise_for_status()
    while True:
        model = get_model(session, base, app_id)
        now = time.monotonic() - t0
        if model["state"] == "failed":
            raise RuntimeError(f"{app_id} failed: {model['reason']}")
        if now > timeout:
            raise RuntimeError(f"{app_id} not running after {timeout:.0f} s: {model['state']}")
        for c in model["containers"]:
            key = MARKS.get(c["id"], c["id"])
            if key not in marks and c["state"] == "running":
                marks[key] = now
        if all(c["state"] == "running" for c in model["containers"]):
            marks["running"] = now
            return marks, model
        time.sleep(0.02)


def wait_workers_running(session: requests.Session, base: str, app_id: str, n: int, timeout: float = 600) -> None:
    """Until exactly ``n`` worker instances run (a scale answers 202 before it starts)."""
    deadline = time.monotonic() + timeout
    while True:
        worker = container(get_model(session, base, app_id), "spark-worker")
        running = sum(i["state"] == "running" for i in worker["instance_states"])
        if worker["state"] == "running" and running == n == worker["instances"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app_id}: {running} of {n} workers running after {timeout:.0f} s")
        time.sleep(0.02)


def process_tree_mb(pid: int, pss: bool = False) -> float:
    """RSS (or PSS, which splits shared pages such as a CDS archive's) of a process and all its descendants."""
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss if pss else p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def appliance_memory(data_dir: Path, app_id: str, pss: bool = False) -> dict[str, dict[str, float]]:
    """Container id -> {"total": MB of all its instances' process trees, "own": of their first processes}.

    Local backend only (its handles are pids); a worker's tree holds its executors,
    the gateway's its drivers, so the trees do not overlap and their sum is the
    appliance's memory.
    """
    record = json.loads((data_dir / "spark_appliance" / "appliances" / app_id / "record.json").read_text())
    out: dict[str, dict[str, float]] = {}
    for cid, insts in record["instances"].items():
        for inst in insts:
            try:
                pid = inst["handle"]["pid"]
                tree = process_tree_mb(pid, pss)
                own = psutil.Process(pid).memory_info().rss / 2**20
            except (psutil.Error, KeyError, TypeError):
                continue
            entry = out.setdefault(cid, {"total": 0.0, "own": 0.0, "instances": 0})
            entry["total"] += tree
            entry["own"] += own
            entry["instances"] += 1
    return out


@contextmanager
def python_process(code: str, stdin: dict[str, Any]) -> Iterator[subprocess.Popen[str]]:
    """A fresh Python (a new kernel's view) running ``code``, its own process group stopped at the end.

    What it needs (a token, Spark's RPC secret) goes in as JSON on stdin, never on
    its command line, where ``ps`` shows it to every user. PySpark's JVM is a child,
    so stopping the group stops it too, even on a timeout.
    """
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(stdin) + "\n")
        proc.stdin.flush()
        yield proc
    finally:
        if proc.poll() is None:
            stop_group(proc.pid, proc, grace=20)  # type: ignore[arg-type]
        kill_group(proc.pid)  # a JVM that outlived its Python


def run_python_json(code: str, stdin: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run ``code`` in a fresh Python; its last stdout line, which it prints as JSON."""
    with python_process(code, stdin) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"client still running after {timeout:.0f} s") from None
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client failed ({proc.returncode}): {(err or out)[-2000:]}")
    return json.loads(lines[-1])


def hand_run(workers: int, java_opts: str | None = DAEMON_OPTS, cds_dir: Path | None = None,
             memory_mb: int = 1024) -> dict[str, float]:
    """Seconds to master ALIVE and to all workers ALIVE for plain spark-class JVMs, and their RSS.

    ``java_opts=None`` is Spark's defaults (the baseline a user gets running
    ``spark-class`` by hand). With ``cds_dir``, each JVM also starts from the
    class-data-sharing archive the extension recorded for its role: our exact
    flags, without our orchestration.
    """
    cluster = new_cluster(Path(tempfile.mkdtemp(prefix="jsa-hand-")))
    opts = {"master": java_opts or "", "worker": java_opts or ""}
    if cds_dir is not None:
        for role in opts:
            archive = next(Path(cds_dir).glob(f"spark-{role}-*.jsa"))
            opts[role] = f"{opts[role]} -XX:SharedArchiveFile={archive} -Xshare:auto".strip()
    out: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        start_master(cluster, opts["master"])
        while (master_status(cluster.ui_url, timeout=2) or {}).get("status") != "ALIVE":
            if time.monotonic() - t0 > 180:
                raise RuntimeError(f"hand-run master not ALIVE; see {cluster.workdir}")
            time.sleep(0.1)
        out["master"] = time.monotonic() - t0
        t1 = time.monotonic()
        for i in range(workers):
            start_worker(cluster, i, 1, memory_mb, opts["worker"])
        while alive_workers(cluster.ui_url) < workers:
            if time.monotonic() - t1 > 180:
                raise RuntimeError(f"hand-run workers not ALIVE; see {cluster.workdir}")
            time.sleep(0.1)
        out["workers"] = time.monotonic() - t0
        out["worker_after_master"] = time.monotonic() - t1
        time.sleep(1)  # RSS once started, not mid-start
        out["rss_mb"] = sum(process_tree_mb(p.pid) for p in cluster.procs)
    finally:
        cluster.stop()
    return out


def table(rows: list[tuple[str, float | None, float | None]], headers: tuple[str, str, str] = ("figure", "ours",
                                                                                               "baseline")) -> str:
    lines = [f"{headers[0]:<44} {headers[1]:>10} {headers[2]:>10} {'ratio':>7}"]
    for name, ours, base in rows:
        ratio = f"{ours / base:7.2f}" if ours is not None and base else "      -"
        o = f"{ours:10.2f}" if ours is not None else "         -"
        b = f"{base:10.2f}" if base is not None else "         -"
        lines.append(f"{name:<44} {o} {b} {ratio}")
    return "\n".join(lines)
