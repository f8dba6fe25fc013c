"""Shared helpers for the benchmark scripts: a real Jupyter server and hand-run JVMs."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from jupyter_spark_appliance.cds import FAST_DAEMON_JAVA_OPTS
from jupyter_spark_appliance.ports import allocate_port
from jupyter_spark_appliance.spark_home import find_spark_home

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


def alive_workers(ui: str) -> int:
    try:
        with urllib.request.urlopen(ui + "/json/", timeout=2) as r:
            return sum(w["state"] == "ALIVE" for w in json.load(r)["workers"])
    except OSError:
        return -1


def hand_run(workers: int, java_opts: str | None = DAEMON_OPTS, cds_dir: Path | None = None) -> dict[str, float]:
    """Seconds to master ALIVE and to all workers ALIVE for plain spark-class JVMs.

    With ``cds_dir``, each JVM also starts from the class-data-sharing archive the
    extension recorded for its role: our exact flags, without our orchestration.
    """
    spark_class = str(find_spark_home() / "bin" / "spark-class")
    work = Path(tempfile.mkdtemp(prefix="jsa-hand-"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false -Dspark.worker.timeout=30",
           "SPARK_WORKER_OPTS": "-Dspark.worker.timeout=30"}
    if java_opts:
        env["SPARK_DAEMON_JAVA_OPTS"] = java_opts
    role_env = {"master": dict(env), "worker": dict(env)}
    if cds_dir is not None:
        for role in role_env:
            archive = next(Path(cds_dir).glob(f"spark-{role}-*.jsa"))
            role_env[role]["SPARK_DAEMON_JAVA_OPTS"] = f"{java_opts or ''} -XX:SharedArchiveFile={archive} -Xshare:auto"
    port, ui_port = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    ui = f"http://127.0.0.1:{ui_port}"
    procs = []
    out: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                       "--port", str(port), "--webui-port", str(ui_port)],
                                      env=role_env["master"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while True:
            try:
                with urllib.request.urlopen(ui + "/json/", timeout=2) as r:
                    if json.load(r)["status"] == "ALIVE":
                        break
            except OSError:
                pass
            time.sleep(0.1)
        out["master"] = time.monotonic() - t0
        t1 = time.monotonic()
        for i in range(workers):
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host",
                 "127.0.0.1", "--cores", "1", "--memory", "1024M", "--work-dir", str(work / f"w{i}")],
                env=role_env["worker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while alive_workers(ui) < workers:
            time.sleep(0.1)
        out["workers"] = time.monotonic() - t0
        out["worker_after_master"] = time.monotonic() - t1
        out["rss_mb"] = sum(psutil.Process(p.pid).memory_info().rss for p in procs) / 2**20
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    return out


def table(rows: list[tuple[str, float | None, float | None]], headers=("figure", "ours", "baseline")) -> str:
    lines = [f"{headers[0]:<44} {headers[1]:>10} {headers[2]:>10} {'ratio':>7}"]
    for name, ours, base in rows:
        ratio = f"{ours / base:7.2f}" if ours is not None and base else "      -"
        o = f"{ours:10.2f}" if ours is not None else "         -"
        b = f"{base:10.2f}" if base is not None else "         -"
        lines.append(f"{name:<44} {o} {b} {ratio}")
    return "\n".join(lines)
