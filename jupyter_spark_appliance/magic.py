"""``%spark_appliance`` and ``%%spark_appliance``: the appliance from a notebook cell."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from .client import ApplianceClient, ApplianceError
from .spec import SpecError, decode_document
from .widgets import render_text

DEFAULT_ID = "spark-livy"
PASSWORD_VARIABLE = "spark_appliance_livy_password"


class UsageError(Exception):
    pass


def connect_url(model: dict[str, Any]) -> str | None:
    """``sc://localhost:PORT`` of the appliance's running Spark Connect server (no token: it is a secret)."""
    for c in model["containers"]:
        for inst in c["instance_states"]:
            if inst["state"] != "running":
                continue
            for e in inst["endpoints"]:
                if e.get("url", "").startswith("sc://"):
                    return e["url"]
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit()
        raise UsageError(message)


def build_parser() -> _Parser:
    p = _Parser(prog="%spark_appliance", description="Launch and manage a Spark appliance from a notebook.",
                add_help=False)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    up = sub.add_parser("up", help="launch (spark-livy template, or the cell's JSON) and wait until running",
                        add_help=False)
    up.add_argument("--workers", type=int)
    up.add_argument("--backend", choices=["local", "docker", "swarm"])
    up.add_argument("--template", default="spark-livy")
    up.add_argument("--id", default=None)
    up.add_argument("--no-wait", action="store_true")
    up.add_argument("--connect", action="store_true", help="then make `spark`, a Spark Connect session on it")
    for name, text in (("status", "show states, endpoints and a worker slider"),
                       ("down", "stop and remove the appliance"),
                       ("endpoints", "list endpoints")):
        s = sub.add_parser(name, help=text, add_help=False)
        s.add_argument("--id", default=None)
    scale = sub.add_parser("scale", help="set the number of instances (workers by default)", add_help=False)
    scale.add_argument("n", type=int)
    scale.add_argument("--container", default="spark-worker")
    scale.add_argument("--id", default=None)
    logs = sub.add_parser("logs", help="recent log lines of a container", add_help=False)
    logs.add_argument("container")
    logs.add_argument("--tail", type=int, default=50)
    logs.add_argument("--id", default=None)
    session = sub.add_parser("session", help="make `spark`: a PySpark session of this kernel on the appliance's "
                                            "master, with its credentials", add_help=False)
    session.add_argument("--id", default=None)
    session.add_argument("--name", default="spark", help="the variable to bind (default: spark)")
    session.add_argument("--executor-memory", default="512m")
    connect = sub.add_parser("connect", help="make `spark`: a Spark Connect session on the appliance's "
                                            "Connect server, with its token", add_help=False)
    connect.add_argument("--id", default=None)
    connect.add_argument("--name", default="spark", help="the variable to bind (default: spark)")
    sub.add_parser("help", help="this text", add_help=False)
    return p


HELP = """%spark_appliance up [--workers N] [--backend local|docker|swarm] [--template T] [--id ID] [--no-wait]
                     [--connect]
%spark_appliance status [--id ID]
%spark_appliance scale N [--container ID] [--id ID]
%spark_appliance down [--id ID]
%spark_appliance logs CONTAINER [--tail N] [--id ID]
%spark_appliance endpoints [--id ID]
%spark_appliance session [--id ID] [--name spark] [--executor-memory 512m]
%spark_appliance connect [--id ID] [--name spark]   (Spark Connect; pip install 'jupyter-spark-appliance[connect]')
%spark_appliance help
%%spark_appliance up [--backend ...]   (the cell body is an appliance JSON document)"""


@magics_class
class SparkApplianceMagics(Magics):
    def __init__(self, shell: Any, client: ApplianceClient | None = None):
        super().__init__(shell)
        self._client = client
        self.current_id: str | None = None

    @property
    def client(self) -> ApplianceClient:
        if self._client is None:
            self._client = ApplianceClient()
        return self._client

    @line_cell_magic
    def spark_appliance(self, line: str, cell: str | None = None) -> Any:
        try:
            args = build_parser().parse_args(shlex.split(line))
        except (UsageError, ValueError) as e:
            print(f"UsageError: {e}\n\n{HELP}", file=sys.stderr)
            return None
        if args.command in (None, "help"):
            print(HELP)
            return None
        try:
            return getattr(self, f"_{args.command}")(args, cell)
        except ApplianceError as e:
            print(f"Error: {e}", file=sys.stderr)
        except SpecError as e:
            print("Error: the cell is not a valid appliance:\n" + "\n".join(f"  {p}" for p in e.problems),
                  file=sys.stderr)
        return None

    def _id(self, args: argparse.Namespace) -> str:
        return args.id or self.current_id or DEFAULT_ID

    def _view(self, app_id: str) -> Any:
        try:
            from .widgets import ApplianceView

            return ApplianceView(self.client, app_id)
        except ImportError:
            print(render_text(self.client.get(app_id)))
            return None

    def _up(self, args: argparse.Namespace, cell: str | None) -> Any:
        if cell is not None and cell.strip():
            body = decode_document(cell)
            if not isinstance(body, dict):
                raise SpecError.single("$", "the cell must hold a JSON object")
        else:
            body = {"template": args.template}
            if args.workers is not None:
                body["workers"] = args.workers
            if args.id:
                body["id"] = args.id
        if args.backend:
            body["backend"] = args.backend
        model = self.client.create(body)
        app_id = self.current_id = model["id"]
        if not args.no_wait:
            model = self._wait(app_id)
            if model["state"] == "running":
                self._print_livy(app_id, model)
                if args.connect:
                    self._connect(argparse.Namespace(id=app_id, name="spark"), None)
            else:
                print(f"{app_id} {model['state']}: {model.get('reason') or ''}", file=sys.stderr)
        return self._view(app_id)

    def _print_livy(self, app_id: str, model: dict[str, Any]) -> None:
        """How to reach the appliance's Livy, without printing its password into the notebook.

        The password goes into the kernel's namespace; IPython expands ``$name`` in
        line magics, so the printed ``%spark add`` line works as it is.
        """
        creds = self.client.credentials(app_id)["livy"]
        livy = creds["url"] or (model.get("sparkmagic") or {}).get("url")
        if not livy:
            return
        login = ""
        if creds["username"]:
            self.shell.user_ns[PASSWORD_VARIABLE] = creds["password"]
            login = f" -a {creds['username']} -p ${PASSWORD_VARIABLE} -t {creds['auth']}"
        print(f"Livy: {livy} (HTTP Basic, user {creds['username']!r}; the password is in "
              f"`{PASSWORD_VARIABLE}`). From an IPython kernel:\n  %load_ext sparkmagic.magics\n"
              f"  %spark add -s {app_id.replace('-', '_')} -l python -u {livy}{login}\n"
              "PySpark notebooks started from now on use it with its credentials (running ones need a restart).")

    def _session(self, args: argparse.Namespace, cell: str | None) -> Any:
        """A SparkSession of this kernel on the appliance's master: the settings it needs in one step."""
        app_id = self._id(args)
        creds = self.client.credentials(app_id)["spark"]
        if not creds["master"]:
            raise ApplianceError(f"{app_id} has no running Spark master")
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise ApplianceError("this kernel has no pyspark: pip install pyspark") from None
        builder = SparkSession.builder.master(creds["master"]).appName(f"{app_id}-kernel")
        conf = {**creds["conf"], "spark.executor.memory": args.executor_memory}
        host = creds["master"].removeprefix("spark://").rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):  # executors on this machine reach the driver on loopback
            conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
        for key, value in conf.items():
            builder = builder.config(key, value)  # in the JVM's SparkConf, never on a command line
        self.shell.user_ns[args.name] = spark = builder.getOrCreate()
        print(f"`{args.name}` is a SparkSession on {creds['master']} (Spark {spark.version})")
        return None

    def _connect(self, args: argparse.Namespace, cell: str | None) -> Any:
        """A Spark Connect session of this kernel on the appliance's Connect server, with its token.

        The token is the appliance's secret (the credentials route); it goes into
        the client's URL only, never into the output. With a token the client
        uses TLS unless the host is literally ``localhost`` (the model's URL is).
        """
        app_id = self._id(args)
        model = self.client.get(app_id)
        url = connect_url(model)
        if url is None:
            raise ApplianceError(f"{app_id} has no running Spark Connect server (the spark-livy template starts "
                                 "one unless launched with connect false)")
        creds = self.client.credentials(app_id)
        token = creds["spark"]["conf"].get("spark.authenticate.secret") or creds["livy"]["password"]
        try:
            from pyspark.sql import SparkSession

            builder = SparkSession.builder.remote(f"{url}/;token={token}" if token else url)
            self.shell.user_ns[args.name] = spark = builder.getOrCreate()
        except ImportError as e:
            raise ApplianceError(f"this kernel lacks Spark Connect's client ({e}): "
                                 "pip install 'jupyter-spark-appliance[connect]'") from None
        print(f"`{args.name}` is a Spark Connect session on {url} (Spark {spark.version})")
        return None

    def _wait(self, app_id: str) -> dict[str, Any]:
        started = time.monotonic()
        last = [""]

        def progress(model: dict[str, Any]) -> None:
            line = " ".join(f"{c['id']}:{c['state']}" for c in model["containers"])
            if line != last[0]:
                print(f"[{time.monotonic() - started:5.1f}s] {line}", flush=True)
                last[0] = line

        return self.client.wait(app_id, progress=progress)

    def _status(self, args: argparse.Namespace, cell: str | None) -> Any:
        app_id = self._id(args)
        self.client.get(app_id)  # 404 -> clear error
        return self._view(app_id)

    def _scale(self, args: argparse.Namespace, cell: str | None) -> None:
        app_id = self._id(args)
        self.client.scale(app_id, args.container, args.n)

        def asked_for(model: dict[str, Any]) -> bool:
            # The server records the new count when the scale starts (after the 202), and the
            # appliance is staging until it holds; so "running" with the count means done.
            return any(c["id"] == args.container and c["instances"] == args.n for c in model["containers"])

        model = self.client.wait(app_id, until=asked_for)
        print(render_text(model))

    def _down(self, args: argparse.Namespace, cell: str | None) -> None:
        app_id = self._id(args)
        self.client.delete(app_id)
        print(f"{app_id} stopped and removed")

    def _logs(self, args: argparse.Namespace, cell: str | None) -> None:
        for inst in self.client.logs(self._id(args), args.container, args.tail):
            print(f"==> {inst['name']} ({inst['state']}) <==")
            print("\n".join(inst["lines"]))

    def _endpoints(self, args: argparse.Namespace, cell: str | None) -> None:
        model = self.client.get(self._id(args))
        for c in model["containers"]:
            for e in c["endpoints"]:
                print(f"{c['id']}[{e.get('instance', 0)}] {e['name'] or ''} {e['host']}:{e['host_port']} "
                      f"(container port {e['container_port']}/{e['protocol']}) {e.get('url', '')}")
