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
from pathlib import Path

from .cds import APP_ROLES, DAEMON_ROLES, ClassDataSharing
from .logwatch import READY_LINES, LogWatcher
from .ports import allocate_port
from .process_groups import group_alive, stop_group

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
                    python: str | None = None, timeout: float = 180.0) -> list[str]:
    """Record the missing archives with throwaway JVMs at nice 19; returns the roles recorded.

    A master and a worker record theirs; with ``python`` (an interpreter with
    pyspark), a small PySpark application on them also records the driver's and
    its executor's. A user launch meanwhile is not slowed: it finds the roles
    locked and starts without CDS, and the niced JVMs yield the CPU to it.
    """
    roles = DAEMON_ROLES + (APP_ROLES if python else ())
    plans = {role: cds.java_opts(role, spark_home) for role in roles}
    recording = [role for role, (opts, _) in plans.items() if opts.startswith("-XX:ArchiveClassesAtExit")]
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        if not recording:
            return []
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(spark_home),
               "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
        master_url = _start_daemons(spark_home, java_opts, {r: plans[r][0] for r in DAEMON_ROLES}, env, workdir,
                                    timeout, daemons)
        if python and any(role in recording for role in APP_ROLES):
            _run_app(python, master_url, plans["spark-driver"][0], plans["spark-executor"][0], env, workdir, timeout)
        return recording
    finally:
        # Worker (with its executors) first, then master; each archive is written as its JVM exits.
        for proc in reversed(daemons):
            stop_group(proc.pid, proc, grace=60)
        for _, info in plans.values():
            ClassDataSharing.finish(info)


def _start_daemons(spark_home: Path, java_opts: str, cds_opts: dict[str, str], env: dict[str, str],
                   workdir: Path, timeout: float, started: list[subprocess.Popen[bytes]]) -> str:
    """Start a master and a worker (appended to ``started``); returns the master's URL once both are up."""
    spark_class = str(spark_home / "bin" / "spark-class")
    port, ui = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    master_url = f"spark://127.0.0.1:{port}"
    commands = {
        "spark-master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui)],
        "spark-worker": [spark_class, "org.apache.spark.deploy.worker.Worker", master_url,
                         "--host", "127.0.0.1", "--port", "0", "--webui-port", "0", "--cores", "1",
                         "--memory", "1g", "--work-dir", str(workdir / "work")],
    }
    watcher = LogWatcher()
    for role in DAEMON_ROLES:
        log = workdir / f"{role}.log"
        daemon_env = {**env, "SPARK_DAEMON_JAVA_OPTS": f"{java_opts} {cds_opts[role]}".strip()}
        with open(log, "wb") as out:
            proc = subprocess.Popen(commands[role], env=daemon_env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        started.append(proc)
        _lowest_priority(proc.pid)
        deadline = time.monotonic() + timeout
        while not watcher.seen(log, READY_LINES[role]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{role} did not start; see {log}")
            time.sleep(0.2)
    return master_url


def _run_app(python: str, master_url: str, driver_opts: str, executor_opts: str, env: dict[str, str],
             workdir: Path, timeout: float) -> None:
    log = workdir / "spark-driver.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([python, "-c", RECORDING_APP, master_url, driver_opts, executor_opts], env=env,
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    _lowest_priority(app.pid)
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
