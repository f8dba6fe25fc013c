"""``python -m jupyter_spark_appliance.livy``: the gateway as a process.

Secrets never come from the command line, where every local user reads them
in ``ps``: the password for Basic auth is $LIVY_GATEWAY_PASSWORD, and the
Spark RPC secret is in the file $JSA_SPARK_AUTH_SECRET_FILE names (mode 0600);
with it, every driver authenticates to the master (spark.authenticate).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import stat
import tempfile
from pathlib import Path

from .batches import BatchManager
from .server import MAX_BODY_BYTES, Security, default_allowed_hosts, make_app, normalize_host
from .sessions import MIN_SESSIONS_PER_DRIVER, SESSION_MEMORY_MB, GatewayConfig, SessionManager

SECRET_FILE_ENV = "JSA_SPARK_AUTH_SECRET_FILE"

DEFAULT_CONF = {
    # Idle sessions hold no executors, so a shared cluster stays usable by
    # other applications (and by other drivers of this gateway). The idle
    # timeouts (plain, holding shuffle files, holding cached blocks) come from
    # the options below.
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.shuffleTracking.enabled": "true",
    "spark.dynamicAllocation.minExecutors": "0",
    "spark.executor.memory": "512m",
    # Explicit, as Spark asks (SPARK-30299): without it a standalone executor takes every free
    # core of its worker and dynamic allocation over-asks, so one driver's idle executors hold
    # the cores a worker added for another session's driver.
    "spark.executor.cores": "1",
    "spark.driver.memory": "512m",
    "spark.ui.showConsoleProgress": "false",
    # Sessions sharing a driver share its executors fairly (each session is a pool),
    # instead of queueing behind whichever session submitted a long job first.
    "spark.scheduler.mode": "FAIR",
}


def _env_seconds(name: str, default: float) -> float:
    """A default in seconds from the environment (the appliance's livy container sets it), if it is one."""
    try:
        return max(0.0, float(os.environ.get(name) or default))
    except ValueError:
        return default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jupyter_spark_appliance.livy", description=__doc__)
    p.add_argument("--master", required=True, help="spark://HOST:PORT of the standalone master")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8998)
    p.add_argument("--log-dir", default="", help="driver logs (default: a temporary dir)")
    p.add_argument("--conf", action="append", default=[], help="default Spark conf key=value for drivers")
    p.add_argument("--driver-memory", default="", help="default spark.driver.memory")
    p.add_argument("--no-warm", action="store_true", help="do not start a driver before the first session")
    p.add_argument("--sessions-per-driver", type=int, default=0, metavar="N",
                   help="sessions one driver hosts before the gateway considers another driver for equal "
                        "settings; 0 (default) = by the driver's memory, 1 session per "
                        f"{SESSION_MEMORY_MB} MB of spark.driver.memory, at least {MIN_SESSIONS_PER_DRIVER} "
                        "(512m: 64). Past it a new driver starts only if the cluster has room for another "
                        "application; otherwise the session shares the least loaded driver anyway")
    p.add_argument("--max-drivers", type=int, default=0, metavar="N",
                   help="most driver processes (Spark applications, ~400 MB each) at once; a session whose "
                        "settings need another one is refused with a Livy error (400). 0 (default) = no limit")
    p.add_argument("--master-ui", default="", metavar="URL",
                   help="the master's web UI (http://HOST:PORT), whose /json/ gives the cluster's free cores "
                        "for packing decisions, waiting messages and GET /appliance/resources. Default: "
                        "http://MASTER-HOST:8080, used only if its /json/ names --master")
    p.add_argument("--executor-idle-timeout", default="20s", metavar="DURATION",
                   help="release an executor idle this long (spark.dynamicAllocation.executorIdleTimeout; "
                        "default 20s), so idle sessions make room for other drivers and applications")
    p.add_argument("--shuffle-idle-timeout", default="30s", metavar="DURATION",
                   help="release an idle executor holding shuffle files after this long "
                        "(spark.dynamicAllocation.shuffleTracking.timeout; default 30s; Spark's default, "
                        "infinity, keeps it until the shuffle is garbage-collected, which after a "
                        "DataFrame count() may be never)")
    p.add_argument("--cached-executor-idle-timeout", default="10min", metavar="DURATION",
                   help="release an idle executor holding blocks the user cached (df.cache()) after this long "
                        "(spark.dynamicAllocation.cachedExecutorIdleTimeout; default 10min; Spark's "
                        "default is infinity); the cached data is recomputed when used again")
    p.add_argument("--notice-after", type=float, default=3.0, metavar="SECONDS",
                   help="a running statement whose tasks wait this long with none running gets a notice "
                        "(its JSON's 'notice', and the session log when it waits for the cluster); default 3")
    p.add_argument("--resource-wait-limit", type=float,
                   default=_env_seconds("LIVY_RESOURCE_WAIT_LIMIT", 30.0), metavar="SECONDS",
                   help="a statement that waits this long for cluster resources (no executor, no free cores) "
                        "is cancelled and ends with an error saying so, which Sparkmagic shows; 0 = wait "
                        "for as long as it takes (default: $LIVY_RESOURCE_WAIT_LIMIT, else 30)")
    p.add_argument("--idle-timeout", type=float, default=0, help="delete sessions idle this long (s); 0 = never")
    p.add_argument("--username", default=os.environ.get("LIVY_GATEWAY_USERNAME", ""),
                   help="enable Basic auth with this user; the password is read from $LIVY_GATEWAY_PASSWORD")
    p.add_argument("--csrf", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old callers
    p.add_argument("--no-csrf", action="store_true",
                   help="do not check POSTs for X-Requested-By or a JSON Content-Type (Livy's CSRF check, "
                        "on by default; Sparkmagic and pylivy pass it)")
    p.add_argument("--allowed-hosts", default="", metavar="HOST[,HOST...]",
                   help="Host header names (without port) the gateway answers; others get 403 (DNS "
                        "rebinding). Default: 127.0.0.1, localhost, ::1, the --host address and this "
                        "machine's hostname. '*' allows any; 'ip' allows any IP address (DNS rebinding "
                        "needs a name), for a gateway in a container reached by its node's address")
    p.add_argument("--max-sessions", type=int, default=200, metavar="N",
                   help="most sessions at once; more are refused with 429 (default 200; 0 = no limit)")
    p.add_argument("--max-batches", type=int, default=20, metavar="N",
                   help="most batches (spark-submit processes, a driver JVM each) running at once; more are "
                        "refused with 429 (default 20; 0 = no limit)")
    p.add_argument("--max-output-bytes", type=int, default=1024 * 1024, metavar="BYTES",
                   help="a statement's output is cut to about this size, with a note at its end "
                        "(default 1 MiB)")
    p.add_argument("--cds-dir", default="",
                   help="class-data-sharing archives for drivers and executors (see cds.py); none by default")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    conf = dict(DEFAULT_CONF)
    conf["spark.dynamicAllocation.executorIdleTimeout"] = args.executor_idle_timeout
    conf["spark.dynamicAllocation.shuffleTracking.timeout"] = args.shuffle_idle_timeout
    conf["spark.dynamicAllocation.cachedExecutorIdleTimeout"] = args.cached_executor_idle_timeout
    if args.driver_memory:
        conf["spark.driver.memory"] = args.driver_memory
    conf.update(item.split("=", 1) for item in args.conf)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="livy-gateway-"))
    secret_file = spark_secret_file()
    manager = SessionManager(GatewayConfig(
        master=args.master, log_dir=log_dir, default_conf=conf, warm=not args.no_warm,
        max_sessions_per_driver=args.sessions_per_driver, idle_timeout=args.idle_timeout or None,
        cds_dir=Path(args.cds_dir) if args.cds_dir else None,
        master_ui=args.master_ui or None, max_drivers=args.max_drivers, notice_after=args.notice_after,
        resource_wait_limit=max(0.0, args.resource_wait_limit),
        max_sessions=max(0, args.max_sessions), max_output_bytes=max(1024, args.max_output_bytes),
        spark_secret_file=secret_file,
    ))
    auth = None
    if args.username:
        password = os.environ.get("LIVY_GATEWAY_PASSWORD", "")
        if not password:
            raise SystemExit("--username needs $LIVY_GATEWAY_PASSWORD")
        auth = (args.username, password)
    security = Security(auth=auth, csrf=not args.no_csrf, allowed_hosts=allowed_hosts(args))
    batches = BatchManager(args.master, log_dir / "batches", secret_file=secret_file, default_conf=conf,
                           max_batches=max(0, args.max_batches))
    app = make_app(manager, security, batches)
    server = app.listen(args.port, address=args.host, max_body_size=MAX_BODY_BYTES)
    await manager.start()
    logging.info("Livy gateway on http://%s:%d for %s", args.host, args.port, args.master)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await batches.shutdown()
    await manager.shutdown()


def allowed_hosts(args: argparse.Namespace) -> frozenset[str] | None:
    names = [h for h in (x.strip() for x in args.allowed_hosts.split(",")) if h]
    if "*" in names:
        return None
    return frozenset({normalize_host(h) for h in names} or default_allowed_hosts(args.host))


def spark_secret_file() -> str | None:
    """$JSA_SPARK_AUTH_SECRET_FILE, checked: a non-empty regular file only its owner can read."""
    path = os.environ.get(SECRET_FILE_ENV, "")
    if not path:
        return None
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            empty = not f.read().strip()
    except OSError as e:
        raise SystemExit(f"${SECRET_FILE_ENV}: cannot read {path}: {e}") from None
    if not stat.S_ISREG(st.st_mode) or empty:
        raise SystemExit(f"${SECRET_FILE_ENV}: {path} must be a non-empty file")
    if st.st_mode & 0o077:
        raise SystemExit(f"${SECRET_FILE_ENV}: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                         "chmod 600 it")
    return os.path.abspath(path)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
