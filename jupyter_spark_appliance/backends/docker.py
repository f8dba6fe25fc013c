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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..plan import AddressOf, address_map_resolver, resolve_container
from ..spec import Appliance, Container, Problem
from ..state import ApplianceRecord, Endpoint, Instance
from ..templates import DEFAULT_IMAGES
from .base import Backend, BackendUnavailable, StartedInstance, StartFailed
from .local_roles import DEFAULT_LOCAL_ROLES, PORT_NAMES, role_of
from .probes import health_check_passes, livy_answers, master_alive, ports_accept, worker_alive

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

LABEL = "jupyter-spark-appliance"
PROJECT_IMAGES = set(DEFAULT_IMAGES.values())


@dataclass
class DockerConfig:
    bind_host: str = "127.0.0.1"
    connect_host: str = "127.0.0.1"
    allow_privileged: bool = False
    owner: str = ""
    roles: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LOCAL_ROLES))


def container_name(appliance_id: str, container_id: str, index: int) -> str:
    return f"{appliance_id}-{container_id}-{index}"


def network_name(appliance_id: str) -> str:
    return f"jsa-{appliance_id}"


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, config: DockerConfig, workdir: Callable[[str], Path], client_factory=None):  # noqa: ANN001
        self.config = config
        self.workdir = workdir
        self._client_factory = client_factory
        self._client: Any = None

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

    def check(self, appliance: Appliance) -> list[Problem]:
        problems = []
        for i, c in enumerate(appliance.containers):
            if c.is_privileged and not self.config.allow_privileged:
                problems.append(Problem(f"containers[{i}].is_privileged",
                                        "privileged containers are off (c.SparkApplianceApp.allow_privileged)"))
        return problems

    # ------------------------------------------------------------------ appliance

    def _labels(self, record: ApplianceRecord, container: str = "", index: int | None = None) -> dict[str, str]:
        labels = {f"{LABEL}.appliance": record.id, f"{LABEL}.owner": self.config.owner}
        if container:
            labels[f"{LABEL}.container"] = container
            labels[f"{LABEL}.instance"] = str(index)
        return labels

    async def prepare(self, record: ApplianceRecord) -> None:
        def create() -> str:
            name = network_name(record.id)
            for net in self.client.networks.list(names=[name]):
                if net.name == name:
                    return net.id
            return self.client.networks.create(name, driver="bridge", labels=self._labels(record)).id

        record.extra["network"] = await asyncio.to_thread(create)

    async def cleanup(self, record: ApplianceRecord) -> None:
        def remove() -> None:
            docker = docker_sdk()

            for net in self.client.networks.list(filters={"label": f"{LABEL}.appliance={record.id}"}):
                try:
                    net.remove()
                except docker.errors.APIError as e:
                    log.warning("could not remove network %s: %s", net.name, e)

        await asyncio.to_thread(remove)

    # ------------------------------------------------------------------ instances

    async def start(self, record: ApplianceRecord, container: Container, instance: Instance) -> StartedInstance:
        return await asyncio.to_thread(self._start, record, container, instance)

    def _start(self, record: ApplianceRecord, container: Container, instance: Instance) -> StartedInstance:
        docker = docker_sdk()

        name = container_name(record.id, container.id, instance.index)
        host_mode = container.network_mode == "host"
        resolved = resolve_container(container, self._address_of(record, host_mode))
        env = dict(resolved.env)
        role = role_of(container, self.config.roles) if container.image in PROJECT_IMAGES else None
        if role == "spark-worker":
            env.setdefault("SPARK_WORKER_CORES", str(max(1, round(container.resources.cpus))))
            # The container's memory also holds the worker daemon: offer executors the rest.
            env.setdefault("SPARK_WORKER_MEMORY", f"{max(256, int(container.resources.mem) - 384)}m")
        elif role == "spark-master":
            env.setdefault("SPARK_DAEMON_MEMORY", f"{max(128, int(container.resources.mem) - 128)}m")
        ports = {f"{p.container_port}/{p.protocol}": (self.config.bind_host, p.host_port or None)
                 for p in container.ports}
        kwargs: dict[str, Any] = {
            "name": name, "hostname": name, "detach": True, "environment": env,
            "labels": self._labels(record, container.id, instance.index),
            "nano_cpus": int(container.resources.cpus * 1e9), "mem_limit": f"{int(container.resources.mem)}m",
            "privileged": bool(container.is_privileged and self.config.allow_privileged),
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
            kwargs["network"] = network_name(record.id)
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
        for p in container.ports:
            if host_mode:
                host_port = p.host_port or p.container_port
            else:
                bound = (created.ports or {}).get(f"{p.container_port}/{p.protocol}") or []
                if not bound:
                    raise StartFailed(f"{name}: port {p.container_port} was not published")
                host_port = int(bound[0]["HostPort"])
            endpoints.append(Endpoint(self.config.connect_host, host_port, p.container_port, p.protocol,
                                      p.name or PORT_NAMES.get((role or "", p.container_port))))
        info = {"container_id": created.id, "name": name, "role": role or "",
                "ports": {str(e.container_port): e.host_port for e in endpoints}}
        return StartedInstance(endpoints, info)

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
        if stale.labels.get(f"{LABEL}.appliance"):
            stale.remove(force=True)  # ours, from a crashed server: safe to replace

    @staticmethod
    def _address_of(record: ApplianceRecord, host_mode: bool) -> AddressOf:
        """``@id`` -> its container name on the appliance network (its port unchanged), or
        127.0.0.1 and the published port when either side uses the host's network."""
        hosts: dict[str, str] = {}
        ports: dict[tuple[str, int], int] = {}
        for target in record.appliance.containers:
            started = next((i for i in record.instances.get(target.id, []) if i.info), None)
            if started is None:
                continue
            via_host = host_mode or target.network_mode == "host"
            hosts[target.id] = "127.0.0.1" if via_host else str(started.info["name"])
            for p in target.ports:
                published = started.info["ports"].get(str(p.container_port), p.container_port)
                ports[target.id, p.container_port] = published if via_host else p.container_port
        return address_map_resolver(hosts, ports)

    async def ready(self, record: ApplianceRecord, container: Container, instance: Instance) -> bool:
        ports = {int(k): v for k, v in instance.info.get("ports", {}).items()}
        host = self.config.connect_host
        role = instance.info.get("role")
        if container.health_check is not None:
            return await health_check_passes(container.health_check, host, ports)
        if role == "spark-master" and 8080 in ports:
            return await master_alive(f"http://{host}:{ports[8080]}")
        if role == "spark-worker":
            return await worker_alive(self._master_ui(record), lambda w: w.get("host") == instance.info["name"])
        if role == "livy" and 8998 in ports:
            return await livy_answers(f"http://{host}:{ports[8998]}")
        if not ports:
            return self.exit_status(instance) is None
        return await ports_accept(host, ports.values())

    def _master_ui(self, record: ApplianceRecord) -> str | None:
        for insts in record.instances.values():
            for inst in insts:
                if inst.info.get("role") == "spark-master" and "8080" in inst.info.get("ports", {}):
                    return f"http://{self.config.connect_host}:{inst.info['ports']['8080']}"
        return None

    def exit_status(self, instance: Instance) -> str | None:
        docker = docker_sdk()

        cid = instance.info.get("container_id")
        if not cid:
            return "never started"
        try:
            c = self.client.containers.get(cid)
        except docker.errors.NotFound:
            return "its container is gone"
        except Exception as e:  # noqa: BLE001 - engine down: report, do not crash the monitor
            return f"its container cannot be inspected: {e}"
        state = c.attrs.get("State", {})
        if state.get("Running"):
            return None
        if state.get("OOMKilled"):
            return "its container was killed: out of memory (raise resources.mem)"
        return f"its container exited with code {state.get('ExitCode')}"

    async def stop(self, record: ApplianceRecord, instance: Instance) -> None:
        def stop() -> None:
            docker = docker_sdk()

            try:
                c = self.client.containers.get(instance.info["container_id"])
            except (docker.errors.NotFound, KeyError):
                return
            try:
                c.stop(timeout=10)
            except docker.errors.APIError:
                pass
            c.remove(force=True)

        await asyncio.to_thread(stop)

    def logs(self, record: ApplianceRecord, instance: Instance, tail: int) -> list[str]:
        docker = docker_sdk()

        try:
            c = self.client.containers.get(instance.info["container_id"])
            return c.logs(tail=tail).decode("utf-8", "replace").splitlines()
        except (docker.errors.NotFound, KeyError):
            return []

    # ------------------------------------------------------------------ leftovers

    def _leftover_containers(self, known: set[str]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}.appliance"}):
            app = c.labels.get(f"{LABEL}.appliance", "")
            if app not in known:
                out.setdefault(app, []).append(c)
        return out

    def leftovers(self, known: set[str]) -> dict[str, list[str]]:
        """Containers labelled by us whose appliance no record knows, by appliance."""
        return _names(self._leftover_containers(known))

    def remove_leftovers(self, known: set[str]) -> dict[str, list[str]]:
        found = self._leftover_containers(known)
        for containers in found.values():
            for c in containers:
                c.remove(force=True)
        for net in self.client.networks.list(filters={"label": f"{LABEL}.appliance"}):
            if net.attrs.get("Labels", {}).get(f"{LABEL}.appliance") in found:
                net.remove()
        return _names(found)

    async def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()


def _names(containers: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {app: [c.name for c in cs] for app, cs in containers.items()}
