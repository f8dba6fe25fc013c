"""README claims about the Docker backend that no other test drove (issue #18).

A real engine with the project's images (see tests/test_docker_backend.py; these skip
without one unless JSA_REQUIRE_DOCKER=1). One ``jupyter server`` process for the module,
with ``docker_allow_host_network`` on, and one spark-livy appliance on it (one worker,
no Connect server) shared by the checks that need Spark.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from jupyter_spark_appliance.backends.docker import LABEL
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

from jupyter_process import Server

pytestmark = pytest.mark.docker

APP = "claims"  # the shared spark-livy appliance
UNPRIVILEGED_UID = "1000"  # images/Dockerfile: useradd --uid 1000 spark; USER spark


@pytest.fixture(scope="module")
def engine(docker_engine):
    return docker_engine


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    s = Server(root, root / "appliances", "--SparkApplianceApp.docker_allow_host_network=True",
               "--SparkApplianceApp.start_timeout=240")
    try:
        yield s
    finally:
        for app_id in (a["id"] for a in s.call("GET", "appliance")[1]["appliances"]):
            s.call("DELETE", f"appliance/{app_id}")
        s.stop()


@pytest.fixture(scope="module")
def appliance(server) -> Iterator[dict]:
    code, model = server.call("POST", "appliance", {"template": "spark-livy", "id": APP, "backend": "docker",
                                                    "workers": 1, "worker_memory": 1024, "connect": False})
    assert code == 201, model
    model = server.wait(APP, lambda m: m["state"] in ("running", "failed"), "the appliance to run", timeout=400)
    assert model["state"] == "running", model["reason"]
    yield model
    assert server.call("DELETE", f"appliance/{APP}")[0] == 204


def containers_of(engine, app_id: str, cid: str | None = None) -> list[Any]:
    labels = [f"{LABEL}.appliance={app_id}"] + ([f"{LABEL}.container={cid}"] if cid else [])
    return engine.containers.list(all=True, filters={"label": labels})


def wait_until(condition, timeout: float, what):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what()
        time.sleep(0.3)
    return value


def test_containers_and_the_livy_sessions_code_run_as_an_unprivileged_user(engine, server, appliance):
    running = containers_of(engine, APP)
    assert sorted(c.labels[f"{LABEL}.container"] for c in running) == sorted(c["id"] for c in appliance["containers"])
    for c in running:
        assert c.exec_run(["id", "-u"]) == (0, f"{UNPRIVILEGED_UID}\n".encode()), c.name
        assert c.attrs["Config"]["User"] == "spark" and not c.attrs["HostConfig"]["Privileged"], c.name

    # A Livy session's code, in the driver (the livy container) and in an executor (the worker's).
    _, credentials = server.call("GET", f"appliance/{APP}/credentials")
    livy = credentials["livy"]
    http = requests.Session()
    http.auth = (livy["username"], livy["password"])
    r = http.post(f"{livy['url']}/sessions", json={"kind": "pyspark", "executorMemory": "512m"}, timeout=30)
    assert r.status_code == 201, r.text
    session = f"{livy['url']}/sessions/{r.json()['id']}"
    wait_until(lambda: http.get(session, timeout=30).json()["state"] in ("idle", "dead", "error"), 240,
               lambda: http.get(f"{session}/log", timeout=30).json())
    r = http.post(f"{session}/statements", timeout=30, json={
        "code": "import os\n(os.getuid(), sc.parallelize([0], 1).map(lambda _: os.getuid()).first())"})
    statement = f"{session}/statements/{r.json()['id']}"
    stmt = wait_until(lambda: (s := http.get(statement, timeout=30).json())["state"] == "available" and s, 240,
                      lambda: (http.get(statement, timeout=30).json(), http.get(f"{session}/log", timeout=30).json()))
    assert stmt["output"]["data"]["text/plain"] == f"({UNPRIVILEGED_UID}, {UNPRIVILEGED_UID})", stmt["output"]
    assert http.delete(session, timeout=60).json() == {"msg": "deleted"}


def test_container_and_bridge_join_the_appliance_network_and_host_uses_the_hosts(engine, server):
    """``host`` is allowed on this server (docker_allow_host_network); the refusal is test_docker_backend's."""
    image = DEFAULT_IMAGES["spark-master"]

    def box(cid: str, **fields: Any) -> dict:
        return {"id": cid, "type": "service", "image": image, "resources": {"cpus": 0.25, "mem": 64},
                "cmd": "trap 'exit 0' TERM; sleep 300 & wait", **fields}  # PID 1 ignores an untrapped TERM

    spec = {"id": "claims-nets", "backend": "docker", "containers": [
        box("peer", cmd="trap 'exit 0' TERM; python3 -m http.server 7077 & wait", ports=[{"container_port": 7077}]),
        box("bridged", network_mode="bridge", env={"PEER": "@peer:7077"}, dependencies=["peer"]),
        box("hosted", network_mode="host", env={"PEER": "@peer:7077"}, dependencies=["peer"])]}
    code, body = server.call("POST", "appliance", spec)
    assert code == 201, body
    try:
        model = server.wait("claims-nets", lambda m: m["state"] in ("running", "failed"), "the boxes to run", 180)
        assert model["state"] == "running", model["reason"]
        (peer_endpoint,) = next(c for c in model["containers"] if c["id"] == "peer")["endpoints"]
        published = peer_endpoint["host_port"]

        (network,) = engine.networks.list(filters={"label": f"{LABEL}.appliance=claims-nets"})
        (peer,), (bridged,), (hosted,) = (containers_of(engine, "claims-nets", cid)
                                          for cid in ("peer", "bridged", "hosted"))
        # container (the default) and bridge: on the appliance's network only, where names resolve.
        for c in (peer, bridged):
            assert c.attrs["HostConfig"]["NetworkMode"] == network.name, c.name
            assert list(c.attrs["NetworkSettings"]["Networks"]) == [network.name], c.name
        assert f"PEER={peer.name}:7077" in bridged.attrs["Config"]["Env"]
        peer_ip = peer.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        code, out = bridged.exec_run(["getent", "hosts", peer.name])
        assert code == 0 and out.decode().split()[0] == peer_ip, out
        # host: the host's network stack, nothing published, @peer is the host's loopback and published port.
        assert hosted.attrs["HostConfig"]["NetworkMode"] == "host"
        assert list(hosted.attrs["NetworkSettings"]["Networks"]) == ["host"]
        assert not hosted.attrs["HostConfig"]["PortBindings"]
        assert f"PEER=127.0.0.1:{published}" in hosted.attrs["Config"]["Env"]
        code, out = hosted.exec_run(["python3", "-c", "import urllib.request as u; "
                                     f"print(u.urlopen('http://127.0.0.1:{published}/', timeout=10).status)"])
        assert (code, out) == (0, b"200\n"), out
    finally:
        assert server.call("DELETE", "appliance/claims-nets")[0] == 204
    assert containers_of(engine, "claims-nets") == []


@contextlib.contextmanager
def empty_engine() -> Iterator[str]:
    """A second Docker engine on this machine with no images: its DOCKER_HOST.

    Its own data, exec root and socket; no default bridge, no iptables rules (the
    machine's engine owns those) and an address pool of its own, so it never touches
    the engine the other tests use. It runs in a network namespace of its own: started
    beside the machine's engine in the same namespace, it removed that engine's docker0
    bridge, and the next image build (or any container on the default bridge) failed
    with "could not find bridge docker0". Needs root, dockerd, ip and nsenter, as CI has.
    """
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in ("dockerd", "ip", "nsenter")):
        if os.environ.get("JSA_REQUIRE_DOCKER") == "1":
            raise RuntimeError("a second Docker engine needs root and dockerd")
        pytest.skip("a second Docker engine needs root and dockerd")
    import docker

    root = Path(tempfile.mkdtemp(prefix="jsa-e-", dir="/tmp"))  # short: a unix socket path has 107 bytes
    host = f"unix://{root}/docker.sock"
    netns = root.name  # unique: the dir's random name
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    with open(root / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}", "dockerd", "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "dockerd.pid"), "-H", host, "--bridge=none", "--iptables=false",
             "--ip-masq=false", "--storage-driver=vfs", "--default-address-pool", "base=10.214.99.0/24,size=28"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers() -> Any:
            try:
                return docker.DockerClient(base_url=host, timeout=10)  # asks the engine for its API version
            except docker.errors.DockerException:  # not up yet
                assert proc.poll() is None, (root / "dockerd.log").read_text()[-3000:]
                return None

        client = wait_until(answers, 60, lambda: (root / "dockerd.log").read_text()[-3000:])
        assert client.images.list(all=True) == []
        yield host
        assert client.containers.list(all=True) == [] and client.networks.list(
            filters={"label": LABEL + ".appliance"}) == []
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        shutil.rmtree(root, ignore_errors=True)


async def test_a_missing_project_image_fails_its_container_with_the_command_to_run(api, engine, monkeypatch):
    with empty_engine() as host:
        monkeypatch.setenv("DOCKER_HOST", host)
        code, body = await api.call("POST", "appliance", {"template": "spark-livy", "id": "noproject",
                                                          "backend": "docker", "connect": False})
        assert code == 201, body
        model = await api.wait_state("noproject", {"failed", "running"}, timeout=120)
        assert model["state"] == "failed"
        # The first container to start (the master) fails; the launch stops there, naming the command.
        failed = [(c["image"], i) for c in model["containers"] for i in c["instance_states"] if i["state"] == "failed"]
        assert failed, model
        for image, instance in failed:
            words = (f"image {image} is not built on this engine: run `jupyter-spark-appliance build-image` "
                     "(see the README's Docker section)")
            assert instance["reason"] == words, instance
        assert model["reason"] in {f"{i['name']}: {i['reason']}" for _, i in failed}, model["reason"]
        assert {i["name"]: image for image, i in failed}.get("spark-master-0") == DEFAULT_IMAGES["spark-master"]
        assert (await api.call("DELETE", "appliance/noproject"))[0] == 204


def image_chain(engine, image_id: str, stop_at: str) -> list[str]:
    """An image and its parents up to (not including) ``stop_at``: what one build added."""
    chain = []
    while image_id and image_id != stop_at:
        chain.append(image_id)
        image_id = engine.images.get(image_id).attrs.get("Parent") or ""
    return chain


def test_a_rebuild_removes_the_untagged_images_it_replaced(engine, monkeypatch, tmp_path):
    """build_images on the real engine, with a build context of two tiny targets instead of the project's.

    The project's context (pip wheels of pyspark, class-data-sharing archives recorded in
    the image) takes minutes, and rebuilding the project's tags would change the images
    every other Docker test runs; the up-to-date check, the build and the removal of the
    replaced image are build_images' own.
    """
    from jupyter_spark_appliance.spark import image

    tags = {"one": "jsa-claims-rebuild/one:test", "two": "jsa-claims-rebuild/two:test"}
    monkeypatch.setattr(image, "ROLES", {r: SimpleNamespace(name=r, image=t) for r, t in tags.items()})
    mark = {"text": "first"}

    def tiny_context(ctx: Path, log) -> None:  # noqa: ANN001 - build_context's signature
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "mark.txt").write_text(mark["text"])
        (ctx / "Dockerfile").write_text("ARG BASE\nFROM ${BASE} AS runtime\nCOPY mark.txt /mark.txt\n"
                                        "FROM runtime AS one\nLABEL role=one\nFROM runtime AS two\nLABEL role=two\n")

    monkeypatch.setattr(image, "build_context", tiny_context)
    base = DEFAULT_IMAGES["spark-master"]
    base_id = engine.images.get(base).id
    built: set[str] = set()  # every image of either build: removed at the end, whatever happens
    try:
        lines: list[str] = []
        assert image.build_images(base, lines.append, engine) == tags
        first = {t: engine.images.get(t).id for t in tags.values()}
        old = {i for t in tags.values() for i in image_chain(engine, first[t], base_id)}
        built |= old

        lines.clear()
        assert image.build_images(base, lines.append, engine) == tags
        assert [line for line in lines if "up to date" in line] == [f"{t} is up to date" for t in tags.values()]
        assert {t: engine.images.get(t).id for t in tags.values()} == first

        mark["text"] = "second"
        lines.clear()
        assert image.build_images(base, lines.append, engine) == tags
        second = {t: engine.images.get(t).id for t in tags.values()}
        built |= {i for t in tags.values() for i in image_chain(engine, second[t], base_id)}
        assert all(second[t] != first[t] for t in tags.values())
        assert [line for line in lines if line.startswith("removed the previous")] == [
            f"removed the previous {t} ({first[t][7:19]})" for t in tags.values()]
        left = {i for i in old if i in {img.id for img in engine.images.list(all=True)}}
        assert not left, left  # neither the replaced targets nor their untagged parent layers
    finally:
        for ref in (*tags.values(), *built):  # tags first: the untagged parents go with them
            with contextlib.suppress(Exception):
                engine.images.remove(ref, force=True)
