"""Recording the class-data-sharing archives with throwaway JVMs (see cds.py).

Separate from cds.py, which only names and looks up archives: recording runs a
whole throwaway cluster (a master, a worker and a PySpark application) at nice
19, once per Spark version and JDK, in the background when a server starts and
while the Docker image is built.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from .cds import APP_ROLES, DAEMON_ROLES, ClassDataSharing
from .processes import group_alive
from .roles import SPARK_MASTER, SPARK_WORKER
from .standalone import base_env, new_cluster, start_master, start_worker, wait_for

# A throwaway application that loads what a Livy session's first statements load:
# the driver's start, Py4J, a shuffle, SQL and JSON rows (the gateway's %%sql path).
RECORDING_APP = """
import sys
from pyspark.sql import SparkSession
master, driver_opts, executor_opts = sys.argv[1:4]
builder = (SparkSession.builder.master(master).appName("jsa-cds-recording")
           .config("spark.driver.memory", "512m").config("spark.executor.memory", "512m")
           .config("spark.cores.max", "1").config("spark.ui.showConsoleProgress", "false"))
for key, opts in (("spark.driver.extraJavaOptions", driver_opts), ("spark.executor.extraJavaOptions", executor_opts)):
    if opts:
        builder = builder.config(key, opts)
spark = builder.getOrCreate()
df = spark.range(1000).selectExpr("id % 7 AS k", "id AS v")
assert len(df.groupBy("k").sum("v").collect()) == 7
df.toJSON().take(1)
spark.sql("SELECT 1 AS one").collect()
spark.stop()
"""


def record_archives(cds: ClassDataSharing, spark_home: Path, java_opts: str, workdir: Path,
                    python: str | None = None, timeout: float = 180.0,
                    watch: Callable[[int, float], None] | None = None, background: bool = True) -> list[str]:
    """Record the missing archives with throwaway JVMs at nice 19; returns the roles recorded.

    A master and a worker record theirs; with ``python`` (an interpreter with
    pyspark), a small PySpark application on them also records the driver's and
    its executor's. ``watch(pid, create_time)`` hears of every process it starts
    (the server's reaper: they are in no record, and must not outlive the server).
    A user launch meanwhile is not slowed: it finds the roles
    locked and starts without CDS, and the niced JVMs yield the CPU to it.
    ``background=False`` records at normal priority, for a caller that waits for
    the archives before it starts anything (a test run recording them once).
    """
    nice = 19 if background else 0
    roles = DAEMON_ROLES + (APP_ROLES if python else ())
    plans = {role: cds.java_opts(role, spark_home) for role in roles}
    recording = [role for role, (opts, _) in plans.items() if opts.startswith("-XX:ArchiveClassesAtExit")]
    cluster = None
    try:
        if not recording:
            return []
        env = {"SPARK_HOME": str(spark_home)}
        cluster = new_cluster(workdir)
        master = start_master(cluster, f"{java_opts} {plans['spark-master'][0]}".strip(), env, nice=nice)
        _watched(watch, master.pid)
        wait_for(cluster, "master.log", SPARK_MASTER.ready_line or b"", master, timeout)
        worker = start_worker(cluster, 0, 1, 1024, f"{java_opts} {plans['spark-worker'][0]}".strip(), env, nice=nice)
        _watched(watch, worker.pid)
        wait_for(cluster, "worker-0.log", SPARK_WORKER.ready_line or b"", worker, timeout)
        if python and any(role in recording for role in APP_ROLES):
            _run_app(python, cluster.master_url, plans["spark-driver"][0], plans["spark-executor"][0],
                     base_env(env), workdir, timeout, watch, background)
        return recording
    finally:
        # Worker (with its executors) first, then master; each archive is written as its JVM exits.
        if cluster is not None:
            cluster.stop(grace=60)
        for _, facts in plans.values():
            ClassDataSharing.finish(facts)


def _watched(watch: Callable[[int, float], None] | None, pid: int) -> None:
    if watch is None:
        return
    try:
        watch(pid, psutil.Process(pid).create_time())
    except psutil.Error:
        pass  # already gone: nothing to reap


def _run_app(python: str, master_url: str, driver_opts: str, executor_opts: str, env: dict[str, str],
             workdir: Path, timeout: float, watch: Callable[[int, float], None] | None = None,
             background: bool = True) -> None:
    log = workdir / "spark-driver.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([python, "-c", RECORDING_APP, master_url, driver_opts, executor_opts], env=env,
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    if background:
        _lowest_priority(app.pid)
    _watched(watch, app.pid)
    try:
        if app.wait(timeout) != 0:
            raise RuntimeError(f"the recording application failed; see {log}")
        # The driver's JVM outlives Python briefly: it exits when its stdin closes and
        # writes its archive as it goes. Wait for the whole process group.
        deadline = time.monotonic() + 60
        while group_alive(app.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if app.poll() is None or group_alive(app.pid):
            try:
                os.killpg(app.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            app.wait()


def _lowest_priority(pid: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 19)  # before the child starts its JVM, which inherits it
    except OSError:
        pass
