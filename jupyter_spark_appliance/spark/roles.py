"""The role catalogue: everything the project knows about each process it can run.

A PIVOT container names an image; the project knows how to run a few *roles*
(a Spark master, a Spark worker, the Livy gateway, ...). Each role is defined
here once: its ports and their names, the log line and the probe that say it is
ready, the command that starts it (the same function builds the local process
and, inside the project's image, the container's process), its default image
and its class-data-sharing archive. Backends only run what a role describes,
so a new role is one entry in :data:`ROLES`, not edits across the package.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..credentials import notebook_token
from ..references import find_references
from ..spec import Container
from ..ui import UI_PREFIX_ENV, usable_prefix
from .cds import ClassDataSharing, spark_app_conf
from .httpjson import get_status
from .probes import grpc_answers, livy_answers, master_alive, worker_alive

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
IMAGE_PREFIX = "jupyter-spark-appliance"


@dataclass(frozen=True)
class RolePort:
    """A port the role's process always listens on (declared in the spec or not)."""

    container_port: int
    name: str  # the endpoint's name in the model ("spark-ui", "livy", ...)
    link: str | None = None  # a label when browsers open it: it then gets a URL in "links"
    scheme: str = "http"  # the scheme of that URL ("sc": a Spark Connect client's)


@dataclass(frozen=True)
class LaunchContext:
    """What a role needs to build its command, whoever runs it (local process or container)."""

    bind_host: str  # address the process listens on
    advertise_host: str  # the name other processes reach it by (container name, or the bind host)
    ports: Mapping[int, int]  # container port -> the port the process really listens on
    args: Sequence[str]  # the container's args, references resolved
    env: Mapping[str, str]  # the container's env, references resolved
    spark_home: Path
    python: str
    cores: int
    memory_mb: int
    work_dir: Path
    log_dir: Path
    daemon_java_opts: str = ""  # JVM options for master/worker daemons (archives included)
    cds_dir: Path | None = None  # archives for the gateway's drivers and executors
    contained: bool = False  # in a container: its memory limit also holds the JVM's overhead
    livy_home: str = ""  # a real Apache Livy instead of the gateway (local backend only)
    # The appliance's secret (credentials.py): Spark RPC authentication and the gateway's password.
    username: str = ""
    secret: str = ""
    secret_file: Path | None = None  # holds just the secret (0600), for the gateway's drivers
    # Executors' stdout/stderr under a worker's work dir roll past this size; 0 = never (as log_max_bytes).
    executor_log_max_bytes: int = 50 * 1024 * 1024
    executor_log_backups: int = 2  # rolled copies kept (as log_backups)
    # The appliance's path under the Jupyter server (ui.appliance_path): where its proxy serves it.
    ui_root: str = ""


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> content to write before starting


@dataclass(frozen=True)
class ProbeContext:
    """Where the server reaches an instance, for readiness probes."""

    host: str
    ports: Mapping[int, int]  # container port -> port reachable from the server
    master_ui: str | None  # the appliance master's web UI, as the server reaches it
    advertise_host: str  # the host Spark lists this instance under (a worker in /json/)


@dataclass(frozen=True)
class Role:
    name: str
    title: str
    ports: tuple[RolePort, ...]
    command: Callable[[LaunchContext], Command]
    probe: Callable[[ProbeContext], Awaitable[bool]]
    probe_port: int | None = None  # the port its probe needs to reach (None: it asks the master)
    ready_line: bytes | None = None  # what its log says once it is ready
    cds_role: str | None = None  # its JVM's class-data-sharing archive
    needs_master: bool = False  # args[0] is the master's address (PIVOT's image convention)
    restart_with_master: bool = False  # its state lives in the master: restart it when the master restarts
    # env variable -> container port: a bare ``@id`` there means that container's port (PIVOT's
    # images append it themselves; a local backend moves ports, so the reference must carry it)
    env_ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"{IMAGE_PREFIX}/{self.name}:{__version__}"

    def port(self, container_port: int) -> RolePort | None:
        return next((p for p in self.ports if p.container_port == container_port), None)


def with_env_ports(role: Role | None, container: Container) -> Container:
    """``container`` with each bare ``@id`` in the env variables of ``role.env_ports`` given its port.

    The seed's notebook says ``LIVY_HOST: "@livy"``, and its image adds Livy's
    8998; the local backend's Livy listens elsewhere, and only ``@livy:8998``
    resolves to where it really is (on Docker both give the container's name and 8998).
    """
    if role is None or not role.env_ports:
        return container
    env = dict(container.env)
    for name, port in role.env_ports.items():
        text = env.get(name)
        if not text:
            continue
        out, last = [], 0
        for ref in find_references(text):
            out.append(text[last:ref.end])
            if ref.port is None:
                out.append(f":{port}")
            last = ref.end
        env[name] = "".join(out) + text[last:]
    return dataclasses.replace(container, env=env)


def master_url(arg: str) -> str:
    return arg if arg.startswith("spark://") else f"spark://{arg}"


def worker_cores(cpus: float) -> int:
    return max(1, math.ceil(cpus - 1e-9))


def _spark_class(ctx: LaunchContext) -> str:
    return str(ctx.spark_home / "bin" / "spark-class")


def _authenticated(ctx: LaunchContext, opts_var: str, extra: str = "") -> dict[str, str]:
    """A daemon's options and environment: with the appliance's secret, Spark's RPC requires it.

    The secret goes in the JVM's own environment (``_SPARK_AUTH_SECRET``, which
    Spark reads), readable only by its user, never in the argv that ``ps``
    shows; ``spark.authenticate`` itself is not secret.
    """
    opts = f"{ctx.env.get(opts_var, '')} {extra}".strip()
    env = {opts_var: opts}
    if ctx.secret:
        env[opts_var] = f"{opts} -Dspark.authenticate=true".strip()
        env["_SPARK_AUTH_SECRET"] = ctx.secret
    return env


def reverse_proxy_conf(ctx: LaunchContext) -> dict[str, str]:
    """Spark's reverse-proxy settings, when the appliance's UI is served under a path (ui.py).

    Master, workers and applications all get the same prefix: links then carry
    it, and the master proxies workers' and applications' UIs under it.
    """
    prefix = ctx.env.get(UI_PREFIX_ENV, "").rstrip("/")
    if not prefix or not usable_prefix(prefix):
        return {}
    return {"spark.ui.reverseProxy": "true", "spark.ui.reverseProxyUrl": prefix}


def _reverse_proxy_opts(ctx: LaunchContext) -> str:
    # The prefix is a path of [A-Za-z0-9/_-] (base_url and the appliance id): no quoting needed.
    return " ".join(f"-D{k}={v}" for k, v in reverse_proxy_conf(ctx).items())


def _master(ctx: LaunchContext) -> Command:
    daemon_mb = max(128, ctx.memory_mb - 128) if ctx.contained else ctx.memory_mb
    extra = f"-Dspark.master.rest.enabled=false {_reverse_proxy_opts(ctx)}".strip()
    env = {**_authenticated(ctx, "SPARK_MASTER_OPTS", extra),
           "SPARK_DAEMON_MEMORY": f"{daemon_mb}m", "SPARK_DAEMON_JAVA_OPTS": ctx.daemon_java_opts}
    argv = [_spark_class(ctx), MASTER_CLASS, "--host", ctx.advertise_host,
            "--port", str(ctx.ports[7077]), "--webui-port", str(ctx.ports[8080])]
    return Command(argv, env)


#: Spark's size-based rolling reads an Int of bytes and rolls no finer than 80 KiB (SizeBasedRollingPolicy)
MAX_ROLLING_BYTES, MIN_ROLLING_BYTES = 2**31 - 1, 80 * 1024


def executor_log_rolling(max_bytes: int, backups: int) -> dict[str, str]:
    """The worker's settings that cap its executors' logs (``<work dir>/<app>/<n>/stdout`` and ``stderr``).

    A standalone worker writes each executor's output itself (ExecutorRunner's
    FileAppender), rolling it as the *worker's* own conf says, so these are
    system properties of the worker's JVM, not of the application. Spark keeps
    every rolled file when ``maxRetainedFiles`` is 0, so at least one is kept.
    """
    if max_bytes <= 0:
        return {}
    return {"spark.executor.logs.rolling.strategy": "size",
            "spark.executor.logs.rolling.maxSize": str(min(MAX_ROLLING_BYTES, max(MIN_ROLLING_BYTES, max_bytes))),
            "spark.executor.logs.rolling.maxRetainedFiles": str(max(1, backups))}


def _worker(ctx: LaunchContext) -> Command:
    if not ctx.args:
        raise ValueError("spark-worker needs the master's address as its first argument, e.g. [\"@spark-master:7077\"]")
    # In a container the limit also holds the worker daemon: offer executors the rest.
    offered = max(256, ctx.memory_mb - 384) if ctx.contained else ctx.memory_mb
    rolling = executor_log_rolling(ctx.executor_log_max_bytes, ctx.executor_log_backups)
    extra = " ".join([*(f"-D{k}={v}" for k, v in rolling.items()), _reverse_proxy_opts(ctx)]).strip()
    env = {**_authenticated(ctx, "SPARK_WORKER_OPTS", extra),
           "SPARK_DAEMON_MEMORY": "256m", "SPARK_DAEMON_JAVA_OPTS": ctx.daemon_java_opts}
    argv = [_spark_class(ctx), WORKER_CLASS, master_url(ctx.args[0]),
            "--host", ctx.advertise_host, "--port", str(ctx.ports[7078]), "--webui-port", str(ctx.ports[8081]),
            "--cores", str(ctx.cores), "--memory", f"{offered}M", "--work-dir", str(ctx.work_dir)]
    return Command(argv, env)


def _livy(ctx: LaunchContext) -> Command:
    if not ctx.args:
        raise ValueError("livy needs the master's address as its first argument, e.g. [\"spark://@spark-master:7077\"]")
    master = master_url(ctx.args[0])
    if ctx.livy_home:
        return _real_livy(ctx, master)
    argv = [ctx.python, "-m", "jupyter_spark_appliance.livy", "--master", master,
            "--host", ctx.bind_host, "--port", str(ctx.ports[8998]), "--log-dir", str(ctx.log_dir)]
    if len(ctx.args) > 1:  # the master's web UI: the gateway reads free cores from its /json/
        argv += ["--master-ui", ctx.args[1]]
    env: dict[str, str] = {}
    if ctx.secret:
        # HTTP Basic for every client (the password from the environment, never argv), and
        # Spark's RPC secret for its drivers, read from a 0600 file into their SparkConf.
        argv += ["--username", ctx.username or "jsa"]
        env["LIVY_GATEWAY_PASSWORD"] = ctx.secret
        if ctx.secret_file is not None:
            env["JSA_SPARK_AUTH_SECRET_FILE"] = str(ctx.secret_file)
    if ctx.contained:
        # Clients reach it by its container name or by whatever address its node has.
        argv += ["--allowed-hosts", f"127.0.0.1,localhost,::1,{ctx.advertise_host},ip"]
        # Executors on other containers connect back to the driver by this name.
        argv += ["--conf", f"spark.driver.host={ctx.advertise_host}", "--conf", "spark.driver.bindAddress=0.0.0.0"]
    for key, value in reverse_proxy_conf(ctx).items():  # its drivers' UIs, through the master's proxy
        argv += ["--conf", f"{key}={value}"]
    if ctx.cds_dir is not None:
        argv += ["--cds-dir", str(ctx.cds_dir)]
    return Command(argv, env)


CONNECT_PORT = 15002


def _connect(ctx: LaunchContext) -> Command:
    """A Spark Connect server: an application of the appliance's master that clients reach with gRPC.

    Its configuration, with the token and Spark's RPC secret, goes into a 0600
    properties file that connect_server.py writes (never argv). Executors come
    and go with dynamic allocation, so an idle server holds no cores.
    """
    if not ctx.args:
        raise ValueError("spark-connect needs the master's address as its first argument, "
                         "e.g. [\"spark://@spark-master:7077\"]")
    driver_mb = max(256, ctx.memory_mb - 384) if ctx.contained else ctx.memory_mb
    conf = {
        "spark.connect.grpc.binding.address": ctx.bind_host,
        "spark.connect.grpc.binding.port": str(ctx.ports[CONNECT_PORT]),
        "spark.driver.memory": f"{driver_mb}m",
        "spark.driver.host": ctx.advertise_host,
        "spark.driver.bindAddress": "0.0.0.0" if ctx.contained else ctx.bind_host,
        "spark.executor.memory": "512m",
        "spark.executor.cores": "1",
        "spark.dynamicAllocation.enabled": "true",
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.minExecutors": "0",
        "spark.dynamicAllocation.executorIdleTimeout": "20s",
        "spark.dynamicAllocation.shuffleTracking.timeout": "30s",
        "spark.ui.showConsoleProgress": "false",
        **reverse_proxy_conf(ctx),
        # Its driver and executors are an application's like the gateway's: they start from the same archives.
        **(spark_app_conf(ClassDataSharing(ctx.cds_dir), ctx.spark_home) if ctx.cds_dir is not None else {}),
    }
    argv = [ctx.python, "-m", "jupyter_spark_appliance.spark.connect_server", "--spark-home", str(ctx.spark_home),
            "--master", master_url(ctx.args[0]), "--properties-file", str(ctx.work_dir / "connect.properties")]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    env: dict[str, str] = {}
    if ctx.secret_file is not None:
        env["JSA_SPARK_AUTH_SECRET_FILE"] = str(ctx.secret_file)
    elif ctx.secret:
        env["JSA_CONNECT_SECRET"] = ctx.secret  # the wrapper takes it out of its environment
    return Command(argv, env)


def _real_livy(ctx: LaunchContext, master: str) -> Command:
    conf = ctx.work_dir / "livy-conf"
    text = (f"livy.server.host = {ctx.bind_host}\nlivy.server.port = {ctx.ports[8998]}\n"
            f"livy.spark.master = {master}\nlivy.spark.deploy-mode = client\n")
    env = {"LIVY_CONF_DIR": str(conf), "LIVY_LOG_DIR": str(ctx.log_dir), "SPARK_HOME": str(ctx.spark_home)}
    return Command([str(Path(ctx.livy_home) / "bin" / "livy-server")], env, {str(conf / "livy.conf"): text})


NOTEBOOK_PORT = 8888
LIVY_PORT = 8998
#: The notebook's route under the appliance's path (proxy.py), which is also the child's base_url.
NOTEBOOK_ROUTE = "notebook/"
NOTEBOOK_TOKEN_ENV = "JSA_NOTEBOOK_TOKEN"
NOTEBOOK_LIVY_PASSWORD_ENV = "JSA_LIVY_PASSWORD"


def livy_url(value: str) -> str:
    """``LIVY_HOST`` as Sparkmagic's URL: a scheme and a port added when it has none (PIVOT's image does the same)."""
    url = value.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    if not re.search(r":\d+$", url.split("://", 1)[1]):
        url = f"{url}:{LIVY_PORT}"
    return url


def _sparkmagic(ctx: LaunchContext) -> Command:
    """A Jupyter server of the appliance's own whose Sparkmagic kernels use the appliance's Livy.

    Its token is derived from the appliance's secret (credentials.notebook_token),
    so the server's proxy can add it; the seed's ``--NotebookApp.token=""`` (and
    every other arg) is ignored: this role never serves a notebook without a
    token. Token and Livy password go in the environment of the wrapper
    (spark/notebook_server.py), which writes them into 0600 files and removes
    them before the server starts; argv carries neither.
    """
    livy = ctx.env.get("LIVY_HOST", "")
    if not livy:
        raise ValueError("sparkmagic needs LIVY_HOST, the Livy its kernels use, e.g. {\"LIVY_HOST\": \"@livy\"}")
    if not ctx.secret:
        raise ValueError("sparkmagic needs the appliance's secret for its token and for Livy")
    base_url = (ctx.ui_root or "/") + NOTEBOOK_ROUTE
    argv = [ctx.python, "-m", "jupyter_spark_appliance.spark.notebook_server", "--livy", livy_url(livy),
            "--ip", ctx.bind_host, "--port", str(ctx.ports[NOTEBOOK_PORT]), "--base-url", base_url,
            "--work-dir", str(ctx.work_dir), "--username", ctx.username or "jsa"]
    env = {NOTEBOOK_TOKEN_ENV: notebook_token(ctx.secret), NOTEBOOK_LIVY_PASSWORD_ENV: ctx.secret}
    return Command(argv, env)


async def _sparkmagic_ready(p: ProbeContext) -> bool:
    # Any HTTP answer: its pages are under the base_url and need the token, so / is a 404 once it serves.
    return await get_status(f"http://{p.host}:{p.ports[NOTEBOOK_PORT]}/") is not None


async def _master_ready(p: ProbeContext) -> bool:
    return await master_alive(f"http://{p.host}:{p.ports[8080]}")


async def _worker_ready(p: ProbeContext) -> bool:
    return await worker_alive(p.master_ui, lambda w: w.get("host") == p.advertise_host
                              and (7078 not in p.ports or w.get("port") == p.ports[7078]))


async def _livy_ready(p: ProbeContext) -> bool:
    return await livy_answers(f"http://{p.host}:{p.ports[8998]}")


async def _connect_ready(p: ProbeContext) -> bool:
    return await grpc_answers(p.host, p.ports[CONNECT_PORT])


SPARK_MASTER = Role(
    name="spark-master", title="Spark master",
    ports=(RolePort(7077, "spark"), RolePort(8080, "spark-ui", "Spark master UI")),
    command=_master, probe=_master_ready, probe_port=8080, ready_line=b"New state: ALIVE", cds_role="spark-master",
)
SPARK_WORKER = Role(
    name="spark-worker", title="Spark worker",
    ports=(RolePort(7078, "worker"), RolePort(8081, "worker-ui", "Spark worker UI")),
    command=_worker, probe=_worker_ready, ready_line=b"Successfully registered with master",
    cds_role="spark-worker", needs_master=True,
)
LIVY = Role(
    name="livy", title="Livy",
    ports=(RolePort(8998, "livy", "Livy"),),
    command=_livy, probe=_livy_ready, probe_port=8998, ready_line=b"Livy gateway on http://",
    needs_master=True, restart_with_master=True,
)

SPARK_CONNECT = Role(
    name="spark-connect", title="Spark Connect",
    ports=(RolePort(CONNECT_PORT, "connect", "Spark Connect", scheme="sc"),),
    command=_connect, probe=_connect_ready, probe_port=CONNECT_PORT,
    ready_line=b"Spark Connect server started at", needs_master=True, restart_with_master=True,
)

SPARKMAGIC = Role(
    name="sparkmagic", title="Sparkmagic notebook",
    ports=(RolePort(NOTEBOOK_PORT, "notebook", "Sparkmagic notebook"),),
    command=_sparkmagic, probe=_sparkmagic_ready, probe_port=NOTEBOOK_PORT,
    ready_line=b"is running at:", env_ports={"LIVY_HOST": LIVY_PORT},
)

ROLES: dict[str, Role] = {r.name: r for r in (SPARK_MASTER, SPARK_WORKER, LIVY, SPARK_CONNECT, SPARKMAGIC)}

#: Regular expression (matched against a container's image, then its id) -> role; first match wins.
DEFAULT_ROLE_PATTERNS: dict[str, str] = {
    r"spark-master": "spark-master",
    r"spark(-r)?-worker": "spark-worker",
    r"livy": "livy",
    r"spark-connect": "spark-connect",
    r"sparkmagic": "sparkmagic",
}


def role_by_pattern(image: str, container_id: str, patterns: Mapping[str, str]) -> Role | None:
    for text in (image, container_id):
        for pattern, name in patterns.items():
            if re.search(pattern, text) and name in ROLES:
                return ROLES[name]
    return None


def role_by_image(image: str) -> Role | None:
    """The role whose project image this is (the Docker backend knows only its own images)."""
    return next((r for r in ROLES.values() if r.image == image), None)


def port_name(role: Role | None, container_port: int) -> str | None:
    port = role.port(container_port) if role else None
    return port.name if port else None


def link_labels() -> dict[str, str]:
    """Endpoint name -> label, for every port a browser opens (the model's links)."""
    return {p.name: p.link for r in ROLES.values() for p in r.ports if p.link}


def link_schemes() -> dict[str, str]:
    """Endpoint name -> the scheme of its URL in the model (http, or sc for Spark Connect)."""
    return {p.name: p.scheme for r in ROLES.values() for p in r.ports if p.link}
