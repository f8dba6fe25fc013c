"""Shared helpers for the benchmark scripts: a real Jupyter server and hand-run JVMs."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from jupyter_spark_appliance.spark.cds import FAST_DAEMON_JAVA_OPTS
from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.standalone import (
    alive_workers,
    master_status,
    new_cluster,
    start_master,
    start_worker,
)

DAEMON_OPTS = FAST_DAEMON_JAVA_OPTS  # the extension's own flags, for the like-for-like baseline


@contextmanager
def jupyter_server(*extra: str):
    """A real `jupyter server` with the extension, isolated data and Sparkmagic dirs."""
    tmp = Path(tempfile.mkdtemp(prefix="jsa-bench-"))
    token, port = secrets.token_hex(16), allocate_port("127.0.0.1")
    env = {**os.environ, "SPARKMAGIC_CONF_DIR": str(tmp / "sparkmagic"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    log = open(tmp / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                             f"--port={port}", f"--IdentityProvider.token={token}", "--ip=127.0.0.1",
                             f"--ServerApp.root_dir={tmp}", *extra], env=env, stdout=log, stderr=log)
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    base = f"http://127.0.0.1:{port}/spark-appliance"
    deadline = time.monotonic() + 60
    while True:
        try:
            if session.get(base + "/templates", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError((tmp / "server.log").read_text()[-3000:])
        time.sleep(0.2)
    # The server records class-data-sharing archives in the background when it starts
    # (cds.py); measure the steady state, as a user's second minute would see it.
    cds = tmp / "data" / "spark_appliance" / "cds"
    deadline = time.monotonic() + 240
    while len([p for p in cds.glob("*.jsa") if not p.name.endswith(".tmp.jsa")]) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        yield session, base, tmp
    finally:
        proc.terminate()
        proc.wait(60)


def container(model: dict, cid: str) -> dict:
    return next(c for c in model["containers"] if c["id"] == cid)


def time_to_running(session, base: str, body: dict, app_id: str) -> tuple[dict[str, float], dict]:  # noqa: ANN001
    """POST ``body``; seconds until master, workers and Livy each run (20 ms polling), and the model."""
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    session.post(base + "/appliance", json=body).raise_for_status()
    while len(marks) < 3:
        model = session.get(f"{base}/appliance/{app_id}").json()
        if model["state"] == "failed":
            raise RuntimeError(model["reason"])
        now = time.monotonic() - t0
        for cid, key in (("spark-master", "master"), ("spark-worker", "workers"), ("livy", "livy")):
            if key not in marks and container(model, cid)["state"] == "running":
                marks[key] = now
        time.sleep(0.02)
    return marks, model


def wait_workers_running(session, base: str, app_id: str, n: int) -> None:  # noqa: ANN001
    """Until exactly ``n`` worker instances run (a scale answers 202 before it starts)."""
    while True:
        worker = container(session.get(f"{base}/appliance/{app_id}").json(), "spark-worker")
        running = sum(i["state"] == "running" for i in worker["instance_states"])
        if worker["state"] == "running" and running == n == worker["instances"]:
            return
        time.sleep(0.02)


def hand_run(workers: int, java_opts: str | None = DAEMON_OPTS, cds_dir: Path | None = None) -> dict[str, float]:
    """Seconds to master ALIVE and to all workers ALIVE for plain spark-class JVMs.

    With ``cds_dir``, each JVM also starts from the class-data-sharing archive the
    extension recorded for its role: our exact flags, without our orchestration.
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
            time.sleep(0.1)
        out["master"] = time.monotonic() - t0
        t1 = time.monotonic()
        for i in range(workers):
            start_worker(cluster, i, 1, 1024, opts["worker"])
        while alive_workers(cluster.ui_url) < workers:
            time.sleep(0.1)
        out["workers"] = time.monotonic() - t0
        out["worker_after_master"] = time.monotonic() - t1
        out["rss_mb"] = sum(psutil.Process(p.pid).memory_info().rss for p in cluster.procs) / 2**20
    finally:
        cluster.stop()
    return out


def table(rows: list[tuple[str, float | None, float | None]], headers=("figure", "ours", "baseline")) -> str:
    lines = [f"{headers[0]:<44} {headers[1]:>10} {headers[2]:>10} {'ratio':>7}"]
    for name, ours, base in rows:
        ratio = f"{ours / base:7.2f}" if ours is not None and base else "      -"
        o = f"{ours:10.2f}" if ours is not None else "         -"
        b = f"{base:10.2f}" if base is not None else "         -"
        lines.append(f"{name:<44} {o} {b} {ratio}")
    return "\n".join(lines)
