"""The Docker engine goes away under a running appliance, for real, and comes back.

The server's docker backend reaches the engine only through a unix-socket relay
that this test runs (DOCKER_HOST points at it); stopping the relay closes every
connection and removes the socket, which is what the server sees when dockerd
stops or its socket goes. The appliance's container runs on throughout. The
first tests drive the same logic over the fake backend, in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from jupyter_spark_appliance.backends.base import BackendUnavailable, Exit
from jupyter_spark_appliance.backends.docker import LABEL
from jupyter_spark_appliance.handles import Handle
from jupyter_spark_appliance.manager import ApplianceManager
from jupyter_spark_appliance.store import Store
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

from fakes import FakeBackend, FakeMachine

ENGINE_SOCKET = "/var/run/docker.sock"
GONE = "the Docker engine went away (ConnectionError: no socket)"


class FlakyBackend(FakeBackend):
    """The fake backend, with an engine that can go away: every call then raises BackendUnavailable."""

    gone = False

    def _check(self) -> None:
        if self.gone:
            raise BackendUnavailable(GONE)

    def available(self) -> None:
        self._check()

    def exit_status(self, handle: Handle) -> Exit | None:
        self._check()
        return super().exit_status(handle)

    async def stop(self, handle: Handle) -> None:
        self._check()
        await super().stop(handle)

    def logs(self, handle: Handle, tail: int) -> list[str]:
        self._check()
        return super().logs(handle, tail)


SPEC = {"id": "app", "containers": [
    {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
     "ports": [{"container_port": 7077}]},
    {"id": "spark-worker", "type": "service", "image": "spark-worker", "resources": {"cpus": 1, "mem": 512},
     "args": ["@spark-master:7077"], "dependencies": ["spark-master"]}]}


async def fake_launched(tmp_path: Path) -> tuple[ApplianceManager, FlakyBackend, FakeMachine]:
    machine = FakeMachine()
    backend = FlakyBackend(machine)
    manager = ApplianceManager(Store(tmp_path), {"fake": lambda: backend}, default_backend="fake",
                               monitor_interval=3600, stop_on_shutdown=False)
    await manager.start()
    await manager.create(SPEC)
    for task in list(manager._tasks.get("app", ())):
        await task
    assert manager.get("app").state == "running"
    return manager, backend, machine


def instance_states(manager: ApplianceManager) -> list[tuple[str, str | None]]:
    return [(i.state, i.reason) for i in manager.get("app").all_instances()]


async def test_fake_engine_gone_fails_instances_then_they_run_again(tmp_path):
    manager, backend, machine = await fake_launched(tmp_path)
    orch = manager.orchestrators["app"]
    backend.gone = True
    await orch.reconcile()
    assert instance_states(manager) == [("failed", GONE)] * 2
    assert manager.get("app").state == "failed"
    with pytest.raises(BackendUnavailable, match="Docker engine"):
        manager.scale("app", "spark-worker", 2)
    with pytest.raises(BackendUnavailable, match="Docker engine"):
        await manager.create({**SPEC, "id": "other"})
    with pytest.raises(BackendUnavailable, match="Docker engine"):
        await manager.delete("app")
    assert manager.get("app") is not None and not manager.get("app").deleting  # a DELETE may come again
    await orch.reconcile()  # still gone: nothing started, nothing stopped
    assert len(machine.alive()) == 2 and machine.starts == ["spark-master-0", "spark-worker-0"]

    backend.gone = False
    await orch.reconcile()
    assert instance_states(manager) == [("running", None)] * 2  # the same processes, not restarts
    assert machine.starts == ["spark-master-0", "spark-worker-0"] and orch.unreachable is None
    manager.scale("app", "spark-worker", 1)
    assert await manager.delete("app")
    assert machine.alive() == []
    await manager.shutdown()


async def test_fake_an_instance_that_died_while_the_engine_was_gone_is_restarted(tmp_path):
    manager, backend, machine = await fake_launched(tmp_path)
    orch = manager.orchestrators["app"]
    backend.gone = True
    await orch.reconcile()
    (worker,) = machine.alive("spark-worker")
    machine.kill(worker.pid)
    backend.gone = False
    await orch.reconcile()
    for task in list(orch._starting.values()):
        await task
    await orch.reconcile()
    states = {i.name: (i.state, i.restarts) for i in manager.get("app").all_instances()}
    assert states == {"spark-master-0": ("running", 0), "spark-worker-0": ("running", 1)}
    assert "gone while its backend was unreachable" in manager.get("app").instances["spark-worker"][0].last_reason
    await manager.delete("app")
    await manager.shutdown()


# ---------------------------------------------------------------------- a real engine


class Relay:
    """Forwards connections from ``path`` to the engine's socket, until :meth:`stop`."""

    def __init__(self, path: Path, target: str = ENGINE_SOCKET):
        self.path, self.target = path, target
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        server.listen(64)
        self._server = server
        self._spawn(self._accept, server)

    def stop(self) -> None:
        """The engine is gone for the server: no socket, every open connection closed."""
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
            except OSError:
                pass
            server.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in self._threads:
            thread.join(10)
        self._threads = [t for t in self._threads if t.is_alive()]
        assert not self._threads, "relay threads did not end"

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # stopped
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed by stop() or by the other side


@pytest.fixture
def relay(docker_engine, monkeypatch):
    """The engine as the server sees it. The session's own client (docker_engine) is made
    first, on the real socket, so it keeps working while the relay is down."""
    # A short path: a unix socket's path has at most 107 bytes, pytest's tmp paths are long.
    path = Path("/tmp") / f"jsa-relay-{uuid.uuid4().hex[:8]}.sock"
    r = Relay(path)
    r.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    yield r
    r.stop()


@pytest.fixture
def jp_server_config(appliance_data_dir, relay):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_spark_appliance": True}},
        "SparkApplianceApp": {"data_dir": str(appliance_data_dir), "start_timeout": 120.0,
                              "class_data_sharing": False},
    }


def master_only(app_id: str) -> dict[str, Any]:
    return {"id": app_id, "backend": "docker", "containers": [
        {"id": "spark-master", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}


def ours(engine, app_id: str) -> tuple[list[Any], list[Any]]:
    label = f"{LABEL}.appliance={app_id}"
    return (engine.containers.list(all=True, filters={"label": label}),
            engine.networks.list(filters={"label": label}))


@pytest.mark.docker
async def test_engine_goes_away_and_comes_back(api, jp_fetch, relay, docker_engine):
    app_id = f"gone-{uuid.uuid4().hex[:6]}"
    codes: list[tuple[str, int, Any]] = []

    async def call(method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        code, reply = await api.call(method, path, body, **params)
        codes.append((f"{method} {path}", code, reply))
        return code, reply

    async def until(what: str, predicate: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        model: Any = None
        while time.monotonic() < deadline:
            code, model = await call("GET", f"appliance/{app_id}")
            assert code == 200, model
            if predicate(model):
                return model
            await asyncio.sleep(0.3)
        raise AssertionError(f"{what}: {json.dumps(model, indent=1)[:3000]}")

    def master(model: dict[str, Any]) -> dict[str, Any]:
        (c,) = model["containers"]
        (inst,) = c["instance_states"]
        return inst

    try:
        code, model = await call("POST", "appliance", master_only(app_id))
        assert code == 201, model
        model = await until("running", lambda m: m["state"] in ("running", "failed"), 80)
        assert model["state"] == "running", model
        (container,) = docker_engine.containers.list(filters={"label": f"{LABEL}.appliance={app_id}"})

        relay.stop()  # the engine goes away for the server

        model = await until("the master failed for the engine",
                            lambda m: master(m)["state"] == "failed", 30)
        assert "Docker engine" in master(model)["reason"], master(model)
        assert model["state"] == "failed"
        # The event loop is free: Jupyter's own route answers (bounded by the request's timeout).
        status = await jp_fetch("api", "status", request_timeout=10)
        assert status.code == 200
        code, body = await call("PATCH", f"appliance/{app_id}/container/spark-master", {"instances": 2})
        assert code == 503 and "Docker engine" in body["message"], body
        code, body = await call("POST", "appliance", master_only(f"{app_id}-b"))
        assert code == 503 and "Docker engine" in body["message"], body
        code, body = await call("GET", "templates")
        assert code == 200
        docker_status = next(b for b in body["backends"] if b["name"] == "docker")
        assert not docker_status["available"] and "Docker engine" in docker_status["reason"]
        code, body = await call("GET", f"appliance/{app_id}/container/spark-master/logs", tail=5)
        assert code == 200 and "Docker engine" in body["instances"][0]["lines"][0], body
        code, body = await call("DELETE", f"appliance/{app_id}")
        assert code == 503 and "Docker engine" in body["message"], body
        code, model = await call("GET", f"appliance/{app_id}")  # the record stays, for a later DELETE
        assert code == 200 and master(model)["state"] == "failed", model
        container.reload()
        assert container.status == "running"  # nothing was stopped behind the outage

        relay.start()  # the engine is back: the same container is running again, not replaced
        model = await until("recovered", lambda m: m["state"] == "running", 30)
        assert master(model)["restarts"] == 0
        assert [c.id for c in ours(docker_engine, app_id)[0]] == [container.id]
        code, _ = await call("DELETE", f"appliance/{app_id}")
        assert code == 204
        assert ours(docker_engine, app_id) == ([], [])
        assert ours(docker_engine, f"{app_id}-b") == ([], [])
    finally:
        for name in (app_id, f"{app_id}-b"):
            containers, networks = ours(docker_engine, name)
            for c in containers:
                c.remove(force=True)
            for n in networks:
                n.remove()
    unexpected = [(what, code) for what, code, _ in codes if code >= 500 and code != 503]
    assert not unexpected, unexpected
