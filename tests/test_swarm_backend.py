"""The swarm backend on a real Docker Swarm with the project's locally built images.

CI makes its engine a single-node swarm (.ci/docker-setup: ``docker swarm init
--advertise-addr 127.0.0.1``); elsewhere these tests skip when no engine is a
swarm manager with the images, unless JSA_REQUIRE_DOCKER=1. The two-node test
builds its own swarm in network namespaces (tests/swarm_cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
import uuid
from typing import Any

import pytest

from jupyter_spark_appliance.backends.docker import LABEL
from jupyter_spark_appliance.backends.swarm import SwarmBackend, SwarmConfig, network_name
from jupyter_spark_appliance.manager import ApplianceManager
from jupyter_spark_appliance.store import Store
from jupyter_spark_appliance.templates import DEFAULT_IMAGES, render_template

from conftest import sparkmagic_endpoint

pytestmark = pytest.mark.docker


def _skip_or_raise(why: str) -> None:
    if os.environ.get("JSA_REQUIRE_DOCKER") == "1":
        raise RuntimeError(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def engine():
    try:
        import docker

        client = docker.from_env()
        swarm = client.info().get("Swarm") or {}
        for image in DEFAULT_IMAGES.values():
            client.images.get(image)
    except Exception as e:  # noqa: BLE001
        _skip_or_raise(f"no Docker engine with the project's images here ({e}); see .ci/docker-setup")
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        _skip_or_raise("the Docker engine is not a swarm manager (.ci/docker-setup runs docker swarm init)")
    yield client
    client.close()


def spark_livy(app_id: str, workers: int) -> dict[str, Any]:
    """The spark-livy template's document with half a CPU per container: Swarm reserves what
    a container asks for, and a 2-core CI node cannot reserve 1 CPU each for Livy, the master
    and two workers (nor room for a Connect server besides them)."""
    doc = render_template("spark-livy", {"id": app_id, "workers": workers, "worker_memory": 1024,
                                         "livy_memory": 1536, "connect": False})
    for c in doc["containers"]:
        c["resources"]["cpus"] = 0.5
    return {**doc, "backend": "swarm"}


def master_workers(model: dict[str, Any]) -> list[dict[str, Any]]:
    with urllib.request.urlopen(model["links"]["spark-ui"] + "/json/", timeout=10) as r:
        return [w for w in json.load(r)["workers"] if w["state"] == "ALIVE"]


def services(engine, app_id: str) -> dict[str, Any]:
    return {s.name: s for s in engine.services.list(filters={"label": f"{LABEL}.appliance={app_id}"})}


def task_of(engine, name: str) -> dict[str, Any]:
    """The one task of a service (the backend never lets Swarm start a second one)."""
    (task,) = engine.services.get(name).tasks()
    return task


def leftovers(engine, app_id: str) -> tuple[list[str], list[str], list[str]]:
    names = list(services(engine, app_id))
    nets = [n.name for n in engine.networks.list(filters={"label": f"{LABEL}.appliance={app_id}"})]
    tasks = [t["ID"] for t in engine.api.tasks() if t["Spec"]["ContainerSpec"].get("Hostname", "")
             .startswith(f"{app_id}-")]
    return names, nets, tasks


async def wait_for(what: str, check, timeout: float = 240.0, interval: float = 1.0):  # noqa: ANN001
    """Poll ``check`` (sync or async) until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
        except Exception as e:  # noqa: BLE001 - e.g. a master that is restarting
            last = e
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} within {timeout:g} s; last: {last!r}")


async def wait_running_with(api, app_id: str, workers: int, timeout: float = 300.0) -> dict[str, Any]:
    async def check():
        code, model = await api.call("GET", f"appliance/{app_id}")
        assert code == 200
        if model["state"] == "failed":
            raise AssertionError(model["reason"] or json.dumps(model)[:3000])
        if model["state"] == "running" and len(master_workers(model)) == workers:
            return model
        return None

    return await wait_for(f"{app_id} running with {workers} ALIVE workers", check, timeout)


async def test_spark_livy_on_a_single_node_swarm(api, engine, appliance_data_dir):
    code, body = await api.call("GET", "templates")
    assert {"name": "swarm", "available": True, "reason": None} in body["backends"]
    app_id = f"sw{uuid.uuid4().hex[:6]}"
    code, model = await api.call("POST", "appliance", spark_livy(app_id, 1))
    assert code == 201, model
    try:
        model = await api.wait_state(app_id, {"running", "failed"}, timeout=400)
        assert model["state"] == "running", model["reason"]
        assert model["backend"] == "swarm" and len(master_workers(model)) == 1

        # One service per instance on the appliance's overlay network, labelled like the docker backend's.
        ours = services(engine, app_id)
        assert sorted(ours) == [f"{app_id}-livy-0", f"{app_id}-spark-master-0", f"{app_id}-spark-worker-0"]
        (net,) = engine.networks.list(filters={"label": f"{LABEL}.appliance={app_id}"})
        assert net.name == network_name(app_id)
        assert net.attrs["Driver"] == "overlay" and net.attrs["Attachable"] is True
        spec = ours[f"{app_id}-spark-worker-0"].attrs["Spec"]
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        template = spec["TaskTemplate"]
        assert template["RestartPolicy"]["Condition"] == "none"
        assert template["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 1024 * 2**20}
        assert template["Resources"]["Reservations"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 1024 * 2**20}
        assert template["ContainerSpec"]["Image"].startswith("sha256:")  # the local image, never pulled
        assert spec["Labels"][f"{LABEL}.container"] == "spark-worker" and spec["Labels"][f"{LABEL}.instance"] == "0"
        master = ours[f"{app_id}-spark-master-0"].attrs
        assert master["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        assert {p["PublishMode"] for p in master["Spec"]["EndpointSpec"]["Ports"]} == {"host"}
        # Endpoints: the node's address (127.0.0.1, as the CI's swarm advertises) and the port read back.
        livy = next(c for c in model["containers"] if c["id"] == "livy")
        (endpoint,) = livy["endpoints"]
        task = task_of(engine, f"{app_id}-livy-0")
        assert endpoint["host"] == "127.0.0.1"
        assert endpoint["host_port"] == task["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]

        # Sparkmagic's client runs a statement: executors on the worker reach the driver in the
        # Livy service by its name on the overlay network.
        from hdijupyterutils.ipythondisplay import IpythonDisplay
        from sparkmagic.livyclientlib.command import Command
        from sparkmagic.livyclientlib.sparkcontroller import SparkController

        controller = SparkController(IpythonDisplay())
        _, credentials = await api.call("GET", f"appliance/{app_id}/credentials")
        controller.add_session("s", sparkmagic_endpoint(credentials), False,
                               {"kind": "pyspark", "executorMemory": "512m"})
        ok, out, _ = Command("spark.range(100).selectExpr('sum(id)').first()[0]").execute(
            controller.get_session_by_name_or_default("s"))
        assert ok and out.strip() == "4950", out
        controller.delete_session_by_name("s")

        # Scale 1 -> 2 -> 1: services come and go, the first worker's task is never replaced.
        first = task_of(engine, f"{app_id}-spark-worker-0")["ID"]
        for n in (2, 1):
            code, _ = await api.call("PATCH", f"appliance/{app_id}/container/spark-worker", {"instances": n})
            assert code == 202
            model = await wait_running_with(api, app_id, n)
            workers = sorted(s for s in services(engine, app_id) if "-spark-worker-" in s)
            assert workers == [f"{app_id}-spark-worker-{i}" for i in range(n)]
            assert task_of(engine, f"{app_id}-spark-worker-0")["ID"] == first

        # Logs come through the service.
        code, logs = await api.call("GET", f"appliance/{app_id}/container/spark-master/logs", tail=200)
        assert code == 200 and any("Master" in line for line in logs["instances"][0]["lines"])

        # A killed task is reported with Swarm's error and replaced by the orchestrator (Swarm
        # itself restarts nothing): a new service of the same name, a new task, one restart.
        engine.containers.get(task_of(engine, f"{app_id}-spark-worker-0")["Status"]["ContainerStatus"]
                              ["ContainerID"]).kill()

        async def replaced():
            code, model = await api.call("GET", f"appliance/{app_id}")
            worker = next(c for c in model["containers"] if c["id"] == "spark-worker")
            if worker["restarts"] >= 1 and model["state"] == "running" and len(master_workers(model)) == 1:
                return model
            return None

        model = await wait_for("the killed worker replaced", replaced, timeout=300)
        (worker_state,) = next(c for c in model["containers"] if c["id"] == "spark-worker")["instance_states"]
        assert "non-zero exit (137)" in worker_state["last_reason"], worker_state
        assert task_of(engine, f"{app_id}-spark-worker-0")["ID"] != first

        # A new manager (server restart) re-adopts through the records and the service handles.
        store = Store(appliance_data_dir)
        restarted = ApplianceManager(store, {"swarm": lambda: SwarmBackend(SwarmConfig(), store.dir)},
                                     stop_on_shutdown=False)
        await restarted.start()
        try:
            (adopted,) = restarted.list()
            assert adopted["state"] == "running" and adopted["backend"] == "swarm"
        finally:
            await restarted.shutdown()
    finally:
        assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
    assert leftovers(engine, app_id) == ([], [], [])


async def test_privileged_and_host_network_are_refused(api, engine):
    # A user's image asking for privilege, and a project role's host network; a project role's own
    # is_privileged is only a warning (it never runs privileged), so it is not among the problems.
    spec = {"id": "swpriv", "backend": "swarm", "containers": [
        {"id": "x", "type": "service", "image": "example/needs-privilege:1", "is_privileged": True,
         "resources": {"cpus": 0.5, "mem": 256}},
        {"id": "y", "type": "service", "image": DEFAULT_IMAGES["spark-master"], "is_privileged": True,
         "network_mode": "host", "resources": {"cpus": 0.5, "mem": 256}}]}
    code, body = await api.call("POST", "appliance", spec)
    assert code == 400
    assert [p["path"] for p in body["problems"]] == ["containers[0].is_privileged", "containers[1].network_mode"]


async def test_a_task_that_cannot_be_placed_fails_with_swarms_reason(api, engine):
    # More memory than any node has: Swarm keeps the task pending ("no suitable node"), and the
    # launch fails with that reason instead of waiting for the readiness timeout.
    app_id = f"swbig{uuid.uuid4().hex[:4]}"
    spec = {"id": app_id, "backend": "swarm", "containers": [
        {"id": "spark-master", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "resources": {"cpus": 0.5, "mem": 4 * 2**20}, "ports": [{"container_port": 8080}]}]}  # 4 TB
    code, body = await api.call("POST", "appliance", spec)
    assert code == 201, body
    model = await api.wait_state(app_id, {"failed", "running"}, timeout=180)
    assert model["state"] == "failed"
    assert "no suitable node" in model["reason"] and "insufficient resources" in model["reason"], model["reason"]
    assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
    assert leftovers(engine, app_id) == ([], [], [])


async def test_engine_unreachable_is_503(api, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "backend": "swarm"})
    assert code == 503 and "Docker engine is not reachable" in body["message"]
    code, body = await api.call("GET", "templates")
    (swarm,) = [b for b in body["backends"] if b["name"] == "swarm"]
    assert swarm["available"] is False and "Docker engine is not reachable" in swarm["reason"]


# ---------------------------------------------------------------------- two nodes


class Building:
    """The two-node swarm, made in a thread while the module's single-node tests run.

    Making it is the module's longest step (two engines, a registry, spark-livy's images
    pushed and pulled on both nodes: minutes on two cores), and most of it waits on disk
    and on the engines, which the single-node test's own waits leave room for. Made after
    them, it added its whole time to the worker that runs this module.
    """

    def __init__(self, base, host_engine) -> None:  # noqa: ANN001
        from concurrent.futures import ThreadPoolExecutor

        self.cluster: Any = None
        # The host engine's client is made here, before any test of the module points DOCKER_HOST elsewhere.
        self.host_engine = host_engine
        self.started = time.monotonic()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="two-node-swarm")
        self.future = self._pool.submit(self._make, base)

    def _make(self, base) -> Any:  # noqa: ANN001
        from swarm_cluster import TwoNodeSwarm

        cluster = TwoNodeSwarm(base)  # Unavailable: not root or a tool missing
        cluster.start()
        self.cluster = cluster  # from here on, close() has something to remove
        cluster.push(self.host_engine)
        print(f"two-node swarm with the images ready in {time.monotonic() - self.started:.1f} s")
        return cluster

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.future.result()  # its failure is the test's to report; here only what to remove
        self._pool.shutdown()
        if self.cluster is not None:
            closing = time.monotonic()
            self.cluster.close(self.host_engine)
            print(f"two-node swarm removed in {time.monotonic() - closing:.1f} s")
        self.host_engine.close()


@pytest.fixture(scope="module", autouse=True)
def two_nodes_building(request, tmp_path_factory):
    """Starts making the two-node swarm as the module begins, if its test is to run at all."""
    wanted = any(item.module is request.module and "two_nodes" in getattr(item, "fixturenames", ())
                 for item in request.session.items)
    try:
        import docker

        host_engine = docker.from_env() if wanted and os.geteuid() == 0 else None
    except Exception:  # noqa: BLE001 - no engine: the engine fixture skips (or fails) the tests
        host_engine = None
    if host_engine is None:
        yield None
        return
    building = Building(tmp_path_factory.mktemp("two-nodes"), host_engine)
    try:
        yield building
    finally:
        building.close()


@pytest.fixture(scope="module")
def two_nodes(engine, two_nodes_building):
    """A swarm of two more engines in network namespaces, with the images in its registry."""
    from swarm_cluster import Unavailable

    if two_nodes_building is None:
        _skip_or_raise("no two-node swarm here: it needs root and a Docker engine")
    waited = time.monotonic()
    try:
        cluster = two_nodes_building.future.result(timeout=1200)
    except Unavailable as e:
        _skip_or_raise(f"no two-node swarm here: {e}")
    print(f"waited {time.monotonic() - waited:.1f} s for the two-node swarm")
    return cluster


@pytest.fixture
def jp_server_config(jp_server_config, request):
    if "two_nodes" in request.fixturenames:
        cluster = request.getfixturevalue("two_nodes")
        jp_server_config["SparkApplianceApp"]["swarm_registry"] = cluster.registry
    return jp_server_config


@pytest.mark.timeout(1800)
async def test_spark_livy_across_two_nodes(two_nodes, api, monkeypatch):
    manager, worker_engine = two_nodes.clients["n1"], two_nodes.clients["n2"]
    # A worker node cannot run the backend: it needs a manager.
    monkeypatch.setenv("DOCKER_HOST", two_nodes.socket("n2"))
    code, body = await api.call("POST", "appliance", spark_livy("swnope", 1))
    assert code == 503 and "a swarm worker, not a manager" in body["message"], body
    # The server's swarm backend talks to the manager node from here on (it keeps its client).
    monkeypatch.setenv("DOCKER_HOST", two_nodes.socket("n1"))
    nodes = two_nodes.node_ids()
    address = {nodes[n]: addr for n, addr in two_nodes.nodes.items()}

    app_id = f"sw2n{uuid.uuid4().hex[:6]}"
    code, model = await api.call("POST", "appliance", spark_livy(app_id, 2))
    assert code == 201, model
    try:
        model = await wait_running_with(api, app_id, 2, timeout=600)
        ours = services(manager, app_id)
        for name, service in ours.items():
            image = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            assert image.startswith(f"{two_nodes.registry}/jupyter-spark-appliance/") and "@sha256:" in image, name

        def workers_by_node() -> dict[str, str]:
            """ALIVE worker (its host in the master's /json/: its service name) -> its task's node."""
            return {w["host"]: task_of(manager, w["host"])["NodeID"] for w in master_workers(model)}

        placed = workers_by_node()
        assert set(placed.values()) == set(nodes.values()), placed  # one worker on each node
        # Endpoints are the addresses of the nodes the tasks run on.
        for c in model["containers"]:
            for ep in c["endpoints"]:
                task = task_of(manager, f"{app_id}-{c['id']}-{ep['instance']}")
                assert ep["host"] == address[task["NodeID"]], (c["id"], ep)

        # A statement through the gateway: its executors, on either node, reach the driver by
        # the Livy service's name across the overlay network.
        from hdijupyterutils.ipythondisplay import IpythonDisplay
        from sparkmagic.livyclientlib.command import Command
        from sparkmagic.livyclientlib.sparkcontroller import SparkController

        controller = SparkController(IpythonDisplay())
        _, credentials = await api.call("GET", f"appliance/{app_id}/credentials")
        controller.add_session("m", sparkmagic_endpoint(credentials), False,
                               {"kind": "pyspark", "executorMemory": "512m"})
        ok, out, _ = Command("spark.range(1000, numPartitions=8).selectExpr('sum(id)').first()[0]").execute(
            controller.get_session_by_name_or_default("m"))
        assert ok and out.strip() == "499500", out
        controller.delete_session_by_name("m")

        # Scale 2 -> 3 -> 1: the surviving workers' tasks are never replaced.
        before = {name: task_of(manager, name)["ID"] for name in ours if "-spark-worker-" in name}
        for n in (3, 1):
            code, _ = await api.call("PATCH", f"appliance/{app_id}/container/spark-worker", {"instances": n})
            assert code == 202
            model = await wait_running_with(api, app_id, n, timeout=400)
            workers = sorted(s for s in services(manager, app_id) if "-spark-worker-" in s)
            assert workers == [f"{app_id}-spark-worker-{i}" for i in range(n)]
            for name in workers:
                if name in before:
                    assert task_of(manager, name)["ID"] == before[name], name
            if n == 3:
                assert set(workers_by_node().values()) == set(nodes.values())
    finally:
        assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
    # Nothing is left on either node: no service, no task, no container, no network.
    assert leftovers(manager, app_id) == ([], [], [])
    for node, client in (("n1", manager), ("n2", worker_engine)):
        # An engine removes a task's container and its share of the network just after the task.
        await wait_for(f"no container or network of {app_id} left on {node}", lambda client=client: not (
            client.containers.list(all=True, filters={"label": "com.docker.swarm.service.name"})
            or [n for n in client.networks.list() if n.name == network_name(app_id)]), timeout=60)
