"""Class-data-sharing archives for Spark's daemon JVMs.

A Spark master spends most of its start loading classes: measured here,
master ALIVE in ~2.1 s with default flags, ~1.85 s with C1 + SerialGC, and
~1.05 s with a dynamic CDS archive. The archive is recorded by the first
instance of a role (``-XX:ArchiveClassesAtExit``, written when that JVM exits)
and used by every later one (``-XX:SharedArchiveFile``); it is keyed by the
Spark jars and the Java binary, so a new Spark or JDK records a new one. A
stale or mismatched archive is harmless: ``-Xshare:auto`` just ignores it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

LOCK_STALE_SECONDS = 600

#: SPARK_DAEMON_JAVA_OPTS for master and worker JVMs, local or in the image: daemons
#: that start often and live briefly gain more from C1 and the serial collector than
#: from C2's peak speed.
FAST_DAEMON_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else (shutil.which("java") or "java")
    return os.path.realpath(java)


def cache_key(spark_home: Path) -> str:
    jars = sorted(p.name for p in (spark_home / "jars").glob("*.jar"))
    java = java_binary()
    try:
        java_stamp = str(os.stat(java).st_mtime_ns)
    except OSError:
        java_stamp = "?"
    h = hashlib.sha256("\n".join([str(spark_home.resolve()), java, java_stamp, *jars]).encode())
    return h.hexdigest()[:16]


class ClassDataSharing:
    def __init__(self, cache_dir: Path, enabled: bool = True):
        self.cache_dir = cache_dir
        self.enabled = enabled

    def archive(self, role: str, spark_home: Path) -> Path:
        return self.cache_dir / f"{role}-{cache_key(spark_home)}.jsa"

    def use_opts(self, role: str, spark_home: Path) -> str:
        """Options that use an archive recorded earlier, or "" (never records one).

        For JVMs whose exit this process cannot see, such as a container's PID 1
        after ``exec``; they rely on an archive recorded beforehand (at image build).
        """
        archive = self.archive(role, spark_home)
        return f"-XX:SharedArchiveFile={archive} -Xshare:auto" if self.enabled and archive.is_file() else ""

    def java_opts(self, role: str, spark_home: Path) -> tuple[str, dict[str, str]]:
        """Options for one JVM of ``role``, and facts for :meth:`finish` after it stops."""
        if not self.enabled:
            return "", {}
        archive = self.archive(role, spark_home)
        if archive.is_file():
            return self.use_opts(role, spark_home), {}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        lock = archive.with_suffix(".recording")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
        except FileExistsError:
            if time.time() - lock.stat().st_mtime < LOCK_STALE_SECONDS:
                return "", {}  # another JVM is recording it
            lock.touch()
        tmp = archive.with_name(f"{archive.stem}.{uuid.uuid4().hex[:8]}.tmp.jsa")
        return f"-XX:ArchiveClassesAtExit={tmp}", {"cds_tmp": str(tmp), "cds_archive": str(archive),
                                                    "cds_lock": str(lock)}

    @staticmethod
    def finish(info: dict[str, object]) -> None:
        """After the recording JVM exited: publish its archive (atomically) and unlock."""
        tmp, archive, lock = info.get("cds_tmp"), info.get("cds_archive"), info.get("cds_lock")
        if not tmp:
            return
        tmp_path = Path(str(tmp))
        if tmp_path.is_file() and tmp_path.stat().st_size > 0:
            os.replace(tmp_path, str(archive))
        else:
            tmp_path.unlink(missing_ok=True)
        Path(str(lock)).unlink(missing_ok=True)


DAEMON_ROLES = ("spark-master", "spark-worker")
#: A PySpark driver's JVM (started by spark-submit) and its executors' JVMs.
APP_ROLES = ("spark-driver", "spark-executor")

# A throwaway application that loads what a Livy session's first statements load:
# the driver's start, Py4J, a shuffle, SQL and JSON rows (the gateway's %%sql path).
RECORDING_JOB = """
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


def spark_app_conf(cds: ClassDataSharing, spark_home: Path) -> dict[str, str]:
    """Spark conf that starts a driver and its executors from recorded archives (or {}).

    A driver starts in about 4.5 s instead of 7.7 s from its archive, and the first
    executor of a session runs its first task in about 2.2 s instead of 3.5 s.
    """
    conf = {}
    for role, key in zip(APP_ROLES, ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")):
        opts = cds.use_opts(role, spark_home)
        if opts:
            conf[key] = opts
    return conf


def record_archives(cds: ClassDataSharing, spark_home: Path, java_opts: str, workdir: Path,
                    python: str | None = None, timeout: float = 180.0) -> list[str]:
    """Record the missing archives with throwaway JVMs at nice 19; returns the roles recorded.

    A master and a worker record theirs; with ``python`` (an interpreter with
    pyspark), a small PySpark application on them also records the driver's and
    its executor's. Run once in the background when a server starts and the
    archives are missing (and while the image is built), so that even the first
    appliance and the first session start from them. A user launch meanwhile is
    not slowed: it finds the roles locked and starts without CDS, and the niced
    JVMs yield the CPU to it.
    """
    import signal
    import subprocess

    from .logwatch import LogWatcher
    from .ports import allocate_port

    roles = DAEMON_ROLES + (APP_ROLES if python else ())
    plans = {role: cds.java_opts(role, spark_home) for role in roles}
    recording = [role for role, (opts, _) in plans.items() if opts.startswith("-XX:ArchiveClassesAtExit")]
    if not recording:
        for _, info in plans.values():
            ClassDataSharing.finish(info)
        return []
    workdir.mkdir(parents=True, exist_ok=True)
    spark_class = str(spark_home / "bin" / "spark-class")
    port, ui = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    master_url = f"spark://127.0.0.1:{port}"
    base_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    commands = {
        "spark-master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui)],
        "spark-worker": [spark_class, "org.apache.spark.deploy.worker.Worker", master_url,
                         "--host", "127.0.0.1", "--port", "0", "--webui-port", "0", "--cores", "1",
                         "--memory", "1g", "--work-dir", str(workdir / "work")],
    }
    ready = {"spark-master": b"New state: ALIVE", "spark-worker": b"Successfully registered with master"}
    watcher = LogWatcher()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def lowest_priority(pid: int) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)  # before the child starts its JVM, which inherits it
        except OSError:
            pass

    try:
        for role in DAEMON_ROLES:
            opts = plans[role][0]
            env = {**base_env, "SPARK_DAEMON_JAVA_OPTS": f"{java_opts} {opts}".strip()}
            log = workdir / f"{role}.log"
            with open(log, "wb") as out:
                procs[role] = subprocess.Popen(commands[role], env=env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            lowest_priority(procs[role].pid)
            deadline = time.monotonic() + timeout
            while not watcher.seen(log, ready[role]):
                if procs[role].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{role} did not start; see {log}")
                time.sleep(0.2)
        if python and any(role in recording for role in APP_ROLES):
            log = workdir / "spark-driver.log"
            with open(log, "wb") as out:
                argv = [python, "-c", RECORDING_JOB, master_url, plans["spark-driver"][0], plans["spark-executor"][0]]
                job = subprocess.Popen(argv, env={**base_env, "SPARK_HOME": str(spark_home)}, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            lowest_priority(job.pid)
            try:
                if job.wait(timeout) != 0:
                    raise RuntimeError(f"the recording application failed; see {log}")
                # The driver's JVM outlives Python briefly: it exits when its stdin closes and
                # writes its archive as it goes. Wait for the whole process group.
                deadline = time.monotonic() + 60
                while _group_alive(job.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                if job.poll() is None or _group_alive(job.pid):
                    os.killpg(job.pid, signal.SIGKILL)
                    job.wait()
        return recording
    finally:
        # The worker stops its executors first; every archive is written as its JVM exits.
        for role in ("spark-worker", "spark-master"):
            proc = procs.get(role)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for _, info in plans.values():
            ClassDataSharing.finish(info)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
