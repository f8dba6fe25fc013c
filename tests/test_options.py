"""Each ``c.SparkApplianceApp.*`` option of the README's table that had no test, driven as a user would.

Every test starts a real Jupyter server (pytest-jupyter) configured with the
option, then uses the REST API and looks at what really runs: the master's JVM
(its argv, environment and listening sockets, through psutil), containers and
services on the real Docker engine. Each test fails when its option is ignored
(each was checked by making the product ignore the option once).

Kept cheap: one master JVM carries the network, JVM, environment and role
options; the other local tests start at most one JVM each; the Docker tests run
``sleep`` in the project's image. Class-data-sharing is off in these servers, so
that no JVM records an archive when it stops and no server records them in the
background: the options under test do not depend on it.
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from jupyter_spark_appliance.backends.docker import LABEL, container_name, network_name, owner_tag
from jupyter_spark_appliance.spark.cds import FAST_DAEMON_JAVA_OPTS
from jupyter_spark_appliance.spark.ports import port_is_free
from jupyter_spark_appliance.spark.roles import DEFAULT_ROLE_PATTERNS, MASTER_CLASS, WORKER_CLASS
from jupyter_spark_appliance.spark.standalone import master_status
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

from appliance_processes import gone, record_pids
from conftest import Api

T = TypeVar("T")


# ---------------------------------------------------------------------- helpers


def server_config(data_dir: Path, **options: Any) -> dict[str, Any]:
    """conftest's server config plus ``options``; no class-data-sharing (see the module's docstring)."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_spark_appliance": True}},
        "SparkApplianceApp": {"data_dir": str(data_dir), "start_timeout": 240.0, "class_data_sharing": False,
                              "prepare_cds": False, **options},
    }


def unique(prefix: str) -> str:
    """An appliance id of this run only: Docker objects outlive a test run that crashed."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def container(model: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in model["containers"] if c["id"] == cid)


def processes_under(path: Path) -> list[int]:
    """Processes whose working directory is under ``path`` (the local backend runs each in its appliance's dir)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        try:
            if str(proc.info["cwd"] or "").startswith(str(path)):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


async def wait_for(what: str, check: Callable[[], Awaitable[T | None]], timeout: float = 120.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port_range(host: str, size: int) -> tuple[int, int]:
    """``size`` consecutive ports free on ``host``, below the kernel's ephemeral range.

    Below it, so that ports the operating system hands out (what an ignored
    port_range gives) can never fall inside the range by chance.
    """
    low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = low_ephemeral - size if low_ephemeral > 20000 + size else 30000  # a kernel tuned otherwise: any range
    for _ in range(200):
        start = random.randrange(20000, top)
        if all(port_is_free(host, p) for p in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError(f"no {size} consecutive free ports on {host}")


def listening(pid: int) -> list[tuple[str, int]]:
    """The (address, port) pairs a process listens on (TCP), IPv4-mapped addresses as IPv4.

    Java listens on IPv6 sockets: 127.0.0.2 shows as ::ffff:127.0.0.2 (and every
    address as ::, which stays as it is).
    """
    def plain(address: str) -> str:
        ip = ipaddress.ip_address(address)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return str(mapped or ip)

    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sorted((plain(c.laddr.ip), c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN)


def skip_or_raise(why: str) -> None:
    """Skip where the machine lacks something, except in CI (JSA_REQUIRE_DOCKER=1), where it must be there."""
    if os.environ.get("JSA_REQUIRE_DOCKER") == "1":
        raise RuntimeError(why)
    pytest.skip(why)


# ------------------------------------------------ bind_host, connect_host, port_range,
# ------------------------------------------------ daemon_java_opts, child_env_allow, local_roles

# Another loopback address than the default bind host, and another spelling of it
# (inet_aton's short form "127.2" is 127.0.0.2) as the host reported to clients: the
# bind address can then only come from bind_host, the reported name only from
# connect_host (its default would be the bind host itself), and the links still work.
BIND_HOST = "127.0.0.2"
CONNECT_HOST = "127.2"
ALLOWED, DENIED = "JSA_TEST_ALLOWED_X", "JSA_TEST_DENIED_X"
CUSTOM_IMAGE = "acme/coordinator"  # no default local_roles pattern matches it, nor the id "head"


@pytest.mark.spark
class TestOneMasterJvm:
    """A master and a worker JVM, started by a server that sets six options at once; each is checked on the JVMs.

    The worker is given ``@head:7077``: with ``connect_host`` a short form Spark's URLs do not
    parse (127.2), it registers only because local peers are given the bind address.
    """

    @pytest.fixture
    def port_range(self) -> tuple[int, int]:
        return free_port_range(BIND_HOST, 31)

    @pytest.fixture
    def marker(self) -> str:
        return uuid.uuid4().hex[:12]

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, port_range: tuple[int, int],
                         marker: str) -> dict[str, Any]:
        return server_config(
            appliance_data_dir, port_range=port_range, bind_host=BIND_HOST, connect_host=CONNECT_HOST,
            daemon_java_opts=f"{FAST_DAEMON_JAVA_OPTS} -Djsa.test.marker={marker}",
            child_env_allow=["JSA_TEST_ALLOWED_*"],
            # The custom image matches two patterns: the first one (master) must win.
            local_roles={**DEFAULT_ROLE_PATTERNS, r"^acme/coordinator$": "spark-master", r"^acme/": "spark-worker"})

    async def test_network_jvm_environment_and_role_options_reach_the_master_jvm(
            self, api: Api, appliance_data_dir: Path, port_range: tuple[int, int], marker: str,
            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ALLOWED, "let-me-through")  # the server's environment when it starts the JVM
        monkeypatch.setenv(DENIED, "keep-me-out")
        app_id = unique("opts")
        spec = {"id": app_id, "containers": [
            {"id": "head", "type": "service", "image": CUSTOM_IMAGE, "resources": {"cpus": 1, "mem": 512},
             "ports": [{"container_port": 8080}, {"container_port": 7077}]},
            # No pattern matches this image: its id ("spark-worker") gives the role.
            {"id": "spark-worker", "type": "service", "image": "registry.example/compute:1",
             "resources": {"cpus": 1.5, "mem": 700}, "args": ["@head:7077"]}]}
        code, model = await api.call("POST", "appliance", spec)
        assert code == 201, model  # local_roles: without the mapping the local backend refuses the image
        jvms: dict[str, int] = {}
        try:
            assert container(model, "head")["role"] == "spark-master"
            assert container(model, "spark-worker")["role"] == "spark-worker"
            model = await api.wait_state(app_id, {"running", "failed"})
            assert model["state"] == "running", model["reason"]
            jvms = {next(c for c in (MASTER_CLASS, WORKER_CLASS) if c in psutil.Process(p).cmdline()): p
                    for p in record_pids(appliance_data_dir, app_id)}
            pid = jvms[MASTER_CLASS]
            jvm = psutil.Process(pid)
            low, high = port_range

            # local_roles: the custom image runs as a real Spark master, its heap from resources.mem.
            argv = jvm.cmdline()
            assert MASTER_CLASS in argv and "-Xmx512m" in argv, argv
            # The worker (role from its id) offers ceil(1.5) cores and its 700 MB, as the master sees it,
            # and works in its own directory under the appliance's.
            worker_argv = psutil.Process(jvms[WORKER_CLASS]).cmdline()
            work_dir = Path(worker_argv[worker_argv.index("--work-dir") + 1])
            assert work_dir.is_dir() and work_dir.is_relative_to(appliance_data_dir / app_id), worker_argv
            # daemon_java_opts: the operator's flags are on the master JVM's command line.
            assert f"-Djsa.test.marker={marker}" in argv, argv
            # child_env_allow: the allowed variable reaches the JVM, the other one does not.
            env = jvm.environ()
            assert env.get(ALLOWED) == "let-me-through"
            assert DENIED not in env

            # bind_host and port_range: the JVM listens on the bind host only, on ports of the range.
            sockets = listening(pid)
            assert sockets, "the master listens on nothing"
            assert {host for host, _ in sockets} == {BIND_HOST}, sockets
            assert all(low <= port <= high for _, port in sockets), (sockets, port_range)

            # connect_host: endpoints and links name it, with the ports the JVM really listens on.
            endpoints = container(model, "head")["endpoints"]
            assert {e["container_port"] for e in endpoints} == {7077, 8080}
            for ep in endpoints:
                assert ep["host"] == CONNECT_HOST and low <= ep["host_port"] <= high, ep
                assert (BIND_HOST, ep["host_port"]) in sockets, (ep, sockets)
            ui_port = next(e["host_port"] for e in endpoints if e["container_port"] == 8080)
            assert model["links"]["spark-ui"] == f"http://{CONNECT_HOST}:{ui_port}"
            # What a user opens works: the link reaches this master, which advertises the bind host.
            status = await asyncio.to_thread(master_status, model["links"]["spark-ui"])
            assert status is not None and status["status"] == "ALIVE", status
            assert [(w["cores"], w["memory"], w["state"]) for w in status["workers"]] == [(2, 700, "ALIVE")], status
            # The master's REST submission server is off: nothing answers on its port (6066) or any other
            # outside the range (above).
            assert all(port != 6066 for _, port in sockets)
            rpc_port = next(e["host_port"] for e in endpoints if e["container_port"] == 7077)
            assert status["url"] == f"spark://{BIND_HOST}:{rpc_port}"
        finally:
            assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
        assert all(gone(p) for p in jvms.values())


# ---------------------------------------------------------------------- start_timeout


@pytest.mark.spark
class TestStartTimeout:
    """A worker whose master never answers never registers: start_timeout ends its launch."""

    TIMEOUT = 5.0

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir, start_timeout=self.TIMEOUT)

    async def test_an_instance_not_ready_in_time_fails_with_the_reason_and_is_stopped(
            self, api: Api, appliance_data_dir: Path) -> None:
        with socket.socket() as s:  # a port nothing listens on: the "master" the worker waits for
            s.bind(("127.0.0.1", 0))
            nowhere = s.getsockname()[1]
        app_id = unique("slow")
        spec = {"id": app_id, "containers": [
            {"id": "spark-worker", "type": "service", "image": "spark-worker", "resources": {"cpus": 1, "mem": 512},
             "args": [f"127.0.0.1:{nowhere}"]}]}
        code, model = await api.call("POST", "appliance", spec)
        assert code == 201, model
        try:
            async def failed() -> dict[str, Any] | None:
                _, m = await api.call("GET", f"appliance/{app_id}")
                return m if m["state"] == "failed" else None

            # Far past the timeout, so that only an ignored start_timeout (300 s by default) fails this wait.
            model = await wait_for("the launch to fail", failed, timeout=90)
            words = f"not ready after {self.TIMEOUT:g} s"
            assert words in model["reason"], model["reason"]
            (inst,) = container(model, "spark-worker")["instance_states"]
            assert inst["state"] == "failed" and words in inst["reason"], inst
            # The worker JVM, still trying to register when the timeout struck, is stopped (the
            # teardown after a failed launch gives it its grace period: wait for it, not assume).
            (pid,) = record_pids(appliance_data_dir, app_id)

            async def stopped() -> bool:
                return gone(pid)

            await wait_for("the worker JVM to be stopped", stopped, timeout=60)
        finally:
            assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204


# ---------------------------------------------------------------------- template_defaults


@pytest.mark.spark
class TestTemplateDefaults:
    DEFAULTS = {"spark-livy": {"workers": 3, "worker_memory": 1536}}

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir, template_defaults=self.DEFAULTS)

    async def test_the_launch_form_shows_the_servers_defaults_and_a_launch_without_them_uses_them(
            self, api: Api, appliance_data_dir: Path) -> None:
        code, body = await api.call("GET", "templates")
        assert code == 200, body
        params = next(t for t in body["templates"] if t["name"] == "spark-livy")["parameters"]
        assert params["workers"]["default"] == 3 and params["worker_memory"]["default"] == 1536
        assert params["master_memory"]["default"] == 1024  # what the server does not set stays built-in

        app_id = unique("tdef")
        code, model = await api.call("POST", "appliance", {"template": "spark-livy", "id": app_id, "connect": False})
        try:
            assert code == 201, model
            # The reply already shows what the defaults made: no need to wait for the JVMs.
            workers = container(model, "spark-worker")
            assert workers["instances"] == 3 and workers["resources"]["mem"] == 1536, workers
            assert container(model, "spark-master")["resources"]["mem"] == 1024
        finally:
            assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
        assert processes_under(appliance_data_dir) == []


# ---------------------------------------------------------------------- Docker


@pytest.fixture
def engine(docker_engine: Any) -> Any:
    return docker_engine


def labelled(engine: Any, app_id: str) -> tuple[list[Any], list[Any]]:
    """The containers (any state) and networks of an appliance on the engine, by the project's label."""
    label = f"{LABEL}.appliance={app_id}"
    return (engine.containers.list(all=True, filters={"label": label}),
            engine.networks.list(filters={"label": label}))


def sleeper(app_id: str, backend: str, image: str = DEFAULT_IMAGES["spark-master"], **extra: Any) -> dict[str, Any]:
    """A one-container document that runs ``sleep`` in the project's image: a container costs nothing.

    Its shell ends on SIGTERM (as PID 1 it would ignore it), so a DELETE does not wait out the grace period.
    """
    return {"id": app_id, "backend": backend, "containers": [
        {"id": "x", "type": "service", "image": image,
         "cmd": "trap 'exit 0' TERM; sleep 300 & wait",
         "resources": {"cpus": 0.5, "mem": 64}, **extra}]}


@pytest.mark.docker
class TestAllowPrivileged:
    @pytest.fixture(params=[False, True], ids=["default", "allowed"])
    def allow_privileged(self, request: pytest.FixtureRequest) -> bool:
        return bool(request.param)

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, allow_privileged: bool) -> dict[str, Any]:
        options = {"allow_privileged": True} if allow_privileged else {}
        return server_config(appliance_data_dir, **options)

    @pytest.fixture
    def user_image(self, engine: Any) -> Iterator[str]:
        """A user's image (the project's own never run privileged): the project's, tagged under another name."""
        repository = f"jsa-test/{unique('user-image')}"
        engine.images.get(DEFAULT_IMAGES["spark-master"]).tag(repository, "1")
        yield f"{repository}:1"
        engine.images.remove(f"{repository}:1", noprune=True)

    async def test_privileged_containers_run_only_when_allowed(self, api: Api, engine: Any, user_image: str,
                                                              allow_privileged: bool) -> None:
        app_id = unique("priv")
        code, body = await api.call("POST", "appliance",
                                    sleeper(app_id, "docker", image=user_image, is_privileged=True))
        try:
            if not allow_privileged:
                assert code == 400, body
                assert [p["path"] for p in body["problems"]] == ["containers[0].is_privileged"]
                assert "allow_privileged" in body["problems"][0]["message"]
                return
            assert code == 201, body
            model = await api.wait_state(app_id, {"running", "failed"}, timeout=120)
            assert model["state"] == "running", model["reason"]
            (created,), _ = labelled(engine, app_id)
            assert created.attrs["HostConfig"]["Privileged"] is True
        finally:
            if code == 201:
                assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
            assert labelled(engine, app_id) == ([], [])


@pytest.mark.docker
class TestDockerLeftovers:
    """Containers and a network of this server's owner for an appliance no record knows, as a crash leaves them.

    They are made before the server starts; the server deals with them when its
    docker backend is first used (here GET templates, what the panel asks first).
    """

    @pytest.fixture(params=["report", "remove"])
    def mode(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def owner(self, appliance_data_dir: Path) -> str:
        """The owner label the server will use (app.py's formula; the test checks the server agrees)."""
        return f"{getpass.getuser()}@{socket.gethostname()}:{appliance_data_dir.resolve()}"

    @pytest.fixture
    def leftover(self, engine: Any, owner: str) -> Iterator[dict[str, Any]]:
        app_id = unique("ghost")
        tag = owner_tag(owner)
        labels = {f"{LABEL}.appliance": app_id, f"{LABEL}.owner": owner}
        network = engine.networks.create(network_name(app_id, tag), driver="bridge", labels=labels)
        try:
            box = engine.containers.run(DEFAULT_IMAGES["spark-master"], ["sleep", "300"], entrypoint=["/usr/bin/env"],
                                        name=container_name(app_id, "x", 0, tag), network=network.name, detach=True,
                                        labels={**labels, f"{LABEL}.container": "x", f"{LABEL}.instance": "0"})
            yield {"app_id": app_id, "container": box.name, "network": network.name}
        finally:
            containers, networks = labelled(engine, app_id)
            for c in containers:
                c.remove(force=True)
            for n in networks:
                n.remove()

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, mode: str, leftover: dict[str, Any]) -> dict[str, Any]:
        return server_config(appliance_data_dir, docker_leftovers=mode)  # after the leftover exists

    async def test_leftovers_are_reported_or_removed(self, api: Api, jp_serverapp: Any, engine: Any, mode: str,
                                                     owner: str, leftover: dict[str, Any],
                                                     caplog: pytest.LogCaptureFixture) -> None:
        assert jp_serverapp.web_app.settings["spark_appliance_manager"].owner == owner
        caplog.set_level(logging.WARNING, logger="jupyter_spark_appliance.backends.docker")
        code, body = await api.call("GET", "templates")
        assert code == 200 and {"name": "docker", "available": True, "reason": None} in body["backends"], body

        async def warned() -> str | None:
            return next((r.getMessage() for r in caplog.records if leftover["app_id"] in r.getMessage()), None)

        message = await wait_for("the server's warning about the leftover", warned, timeout=60)
        assert leftover["container"] in message, message
        containers, networks = labelled(engine, leftover["app_id"])
        if mode == "report":
            assert "found" in message and "docker_leftovers" in message, message
            assert [c.name for c in containers] == [leftover["container"]]
            assert containers[0].status == "running"
            assert [n.name for n in networks] == [leftover["network"]]
        else:
            assert "removed" in message, message
            assert (containers, networks) == ([], [])


@pytest.fixture
def swarm_engine(engine: Any) -> Any:
    swarm = engine.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        skip_or_raise("the Docker engine is not a swarm manager (.ci/docker-setup runs docker swarm init)")
    return engine


@pytest.mark.docker
class TestSwarmReservation:
    SHARE = 0.5

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir, swarm_reservation=self.SHARE)

    async def test_services_reserve_the_configured_share_and_keep_whole_limits(self, api: Api,
                                                                             swarm_engine: Any) -> None:
        app_id = unique("resv")
        code, body = await api.call("POST", "appliance", sleeper(app_id, "swarm"))
        assert code == 201, body

        def services() -> list[Any]:
            return swarm_engine.services.list(filters={"label": f"{LABEL}.appliance={app_id}"})

        try:
            model = await api.wait_state(app_id, {"running", "failed"}, timeout=180)
            assert model["state"] == "running", model["reason"]
            (service,) = services()
            resources = service.attrs["Spec"]["TaskTemplate"]["Resources"]
            assert resources["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 2**20}
            assert resources["Reservations"] == {"NanoCPUs": 250_000_000, "MemoryBytes": 32 * 2**20}
        finally:
            assert (await api.call("DELETE", f"appliance/{app_id}"))[0] == 204
        assert services() == []
