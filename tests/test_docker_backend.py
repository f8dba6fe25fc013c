"""The Docker backend on a real Docker engine with the project's locally built images.

CI installs docker.io, starts dockerd and builds the images (.ci/docker-setup);
elsewhere these tests skip when no engine answers, unless JSA_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import pytest

from jupyter_spark_appliance.backends.docker import (
    LABEL,
    DockerBackend,
    DockerConfig,
    container_name,
    owner_tag,
)
from jupyter_spark_appliance.manager import ApplianceManager
from jupyter_spark_appliance.spark.probes import http2_answers
from jupyter_spark_appliance.spark.standalone import alive_workers
from jupyter_spark_appliance.store import Store
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

from conftest import sparkmagic_endpoint

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine(docker_engine):
    return docker_engine


@pytest.fixture
def jp_server_config(appliance_data_dir, tmp_path):
    """The shared config, plus a host path the volumes test may mount (nothing is allowed by default)."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_spark_appliance": True}},
        "SparkApplianceApp": {"data_dir": str(appliance_data_dir), "start_timeout": 240.0,
                              "docker_volume_allow": [str(tmp_path / "shared")]},
    }


@pytest.fixture
def owner(jp_serverapp) -> str:
    return jp_serverapp.web_app.settings["spark_appliance_manager"].owner


def named(owner: str, app_id: str, cid: str, index: int = 0) -> str:
    """A container's name on the engine: this server's tag, then appliance, container, instance."""
    return container_name(app_id, cid, index, owner_tag(owner))


def alive(model: dict) -> int:
    return alive_workers(model["links"]["spark-ui"])


def ours(engine, app_id: str):
    containers = engine.containers.list(all=True, filters={"label": f"{LABEL}.appliance={app_id}"})
    networks = engine.networks.list(filters={"label": f"{LABEL}.appliance={app_id}"})
    return containers, networks


async def test_spark_livy_on_docker(api, engine, appliance_data_dir, owner):
    code, model = await api.call("POST", "appliance", {"template": "spark-livy", "id": "dock", "backend": "docker",
                                                       "workers": 1, "worker_memory": 1024})
    assert code == 201, model
    model = await api.wait_state("dock", {"running", "failed"}, timeout=400)
    assert model["state"] == "running", model["reason"]
    assert model["backend"] == "docker" and alive(model) == 1
    # Running means its Spark Connect server answers gRPC, not only that Docker's proxy
    # accepts on the published port (it does before anything in the container listens).
    connect = urlsplit(model["links"]["connect"])
    assert http2_answers(connect.hostname, connect.port)

    containers, networks = ours(engine, "dock")
    # The README's names, literally: one network jsa-<tag>-<id>, containers <tag>-<appliance>-<container>-<n>,
    # where <tag> is this server's six hex digits (one for all of them: README, Docker backend).
    (network,) = [n.name for n in networks]
    found = re.fullmatch(r"jsa-([0-9a-f]{6})-dock", network)
    assert found, network
    tag = found.group(1)
    assert sorted(c.name for c in containers) == sorted(
        f"{tag}-dock-{cid}-0" for cid in ("spark-master", "livy", "spark-worker", "spark-connect"))
    worker = engine.containers.get(f"{tag}-dock-spark-worker-0")
    assert worker.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert worker.attrs["HostConfig"]["Memory"] == 1024 * 2**20
    assert worker.labels[f"{LABEL}.container"] == "spark-worker" and worker.labels[f"{LABEL}.instance"] == "0"
    master = engine.containers.get(f"{tag}-dock-spark-master-0")
    for bindings in master.attrs["NetworkSettings"]["Ports"].values():
        assert all(b["HostIp"] == "127.0.0.1" for b in bindings or [])

    # Scale 1 -> 2 -> 1, judged by the master.
    for n in (2, 1):
        code, _ = await api.call("PATCH", "appliance/dock/container/spark-worker", {"instances": n})
        assert code == 202
        model = await api.wait_state("dock", {"running", "failed"}, timeout=300)
        assert model["state"] == "running" and alive(model) == n

    # Sparkmagic's client runs a statement through the gateway container.
    from hdijupyterutils.ipythondisplay import IpythonDisplay
    from sparkmagic.livyclientlib.command import Command
    from sparkmagic.livyclientlib.sparkcontroller import SparkController

    controller = SparkController(IpythonDisplay())
    _, credentials = await api.call("GET", "appliance/dock/credentials")
    controller.add_session("d", sparkmagic_endpoint(credentials), False,
                           {"kind": "pyspark", "executorMemory": "512m"})
    ok, out, _ = Command("spark.range(100).selectExpr('sum(id)').first()[0]").execute(
        controller.get_session_by_name_or_default("d"))
    assert ok and out.strip() == "4950", out
    # The gateway's driver and its executor started from the image's archives: the kernel
    # shows each archive mapped into the JVM (-Xshare:auto would silently skip a bad one).
    # An executor runs from its own archive, or from the driver's where the image build's
    # recording lost its own (cds.spark_app_conf).
    for name, jvm, archive in ((f"{tag}-dock-livy-0", "[S]parkSubmit", "spark-driver-"),
                               (f"{tag}-dock-spark-worker-0", "[C]oarseGrainedExecutorBackend",
                                "spark-\\(executor\\|driver\\)-")):
        code, found = engine.containers.get(name).exec_run(
            ["sh", "-c", f"grep -c '/opt/jsa/cds/{archive}' /proc/$(pgrep -f '{jvm}' | head -1)/maps"])
        assert code == 0 and int(found) > 0, (name, found)
    controller.delete_session_by_name("d")

    # Logs come from the engine.
    code, logs = await api.call("GET", "appliance/dock/container/spark-master/logs", tail=100)
    assert code == 200 and any("Master" in line for line in logs["instances"][0]["lines"])

    # A new manager (server restart) re-adopts through the records and labels.
    restarted = ApplianceManager(
        Store(appliance_data_dir),
        {"docker": lambda: DockerBackend(DockerConfig(owner=owner), Store(appliance_data_dir).dir)},
        stop_on_shutdown=False, owner=owner)
    await restarted.start()
    try:
        (adopted,) = restarted.list()
        assert adopted["state"] == "running" and adopted["backend"] == "docker"
    finally:
        await restarted.shutdown()

    assert (await api.call("DELETE", "appliance/dock"))[0] == 204
    assert ours(engine, "dock") == ([], [])


async def test_missing_user_image_fails_that_container_with_the_reason(api, engine):
    spec = {"id": "noimg", "backend": "docker", "containers": [
        {"id": "spark-master", "type": "service", "image": "heliumdatacommons/spark-master:does-not-exist",
         "resources": {"cpus": 1, "mem": 512}, "ports": [{"container_port": 8080}]}]}
    code, _ = await api.call("POST", "appliance", spec)
    assert code == 201
    model = await api.wait_state("noimg", {"failed", "running"}, timeout=120)
    assert model["state"] == "failed"
    assert "heliumdatacommons/spark-master:does-not-exist" in model["reason"]
    assert "not available locally" in model["reason"]
    assert (await api.call("DELETE", "appliance/noimg"))[0] == 204
    assert ours(engine, "noimg") == ([], [])


async def test_privileged_is_refused_unless_allowed(api, engine):
    # A user's image (the project's own never run privileged: their is_privileged is only a warning).
    spec = {"id": "priv", "backend": "docker", "containers": [
        {"id": "x", "type": "service", "image": "example/needs-privilege:1", "is_privileged": True,
         "resources": {"cpus": 1, "mem": 512}}]}
    code, body = await api.call("POST", "appliance", spec)
    assert code == 400 and body["problems"][0]["path"] == "containers[0].is_privileged"


@pytest.mark.parametrize("change,path,words", [
    ({"network_mode": "host"}, "containers[0].network_mode", "docker_allow_host_network"),
    ({"volumes": [{"src": "/", "dest": "/host", "type": "rw"}]}, "containers[0].volumes[0].src", "never mounted"),
    ({"volumes": [{"src": "/var/run/docker.sock", "dest": "/s", "type": "rw"}]}, "containers[0].volumes[0].src",
     "never mounted"),
    ({"volumes": [{"src": "/proc", "dest": "/p", "type": "ro"}]}, "containers[0].volumes[0].src", "never mounted"),
    ({"volumes": [{"src": "/tmp", "dest": "/t", "type": "ro"}]}, "containers[0].volumes[0].src",
     "not under an allowed path"),
    ({"resources": {"cpus": 1, "mem": 2}}, "containers[0].resources.mem", "at least 6 MB"),
])
async def test_the_docker_policy_refuses_what_gives_the_host_away(api, engine, change, path, words):
    spec = {"id": "policy", "backend": "docker", "containers": [
        {"id": "x", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "resources": {"cpus": 1, "mem": 512}, **change}]}
    code, body = await api.call("POST", "appliance", spec)
    assert code == 400, body
    assert [p["path"] for p in body["problems"]] == [path] and words in body["problems"][0]["message"]
    assert ours(engine, "policy") == ([], [])


async def test_two_servers_on_one_engine_never_touch_each_others_containers(api, engine, owner, tmp_path,
                                                                          jp_serverapp):
    """Another Jupyter server (another owner) with an appliance of the same id on the same engine."""
    other = DockerBackend(DockerConfig(owner="someone-else@elsewhere:/data"), lambda app_id: tmp_path / app_id)
    other.available()
    theirs = engine.containers.create(DEFAULT_IMAGES["spark-master"], ["sleep", "300"],
                                      entrypoint=["/usr/bin/env"],
                                      name=named("someone-else@elsewhere:/data", "twin", "x"),
                                      labels={f"{LABEL}.appliance": "twin", f"{LABEL}.owner": other.config.owner,
                                              f"{LABEL}.container": "x", f"{LABEL}.instance": "0"})
    try:
        spec = {"id": "twin", "backend": "docker", "containers": [
            {"id": "x", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
             "resources": {"cpus": 0.5, "mem": 64}, "cmd": "sleep 300"}]}
        assert (await api.call("POST", "appliance", spec))[0] == 201
        model = await api.wait_state("twin", {"running", "failed"}, timeout=120)
        assert model["state"] == "running", model["reason"]
        mine = engine.containers.get(named(owner, "twin", "x"))
        assert mine.id != theirs.id
        # This server's leftover hunt and its DELETE leave the other server's container alone.
        backend = jp_serverapp.web_app.settings["spark_appliance_manager"].backend("docker")
        assert backend.leftovers(set()).get("twin") == [mine.name]  # ours only, never theirs
        assert (await api.call("DELETE", "appliance/twin"))[0] == 204
        theirs.reload()
        assert theirs.status == "created"
        assert not engine.containers.list(all=True, filters={"label": [f"{LABEL}.owner={owner}",
                                                                       f"{LABEL}.appliance=twin"]})
    finally:
        theirs.remove(force=True)


async def test_engine_unreachable_is_503_and_local_still_works(api, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "backend": "docker"})
    assert code == 503 and "Docker engine is not reachable" in body["message"]
    code, body = await api.call("POST", "appliance", {"id": "still-local", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]}]})
    assert code == 201, body
    model = await api.wait_state("still-local", {"running", "failed"})
    assert model["state"] == "running"
    assert (await api.call("DELETE", "appliance/still-local"))[0] == 204


def test_leftovers_of_a_crashed_server_are_found_and_removed(engine, tmp_path):
    # Containers labelled by this server whose appliance no record knows, as a crash leaves
    # them; another server's container (another owner) is never counted nor removed.
    def labelled(owner: str) -> dict[str, str]:
        return {f"{LABEL}.appliance": "ghost", f"{LABEL}.container": "x", f"{LABEL}.instance": "0",
                f"{LABEL}.owner": owner}

    mine = engine.containers.create(DEFAULT_IMAGES["spark-master"], name=named("crashed-server", "ghost", "x"),
                                    labels=labelled("crashed-server"))
    theirs = engine.containers.create(DEFAULT_IMAGES["spark-master"], name=named("other-server", "ghost", "x"),
                                      labels=labelled("other-server"))
    try:
        backend = DockerBackend(DockerConfig(owner="crashed-server"), lambda app_id: tmp_path / app_id)
        backend.available()
        assert backend.leftovers({"something-else"}) == {"ghost": [mine.name]}
        assert backend.leftovers({"ghost"}) == {}
        assert backend.remove_leftovers(set()) == {"ghost": [mine.name]}
        remaining = engine.containers.list(all=True, filters={"label": f"{LABEL}.appliance=ghost"})
        assert [c.id for c in remaining] == [theirs.id]
    finally:
        theirs.remove(force=True)


async def test_cmd_env_references_and_volumes_are_honoured(api, engine, tmp_path, owner):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the containers' user is not root
    spec = {"id": "plumbing", "backend": "docker", "containers": [
        {"id": "spark-master", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "resources": {"cpus": 1, "mem": 768}, "ports": [{"container_port": 8080}, {"container_port": 7077}]},
        {"id": "probe", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "resources": {"cpus": 0.5, "mem": 128},
         "env": {"MASTER": "@spark-master:7077", "GREETING": "mail me\\@example.org"},
         "cmd": "echo \"$MASTER $GREETING\" > /data/out.txt && sleep 300",
         "volumes": [{"src": str(shared), "dest": "/data", "type": "rw"}]}]}
    code, body = await api.call("POST", "appliance", spec)
    assert code == 201, body
    model = await api.wait_state("plumbing", {"running", "failed"}, timeout=300)
    assert model["state"] == "running", model["reason"]
    deadline = asyncio.get_running_loop().time() + 30
    while not (shared / "out.txt").exists():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    master = named(owner, "plumbing", "spark-master")
    assert (shared / "out.txt").read_text().strip() == f"{master}:7077 mail me@example.org"
    probe = engine.containers.get(named(owner, "plumbing", "probe"))
    assert probe.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert (await api.call("DELETE", "appliance/plumbing"))[0] == 204
    assert ours(engine, "plumbing") == ([], [])


def test_master_and_worker_start_from_the_images_class_data_sharing_archives(engine):
    # The JVM's own class-loading log says where each class came from; "shared objects
    # file (top)" is the dynamic archive that the image recorded while it was built.
    import time

    network = engine.networks.create("jsa-cds-check", driver="bridge")
    logging_opts = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xlog:class+load=info:file=/tmp/class-load.log"
    started = []
    try:
        for role, args, ready in (("spark-master", [], "New state: ALIVE"),
                                  ("spark-worker", ["cds-check-master:7077"], "Successfully registered")):
            c = engine.containers.run(DEFAULT_IMAGES[role], args, name=f"cds-check-{role.split('-')[1]}",
                                      hostname=f"cds-check-{role.split('-')[1]}", network=network.name,
                                      environment={"SPARK_DAEMON_JAVA_OPTS": logging_opts}, detach=True)
            started.append(c)
            deadline = time.monotonic() + 120
            while ready not in c.logs().decode(errors="replace"):
                assert time.monotonic() < deadline, c.logs().decode(errors="replace")[-2000:]
                time.sleep(0.2)
            code, out = c.exec_run(["sh", "-c", "grep -c 'shared objects file (top)' /tmp/class-load.log"])
            assert code == 0 and int(out) > 1000, (role, out)
    finally:
        for c in started:
            c.remove(force=True)
        network.remove()
