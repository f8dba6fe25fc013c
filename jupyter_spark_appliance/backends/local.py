"""Local backend: each container instance is a real process on this machine.

Spark's master and workers run through the installed ``spark-class`` (which
execs into the JVM, so the child's pid is the JVM's); the livy container runs
the project's Livy gateway, or a real Livy from ``livy_home``. Each process
gets its own session (process group) so that stopping it also stops what it
spawned (executors, drivers), and so that Ctrl-C on the server's terminal does
not kill JVMs behind the orchestrator's back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..cds import FAST_DAEMON_JAVA_OPTS, ClassDataSharing
from ..logwatch import READY_LINES, LogWatcher
from ..plan import AddressOf, address_map_resolver, resolve_container
from ..ports import allocate_port, release_port
from ..process_groups import stop_group
from ..spark_home import SparkNotFound, find_spark_home
from ..spec import Appliance, Container, Problem
from ..state import ApplianceRecord, Endpoint, Instance
from .base import Backend, StartedInstance, StartFailed
from .local_roles import DEFAULT_LOCAL_ROLES, PORT_NAMES, ROLE_PORTS, memory_mb, role_of, worker_cores
from .probes import health_check_passes, livy_answers, master_alive, ports_accept, worker_alive

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@dataclass
class LocalConfig:
    bind_host: str = "127.0.0.1"
    connect_host: str = "127.0.0.1"
    port_range: tuple[int, int] | None = None
    spark_home: str = ""
    livy_home: str = ""
    roles: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LOCAL_ROLES))
    daemon_java_opts: str = FAST_DAEMON_JAVA_OPTS
    worker_daemon_memory: str = "256m"
    python: str = sys.executable
    extra_env: Mapping[str, str] = field(default_factory=dict)
    cds_dir: Path | None = None  # class-data-sharing archives; None = off


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: LocalConfig, workdir: Callable[[str], Path]):
        self.config = config
        self.workdir = workdir
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._logs = LogWatcher()
        self._cds = ClassDataSharing(config.cds_dir or Path(), enabled=config.cds_dir is not None)

    # ------------------------------------------------------------------ checks

    def check(self, appliance: Appliance) -> list[Problem]:
        problems = []
        roles = {c.id: role_of(c, self.config.roles) for c in appliance.containers}
        for i, c in enumerate(appliance.containers):
            role = roles[c.id]
            if role is None:
                problems.append(Problem(
                    f"containers[{i}].image",
                    f"the local backend cannot run {c.image!r}: it runs only the roles "
                    f"{', '.join(sorted(set(self.config.roles.values())))} (matched from image or id by "
                    "c.SparkApplianceApp.local_roles); use the docker backend for other images",
                ))
            elif role in ("spark-worker", "livy") and not c.args and "spark-master" not in roles.values():
                problems.append(Problem(f"containers[{i}].args", "needs the master's address, e.g. [\"@spark-master:7077\"]"))
            if c.type == "job":
                problems.append(Problem(f"containers[{i}].type", "the local backend runs services only"))
        if any(r in ("spark-master", "spark-worker") for r in roles.values()):
            try:
                find_spark_home(self.config.spark_home)
            except SparkNotFound as e:
                problems.append(Problem("containers", str(e)))
        return problems

    # ------------------------------------------------------------------ start

    async def start(self, record: ApplianceRecord, container: Container, instance: Instance) -> StartedInstance:
        role = role_of(container, self.config.roles)
        if role is None:  # check() rejected it already; defensive
            raise StartFailed(f"no local role for image {container.image!r}")
        host = self.config.bind_host
        ports: dict[int, int] = {}
        endpoints: list[Endpoint] = []
        for p in container.ports:
            ports[p.container_port] = p.host_port or allocate_port(host, self.config.port_range)
            endpoints.append(Endpoint(self.config.connect_host, ports[p.container_port], p.container_port,
                                      p.protocol, p.name or PORT_NAMES.get((role, p.container_port))))
        for meaning, cport in ROLE_PORTS[role].items():
            if cport not in ports:
                ports[cport] = allocate_port(host, self.config.port_range)
                if meaning == "ui":
                    endpoints.append(Endpoint(self.config.connect_host, ports[cport], cport, "tcp",
                                              PORT_NAMES.get((role, cport))))
        resolved = resolve_container(container, _address_of(record, self.config.connect_host))
        base = self.workdir(record.id)
        logs = base / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{instance.name}.log"
        env = {**os.environ, **self.config.extra_env, **resolved.env, "SPARK_LOCAL_IP": host}
        env.setdefault("PYSPARK_PYTHON", self.config.python)
        argv, extra_env, info = self._command(role, record, container, instance, resolved.args, ports, base)
        env.update(extra_env)
        self._logs.forget(log_path)
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, cwd=base, start_new_session=True,
                )
            except OSError as e:
                raise StartFailed(f"could not run {argv[0]}: {e}") from e
        self._children[proc.pid] = proc
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = time.time()
        info.update(pid=proc.pid, create_time=started, log=str(log_path), role=role,
                    ports={str(k): v for k, v in ports.items()})
        return StartedInstance(endpoints, info)

    def _command(
        self, role: str, record: ApplianceRecord, container: Container, instance: Instance,
        args: list[str], ports: dict[int, int], base: Path,
    ) -> tuple[list[str], dict[str, str], dict[str, object]]:
        host = self.config.bind_host
        info: dict[str, object] = {}
        if role in ("spark-master", "spark-worker"):
            spark_home = find_spark_home(self.config.spark_home)
            spark_class = str(spark_home / "bin" / "spark-class")
            cds_opts, cds_info = self._cds.java_opts(role, spark_home)
            info.update(cds_info)
            java_opts = f"{self.config.daemon_java_opts} {cds_opts}".strip()
        if role == "spark-master":
            opts = f"{container.env.get('SPARK_MASTER_OPTS', '')} -Dspark.master.rest.enabled=false".strip()
            env = {"SPARK_MASTER_OPTS": opts, "SPARK_DAEMON_MEMORY": f"{memory_mb(container)}m",
                   "SPARK_DAEMON_JAVA_OPTS": java_opts}
            argv = [spark_class, MASTER_CLASS, "--host", host, "--port", str(ports[7077]),
                    "--webui-port", str(ports[8080])]
            return argv, env, info
        master_url = self._master_url(record, args)
        if role == "spark-worker":
            work = base / "work" / instance.name
            work.mkdir(parents=True, exist_ok=True)
            env = {"SPARK_DAEMON_MEMORY": self.config.worker_daemon_memory,
                   "SPARK_DAEMON_JAVA_OPTS": java_opts}
            argv = [spark_class, WORKER_CLASS, master_url, "--host", host,
                    "--port", str(ports[7078]), "--webui-port", str(ports[8081]),
                    "--cores", str(worker_cores(container)), "--memory", f"{memory_mb(container)}M",
                    "--work-dir", str(work)]
            info["master_url"] = master_url
            return argv, env, info
        # livy
        info["master_url"] = master_url
        if self.config.livy_home:
            return self._real_livy(master_url, ports[8998], base, info)
        argv = [self.config.python, "-m", "jupyter_spark_appliance.livy", "--master", master_url,
                "--host", host, "--port", str(ports[8998]), "--log-dir", str(base / "logs" / instance.name)]
        if self.config.cds_dir is not None:
            argv += ["--cds-dir", str(self.config.cds_dir)]
        return argv, {}, info

    def _real_livy(self, master_url: str, port: int, base: Path, info: dict[str, object]):
        conf = base / "livy-conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "livy.conf").write_text(
            f"livy.server.host = {self.config.bind_host}\nlivy.server.port = {port}\n"
            f"livy.spark.master = {master_url}\nlivy.spark.deploy-mode = client\n"
        )
        info["livy_home"] = self.config.livy_home
        argv = [str(Path(self.config.livy_home) / "bin" / "livy-server")]
        env = {"LIVY_CONF_DIR": str(conf), "LIVY_LOG_DIR": str(base / "logs"),
               "SPARK_HOME": str(find_spark_home(self.config.spark_home))}
        return argv, env, info

    def _master_url(self, record: ApplianceRecord, args: list[str]) -> str:
        if args:
            url = args[0]
            return url if url.startswith("spark://") else f"spark://{url}"
        for c in record.appliance.containers:
            if role_of(c, self.config.roles) == "spark-master":
                for inst in record.instances[c.id]:
                    for ep in inst.endpoints:
                        if ep.container_port == 7077:
                            return f"spark://{ep.host}:{ep.host_port}"
        raise StartFailed("no Spark master address: give it in args, e.g. [\"@spark-master:7077\"]")

    # ------------------------------------------------------------------ probes

    async def ready(self, record: ApplianceRecord, container: Container, instance: Instance) -> bool:
        role = instance.info.get("role")
        ports = {int(k): v for k, v in instance.info.get("ports", {}).items()}
        host = self.config.connect_host
        if container.health_check is not None:
            return await health_check_passes(container.health_check, host, ports)
        # The role's ready line in its log; the HTTP probes below remain for instances whose log is gone.
        log = instance.info.get("log")
        real_livy = role == "livy" and instance.info.get("livy_home")
        if role in READY_LINES and log and Path(str(log)).exists() and not real_livy:
            return self._logs.seen(str(log), READY_LINES[role])
        if role == "spark-master":
            return await master_alive(f"http://{host}:{ports[8080]}")
        if role == "spark-worker":
            ui = self._master_ui(record, str(instance.info.get("master_url", "")))
            return await worker_alive(ui, lambda w: w.get("port") == ports[7078])
        if role == "livy":
            return await livy_answers(f"http://{host}:{ports[8998]}")
        return await ports_accept(host, ports.values())

    def _master_ui(self, record: ApplianceRecord, master_url: str) -> str | None:
        """The web UI of the master a worker registered with, found by its RPC port."""
        rpc = master_url.rsplit(":", 1)[-1]
        for c in record.appliance.containers:
            for inst in record.instances[c.id]:
                if inst.info.get("role") != "spark-master":
                    continue
                if str(inst.info.get("ports", {}).get("7077")) == rpc:
                    return f"http://{self.config.connect_host}:{inst.info['ports']['8080']}"
        return None

    def exit_status(self, instance: Instance) -> str | None:
        pid = instance.info.get("pid")
        if not isinstance(pid, int):
            return "never started"
        child = self._children.get(pid)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
            self._children.pop(pid, None)
            return _describe_exit(code)
        # Not our child (adopted after a restart): identify it by pid and start time.
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - float(instance.info.get("create_time", 0))) > 1.0:
                return "its process is gone (the pid now belongs to another process)"
            if proc.status() == psutil.STATUS_ZOMBIE:
                return "its process exited"
        except psutil.NoSuchProcess:
            return "its process is gone"
        except psutil.Error as e:
            return f"its process cannot be inspected: {e}"
        return None

    async def stop(self, record: ApplianceRecord, instance: Instance) -> None:
        pid = instance.info.get("pid")
        try:
            if isinstance(pid, int) and self.exit_status(instance) is None:
                await asyncio.to_thread(stop_group, pid, self._children.get(pid))
        finally:
            if isinstance(pid, int):
                self._children.pop(pid, None)
            for port in instance.info.get("ports", {}).values():
                release_port(int(port))
            ClassDataSharing.finish(instance.info)

    def logs(self, record: ApplianceRecord, instance: Instance, tail: int) -> list[str]:
        path = instance.info.get("log")
        if not path:
            return []
        return tail_lines(Path(str(path)), tail)

    async def shutdown(self) -> None:
        self._children.clear()


def _address_of(record: ApplianceRecord, host: str) -> AddressOf:
    """``@id`` -> this host; ``@id:PORT`` -> the loopback port that instance got for PORT."""
    hosts: dict[str, str] = {}
    ports: dict[tuple[str, int], int] = {}
    for cid, insts in record.instances.items():
        started = next((i for i in insts if i.info), None)
        if started is not None:
            hosts[cid] = host
            ports.update({(cid, int(k)): v for k, v in started.info.get("ports", {}).items()})
    return address_map_resolver(hosts, ports)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with code {code}"


def tail_lines(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max(n, 1) * 400))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:] if n > 0 else []
