"""Swarm backend: each container instance is a Docker Swarm service with one replica.

The same appliance as the docker backend, but on every node of a swarm: the
engine it talks to must be an active swarm manager.

- **One service per instance** (``<appliance>-<container>-<n>``, one replica):
  scaling adds or removes services, so it never touches a running task (an
  update of a service's spec, as docker-py's ``Service.scale()`` sends it,
  replaces every task).
- **One attachable overlay network per appliance**; ``@id`` resolves to the
  service's name on it. Endpoints use ``dnsrr`` (the service name resolves to
  its task's address; Swarm's virtual IPs need IPVS, which not every kernel
  has) and **host-mode published ports** (ingress needs IPVS too): a port
  binds on the node its task runs on, and the endpoint reports that node's
  address. Swarm cannot bind a published port to one address, so unlike the
  docker backend's ``bind_host`` these listen on every interface of the node.
- **Swarm never restarts anything** (``RestartPolicy(condition="none")``):
  a task that dies is reported as :class:`Exit` with Swarm's own error, and the
  project's reconciler replaces the instance with a new service on the old
  ports, so nothing restarts twice.
- ``resources`` become limits and reservations (the scheduler places by the
  reservations); workers are spread over the nodes by pinning each new
  instance to the ready node that runs the fewest instances of its container
  (Swarm's own ``spread`` preference acts within one service only, and each
  instance is a service of its own).
- **Images**: on one node the project's local images run as they are, by image
  id (so no node tries to pull them from a public registry). On more than one
  node every node needs them from a registry: ``c.SparkApplianceApp.swarm_registry``
  names it, :func:`push_images` (``python -m jupyter_spark_appliance.backends.swarm
  push-images --registry HOST:PORT``) pushes them, and services pin them by digest.

Services and networks carry the docker backend's labels (appliance, container,
instance, owner); task containers do not, since the docker backend treats
containers with its appliance label as its own. The SDK is blocking, so every
call runs in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..handles import Handle, handle_kind
from ..plan import AddressOf, address_map_resolver, resolve_container
from ..spark.probes import health_check_passes, ports_accept
from ..spark.roles import ROLES, ProbeContext, Role, role_by_image
from ..spec import Appliance, Container, Problem
from ..state import Endpoint
from .base import Backend, BackendUnavailable, Exit, Started, StartFailed, StartRequest
from .docker import LABEL, PROJECT_IMAGES, container_name, docker_sdk, engine_problems, entrypoint_env

log = logging.getLogger(__name__)

#: task states after which a task never runs again
TERMINAL = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
STOP_GRACE_NS = 10 * 10**9


@handle_kind
@dataclass
class ServiceHandle(Handle):
    kind = "service"
    service_id: str = ""
    name: str = ""
    task_id: str = ""  # its one task (Swarm never starts another: restart condition none)
    node_id: str = ""
    node_addr: str = ""  # where the server reaches the published ports (the task's node)


@dataclass
class SwarmConfig:
    connect_host: str = "127.0.0.1"  # for a node whose address Swarm reports as 0.0.0.0
    owner: str = ""
    registry: str = ""  # e.g. 127.0.0.1:5000; empty: the project's images are local (one node)
    volume_allow: tuple[str, ...] = ()  # host paths services may mount (as the docker backend's)
    leftovers: str = "report"  # services and networks of unknown appliances of this owner: report | remove
    cpu_reservation: float = 1.0  # share of resources.cpus reserved (1.0: all of it)
    mem_reservation: float = 1.0  # share of resources.mem reserved
    task_timeout: float = 600.0  # seconds a task may take to run (a first pull on a new node)
    unschedulable_after: float = 30.0  # seconds a task may wait for a node before its start fails


def service_name(appliance_id: str, container_id: str, index: int) -> str:
    return container_name(appliance_id, container_id, index)


def network_name(appliance_id: str) -> str:
    return f"jsa-swarm-{appliance_id}"


def registry_ref(registry: str, image: str) -> str:
    """``jupyter-spark-appliance/livy:0.1.0`` -> ``<registry>/jupyter-spark-appliance/livy:0.1.0``."""
    return f"{registry.rstrip('/')}/{image}"


def _api_error(e: Exception) -> str:
    return str(getattr(e, "explanation", None) or e)


class SwarmBackend(Backend):
    name = "swarm"

    def __init__(self, config: SwarmConfig, workdir: Callable[[str], Path], client_factory=None):  # noqa: ANN001
        self.config = config
        self.connect_host = config.connect_host
        self.workdir = workdir
        self._client_factory = client_factory
        self._client: Any = None
        self._place_lock = threading.Lock()  # choosing a node and creating the service are one step
        self._node_addrs: dict[str, str] = {}

    # ------------------------------------------------------------------ engine

    @property
    def client(self) -> Any:
        if self._client is None:
            self.available()
        return self._client

    def available(self) -> None:
        docker = docker_sdk()  # a missing SDK says which extra to install, not "unreachable"
        try:
            client = self._client or (self._client_factory() if self._client_factory
                                      else docker.from_env(timeout=60))
            info = client.info()
        except Exception as e:  # noqa: BLE001 - any failure means "no engine here"
            raise BackendUnavailable(
                f"the Docker engine is not reachable ({type(e).__name__}: {e}). The swarm backend needs "
                "an engine that is a swarm manager (docker swarm init), or use the local backend"
            ) from None
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            if client is not self._client:
                client.close()
            state = swarm.get("LocalNodeState") or "inactive"
            role = "a swarm worker, not a manager" if state == "active" else f"not in a swarm (Swarm: {state})"
            raise BackendUnavailable(
                f"the Docker engine is {role}: the swarm backend needs an active swarm manager. Run "
                "`docker swarm init --advertise-addr <address>` (127.0.0.1 for one machine) on the server's "
                "engine, or point DOCKER_HOST at a manager; or use the docker backend")
        self._client = client

    def role_of(self, container: Container) -> Role | None:
        return role_by_image(container.image)

    def check(self, appliance: Appliance) -> list[Problem]:
        problems = []
        for i, c in enumerate(appliance.containers):
            # A project role never runs privileged on any backend (the model notes it): only a
            # user's image that asks for privilege is one Swarm cannot run.
            if c.is_privileged and self.role_of(c) is None:
                problems.append(Problem(f"containers[{i}].is_privileged",
                                        "Docker Swarm services cannot run privileged containers"))
            if c.network_mode == "host":
                problems.append(Problem(f"containers[{i}].network_mode",
                                        "network_mode host is not available on the swarm backend: services "
                                        "join the appliance's overlay network"))
            problems += engine_problems(i, c, self.config.volume_allow)
        return problems

    def after_adoption(self, known: set[str]) -> None:
        """All records are loaded: this server's services and networks that no record knows.

        What cannot be removed is a warning of its own (see :meth:`remove_leftovers`), never an
        error: a leftover must not make the backend unusable.
        """
        if self.config.leftovers == "remove":
            found, how = self.remove_leftovers(known), "removed"
        else:
            services, networks = self.leftovers(known), self.leftover_networks(known)
            found = {app: services.get(app, []) + networks.get(app, []) for app in {**services, **networks}}
            how = "found"
        for app_id, names in found.items():
            log.warning("Swarm services and networks of unknown appliance %s %s: %s", app_id, how, ", ".join(names))

    # ------------------------------------------------------------------ appliance

    def _labels(self, appliance_id: str, container: str = "", index: int | None = None) -> dict[str, str]:
        labels = {f"{LABEL}.appliance": appliance_id, f"{LABEL}.owner": self.config.owner,
                  f"{LABEL}.backend": "swarm"}
        if container:
            labels[f"{LABEL}.container"] = container
            labels[f"{LABEL}.instance"] = str(index)
        return labels

    async def prepare(self, appliance_id: str) -> None:
        def create() -> None:
            name = network_name(appliance_id)
            if not any(net.name == name for net in self.client.networks.list(names=[name])):
                self.client.networks.create(name, driver="overlay", attachable=True,
                                            labels=self._labels(appliance_id))

        await asyncio.to_thread(create)

    async def cleanup(self, appliance_id: str) -> None:
        await asyncio.to_thread(self._remove_networks, {appliance_id})

    def _remove_networks(self, appliance_ids: set[str], timeout: float = 60.0) -> list[str]:
        """Remove the appliances' networks (the names removed); a task that just stopped may hold
        one for a moment, so each is tried again until ``timeout``, then is a warning."""
        import docker

        removed = []
        deadline = time.monotonic() + timeout
        for net in self.client.networks.list(filters={"label": f"{LABEL}.backend=swarm"}):
            labels = net.attrs.get("Labels") or {}
            app, owner = labels.get(f"{LABEL}.appliance"), labels.get(f"{LABEL}.owner")
            if app not in appliance_ids or owner != self.config.owner:
                continue  # another appliance's, or another server's
            while True:
                try:
                    net.remove()
                    removed.append(net.name)
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as e:
                    if time.monotonic() > deadline:
                        log.warning("could not remove network %s: %s", net.name, _api_error(e))
                        break
                    time.sleep(0.5)
        return removed

    # ------------------------------------------------------------------ instances

    def resolver(self, peers: Mapping[str, Handle], referrer: Container) -> AddressOf:
        """``@id`` -> its service name on the overlay network, its port unchanged."""
        hosts: dict[str, str] = {}
        ports: dict[tuple[str, int], int] = {}
        for cid, handle in peers.items():
            assert isinstance(handle, ServiceHandle)
            hosts[cid] = handle.name
            for cport in handle.ports:
                ports[cid, cport] = cport
        return address_map_resolver(hosts, ports)

    async def start(self, request: StartRequest) -> Started:
        return await asyncio.to_thread(self._start, request)

    def _image(self, image: str) -> str:
        """What the service runs: the project's images pinned (by digest in the registry, else by id)."""
        import docker

        if image not in PROJECT_IMAGES:
            return image  # the user's image: Swarm resolves and pins it itself
        if self.config.registry:
            ref = registry_ref(self.config.registry, image)
            try:
                digest = self.client.images.get_registry_data(ref).id
            except docker.errors.APIError as e:
                raise StartFailed(
                    f"image {ref} is not in the registry {self.config.registry} ({_api_error(e)}): run "
                    f"`python -m jupyter_spark_appliance.backends.swarm push-images --registry "
                    f"{self.config.registry}`") from None
            return f"{ref.rsplit(':', 1)[0]}@{digest}"
        try:
            return self.client.images.get(image).id
        except docker.errors.ImageNotFound:
            raise StartFailed(f"image {image} is not built on this engine: run `jupyter-spark-appliance "
                              "build-image` (see the README's Docker section)") from None

    def _start(self, request: StartRequest) -> Started:
        import docker
        from docker.types import EndpointSpec, Mount, Resources, RestartPolicy, ServiceMode

        container, role = request.container, request.role
        name = service_name(request.appliance_id, container.id, request.index)
        resolved = resolve_container(container, self.resolver(request.peers, container))
        env = entrypoint_env(request, resolved.env)
        previous = request.previous.ports if request.previous else {}
        ports = []
        for p in container.ports:
            spec: dict[str, Any] = {"Protocol": p.protocol, "TargetPort": p.container_port, "PublishMode": "host"}
            published = p.host_port or previous.get(p.container_port)
            if published:
                spec["PublishedPort"] = published  # else the node picks a free one; read back below
            ports.append(spec)
        cpus, mem = container.resources.cpus, int(container.resources.mem) * 2**20
        kwargs: dict[str, Any] = {
            "name": name, "hostname": name, "env": env,
            "labels": self._labels(request.appliance_id, container.id, request.index),
            "networks": [network_name(request.appliance_id)],
            "mode": ServiceMode("replicated", 1),
            "endpoint_spec": EndpointSpec(mode="dnsrr", ports=ports),
            "restart_policy": RestartPolicy(condition="none"),  # the orchestrator restarts, Swarm never
            "stop_grace_period": STOP_GRACE_NS,
            "resources": Resources(cpu_limit=int(cpus * 1e9), mem_limit=mem,
                                   cpu_reservation=int(cpus * self.config.cpu_reservation * 1e9),
                                   mem_reservation=int(mem * self.config.mem_reservation)),
            "mounts": [Mount(v.dest, v.src, type="bind", read_only=v.type == "ro") for v in container.volumes],
        }
        if container.cmd is not None:
            # PIVOT's cmd is a shell command that replaces what the image would run.
            kwargs["command"] = ["/bin/sh", "-c"]
            kwargs["args"] = [resolved.cmd]
        elif resolved.args:
            kwargs["args"] = resolved.args
        image = self._image(container.image)
        self._remove_stale(name)
        with self._place_lock:
            node = self._pick_node(request.appliance_id, container)
            if node:
                kwargs["constraints"] = [f"node.id=={node}"]
                kwargs["labels"][f"{LABEL}.node"] = node
            try:
                service = self.client.services.create(image, **kwargs)
            except docker.errors.APIError as e:
                raise StartFailed(f"the swarm refused {name}: {_api_error(e)}") from None
        try:
            task = self._wait_running(service.id, name)
        except BaseException:
            self._remove_service(service.id)
            raise
        published: dict[int, int] = {}
        for p in (task.get("Status", {}).get("PortStatus") or {}).get("Ports") or []:
            published.setdefault(int(p["TargetPort"]), int(p["PublishedPort"]))
        node_id = task.get("NodeID", "")
        host = self._node_addr(node_id)
        endpoints = []
        for p in container.ports:
            if p.container_port not in published:
                self._remove_service(service.id)
                raise StartFailed(f"{name}: port {p.container_port} was not published")
            role_port = role.port(p.container_port) if role else None
            endpoints.append(Endpoint(host, published[p.container_port], p.container_port, p.protocol,
                                      p.name or (role_port.name if role_port else None)))
        handle = ServiceHandle(ports={p.container_port: published[p.container_port] for p in container.ports},
                               peer_host=name, service_id=service.id, name=name, task_id=task["ID"],
                               node_id=node_id, node_addr=host)
        return Started(handle, endpoints)

    def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        """The service's tasks, newest first (NotFound when the service is gone)."""
        tasks = self.client.api.tasks(filters={"service": service_id})
        return sorted(tasks, key=lambda t: t.get("CreatedAt", ""), reverse=True)

    def _wait_running(self, service_id: str, name: str) -> dict[str, Any]:
        """Its task once running; StartFailed with Swarm's words if it cannot run."""
        deadline = time.monotonic() + self.config.task_timeout
        unplaced_since: float | None = None
        while True:
            tasks = self._tasks(service_id)
            task = tasks[0] if tasks else {}
            status = task.get("Status", {})
            state, err = status.get("State", "new"), status.get("Err") or ""
            if state == "running":
                return task
            if state in TERMINAL:
                raise StartFailed(f"{name} did not start: {self._task_reason(task)}")
            if state == "pending" and "no suitable node" in err:
                unplaced_since = unplaced_since or time.monotonic()
                if time.monotonic() - unplaced_since > self.config.unschedulable_after:
                    raise StartFailed(f"Swarm has no node for {name}: {err} (its reservations: "
                                      "resources.cpus and resources.mem)")
            else:
                unplaced_since = None
            if time.monotonic() > deadline:
                raise StartFailed(f"{name} did not run within {self.config.task_timeout:g} s "
                                  f"(its task is {state}{': ' + err if err else ''})")
            time.sleep(0.2)

    def _task_reason(self, task: Mapping[str, Any]) -> str:
        status = task.get("Status", {})
        state, err = status.get("State", "?"), status.get("Err") or status.get("Message") or ""
        if state == "rejected" and "No such image" in err and not self.config.registry:
            err += (" (on more than one node the images must come from a registry: set "
                    "c.SparkApplianceApp.swarm_registry and push them there)")
        what = {"failed": "failed", "rejected": "was rejected", "shutdown": "was shut down",
                "complete": "completed", "orphaned": "was orphaned (its node is down)",
                "remove": "was removed"}.get(state, f"is {state}")
        return f"its task {what}: {err}" if err else f"its task {what}"

    def _node_addr(self, node_id: str) -> str:
        if node_id not in self._node_addrs:
            attrs = self.client.nodes.get(node_id).attrs
            addr = (attrs.get("Status") or {}).get("Addr") or ""
            if addr in ("", "0.0.0.0"):  # a manager listening on every address says so
                addr = ((attrs.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
            self._node_addrs[node_id] = addr if addr not in ("", "0.0.0.0") else self.config.connect_host
        return self._node_addrs[node_id]

    def _pick_node(self, appliance_id: str, container: Container) -> str | None:
        """The node for a new instance: the one running the fewest of its container, then of the
        appliance, among ready nodes with room for its reservations; None on a single node."""
        nodes = [n.attrs for n in self.client.nodes.list()
                 if n.attrs["Spec"].get("Availability") == "active" and n.attrs["Status"].get("State") == "ready"]
        if len(nodes) < 2:
            return None
        reserved: dict[str, list[int]] = {n["ID"]: [0, 0] for n in nodes}
        for t in self.client.api.tasks(filters={"desired-state": "running"}):
            if t.get("NodeID") in reserved:
                r = (t["Spec"].get("Resources") or {}).get("Reservations") or {}
                reserved[t["NodeID"]][0] += r.get("NanoCPUs", 0)
                reserved[t["NodeID"]][1] += r.get("MemoryBytes", 0)
        want_cpu = int(container.resources.cpus * self.config.cpu_reservation * 1e9)
        want_mem = int(container.resources.mem * 2**20 * self.config.mem_reservation)
        ours = [s.attrs["Spec"].get("Labels", {}) for s in
                self.client.services.list(filters={"label": f"{LABEL}.appliance={appliance_id}"})]

        def load(node: Mapping[str, Any]) -> tuple[int, int, str]:
            here = [lab for lab in ours if lab.get(f"{LABEL}.node") == node["ID"]]
            same = sum(lab.get(f"{LABEL}.container") == container.id for lab in here)
            return same, len(here), node["ID"]

        def fits(node: Mapping[str, Any]) -> bool:
            res = node["Description"]["Resources"]
            cpu, mem = reserved[node["ID"]]
            return cpu + want_cpu <= res.get("NanoCPUs", 0) and mem + want_mem <= res.get("MemoryBytes", 0)

        room = [n for n in nodes if fits(n)]
        return min(room, key=load)["ID"] if room else None

    def _remove_stale(self, name: str) -> None:
        """A service of ours with this name (from a crashed server): safe to replace."""
        import docker

        try:
            stale = self.client.services.get(name)
        except docker.errors.NotFound:
            return
        if (stale.attrs["Spec"].get("Labels") or {}).get(f"{LABEL}.appliance"):
            self._remove_service(stale.id)

    def _remove_service(self, service_id: str, timeout: float = 90.0) -> None:
        """Remove the service and wait until its tasks are gone (their ports and network are free)."""
        import docker

        try:
            self.client.api.remove_service(service_id)
        except docker.errors.NotFound:
            pass
        deadline = time.monotonic() + timeout
        while any(t.get("ServiceID") == service_id for t in self.client.api.tasks()):
            if time.monotonic() > deadline:
                log.warning("tasks of service %s still shut down after %g s", service_id, timeout)
                return
            time.sleep(0.2)

    async def ready(self, handle: Handle, container: Container, role: Role | None, master_ui: str | None) -> bool:
        assert isinstance(handle, ServiceHandle)
        host = handle.node_addr or self.config.connect_host
        if container.health_check is not None:
            return await health_check_passes(container.health_check, host, handle.ports)
        if role is not None and (role.probe_port is None or role.probe_port in handle.ports):
            return await role.probe(ProbeContext(host, handle.ports, master_ui, handle.name))
        if not handle.ports:
            return await asyncio.to_thread(self.exit_status, handle) is None
        return await ports_accept(host, handle.ports.values())

    def ui_url(self, handle: Handle, container_port: int) -> str | None:
        assert isinstance(handle, ServiceHandle)
        port = handle.ports.get(container_port)
        return f"http://{handle.node_addr or self.config.connect_host}:{port}" if port else None

    def exit_status(self, handle: Handle) -> Exit | None:
        import docker

        assert isinstance(handle, ServiceHandle)
        if not handle.service_id:
            return Exit("never started")
        try:
            tasks = self._tasks(handle.service_id)
        except docker.errors.NotFound:
            return Exit("its service is gone")
        except Exception as e:  # noqa: BLE001 - engine down: report, do not crash the monitor
            return Exit(f"its service cannot be inspected: {e}")
        task = next((t for t in tasks if t["ID"] == handle.task_id), tasks[0] if tasks else None)
        if task is None:
            return Exit("its service has no task")
        status = task.get("Status", {})
        state = status.get("State")
        if state not in TERMINAL and task.get("DesiredState") == "running":
            return None
        return Exit(self._task_reason(task), success=state == "complete")

    async def stop(self, handle: Handle) -> None:
        assert isinstance(handle, ServiceHandle)
        if handle.service_id:
            await asyncio.to_thread(self._remove_service, handle.service_id)

    def logs(self, handle: Handle, tail: int) -> list[str]:
        import docker

        assert isinstance(handle, ServiceHandle)
        try:
            chunks = self.client.api.service_logs(handle.service_id, stdout=True, stderr=True, tail=tail)
            return b"".join(chunks).decode("utf-8", "replace").splitlines()[-tail:]
        except docker.errors.NotFound:
            return []

    # ------------------------------------------------------------------ leftovers

    def _leftover_services(self, known: set[str]) -> dict[str, list[Any]]:
        """Services of this server (its owner label) whose appliance no record knows."""
        out: dict[str, list[Any]] = {}
        for s in self.client.services.list(filters={"label": f"{LABEL}.backend=swarm"}):
            labels = s.attrs["Spec"].get("Labels") or {}
            app = labels.get(f"{LABEL}.appliance", "")
            if app and app not in known and labels.get(f"{LABEL}.owner") == self.config.owner:
                out.setdefault(app, []).append(s)
        return out

    def _leftover_networks(self, known: set[str]) -> dict[str, list[str]]:
        """Names of this server's overlay networks whose appliance no record knows, with or without services."""
        out: dict[str, list[str]] = {}
        for net in self.client.networks.list(filters={"label": f"{LABEL}.backend=swarm"}):
            labels = net.attrs.get("Labels") or {}
            app = labels.get(f"{LABEL}.appliance", "")
            if app and app not in known and labels.get(f"{LABEL}.owner") == self.config.owner:
                out.setdefault(app, []).append(net.name)
        return out

    def leftovers(self, known: set[str]) -> dict[str, list[str]]:
        return {app: [s.name for s in ss] for app, ss in self._leftover_services(known).items()}

    def leftover_networks(self, known: set[str]) -> dict[str, list[str]]:
        return self._leftover_networks(known)

    def remove_leftovers(self, known: set[str]) -> dict[str, list[str]]:
        """Remove the leftover services, then the leftover networks; the names removed, by appliance.

        Each on its own: one that cannot be removed is a warning naming it and the rest are
        still removed. Networks get a short retry only (their services' tasks are gone by
        then): at the backend's first use a request waits for this.
        """
        import docker

        removed: dict[str, list[str]] = {}
        for app, services in self._leftover_services(known).items():
            for s in services:
                try:
                    self._remove_service(s.id, timeout=30.0)
                except docker.errors.APIError as e:
                    log.warning("could not remove service %s of unknown appliance %s: %s", s.name, app,
                                _api_error(e))
                    continue
                removed.setdefault(app, []).append(s.name)
        networks = self._leftover_networks(known)
        gone = set(self._remove_networks(set(networks), timeout=5.0))
        for app, names in networks.items():
            removed.setdefault(app, []).extend(n for n in names if n in gone)
        return {app: names for app, names in removed.items() if names}

    async def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()


# ---------------------------------------------------------------------- images


def push_images(registry: str, client=None, log: Callable[[str], None] = print,  # noqa: ANN001
                roles: Iterable[str] | None = None) -> dict[str, str]:
    """Push the project's images (built by ``build-image``) to ``registry``; role -> pinned reference.

    Every node of a swarm then pulls them from there (the swarm backend pins them
    by digest, so all nodes run the same bytes). ``roles`` (default: every role)
    narrows it to the images a cluster will run, since every node pulls whatever is
    pushed (the Sparkmagic image alone adds about 580 MB of layers of its own).
    """
    import docker

    client = client or docker.from_env(timeout=600)
    pinned = {}
    for role in (ROLES[name] for name in (ROLES if roles is None else roles)):
        ref = registry_ref(registry, role.image)
        repo, tag = ref.rsplit(":", 1)
        image = client.images.get(role.image)
        image.tag(repo, tag)
        log(f"pushing {ref}")
        for chunk in client.images.push(repo, tag, stream=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(f"push of {ref} failed: {chunk['error']}")
        digest = client.images.get_registry_data(ref).id
        pinned[role.name] = f"{repo}@{digest}"
    return pinned


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jupyter_spark_appliance.backends.swarm",
                                description="Tools of the swarm backend.")
    sub = p.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push-images", help="push the project's images to the swarm's registry")
    push.add_argument("--registry", required=True, help="HOST:PORT, as in c.SparkApplianceApp.swarm_registry")
    args = p.parse_args(argv)
    for role, ref in push_images(args.registry).items():
        print(f"{role}: {ref}")


if __name__ == "__main__":
    main()
