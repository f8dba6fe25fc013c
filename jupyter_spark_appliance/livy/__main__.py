"""``python -m jupyter_spark_appliance.livy``: the gateway as a process.

The password for Basic auth comes from the environment (LIVY_GATEWAY_PASSWORD),
never from the command line, where every local user could read it in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import tempfile
from pathlib import Path

from .server import make_app
from .sessions import GatewayConfig, SessionManager

DEFAULT_CONF = {
    # Idle sessions hold no executors, so a shared cluster stays usable by
    # other applications (and by other drivers of this gateway).
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.shuffleTracking.enabled": "true",
    "spark.dynamicAllocation.minExecutors": "0",
    "spark.dynamicAllocation.executorIdleTimeout": "60s",
    "spark.executor.memory": "512m",
    "spark.driver.memory": "512m",
    "spark.ui.showConsoleProgress": "false",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jupyter_spark_appliance.livy", description=__doc__)
    p.add_argument("--master", required=True, help="spark://HOST:PORT of the standalone master")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8998)
    p.add_argument("--log-dir", default="", help="driver logs (default: a temporary dir)")
    p.add_argument("--conf", action="append", default=[], help="default Spark conf key=value for drivers")
    p.add_argument("--driver-memory", default="", help="default spark.driver.memory")
    p.add_argument("--no-warm", action="store_true", help="do not start a driver before the first session")
    p.add_argument("--sessions-per-driver", type=int, default=16)
    p.add_argument("--idle-timeout", type=float, default=0, help="delete sessions idle this long (s); 0 = never")
    p.add_argument("--username", default=os.environ.get("LIVY_GATEWAY_USERNAME", ""),
                   help="enable Basic auth with this user; the password is read from $LIVY_GATEWAY_PASSWORD")
    p.add_argument("--csrf", action="store_true", help="require X-Requested-By on non-GET requests")
    p.add_argument("--cds-dir", default="",
                   help="class-data-sharing archives for drivers and executors (see cds.py); none by default")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    conf = dict(DEFAULT_CONF)
    if args.driver_memory:
        conf["spark.driver.memory"] = args.driver_memory
    conf.update(item.split("=", 1) for item in args.conf)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="livy-gateway-"))
    manager = SessionManager(GatewayConfig(
        master=args.master, log_dir=log_dir, default_conf=conf, warm=not args.no_warm,
        max_sessions_per_driver=args.sessions_per_driver, idle_timeout=args.idle_timeout or None,
        cds_dir=Path(args.cds_dir) if args.cds_dir else None,
    ))
    auth = None
    if args.username:
        password = os.environ.get("LIVY_GATEWAY_PASSWORD", "")
        if not password:
            raise SystemExit("--username needs $LIVY_GATEWAY_PASSWORD")
        auth = (args.username, password)
    app = make_app(manager, auth=auth, csrf=args.csrf)
    server = app.listen(args.port, address=args.host)
    await manager.start()
    logging.info("Livy gateway on http://%s:%d for %s", args.host, args.port, args.master)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await manager.shutdown()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
