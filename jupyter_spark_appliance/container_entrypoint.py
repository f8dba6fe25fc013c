"""Entrypoint of the project's image: one image, three roles (JSA_ROLE).

PIVOT images take their wiring as arguments (the Livy image takes the master
URL; the worker image takes the master's address), so this entrypoint does
the same: ``args[0]`` is the master, as resolved by the orchestrator from
``@spark-master:7077``. Everything else comes from the environment the Docker
backend sets (cores, memory). ``exec`` keeps the JVM as PID 1's replacement so
``docker stop`` reaches it directly.

Because of that ``exec`` nothing is left to publish a class-data-sharing
archive when the JVM exits, so the image records the archives while it is
built (``--record-cds``: a throwaway master, worker and PySpark application)
and every container starts from them: the daemons here, the Livy gateway's
drivers and their executors through the gateway's ``--cds-dir``.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from .cds import APP_ROLES, DAEMON_ROLES, FAST_DAEMON_JAVA_OPTS, ClassDataSharing
from .cds_recording import record_archives


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def spark_class() -> str:
    return str(spark_home() / "bin" / "spark-class")


def cds() -> ClassDataSharing:
    return ClassDataSharing(Path(os.environ.get("JSA_CDS_DIR", "/opt/jsa/cds")))


def record_cds() -> None:
    """Record the master, worker, driver and executor archives into the image (run by the Dockerfile)."""
    workdir = Path(tempfile.mkdtemp(prefix="jsa-cds-"))
    try:
        recorded = record_archives(cds(), spark_home(), FAST_DAEMON_JAVA_OPTS, workdir, python=sys.executable)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    missing = [r for r in DAEMON_ROLES + APP_ROLES if not cds().use_opts(r, spark_home())]
    print(f"class-data-sharing archives recorded: {', '.join(recorded) or 'none'}; "
          f"missing: {', '.join(missing) or 'none'}")


def master_url(arg: str) -> str:
    return arg if arg.startswith("spark://") else f"spark://{arg}"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--record-cds"]:
        record_cds()
        return
    role = os.environ.get("JSA_ROLE", "")
    host = socket.gethostname()
    env = dict(os.environ)
    env.setdefault("SPARK_DAEMON_JAVA_OPTS", FAST_DAEMON_JAVA_OPTS)
    if role in ("spark-master", "spark-worker"):
        archive_opts = cds().use_opts(role, spark_home())
        env["SPARK_DAEMON_JAVA_OPTS"] = f"{env['SPARK_DAEMON_JAVA_OPTS']} {archive_opts}".strip()
    if role == "spark-master":
        env["SPARK_MASTER_OPTS"] = (env.get("SPARK_MASTER_OPTS", "") + " -Dspark.master.rest.enabled=false").strip()
        argv_ = [spark_class(), "org.apache.spark.deploy.master.Master", "--host", host,
                 "--port", "7077", "--webui-port", "8080"]
    elif role == "spark-worker":
        if not args:
            sys.exit("spark-worker needs the master's address as its first argument")
        argv_ = [spark_class(), "org.apache.spark.deploy.worker.Worker", master_url(args[0]), "--host", host,
                 "--webui-port", "8081", "--cores", env.get("SPARK_WORKER_CORES", "1"),
                 "--memory", env.get("SPARK_WORKER_MEMORY", "1g"), "--work-dir", "/tmp/spark-work"]
    elif role == "livy":
        if not args:
            sys.exit("livy needs the master URL as its first argument")
        argv_ = [sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", master_url(args[0]),
                 "--host", "0.0.0.0", "--port", "8998", "--log-dir", "/tmp/livy-logs",
                 "--conf", f"spark.driver.host={host}", "--conf", "spark.driver.bindAddress=0.0.0.0",
                 "--cds-dir", str(cds().cache_dir)]
    else:
        sys.exit(f"JSA_ROLE must be spark-master, spark-worker or livy, not {role!r}")
    os.execvpe(argv_[0], argv_, env)


if __name__ == "__main__":
    main()
