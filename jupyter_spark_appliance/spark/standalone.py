"""A Spark standalone cluster run by hand, outside any appliance, and the master's /json/.

Three users need *a* cluster without the orchestrator: the recording of
class-data-sharing archives (a throwaway master and worker), the tests of
components that only need a master (the Livy gateway), and the benchmarks'
baselines (plain ``spark-class`` JVMs). They all start the daemons with the
role catalogue's own commands, so the flags are the appliance's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .child_env import child_environment
from .home import find_spark_home
from .logwatch import LogWatcher
from .ports import allocate_port
from .processes import stop_group
from .roles import SPARK_MASTER, SPARK_WORKER, LaunchContext

LOOPBACK = "127.0.0.1"


def master_status(ui: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The standalone master's ``/json/`` (status, workers, apps), or None if it does not answer."""
    try:
        with urllib.request.urlopen(ui.rstrip("/") + "/json/", timeout=timeout) as r:
            data = json.load(r)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive_workers(ui: str) -> int:
    """Workers the master lists as ALIVE (DEAD ones stay listed for a long time); -1 if it does not answer."""
    status = master_status(ui)
    return -1 if status is None else sum(w.get("state") == "ALIVE" for w in status.get("workers", []))


@dataclass
class StandaloneCluster:
    master_url: str
    ui_url: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def alive_workers(self) -> int:
        return alive_workers(self.ui_url)

    def stop(self, grace: float = 20.0) -> None:
        """Workers (with their executors) first, then the master; each with its process group."""
        for proc in reversed(self.procs):
            stop_group(proc.pid, proc, grace=grace)


def _context(workdir: Path, ports: dict[int, int], args: list[str], java_opts: str, env: Mapping[str, str],
             cores: int = 1, memory_mb: int = 1024) -> LaunchContext:
    return LaunchContext(bind_host=LOOPBACK, advertise_host=LOOPBACK, ports=ports, args=args, env=env,
                         spark_home=find_spark_home(), python=sys.executable, cores=cores, memory_mb=memory_mb,
                         work_dir=workdir, log_dir=workdir, daemon_java_opts=java_opts)


def _spawn(argv: list[str], env: dict[str, str], log: Path, nice: int) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, nice)  # before it starts its JVM, which inherits it
        except OSError:
            pass
    return proc


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Both sides must agree on the worker timeout, or healthy workers flap on busy machines.
    env = {**child_environment(), "SPARK_LOCAL_IP": LOOPBACK, "PYSPARK_PYTHON": sys.executable,
           "SPARK_MASTER_OPTS": "-Dspark.worker.timeout=30", "SPARK_WORKER_OPTS": "-Dspark.worker.timeout=30"}
    env.update(extra or {})
    return env


def start_master(cluster: StandaloneCluster, java_opts: str = "", env: Mapping[str, str] | None = None,
                 nice: int = 0) -> subprocess.Popen[bytes]:
    rpc = int(cluster.master_url.rsplit(":", 1)[1])
    ui = int(cluster.ui_url.rsplit(":", 1)[1])
    full_env = base_env(env)
    command = SPARK_MASTER.command(_context(cluster.workdir, {7077: rpc, 8080: ui}, [], java_opts, full_env))
    proc = _spawn(command.argv, {**full_env, **command.env}, cluster.workdir / "master.log", nice)
    cluster.procs.append(proc)
    return proc


def start_worker(cluster: StandaloneCluster, index: int, cores: int = 1, memory_mb: int = 1024,
                 java_opts: str = "", env: Mapping[str, str] | None = None, nice: int = 0) -> subprocess.Popen[bytes]:
    work = cluster.workdir / f"work-{index}"
    work.mkdir(parents=True, exist_ok=True)
    full_env = base_env(env)
    ctx = _context(work, {7078: 0, 8081: 0}, [cluster.master_url], java_opts, full_env, cores, memory_mb)
    command = SPARK_WORKER.command(ctx)
    proc = _spawn(command.argv, {**full_env, **command.env}, cluster.workdir / f"worker-{index}.log", nice)
    cluster.procs.append(proc)
    return proc


def wait_for(cluster: StandaloneCluster, log: str, line: bytes, proc: subprocess.Popen[bytes],
             timeout: float) -> None:
    """Until ``line`` appears in the daemon's log (its own words, not ours)."""
    watcher = LogWatcher()
    deadline = time.monotonic() + timeout
    while not watcher.seen(cluster.workdir / log, line):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log} did not say {line.decode()!r}; see {cluster.workdir / log}")
        time.sleep(0.1)


def new_cluster(workdir: Path) -> StandaloneCluster:
    workdir.mkdir(parents=True, exist_ok=True)
    port, ui = allocate_port(LOOPBACK), allocate_port(LOOPBACK)
    return StandaloneCluster(f"spark://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{ui}", workdir)


def start_cluster(workdir: Path, workers: int = 1, worker_cores: int = 2, worker_memory_mb: int = 1536,
                  java_opts: str = "", env: Mapping[str, str] | None = None, timeout: float = 180.0,
                  ) -> StandaloneCluster:
    """A master and ``workers`` workers on loopback, returned once all workers are ALIVE."""
    from .cds import FAST_DAEMON_JAVA_OPTS

    opts = java_opts or FAST_DAEMON_JAVA_OPTS
    cluster = new_cluster(workdir)
    try:
        master = start_master(cluster, opts, env)
        wait_for(cluster, "master.log", SPARK_MASTER.ready_line or b"", master, timeout)
        for i in range(workers):
            start_worker(cluster, i, worker_cores, worker_memory_mb, opts, env)
        deadline = time.monotonic() + timeout
        while cluster.alive_workers() < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"hand-run cluster not ready; see {workdir}")
            time.sleep(0.25)
    except BaseException:
        cluster.stop()
        raise
    return cluster
