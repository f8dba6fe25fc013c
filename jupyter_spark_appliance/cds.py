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


def record_archives(cds: ClassDataSharing, spark_home: Path, java_opts: str, workdir: Path,
                    timeout: float = 180.0) -> list[str]:
    """Record the master and worker archives with a throwaway pair of JVMs at nice 19.

    Run once in the background when a server starts and the archives are missing, so
    that even the first appliance a user launches starts from them. Returns the roles
    recorded. A user launch meanwhile is not slowed: it finds the roles locked and
    starts without CDS (and the niced JVMs yield the CPU to it).
    """
    import signal
    import subprocess

    from .logwatch import LogWatcher
    from .ports import allocate_port

    plans = {role: cds.java_opts(role, spark_home) for role in ("spark-master", "spark-worker")}
    recording = [role for role, (opts, _) in plans.items() if opts.startswith("-XX:ArchiveClassesAtExit")]
    if not recording:
        for _, info in plans.values():
            ClassDataSharing.finish(info)
        return []
    workdir.mkdir(parents=True, exist_ok=True)
    spark_class = str(spark_home / "bin" / "spark-class")
    port, ui = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    base_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    commands = {
        "spark-master": [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui)],
        "spark-worker": [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                         "--host", "127.0.0.1", "--port", "0", "--webui-port", "0", "--cores", "1",
                         "--memory", "256M", "--work-dir", str(workdir / "work")],
    }
    ready = {"spark-master": b"New state: ALIVE", "spark-worker": b"Successfully registered with master"}
    watcher = LogWatcher()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for role in ("spark-master", "spark-worker"):
            opts = plans[role][0] if not plans[role][0].startswith("-XX:SharedArchiveFile") else ""
            env = {**base_env, "SPARK_DAEMON_JAVA_OPTS": f"{java_opts} {opts}".strip()}
            log = workdir / f"{role}.log"
            with open(log, "wb") as out:
                procs[role] = subprocess.Popen(commands[role], env=env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                os.setpriority(os.PRIO_PROCESS, procs[role].pid, 19)  # before spark-class execs the JVM
            except OSError:
                pass
            deadline = time.monotonic() + timeout
            while not watcher.seen(log, ready[role]):
                if procs[role].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{role} did not start; see {log}")
                time.sleep(0.2)
        return recording
    finally:
        for role in ("spark-worker", "spark-master"):
            proc = procs.get(role)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)  # the archive is written as the JVM exits
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for _, info in plans.values():
            ClassDataSharing.finish(info)
