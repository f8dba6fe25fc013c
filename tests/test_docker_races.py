"""Races and leftovers of the Docker backend, on the real engine, through a real Jupyter server.

- A DELETE that comes while the launch still creates the appliance's network
  (the backend does it in a thread) leaves neither a container nor the network.
- A network of this server's owner whose appliance no record knows and which no
  container uses, as a crash between two removals leaves it, is a leftover too.
- A leftover the engine refuses to remove (its network still holds a container
  that is not ours) is a warning: the docker backend is usable all the same.
- A Spark worker caps its executors' logs (fast: its command only).

The leftovers are made with the real Docker client before the server starts, as
a crashed server leaves them; the server deals with them on the docker backend's
first use (GET templates, what the panel asks first). Containers run ``sleep`` in
the project's image (test_options.py's cheap documents).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jupyter_spark_appliance.backends.docker import (
    LABEL,
    ContainerHandle,
    DockerBackend,
    DockerConfig,
    container_name,
    network_name,
    owner_tag,
)
from jupyter_spark_appliance.manager import ApplianceManager
from jupyter_spark_appliance.spark.roles import SPARK_WORKER, LaunchContext
from jupyter_spark_appliance.store import Store
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

from conftest import Api
from fakes import FakeBackend, FakeMachine

T = TypeVar("T")
DOCKER_LOGGER = "jupyter_spark_appliance.backends.docker"


def server_config(data_dir: Path, **options: Any) -> dict[str, Any]:
    """conftest's server config plus ``options``; no class-data-sharing (no JVM runs here)."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_spark_appliance": True}},
        "SparkApplianceApp": {"data_dir": str(data_dir), "start_timeout": 120.0, "class_data_sharing": False,
                              "prepare_cds": False, **options},
    }


def unique(prefix: str) -> str:
    """An appliance id of this run only: Docker objects outlive a test run that crashed."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sleeper(app_id: str) -> dict[str, Any]:
    """One container that runs ``sleep`` and ends on SIGTERM (so a DELETE does not wait out a grace period)."""
    return {"id": app_id, "backend": "docker", "containers": [
        {"id": "x", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "cmd": "trap 'exit 0' TERM; sleep 300 & wait", "resources": {"cpus": 0.5, "mem": 64}}]}


def labelled(engine: Any, app_id: str) -> tuple[list[Any], list[Any]]:
    """The containers (any state) and networks of an appliance on the engine, by the project's label."""
    label = f"{LABEL}.appliance={app_id}"
    return (engine.containers.list(all=True, filters={"label": label}),
            engine.networks.list(filters={"label": label}))


def remove_labelled(engine: Any, app_id: str) -> None:
    """What a failed test left of the appliance: its containers first, then its networks."""
    containers, networks = labelled(engine, app_id)
    for c in containers:
        c.remove(force=True)
    for n in networks:
        n.remove()


async def wait_for(what: str, check: Callable[[], Awaitable[T | None]], timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def server_owner(data_dir: Path) -> str:
    """The owner label the server uses (app.py's formula; each test checks the server agrees)."""
    return f"{getpass.getuser()}@{socket.gethostname()}:{data_dir.resolve()}"


@pytest.fixture
def engine(docker_engine: Any) -> Any:
    return docker_engine


# ---------------------------------------------------------------------- a DELETE during the launch


class SlowNetworkBackend(FakeBackend):
    """The fake backend with the docker backend's shape of ``prepare``: a network made in a thread."""

    def __init__(self, machine: FakeMachine):
        super().__init__(machine)
        self.networks: set[str] = set()
        self.lock = threading.Lock()

    async def prepare(self, appliance_id: str) -> None:
        def create() -> None:
            time.sleep(0.2)  # an engine's round trip, long enough for a DELETE to come first
            with self.lock:
                self.networks.add(appliance_id)

        await asyncio.to_thread(create)

    async def cleanup(self, appliance_id: str) -> None:
        with self.lock:
            self.networks.discard(appliance_id)


async def test_fake_a_delete_during_prepare_leaves_no_network(tmp_path: Path) -> None:
    backend = SlowNetworkBackend(FakeMachine())
    manager = ApplianceManager(Store(tmp_path), {"fake": lambda: backend}, default_backend="fake",
                               monitor_interval=3600)
    await manager.start()
    try:
        await manager.create({"id": "app", "containers": [
            {"id": "x", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512}}]})
        await asyncio.sleep(0.01)  # the launch is in prepare's thread
        assert await manager.delete("app")
        await asyncio.sleep(0.4)  # past the thread's end
        assert backend.networks == set()
    finally:
        await manager.shutdown()


@pytest.mark.docker
class TestDeleteDuringLaunch:
    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir)

    async def test_a_delete_during_the_launch_leaves_nothing(self, api: Api, engine: Any) -> None:
        made: list[str] = []
        try:
            for delay in (0.0, 0.02, 0.05, 0.1):
                app_id = unique("race")
                made.append(app_id)
                code, body = await api.call("POST", "appliance", sleeper(app_id))
                assert code == 201, body
                await asyncio.sleep(delay)
                code, body = await api.call("DELETE", f"appliance/{app_id}")
                assert code == 204, (delay, body)
                # A network created by a thread that outlived the DELETE shows up within
                # milliseconds; nothing may be there at any look until the deadline.
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:
                    containers, networks = labelled(engine, app_id)
                    assert ([c.name for c in containers], [n.name for n in networks]) == ([], []), delay
                    await asyncio.sleep(0.1)
        finally:
            for app_id in made:
                remove_labelled(engine, app_id)


# ---------------------------------------------------------------------- leftovers


class BrokenLeftoversBackend(FakeBackend):
    """A backend whose leftover hunt fails (an engine error the backend did not expect)."""

    def after_adoption(self, known: set[str]) -> None:
        raise RuntimeError("403 has active endpoints")


async def test_fake_a_failed_leftover_hunt_leaves_the_backend_usable(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    manager = ApplianceManager(Store(tmp_path), {"fake": lambda: BrokenLeftoversBackend(FakeMachine())},
                               default_backend="fake", monitor_interval=3600)
    await manager.start()  # no record: the backend is made at its first use, below
    try:
        caplog.set_level(logging.WARNING, logger="jupyter_spark_appliance.manager")
        assert isinstance(manager.backend("fake"), BrokenLeftoversBackend)
        assert any("leftovers failed" in r.getMessage() and "active endpoints" in r.getMessage()
                   for r in caplog.records), caplog.text
        assert (await manager.templates_model())["backends"] == [{"name": "fake", "available": True, "reason": None}]
    finally:
        await manager.shutdown()


@pytest.mark.docker
class TestLoneNetwork:
    """A network of this server's owner that no record knows and no container uses."""

    @pytest.fixture(params=["report", "remove"])
    def mode(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def lone(self, engine: Any, appliance_data_dir: Path) -> Iterator[dict[str, str]]:
        owner = server_owner(appliance_data_dir)
        app_id = unique("lone")
        net = engine.networks.create(network_name(app_id, owner_tag(owner)), driver="bridge",
                                     labels={f"{LABEL}.appliance": app_id, f"{LABEL}.owner": owner})
        try:
            yield {"app_id": app_id, "network": net.name, "owner": owner}
        finally:
            remove_labelled(engine, app_id)

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, mode: str, lone: dict[str, str]) -> dict[str, Any]:
        return server_config(appliance_data_dir, docker_leftovers=mode)  # after the network exists

    async def test_a_lone_network_is_reported_or_removed(self, api: Api, jp_serverapp: Any, engine: Any,
                                                         mode: str, lone: dict[str, str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
        assert jp_serverapp.web_app.settings["spark_appliance_manager"].owner == lone["owner"]
        caplog.set_level(logging.WARNING, logger=DOCKER_LOGGER)
        code, body = await api.call("GET", "templates")
        assert code == 200 and {"name": "docker", "available": True, "reason": None} in body["backends"], body

        async def warned() -> str | None:
            return next((r.getMessage() for r in caplog.records if lone["app_id"] in r.getMessage()), None)

        message = await wait_for("the server's warning about the lone network", warned)
        assert lone["network"] in message, message
        _, networks = labelled(engine, lone["app_id"])
        if mode == "report":
            assert "found" in message and "docker_leftovers" in message, message
            assert [n.name for n in networks] == [lone["network"]]
        else:
            assert "removed" in message, message
            assert networks == []


@pytest.mark.docker
class TestLeftoverThatCannotBeRemoved:
    """A leftover container and its network, which a container of someone else's still uses."""

    @pytest.fixture
    def leftover(self, engine: Any, appliance_data_dir: Path) -> Iterator[dict[str, str]]:
        owner = server_owner(appliance_data_dir)
        tag, app_id = owner_tag(owner), unique("ghost")
        labels = {f"{LABEL}.appliance": app_id, f"{LABEL}.owner": owner}
        net = engine.networks.create(network_name(app_id, tag), driver="bridge", labels=labels)
        foreign: Any = None
        try:
            ours = engine.containers.run(DEFAULT_IMAGES["spark-master"], ["sleep", "300"],
                                         entrypoint=["/usr/bin/env"], detach=True, network=net.name,
                                         name=container_name(app_id, "x", 0, tag),
                                         labels={**labels, f"{LABEL}.container": "x", f"{LABEL}.instance": "0"})
            foreign = engine.containers.run(DEFAULT_IMAGES["spark-master"], ["sleep", "300"],
                                            entrypoint=["/usr/bin/env"], detach=True, network=net.name,
                                            name=unique("foreign"))
            yield {"app_id": app_id, "owner": owner, "container": ours.name, "network": net.name,
                   "foreign": foreign.id}
        finally:
            if foreign is not None:
                foreign.remove(force=True)
            remove_labelled(engine, app_id)

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, leftover: dict[str, str]) -> dict[str, Any]:
        return server_config(appliance_data_dir, docker_leftovers="remove")

    async def test_the_backend_is_usable_and_the_rest_removed(self, api: Api, jp_serverapp: Any, engine: Any,
                                                              leftover: dict[str, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
        assert jp_serverapp.web_app.settings["spark_appliance_manager"].owner == leftover["owner"]
        caplog.set_level(logging.WARNING, logger=DOCKER_LOGGER)
        code, body = await api.call("GET", "templates")  # the docker backend's first use
        assert code == 200 and {"name": "docker", "available": True, "reason": None} in body["backends"], body

        async def warned(word: str) -> str | None:
            return next((r.getMessage() for r in caplog.records
                         if leftover["app_id"] in r.getMessage() and word in r.getMessage()), None)

        refused = await wait_for("a warning naming the network", lambda: warned("could not remove"))
        assert leftover["network"] in refused and "active endpoints" in refused, refused
        removed = await wait_for("a warning naming what was removed", lambda: warned("removed:"))
        assert leftover["container"] in removed and leftover["network"] not in removed, removed
        containers, networks = labelled(engine, leftover["app_id"])
        assert containers == [] and [n.name for n in networks] == [leftover["network"]]
        engine.containers.get(leftover["foreign"])  # someone else's: left alone
        code, body = await api.call("GET", "templates")
        assert {"name": "docker", "available": True, "reason": None} in body["backends"], body


# ---------------------------------------------------------------------- executors' logs


def worker_command(**caps: int) -> Any:
    ctx = LaunchContext(bind_host="127.0.0.1", advertise_host="127.0.0.1", ports={7078: 0, 8081: 0},
                        args=["spark://127.0.0.1:7077"], env={}, spark_home=Path("/opt/spark"),
                        python=sys.executable, cores=1, memory_mb=1024, work_dir=Path("/tmp/work"),
                        log_dir=Path("/tmp/logs"), **caps)
    return SPARK_WORKER.command(ctx)


@pytest.mark.docker
async def test_stops_of_one_container_at_once_all_succeed(engine: Any, tmp_path: Path) -> None:
    """The reconciler replacing a dead container while a DELETE stops it: two removals of one
    container at once. The engine refuses the second ("removal ... is already in progress",
    409), which was the DELETE's 500; each stop now ends once the container is gone."""
    owner = f"races-{uuid.uuid4().hex[:8]}"
    backend = DockerBackend(DockerConfig(owner=owner), lambda app_id: tmp_path / app_id)
    for _ in range(3):  # the engine's refusal depends on timing: a few rounds make it likely
        c = engine.containers.run(DEFAULT_IMAGES["spark-master"], ["sleep", "300"], detach=True, network_mode="none",
                                  labels={f"{LABEL}.owner": owner})
        try:
            handle = ContainerHandle(container_id=c.id, name=c.name)
            await asyncio.gather(*(backend.stop(handle) for _ in range(3)))
            assert engine.containers.list(all=True, filters={"id": c.id}) == []
        finally:
            with contextlib.suppress(Exception):
                c.remove(force=True)


def test_a_worker_rolls_its_executors_logs() -> None:
    """The worker's own conf (SPARK_WORKER_OPTS) carries them: its ExecutorRunner writes the executors' output."""
    opts = worker_command().env["SPARK_WORKER_OPTS"].split()
    assert {"-Dspark.executor.logs.rolling.strategy=size", f"-Dspark.executor.logs.rolling.maxSize={50 * 2**20}",
            "-Dspark.executor.logs.rolling.maxRetainedFiles=2"} <= set(opts), opts
    opts = worker_command(executor_log_max_bytes=10**6, executor_log_backups=0).env["SPARK_WORKER_OPTS"].split()
    assert "-Dspark.executor.logs.rolling.maxSize=1000000" in opts, opts
    assert "-Dspark.executor.logs.rolling.maxRetainedFiles=1" in opts, opts  # 0 would keep every file
    opts = worker_command(executor_log_max_bytes=0).env.get("SPARK_WORKER_OPTS", "").split()
    assert not any("rolling" in o for o in opts), opts
