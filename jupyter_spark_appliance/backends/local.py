"""Local backend: each container instance is a real process on this machine.

A local machine has no images, so each container runs as one of the roles of
the catalogue (spark/roles.py), chosen by ``c.SparkApplianceApp.local_roles``
(regular expressions over image and id). Spark's daemons run through the
installed ``spark-class`` (which execs into the JVM, so the child's pid is the
JVM's); the livy container runs the project's gateway, or a real Livy from
``livy_home``. Each process gets its own session (process group) so that
stopping it also stops what it spawned (executors, drivers), and so that
Ctrl-C on the server's terminal does not kill JVMs behind the orchestrator's back.
Each process writes its own log (``logs/<name>.log``, opened ``O_APPEND``), which
the server caps by "copytruncate" rotation as it checks the process every tick
(spark/logrotate.py says why that kind).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .. import ui
from ..handles import Handle, handle_kind
from ..plan import AddressOf, address_map_resolver, resolve_container
from ..spark.cds import FAST_DAEMON_JAVA_OPTS, ClassDataSharing
from ..spark.child_env import child_environment
from ..spark.home import SparkNotFound, find_spark_home
from ..spark.logrotate import backup_path, open_append, remove_backups, rotate_if_larger, tail_lines
from ..spark.logwatch import LogWatcher
from ..spark.ports import allocate_port, reachable_host, release_port
from ..spark.probes import health_check_passes, ports_accept
from ..spark.processes import stop_group
from ..spark.reaper import Reaper
from ..spark.roles import (
    DEFAULT_ROLE_PATTERNS,
    LaunchContext,
    ProbeContext,
    Role,
    role_by_pattern,
    with_env_ports,
    worker_cores,
)
from ..spec import Appliance, Container, Problem
from ..state import Endpoint
from .base import Backend, Exit, Started, StartFailed, StartRequest

log = logging.getLogger(__name__)


@handle_kind
@dataclass
class ProcessHandle(Handle):
    kind = "process"
    pid: int = 0
    create_time: float = 0.0  # with the pid, identifies the process after a server restart
    log: str = ""
    ready_line: str = ""  # what the log says once the process is ready ("" = probe it)
    cds: dict[str, str] = field(default_factory=dict)  # an archive this JVM records as it exits


@dataclass
class LocalConfig:
    bind_host: str = "127.0.0.1"
    connect_host: str = "127.0.0.1"
    port_range: tuple[int, int] | None = None
    spark_home: str = ""
    livy_home: str = ""
    roles: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLE_PATTERNS))
    daemon_java_opts: str = FAST_DAEMON_JAVA_OPTS
    python: str = sys.executable
    extra_env: Mapping[str, str] = field(default_factory=dict)
    env_allow: tuple[str, ...] = ()  # names (fnmatch patterns) children inherit besides child_env.BASE_ALLOW
    reap_with_server: bool = True  # stop_on_shutdown: processes die with the server, even on SIGKILL
    cds_dir: Path | None = None  # class-data-sharing archives; None = off
    log_max_bytes: int = 50 * 1024 * 1024  # an instance's log is rotated past this; 0 = never
    log_backups: int = 2  # rotated copies kept (<name>.log.1 the newest)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: LocalConfig, workdir: Callable[[str], Path]):
        self.config = config
        self.connect_host = config.connect_host
        self.workdir = workdir
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._logs = LogWatcher()
        self._cds = ClassDataSharing(config.cds_dir or Path(), enabled=config.cds_dir is not None)
        self._reaper = Reaper(config.python) if config.reap_with_server else None
        self._watched: set[int] = set()
        self._rotate_lock = threading.Lock()
        self._rotated: dict[str, bool] = {}  # logs rotated since their ready line was last looked for

    # ------------------------------------------------------------------ checks

    def role_of(self, container: Container) -> Role | None:
        return role_by_pattern(container.image, container.id, self.config.roles)

    def check(self, appliance: Appliance) -> list[Problem]:
        problems = []
        roles = {c.id: self.role_of(c) for c in appliance.containers}
        for i, c in enumerate(appliance.containers):
            role = roles[c.id]
            if role is None:
                problems.append(Problem(
                    f"containers[{i}].image",
                    f"the local backend cannot run {c.image!r}: it runs only the roles "
                    f"{', '.join(sorted(set(self.config.roles.values())))} (matched from image or id by "
                    "c.SparkApplianceApp.local_roles); use the docker backend for other images",
                ))
            elif role.needs_master and not c.args:
                problems.append(Problem(f"containers[{i}].args",
                                        "needs the master's address, e.g. [\"@spark-master:7077\"]"))
            for name in role.env_ports if role is not None else ():
                if not c.env.get(name):
                    problems.append(Problem(f"containers[{i}].env.{name}",
                                            f"the {role.name} role needs it, e.g. {{\"{name}\": \"@livy\"}}"))
            if c.type == "job":
                problems.append(Problem(f"containers[{i}].type", "the local backend runs services only"))
        if any(r is not None and r.name.startswith("spark-") for r in roles.values()):
            try:
                find_spark_home(self.config.spark_home)
            except SparkNotFound as e:
                problems.append(Problem("containers", str(e)))
        return problems

    # ------------------------------------------------------------------ start

    @property
    def peer_host(self) -> str:
        """The address processes of this machine reach each other at: the one they listen on.

        Not ``connect_host``, which is only what clients are told (a name for this machine,
        which need not route to a loopback bind address, nor be a form Spark's URLs parse):
        a worker given ``@spark-master:7077`` then uses the very URL the master advertises.
        """
        return reachable_host(self.config.bind_host)

    def resolver(self, peers: Mapping[str, Handle], referrer: Container) -> AddressOf:
        """``@id`` -> where that process listens; ``@id:PORT`` -> the port that instance got for PORT."""
        hosts = {cid: h.peer_host for cid, h in peers.items()}
        ports = {(cid, cport): port for cid, h in peers.items() for cport, port in h.ports.items()}
        return address_map_resolver(hosts, ports)

    async def start(self, request: StartRequest) -> Started:
        # Port probing, mkdir, the jar glob and fork are blocking: off the event loop. The server's
        # environment is copied here, on the loop: code on the loop (a kernel launch, a test's
        # monkeypatch) may change os.environ while the thread would iterate it ("dictionary
        # changed size during iteration" failed a worker's start in a CI run).
        return await asyncio.to_thread(self._start, request, dict(os.environ))

    def _start(self, request: StartRequest, server_env: Mapping[str, str]) -> Started:
        role, container = request.role, request.container
        if role is None:  # check() rejected it already; defensive
            raise StartFailed(f"no local role for image {container.image!r}")
        ports, endpoints = self._ports(request, role)
        base = self.workdir(request.appliance_id)
        log_path = base / "logs" / f"{request.name}.log"
        work = base / "work" / request.name
        for d in (log_path.parent, work):
            d.mkdir(parents=True, exist_ok=True)
        resolved = resolve_container(with_env_ports(role, container), self.resolver(request.peers, container))
        try:
            spark_home = find_spark_home(self.config.spark_home)
        except SparkNotFound as e:
            raise StartFailed(str(e)) from None
        cds_opts, cds_facts = self._cds.java_opts(role.cds_role, spark_home) if role.cds_role else ("", {})
        ctx = LaunchContext(
            bind_host=self.config.bind_host, advertise_host=self.config.bind_host, ports=ports,
            args=resolved.args, env=resolved.env, spark_home=spark_home, python=self.config.python,
            cores=worker_cores(container.resources.cpus), memory_mb=max(1, int(container.resources.mem)),
            work_dir=work, log_dir=base / "logs" / request.name,
            daemon_java_opts=f"{self.config.daemon_java_opts} {cds_opts}".strip(),
            cds_dir=self.config.cds_dir, livy_home=self.config.livy_home,
            username=request.credentials.username if request.credentials else "",
            secret=request.credentials.password if request.credentials else "",
            secret_file=request.credentials.secret_file if request.credentials else None,
            executor_log_max_bytes=self.config.log_max_bytes, executor_log_backups=self.config.log_backups,
            ui_root=ui.appliance_path(request.appliance_id),
        )
        try:
            command = role.command(ctx)
        except ValueError as e:
            raise StartFailed(str(e)) from None
        for path, text in command.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        env = child_environment(self.config.env_allow, self.config.extra_env, resolved.env, command.env,
                                {"SPARK_LOCAL_IP": self.config.bind_host}, source=server_env)
        env.setdefault("PYSPARK_PYTHON", self.config.python)
        self._logs.forget(log_path)
        self._rotated.pop(str(log_path), None)
        proc = self._spawn(command.argv, env, base, log_path)
        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = time.time()
        self._watch(proc.pid, started)
        ready_line = role.ready_line.decode() if role.ready_line and not self.config.livy_home else ""
        handle = ProcessHandle(ports=ports, peer_host=self.peer_host, pid=proc.pid, create_time=started,
                               log=str(log_path), ready_line=ready_line, cds=cds_facts)
        return Started(handle, endpoints)

    def _ports(self, request: StartRequest, role: Role) -> tuple[dict[int, int], list[Endpoint]]:
        """A listening port for every declared port and every port the role always opens.

        A replacement gets its predecessor's ports back, so that workers find a
        restarted master where they knew it, and Sparkmagic its Livy.
        """
        previous = request.previous.ports if request.previous else {}
        host = self.config.bind_host
        ports: dict[int, int] = {}
        endpoints: list[Endpoint] = []

        def port_for(cport: int, wanted: int = 0) -> int:
            return wanted or previous.get(cport) or allocate_port(host, self.config.port_range)

        for p in request.container.ports:
            ports[p.container_port] = port_for(p.container_port, p.host_port)
            role_port = role.port(p.container_port)
            endpoints.append(Endpoint(self.config.connect_host, ports[p.container_port], p.container_port,
                                      p.protocol, p.name or (role_port.name if role_port else None)))
        for rp in role.ports:
            if rp.container_port not in ports:
                ports[rp.container_port] = port_for(rp.container_port)
                if rp.link:  # undeclared, but browsers open it (a worker's UI)
                    endpoints.append(Endpoint(self.config.connect_host, ports[rp.container_port],
                                              rp.container_port, "tcp", rp.name))
        return ports, endpoints

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
        # A new log (its predecessor's last lines are in the restart's reason) and none of
        # its old copies. O_APPEND: after a rotation truncates the file, the child's next
        # write lands at offset 0 rather than at its old offset behind a hole of NULs.
        remove_backups(log_path)
        fd = open_append(log_path)
        try:
            os.write(fd, f"$ {' '.join(argv)}\n".encode())
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                                        env=env, cwd=cwd, start_new_session=True)
            except (OSError, ValueError) as e:  # ValueError: a NUL byte in argv or env
                raise StartFailed(f"could not run {argv[0]}: {e}") from e
        finally:
            os.close(fd)  # the child has its own copy; the server holds no pipe, so the child survives it
        self._children[proc.pid] = proc
        return proc

    # ------------------------------------------------------------------ probes

    async def ready(self, handle: Handle, container: Container, role: Role | None, master_ui: str | None) -> bool:
        assert isinstance(handle, ProcessHandle)
        host = self.config.connect_host
        if container.health_check is not None:
            return await health_check_passes(container.health_check, host, handle.ports)
        # The role's ready line in its log; the HTTP probes below remain for instances whose log is gone.
        if handle.ready_line and Path(handle.log).exists():
            line = handle.ready_line.encode()
            if self._rotated.pop(handle.log, False):
                # Rotated before it was ready: what the watcher had not read yet is in .1 now,
                # and the live file starts over at 0.
                self._logs.forget(handle.log)
                backup = backup_path(Path(handle.log), 1)
                self._logs.forget(backup)
                if await asyncio.to_thread(self._logs.seen, backup, line):
                    return True
            return self._logs.seen(handle.log, line)
        if role is not None:
            return await role.probe(ProbeContext(host, handle.ports, master_ui, self.config.bind_host))
        return await ports_accept(host, handle.ports.values())

    def exit_status(self, handle: Handle) -> Exit | None:
        """Whether the process lives; a live one's log is rotated here when over the cap.

        The orchestrator asks this of every live instance on every tick of the reconciler
        (and on every readiness poll), in a thread: the natural place for one ``stat``.
        """
        status = self._exit_status(handle)
        if status is None:
            self._rotate_log(handle)
        return status

    def _rotate_log(self, handle: Handle) -> None:
        assert isinstance(handle, ProcessHandle)
        if not handle.log or self.config.log_max_bytes <= 0:
            return
        try:
            with self._rotate_lock:  # the reconciler and a re-adoption may ask at once
                if rotate_if_larger(Path(handle.log), self.config.log_max_bytes, self.config.log_backups):
                    self._rotated[handle.log] = True
        except OSError as e:  # a full disk: the copy failed, the live file is left as it is
            log.warning("could not rotate %s: %s", handle.log, e)

    def _exit_status(self, handle: Handle) -> Exit | None:
        assert isinstance(handle, ProcessHandle)
        child = self._children.get(handle.pid)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
            self._children.pop(handle.pid, None)
            return Exit(_describe_exit(code), success=code == 0)
        # Not our child (adopted after a restart): identify it by pid and start time.
        try:
            proc = psutil.Process(handle.pid)
            if abs(proc.create_time() - handle.create_time) > 1.0:
                return Exit("its process is gone (the pid now belongs to another process)")
            if proc.status() == psutil.STATUS_ZOMBIE:
                return Exit("its process exited")
        except psutil.NoSuchProcess:
            return Exit("its process is gone")
        except psutil.Error as e:
            return Exit(f"its process cannot be inspected: {e}")
        self._watch(handle.pid, handle.create_time)  # re-adopted: it dies with this server now
        return None

    def _watch(self, pid: int, create_time: float) -> None:
        if self._reaper is not None and pid not in self._watched:
            self._reaper.watch(pid, create_time)  # its own session: the group id is its pid
            self._watched.add(pid)

    async def stop(self, handle: Handle) -> None:
        assert isinstance(handle, ProcessHandle)
        try:
            if self._exit_status(handle) is None:
                await asyncio.to_thread(stop_group, handle.pid, self._children.get(handle.pid))
        finally:
            self._children.pop(handle.pid, None)
            if self._reaper is not None and handle.pid in self._watched:
                self._watched.discard(handle.pid)
                self._reaper.forget(handle.pid)
            for port in handle.ports.values():
                release_port(port)
            ClassDataSharing.finish(handle.cds)

    def logs(self, handle: Handle, tail: int) -> list[str]:
        assert isinstance(handle, ProcessHandle)
        return tail_lines(Path(handle.log), tail) if handle.log else []

    async def shutdown(self) -> None:
        self._children.clear()
        if self._reaper is not None:
            # A server that stops on purpose stopped its appliances (or keeps them, with
            # stop_on_shutdown off, and then there is no reaper): nothing left to reap.
            await asyncio.to_thread(self._reaper.close)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with code {code}"
