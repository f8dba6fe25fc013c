"""Docker backend: each container instance is a real container on the Docker engine.

One user-defined bridge network per appliance gives every container a DNS name
(``<appliance>-<container>-<n>``), which is what ``@id`` resolves to; ports
are published on ``bind_host`` (127.0.0.1 by default) and read back after
``reload()``; everything carries labels so a restarted server can re-adopt it
and so leftovers of a crashed server can be found. The SDK is blocking, so
every call runs in a thread.

network_mode: ``container`` (PIVOT's default) and ``bridge`` both join the
appliance network (so @id names resolve) with published ports; ``host`` uses
the host's network stack (no publishing; @id resolves to 127.0.0.1).

An engine that goes away (its socket gone, a connection refused or timed out)
is not a container that died: every call that reaches it raises
BackendUnavailable, which the API answers with a 503 and the orchestrator shows
as instances failed with that reason, until the engine answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ui
from ..handles import Handle, handle_kind
from ..plan import AddressOf, address_map_resolver, resolve_container
from ..spark.probes import health_check_passes, ports_accept
from ..spark.roles import ROLES, ProbeContext, Role, role_by_image, with_env_ports
from ..spec import Appliance, Container, Problem
from ..state import Endpoint
from .base import Backend, BackendUnavailable, Exit, Started, StartFailed, StartRequest

log = logging.getLogger(__name__)

DOCKER_MISSING = ("the docker backend needs the 'docker' Python package: "
                  "pip install jupyter-spark-appliance[docker]")


def docker_sdk() -> Any:
    """The Docker SDK module; BackendUnavailable (a 503 for the API) saying how to get it when missing.

    An optional extra: the server starts without it, and only the docker backend asks for it.
    """
    try:
        import docker
    except ImportError:
        raise BackendUnavailable(DOCKER_MISSING) from None
    return docker


@contextlib.contextmanager
def engine_calls() -> Iterator[None]:
    """Turn "the engine did not answer" into BackendUnavailable, naming the engine.

    The SDK raises requests' ConnectionError (the socket is gone, nothing listens) or
    Timeout for that, and APIError (its own) when the engine answered with an error.
    """
    import requests

    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise BackendUnavailable(f"the Docker engine went away ({type(e).__name__}: {e})") from None


LABEL = "jupyter-spark-appliance"
PROJECT_IMAGES = {r.image for r in ROLES.values()}


@handle_kind
@dataclass
class ContainerHandle(Handle):
    kind = "container"
    container_id: str = ""
    name: str = ""
    host_network: bool = False  # network_mode host: peers reach it on 127.0.0.1 and its published ports


@dataclass
class DockerConfig:
    bind_host: str = "127.0.0.1"
    connect_host: str = "127.0.0.1"
    allow_privileged: bool = False
    owner: str = ""
    allow_host_network: bool = False
    #: host paths (and what is under them) that ``volumes`` may mount; empty: none
    volume_allow: tuple[str, ...] = ()
    leftovers: str = "report"  # containers and networks of unknown appliances of this owner: report | remove


#: Host paths no container may mount, whatever the allow-list says: each is root on the host.
NEVER_MOUNTED = ("/", "/proc", "/sys", "/dev", "/etc", "/boot", "/var/run/docker.sock", "/run/docker.sock",
                 "/var/lib/docker", "/run/containerd")
MIN_DOCKER_MEM_MB = 6  # the engine refuses less
REMOVAL_WAIT_SECONDS = 60  # for a removal of the same container that another stop started
MAX_HOSTNAME = 63  # a container's name is its host name: one DNS label


def owner_tag(owner: str) -> str:
    """Six hex digits that tell one server's names from another's on a shared engine."""
    return hashlib.sha256(owner.encode()).hexdigest()[:6] if owner else ""


def container_name(appliance_id: str, container_id: str, index: int, tag: str = "") -> str:
    return f"{tag + '-' if tag else ''}{appliance_id}-{container_id}-{index}"


def network_name(appliance_id: str, tag: str = "") -> str:
    return f"jsa-{tag + '-' if tag else ''}{appliance_id}"


def entrypoint_env(request: StartRequest, env: Mapping[str, str]) -> dict[str, str]:
    """A container's environment on any engine: its own, plus what the image's entrypoint
    (spark/entrypoint.py) builds a role's command from; it moves the secret out of it."""
    out = dict(env)
    container = request.container
    if request.role is not None:
        out.setdefault("JSA_CORES", str(max(1, round(container.resources.cpus))))
        out.setdefault("JSA_MEMORY_MB", str(int(container.resources.mem)))
        out["JSA_UI_ROOT"] = ui.appliance_path(request.appliance_id)  # where the server's proxy serves it
        if request.credentials is not None:
            out["JSA_SECRET"] = request.credentials.password
            out["JSA_USERNAME"] = request.credentials.username
    return out


def engine_problems(i: int, c: Container, volume_allow: tuple[str, ...]) -> list[Problem]:
    """What any Docker engine (the docker and the swarm backend alike) refuses of container ``i``."""
    problems = []
    for j, v in enumerate(c.volumes):
        why = volume_problem(v.src, volume_allow)
        if why:
            problems.append(Problem(f"containers[{i}].volumes[{j}].src", why))
    if c.resources.mem < MIN_DOCKER_MEM_MB:
        problems.append(Problem(f"containers[{i}].resources.mem",
                                f"the Docker engine needs at least {MIN_DOCKER_MEM_MB} MB"))
    return problems


def volume_problem(src: str, allowed: tuple[str, ...]) -> str | None:
    """Why mounting host path ``src`` is refused, or None if it may be mounted."""
    if not src.startswith("/"):
        return None  # a named volume of the engine, not a host path
    real = os.path.realpath(src)
    for never in NEVER_MOUNTED:
        if real == never or (never != "/" and real.startswith(never + "/")) or "docker.sock" in real:
            return f"host path {src!r} is never mounted (it gives root on the host)"
    if not any(real == os.path.realpath(a) or real.startswith(os.path.realpath(a).rstrip("/") + "/")
               for a in allowed):
        return (f"host path {src!r} is not under an allowed path "
                f"(c.SparkApplianceApp.docker_volume_allow: {list(allowed) or 'none'})")
    return None


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, config: DockerConfig, workdir: Callable[[str], Path], client_factory=None):  # noqa: ANN001
        self.config = config
        self.connect_host = config.connect_host
        self.workdir = workdir
        self._client_factory = client_factory
        self._client: Any = None
        self.tag = owner_tag(config.owner)

    # ------------------------------------------------------------------ engine

    @property
    def client(self) -> Any:
        if self._client is None:
            self.available()
        return self._client

    def available(self) -> None:
        docker = docker_sdk()
        try:
            client = self._client or (self._client_factory() if self._client_factory
                                      else docker.from_env(timeout=30))
            client.ping()
        except Exception as e:  # noqa: BLE001 - any failure means "no engine here"
            raise BackendUnavailable(
                f"the Docker engine is not reachable ({type(e).__name__}: {e}). Install and start it "
                "(apt-get install docker.io; dockerd), or use the local backend"
            ) from None
        self._client = client

    def role_of(self, container: Container) -> Role | None:
        return role_by_image(container.image)

    def check(self, appliance: Appliance) -> list[Problem]:
        problems = []
        for i, c in enumerate(appliance.containers):
            # The project's images need no privilege and never get it (the model notes it): only
            # an opaque image that asks for it needs allow_privileged.
            if c.is_privileged and not self.config.allow_privileged and self.role_of(c) is None:
                problems.append(Problem(f"containers[{i}].is_privileged",
                                        "privileged containers are off (c.SparkApplianceApp.allow_privileged)"))
            if c.network_mode == "host" and not self.config.allow_host_network:
                problems.append(Problem(f"containers[{i}].network_mode",
                                        "the host's network is off: it would ignore bind_host and expose every "
                                        "port (c.SparkApplianceApp.docker_allow_host_network)"))
            problems += engine_problems(i, c, self.config.volume_allow)
            name = container_name(appliance.id, c.id, max(0, c.instances - 1), self.tag)
            if len(name) > MAX_HOSTNAME:
                problems.append(Problem(f"containers[{i}].id", f"with the appliance id it makes the container "
                                        f"name {name!r}, longer than {MAX_HOSTNAME} characters: use shorter ids"))
        return problems

    def after_adoption(self, known: set[str]) -> None:
        """All records are loaded: this server's containers and networks that no record knows.

        Reported, or removed under ``docker_leftovers = "remove"``; what cannot be
        removed is a warning of its own (see :meth:`remove_leftovers`), never an error,
        since a leftover must not make the backend unusable.
        """
        if self.config.leftovers == "remove":
            found, how = self.remove_leftovers(known), "removed"
        else:
            containers, networks = self.leftovers(known), self.leftover_networks(known)
            found = {app: containers.get(app, []) + networks.get(app, []) for app in {**containers, **networks}}
            how = "found (c.SparkApplianceApp.docker_leftovers = 'remove' removes them)"
        for app_id, names in found.items():
            log.warning("Docker containers and networks of unknown appliance %s %s: %s", app_id, how,
                        ", ".join(names))

    # ------------------------------------------------------------------ appliance

    def _labels(self, appliance_id: str, container: str = "", index: int | None = None) -> dict[str, str]:
        labels = {f"{LABEL}.appliance": appliance_id, f"{LABEL}.owner": self.config.owner}
        if container:
            labels[f"{LABEL}.container"] = container
            labels[f"{LABEL}.instance"] = str(index)
        return labels

    async def prepare(self, appliance_id: str) -> None:
        def create() -> None:
            name = network_name(appliance_id, self.tag)
            with engine_calls():
                if not any(net.name == name for net in self.client.networks.list(names=[name])):
                    self.client.networks.create(name, driver="bridge", labels=self._labels(appliance_id))

        await asyncio.to_thread(create)

    async def cleanup(self, appliance_id: str) -> None:
        def remove() -> None:
            docker = docker_sdk()

            with engine_calls():
                for net in self.client.networks.list(filters={"label": self._owned(appliance_id)}):
                    try:
                        net.remove()
                    except docker.errors.APIError as e:
                        log.warning("could not remove network %s: %s", net.name, e)

        await asyncio.to_thread(remove)

    # ------------------------------------------------------------------ instances

    def resolver(self, peers: Mapping[str, Handle], referrer: Container) -> AddressOf:
        """``@id`` -> its container name on the appliance network (its port unchanged), or
        127.0.0.1 and the published port when either side uses the host's network."""
        hosts: dict[str, str] = {}
        ports: dict[tuple[str, int], int] = {}
        for cid, handle in peers.items():
            assert isinstance(handle, ContainerHandle)
            via_host = referrer.network_mode == "host" or handle.host_network
            hosts[cid] = "127.0.0.1" if via_host else handle.name
            for cport, published in handle.ports.items():
                ports[cid, cport] = published if via_host else cport
        return address_map_resolver(hosts, ports)

    async def start(self, request: StartRequest) -> Started:
        def start() -> Started:
            with engine_calls():
                return self._start(request)

        return await asyncio.to_thread(start)

    def _start(self, request: StartRequest) -> Started:
        docker = docker_sdk()

        container, role = request.container, request.role
        name = container_name(request.appliance_id, container.id, request.index, self.tag)
        host_mode = container.network_mode == "host"
        resolved = resolve_container(with_env_ports(role, container), self.resolver(request.peers, container))
        env = entrypoint_env(request, resolved.env)
        previous = request.previous.ports if request.previous else {}
        ports = {f"{p.container_port}/{p.protocol}": (self.config.bind_host,
                                                      p.host_port or previous.get(p.container_port) or None)
                 for p in container.ports}
        kwargs: dict[str, Any] = {
            "name": name, "hostname": name, "detach": True, "environment": env,
            "labels": self._labels(request.appliance_id, container.id, request.index),
            "nano_cpus": int(container.resources.cpus * 1e9), "mem_limit": f"{int(container.resources.mem)}m",
            "privileged": bool(container.is_privileged and self.config.allow_privileged and role is None),
            "volumes": {v.src: {"bind": v.dest, "mode": v.type} for v in container.volumes} or None,
        }
        if container.cmd is not None:
            # PIVOT's cmd is a shell command that replaces what the image would run.
            kwargs["entrypoint"] = ["/bin/sh", "-c"]
            kwargs["command"] = [resolved.cmd]
        elif resolved.args:
            kwargs["command"] = resolved.args
        if host_mode:
            kwargs["network_mode"] = "host"
        else:
            kwargs["network"] = network_name(request.appliance_id, self.tag)
            kwargs["ports"] = ports
        try:
            self._remove_stale(name)
            created = self.client.containers.create(container.image, **kwargs)
        except docker.errors.ImageNotFound:
            raise StartFailed(self._missing_image(container.image)) from None
        except docker.errors.APIError as e:
            raise StartFailed(f"the engine refused {name}: {e.explanation or e}") from None
        try:
            created.start()
            created.reload()
        except docker.errors.APIError as e:
            created.remove(force=True)
            raise StartFailed(f"{name} did not start: {e.explanation or e}") from None
        endpoints = []
        published: dict[int, int] = {}
        for p in container.ports:
            if host_mode:
                host_port = p.host_port or p.container_port
            else:
                bound = (created.ports or {}).get(f"{p.container_port}/{p.protocol}") or []
                if not bound:
                    raise StartFailed(f"{name}: port {p.container_port} was not published")
                host_port = int(bound[0]["HostPort"])
            published[p.container_port] = host_port
            role_port = role.port(p.container_port) if role else None
            endpoints.append(Endpoint(self.config.connect_host, host_port, p.container_port, p.protocol,
                                      p.name or (role_port.name if role_port else None)))
        handle = ContainerHandle(ports=published, peer_host=name, container_id=created.id, name=name,
                                 host_network=host_mode)
        return Started(handle, endpoints)

    def _missing_image(self, image: str) -> str:
        if image in PROJECT_IMAGES:
            return (f"image {image} is not built on this engine: run `jupyter-spark-appliance build-image` "
                    "(see the README's Docker section)")
        try:
            self.client.images.pull(image)
        except Exception as e:  # noqa: BLE001 - no registry, auth, typo: all end the same way
            return f"image {image} is not available locally and could not be pulled: {e}"
        return f"image {image} was pulled; start the appliance again"

    def _remove_stale(self, name: str) -> None:
        docker = docker_sdk()

        try:
            stale = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        if stale.labels.get(f"{LABEL}.owner") == self.config.owner and stale.labels.get(f"{LABEL}.appliance"):
            stale.remove(force=True)  # ours, from a crashed run of this server: safe to replace
        else:
            raise StartFailed(f"a container named {name} exists and is not this server's: it is left alone")

    async def ready(self, handle: Handle, container: Container, role: Role | None, master_ui: str | None) -> bool:
        assert isinstance(handle, ContainerHandle)
        host = self.config.connect_host
        if container.health_check is not None:
            return await health_check_passes(container.health_check, host, handle.ports)
        if role is not None and (role.probe_port is None or role.probe_port in handle.ports):
            return await role.probe(ProbeContext(host, handle.ports, master_ui, handle.name))
        if not handle.ports:
            return await asyncio.to_thread(self.exit_status, handle) is None
        return await ports_accept(host, handle.ports.values())

    def exit_status(self, handle: Handle) -> Exit | None:
        docker = docker_sdk()

        assert isinstance(handle, ContainerHandle)
        if not handle.container_id:
            return Exit("never started")
        try:
            with engine_calls():  # the engine went away: BackendUnavailable, not a dead container
                c = self.client.containers.get(handle.container_id)
        except docker.errors.NotFound:
            return Exit("its container is gone")
        except BackendUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - an engine error: report, do not crash the monitor
            return Exit(f"its container cannot be inspected: {e}")
        state = c.attrs.get("State", {})
        if state.get("Running"):
            return None
        if state.get("OOMKilled"):
            return Exit("its container was killed: out of memory (raise resources.mem)")
        code = state.get("ExitCode")
        return Exit(f"its container exited with code {code}", success=code == 0)

    async def stop(self, handle: Handle) -> None:
        assert isinstance(handle, ContainerHandle)

        def stop() -> None:
            docker = docker_sdk()

            with engine_calls():
                try:
                    c = self.client.containers.get(handle.container_id)
                except docker.errors.NotFound:
                    return
                try:
                    c.stop(timeout=10)
                except docker.errors.APIError:
                    pass
                try:
                    c.remove(force=True)
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as e:
                    if e.status_code != 409:
                        raise
                    # "removal ... is already in progress": another stop of this container (the
                    # reconciler replacing it while a DELETE stops it) got there first; wait for it.
                    deadline = time.monotonic() + REMOVAL_WAIT_SECONDS
                    while time.monotonic() < deadline:
                        try:
                            self.client.containers.get(handle.container_id)
                        except docker.errors.NotFound:
                            return
                        time.sleep(0.2)
                    raise

        await asyncio.to_thread(stop)

    def logs(self, handle: Handle, tail: int) -> list[str]:
        docker = docker_sdk()

        assert isinstance(handle, ContainerHandle)
        try:
            with engine_calls():
                c = self.client.containers.get(handle.container_id)
                return c.logs(tail=tail).decode("utf-8", "replace").splitlines()
        except docker.errors.NotFound:
            return []

    # ------------------------------------------------------------------ leftovers

    def _owned(self, appliance_id: str | None = None) -> list[str]:
        """Label filters: this server's objects (of one appliance)."""
        labels = [f"{LABEL}.owner={self.config.owner}"]
        return labels + ([f"{LABEL}.appliance={appliance_id}"] if appliance_id else [f"{LABEL}.appliance"])

    def _leftover_containers(self, known: set[str]) -> dict[str, list[Any]]:
        """This server's containers (owner label) whose appliance no record knows; never another server's."""
        out: dict[str, list[Any]] = {}
        for c in self.client.containers.list(all=True, filters={"label": self._owned()}):
            app = c.labels.get(f"{LABEL}.appliance", "")
            if app not in known:
                out.setdefault(app, []).append(c)
        return out

    def _leftover_networks(self, known: set[str]) -> dict[str, list[Any]]:
        """This server's networks whose appliance no record knows, with or without containers.

        A network outlives its containers when a server dies between the two removals;
        the swarm backend's overlay networks (same labels, plus ``backend=swarm``) are its own.
        """
        out: dict[str, list[Any]] = {}
        for net in self.client.networks.list(filters={"label": self._owned()}):
            labels = net.attrs.get("Labels") or {}
            app = labels.get(f"{LABEL}.appliance", "")
            if app not in known and labels.get(f"{LABEL}.backend") != "swarm":
                out.setdefault(app, []).append(net)
        return out

    def leftovers(self, known: set[str]) -> dict[str, list[str]]:
        """Containers labelled by us whose appliance no record knows, by appliance."""
        return _names(self._leftover_containers(known))

    def leftover_networks(self, known: set[str]) -> dict[str, list[str]]:
        """Networks labelled by us whose appliance no record knows, by appliance."""
        return _names(self._leftover_networks(known))

    def remove_leftovers(self, known: set[str]) -> dict[str, list[str]]:
        """Remove the leftover containers, then the leftover networks; the names removed, by appliance.

        Each object on its own: one the engine refuses to remove (a network another
        container still uses, "has active endpoints") is a warning naming it, and the
        rest are still removed.
        """
        docker = docker_sdk()

        removed: dict[str, list[str]] = {}

        def remove_each(kind: str, found: dict[str, list[Any]], **options: Any) -> None:
            for app, objects in found.items():
                for obj in objects:
                    try:
                        obj.remove(**options)
                    except docker.errors.NotFound:
                        pass
                    except docker.errors.APIError as e:
                        log.warning("could not remove %s %s of unknown appliance %s: %s", kind, obj.name, app,
                                    e.explanation or e)
                        continue
                    removed.setdefault(app, []).append(obj.name)

        with engine_calls():
            remove_each("container", self._leftover_containers(known), force=True)
            remove_each("network", self._leftover_networks(known))
        return removed

    async def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()


def _names(containers: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {app: [c.name for c in cs] for app, cs in containers.items()}
