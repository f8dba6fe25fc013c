"""Entrypoint of the project's image: one image, a target per role (JSA_ROLE).

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
from .roles import ROLES, LaunchContext


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def cds() -> ClassDataSharing:
    return ClassDataSharing(Path(os.environ.get("JSA_CDS_DIR", "/opt/jsa/cds")))


def record_cds() -> None:
    """Record the master, worker, driver and executor archives into the image (run by the Dockerfile)."""
    recorded: list[str] = []
    missing: list[str] = []
    # An archive is written as its JVM exits; on a busy build machine an executor can be
    # stopped before it wrote its archive. Only the missing ones are recorded again.
    for _ in range(3):
        workdir = Path(tempfile.mkdtemp(prefix="jsa-cds-"))
        try:
            recorded += record_archives(cds(), spark_home(), FAST_DAEMON_JAVA_OPTS, workdir, python=sys.executable)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        missing = [r for r in DAEMON_ROLES + APP_ROLES if not cds().use_opts(r, spark_home())]
        if not missing:
            break
    print(f"class-data-sharing archives recorded: {', '.join(recorded) or 'none'}; "
          f"missing: {', '.join(missing) or 'none'}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--record-cds"]:
        record_cds()
        return
    role = ROLES.get(os.environ.get("JSA_ROLE", ""))
    if role is None:
        sys.exit(f"JSA_ROLE must be one of {', '.join(ROLES)}, not {os.environ.get('JSA_ROLE', '')!r}")
    home = spark_home()
    java_opts = os.environ.get("SPARK_DAEMON_JAVA_OPTS", FAST_DAEMON_JAVA_OPTS)
    if role.cds_role:
        java_opts = f"{java_opts} {cds().use_opts(role.cds_role, home)}".strip()
    work = Path(tempfile.gettempdir()) / "spark-work"
    # The appliance's secret: out of the environment (no child inherits it as JSA_SECRET),
    # into the role's own variables and a 0600 file for the gateway's drivers.
    secret = os.environ.pop("JSA_SECRET", "")
    username = os.environ.pop("JSA_USERNAME", "")
    secret_file = None
    if secret:
        fd, name = tempfile.mkstemp(prefix="jsa-secret-")
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        secret_file = Path(name)
    ctx = LaunchContext(
        bind_host="0.0.0.0", advertise_host=socket.gethostname(),
        ports={p.container_port: p.container_port for p in role.ports}, args=args, env=dict(os.environ),
        spark_home=home, python=sys.executable, cores=int(os.environ.get("JSA_CORES", "1")),
        memory_mb=int(os.environ.get("JSA_MEMORY_MB", "1024")), work_dir=work,
        log_dir=Path(tempfile.gettempdir()) / "livy-logs", daemon_java_opts=java_opts,
        cds_dir=cds().cache_dir, contained=True, username=username, secret=secret, secret_file=secret_file,
        ui_root=os.environ.get("JSA_UI_ROOT", ""),
    )
    try:
        command = role.command(ctx)
    except ValueError as e:
        sys.exit(str(e))
    work.mkdir(parents=True, exist_ok=True)
    # exec: the JVM (or the gateway) replaces this process, so `docker stop` reaches it directly.
    os.execvpe(command.argv[0], command.argv, {**os.environ, **command.env})


if __name__ == "__main__":
    main()
