"""README claims about the server, its REST routes and its options that no other test drove (issue #18).

Each test starts a real Jupyter server (pytest-jupyter) configured as the
README says, and talks to it over HTTP as a user would: real Spark JVMs on the
local backend, real containers on the Docker engine, a real kernel for the
magic, a real tmpfs that fills up. Kept cheap: one master JVM (and one that
fails at once) carries the ``spark_home``, ``bind_host = "0.0.0.0"``, events,
listing, failed-launch and ``status`` claims; the Docker tests run ``sleep`` in
the project's image; the authorizer and "no Spark" servers start no process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_server.auth.authorizer import Authorizer
from test_disk_full import fill
from test_log_rotation import poke
from test_options import container, listening, processes_under, server_config, unique, wait_for

from jupyter_spark_appliance.backends.docker import DOCKER_MISSING, LABEL
from jupyter_spark_appliance.spark.home import find_spark_home
from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.standalone import master_status
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

from appliance_processes import gone, record_pids, wait_gone
from conftest import Api
from kernels import run_kernel_process


@pytest.fixture(scope="module")
def shared_cds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No archives to share: these servers run without class-data-sharing (test_options.server_config).

    Overrides conftest's, which records the archives (minutes of JVMs) when this module runs alone.
    """
    return tmp_path_factory.mktemp("no-cds")


class EventStream:
    """One server-sent-events stream of the server, read as it comes (what the panel's EventSource gets)."""

    def __init__(self, jp_fetch: Any, *path: str):
        self.events: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self._buffer = b""
        self._task = asyncio.ensure_future(jp_fetch("spark-appliance", *path, streaming_callback=self._chunk,
                                                    request_timeout=600, raise_error=False))

    def _chunk(self, chunk: bytes) -> None:
        self.connected.set()
        self._buffer += chunk
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            for line in block.decode().splitlines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[len("data: "):]))

    async def open(self) -> EventStream:
        await asyncio.wait_for(self.connected.wait(), 60)
        return self

    def close(self) -> None:
        self._task.cancel()


def master_spec(app_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": app_id, "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}], **extra}]}


# ------------------------------------------------------------- without Spark: a 400 naming it


NO_SPARK = ("no Spark installation found: install pyspark (pip install 'jupyter-spark-appliance[spark]'), "
            "set SPARK_HOME, or set c.SparkApplianceApp.spark_home")


class TestWithoutSpark:
    """``spark_home`` names a directory that holds no Spark, $SPARK_HOME is unset and pyspark cannot be imported.

    pyspark is installed in this test's Python, so ``import pyspark`` is made to fail
    (``sys.modules["pyspark"] = None``, which raises ImportError as an absent package does):
    the server runs in this process, and that is the one thing that cannot be uninstalled here.
    """

    @pytest.fixture
    def not_spark(self, tmp_path: Path) -> Path:
        d = tmp_path / "not-spark"
        (d / "bin").mkdir(parents=True)  # a directory, even with a bin/, but no spark-class
        return d

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, not_spark: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir, spark_home=str(not_spark))

    async def test_a_launch_is_400_saying_how_to_get_spark(self, api: Api, appliance_data_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("SPARK_HOME", raising=False)
        monkeypatch.setitem(sys.modules, "pyspark", None)
        code, body = await api.call("POST", "appliance", master_spec("nospark"))
        assert code == 400, body
        assert body["problems"] == [{"path": "containers", "message": NO_SPARK}], body
        # The same for the built-in template: nothing is recorded, nothing runs.
        code, body = await api.call("POST", "appliance", {"template": "spark-livy", "id": "nospark2"})
        assert code == 400 and {"path": "containers", "message": NO_SPARK} in body["problems"], body
        assert await api.call("GET", "appliance") == (200, {"appliances": []})
        assert processes_under(appliance_data_dir) == []


class TestWithoutDockerSdk:
    """The docker SDK is an optional extra; without it the docker and swarm backends say how to get it.

    The SDK is installed in this test's Python (other tests drive a real engine with it), so
    ``import docker`` is made to fail as an absent package does (``sys.modules["docker"] =
    None``), as TestWithoutSpark does for pyspark: the server runs in this process.
    """

    async def test_a_docker_launch_is_503_saying_how_to_get_the_sdk(self, api: Api, appliance_data_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "docker", None)
        code, body = await api.call("POST", "appliance", {"template": "spark-livy", "backend": "docker",
                                                          "id": "nodocker"})
        assert (code, body["message"]) == (503, DOCKER_MISSING), body
        # The launch form's select says the same for both SDK backends; local stays available.
        code, body = await api.call("GET", "templates")
        assert code == 200, body
        backends = {b["name"]: (b["available"], b["reason"]) for b in body["backends"]}
        assert backends == {"local": (True, None), "docker": (False, DOCKER_MISSING),
                            "swarm": (False, DOCKER_MISSING)}, backends
        assert await api.call("GET", "appliance") == (200, {"appliances": []})
        assert processes_under(appliance_data_dir) == []


class TestDefaultBackend:
    """``c.SparkApplianceApp.backend``: a launch that names no backend goes to the configured one.

    The Docker engine is a socket nobody listens on, so each SDK backend answers with its own
    503 and nothing starts (a real engine's launch is the Docker and Swarm tests' work).
    """

    @pytest.fixture(params=["docker", "swarm"])
    def backend(self, request: pytest.FixtureRequest) -> str:
        return request.param

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, backend: str) -> dict[str, Any]:
        return server_config(appliance_data_dir, backend=backend)

    async def test_a_launch_without_backend_uses_the_configured_one(
            self, api: Api, backend: str, appliance_data_dir: Path, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
        code, body = await api.call("GET", "templates")
        assert code == 200 and body["default_backend"] == backend, body
        code, body = await api.call("POST", "appliance", {"template": "spark-livy", "id": "configured"})
        assert code == 503 and "Docker engine is not reachable" in body["message"], body
        if backend == "swarm":
            assert "The swarm backend needs an engine that is a swarm manager" in body["message"], body
        assert await api.call("GET", "appliance") == (200, {"appliances": []})
        assert processes_under(appliance_data_dir) == []


# ------------------------------------- one master JVM: spark_home, bind_host 0.0.0.0, events, list, status


@pytest.fixture
def linked_spark_home(tmp_path: Path) -> Path:
    """The installed pyspark's Spark home under another path: only ``spark_home`` can lead a JVM there."""
    link = tmp_path / "my-spark"
    link.symlink_to(find_spark_home(""), target_is_directory=True)
    return link


ROTATE_AT = 8192  # above what a master logs as it starts (about 2 KB), so its ready line is read before a rotation


@pytest.mark.spark
class TestOneMasterJvm:
    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, linked_spark_home: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir, spark_home=str(linked_spark_home), bind_host="0.0.0.0",
                             log_max_bytes=ROTATE_AT, log_backups=0, write_sparkmagic_config=False,
                             cds_dir=str(appliance_data_dir.parent / "cds-off"))

    async def test_spark_home_all_addresses_events_listing_failure_reason_and_status(
            self, api: Api, jp_fetch: Any, jp_serverapp: Any, jp_base_url: str, appliance_data_dir: Path,
            linked_spark_home: Path, sparkmagic_conf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("SPARK_HOME", raising=False)  # the server's (and so the JVM's) environment
        app_id, broken_id = unique("claims"), unique("broken")
        everything = await EventStream(jp_fetch, "events").open()
        # A port named "livy" is a Livy endpoint to the Sparkmagic wiring (as the livy role's is):
        # with write_sparkmagic_config = False it is never written into Sparkmagic's config.
        spec = master_spec(app_id)
        spec["containers"][0]["ports"].append({"container_port": 6066, "name": "livy"})
        # A non-zero host_port is used as it is (the RPC port: the JVM must listen on it).
        fixed_rpc = allocate_port("0.0.0.0")  # free now, and never handed to the server's own allocation
        spec["containers"][0]["ports"][1]["host_port"] = fixed_rpc
        code, model = await api.call("POST", "appliance", spec)
        assert code == 201, model
        # Subscribed while the launch is under way: a snapshot, then this appliance's changes only.
        mine = await EventStream(jp_fetch, "appliance", app_id, "events").open()
        # A second appliance whose master JVM fails at once, for real: a Java agent that does not exist.
        code, body = await api.call("POST", "appliance", master_spec(
            broken_id, env={"SPARK_MASTER_OPTS": "-javaagent:/nonexistent/jsa-agent.jar"}))
        assert code == 201, body
        try:
            broken = await api.wait_state(broken_id, {"running", "failed"}, timeout=120)
            model = await api.wait_state(app_id, {"running", "failed"})
            assert model["state"] == "running", model["reason"]

            # The failed launch's reason carries the JVM's own last lines, not only the exit status.
            assert broken["state"] == "failed", broken
            reason = broken["reason"]
            assert reason.startswith("spark-master-0: its process exited with code 1\n"), reason
            assert "Error opening zip file or JAR manifest missing : /nonexistent/jsa-agent.jar" in reason, reason
            assert "Error occurred during initialization of VM" in reason, reason
            assert container(broken, "spark-master")["instance_states"][0]["reason"] in reason

            # Its logs over REST: exactly the last `tail` lines the JVM's log holds (it has exited: they stay
            # put), of the instance asked for; none for an instance it does not have; a bad tail is a 400.
            written = (appliance_data_dir / broken_id / "logs" / "spark-master-0.log").read_text().splitlines()
            assert len(written) > 3, written
            logs_path = f"appliance/{broken_id}/container/spark-master/logs"
            code, body = await api.call("GET", logs_path, tail=2, instance=0)
            assert code == 200 and [(i["index"], i["lines"]) for i in body["instances"]] == [(0, written[-2:])], body
            code, body = await api.call("GET", logs_path, tail=3)
            assert code == 200 and [i["lines"] for i in body["instances"]] == [written[-3:]], body
            assert (await api.call("GET", logs_path, instance=1))[1]["instances"] == []
            code, body = await api.call("GET", logs_path, tail="many")
            assert code == 400 and body["problems"][0]["path"] == "tail", body

            # spark_home: the master JVM runs from the configured path (its classpath), not pyspark's own.
            (pid,) = record_pids(appliance_data_dir, app_id)
            argv = psutil.Process(pid).cmdline()
            classpath = argv[argv.index("-cp") + 1]
            assert f"{linked_spark_home}/jars/*" in classpath.split(":"), classpath
            # class_data_sharing = False: the JVM neither records an archive nor starts from one.
            assert not [a for a in argv if a.startswith(("-XX:SharedArchiveFile", "-XX:ArchiveClassesAtExit"))], argv

            # write_sparkmagic_config = False: a running Livy endpoint, and Sparkmagic's config untouched.
            assert model["links"]["livy"].startswith("http://127.0.0.1:"), model["links"]
            assert model["sparkmagic"] is None, model["sparkmagic"]
            assert list(sparkmagic_conf_dir.iterdir()) == []

            # bind_host 0.0.0.0: the JVM listens on every address; endpoints and links name 127.0.0.1.
            sockets = listening(pid)
            assert sockets and {host for host, _ in sockets} <= {"0.0.0.0", "::"}, sockets
            assert fixed_rpc in {port for _, port in sockets}, (fixed_rpc, sockets)
            endpoints = container(model, "spark-master")["endpoints"]
            assert {e["container_port"] for e in endpoints} == {6066, 7077, 8080}
            assert all(e["host"] == "127.0.0.1" for e in endpoints), endpoints
            ui_port = next(e["host_port"] for e in endpoints if e["container_port"] == 8080)
            assert model["links"]["spark-ui"] == f"http://127.0.0.1:{ui_port}"
            status = await asyncio.to_thread(master_status, model["links"]["spark-ui"])
            assert status is not None and status["status"] == "ALIVE", status

            # log_backups = 0: a rotation keeps no copy. Once the master has logged more than log_max_bytes
            # (made to, on its RPC port), its log starts over and nothing is beside it.
            log = appliance_data_dir / app_id / "logs" / "spark-master-0.log"
            assert b"New state: ALIVE" in log.read_bytes() and log.stat().st_size < ROTATE_AT, log.stat()
            rpc = next(e["host_port"] for e in endpoints if e["container_port"] == 7077)
            assert rpc == fixed_rpc

            async def rotated() -> bool:
                if b"New state: ALIVE" not in log.read_bytes():
                    return True
                await asyncio.to_thread(poke, rpc)
                return False

            await wait_for("the master's log to be rotated", rotated, timeout=60)
            assert [p.name for p in log.parent.iterdir() if p.name.startswith(log.name)] == [log.name]

            # GET appliance lists both, each in the state its own GET shows.
            code, listed = await api.call("GET", "appliance")
            assert code == 200
            assert {(a["id"], a["state"]) for a in listed["appliances"]} == {(app_id, "running"),
                                                                            (broken_id, "failed")}
            assert next(a for a in listed["appliances"] if a["id"] == app_id) == model

            # The server-wide stream, opened now, starts with a snapshot of each appliance.
            late = await EventStream(jp_fetch, "events").open()

            async def two_snapshots() -> bool:
                return len(late.events) >= 2

            await wait_for("the snapshots", two_snapshots, timeout=30)
            late.close()
            assert sorted((e["type"], e["id"], e["state"], e["appliance"]["state"]) for e in late.events[:2]) == \
                sorted([("snapshot", app_id, "running", "running"), ("snapshot", broken_id, "failed", "failed")])

            # appliance/{id}/events: first the snapshot, then changes, all of this appliance, up to running.
            async def saw_running() -> bool:
                return any(e.get("state") == "running" for e in mine.events)

            await wait_for("the running appliance on its events stream", saw_running, timeout=30)
            first = mine.events[0]
            assert first["type"] == "snapshot" and first["id"] == app_id, first
            assert first["appliance"]["id"] == app_id and first["state"] in ("pending", "staging"), first
            assert {e["type"] for e in mine.events[1:]} == {"update"}, mine.events
            assert {e["id"] for e in mine.events} == {app_id}, [e["id"] for e in mine.events]
            # The server-wide stream did carry the other appliance's events meanwhile.
            assert any(e["id"] == broken_id and e["state"] == "failed" for e in everything.events)

            # %spark_appliance status: the widget of the running appliance, in a real kernel.
            kernel_env = {"JUPYTER_SPARK_APPLIANCE_URL": f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}",
                          "JUPYTER_SPARK_APPLIANCE_TOKEN": jp_serverapp.identity_provider.token}
            out = await run_kernel_process("python3", [
                "%load_ext jupyter_spark_appliance",
                f"view = get_ipython().run_line_magic('spark_appliance', 'status --id {app_id}')\nview",
                "print('HTML', view.html.value)\nprint('SLIDER', view.slider.layout.display)",
            ], env=kernel_env)
            assert "[widget]" in out[1] and "ERROR" not in out[1], out
            html = out[2]
            assert f"<b>{app_id}</b>: <span style='color:#2e7d32'>running</span>" in html, html
            assert "<td>spark-master</td><td style='color:#2e7d32'>running</td><td>1/1</td>" in html, html
            assert f'<a href="{model["links"]["spark-ui"]}" target="_blank">spark-ui</a>' in html, html
            assert "SLIDER none" in html, html  # no worker container: no slider
        finally:
            mine.close()
            everything.close()
            for a in (app_id, broken_id):
                assert (await api.call("DELETE", f"appliance/{a}"))[0] == 204
        assert wait_gone([pid]) == []
        # Stopped: a master with CDS on would have written its archive into cds_dir as it exited.
        cds_off = appliance_data_dir.parent / "cds-off"
        assert not cds_off.exists() or not [p for p in cds_off.rglob("*") if p.is_file()], list(cds_off.rglob("*"))


# ------------------------------------------------------------- jupyter_server's authorizer


AUTH_CALLS: list[tuple[str, str]] = []


class DenySparkAppliance(Authorizer):
    """Refuses every action on the ``spark-appliance`` resource, allows every other resource."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        AUTH_CALLS.append((action, resource))
        return resource != "spark-appliance"


class ReadOnlySparkAppliance(Authorizer):
    """Lets users look at appliances (read) but not launch, scale or stop them (write)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        AUTH_CALLS.append((action, resource))
        return resource != "spark-appliance" or action == "read"


# (method, path under spark-appliance/): every route of handlers.py and proxy.py
READS = [("GET", "appliance"), ("GET", "appliance/x"), ("GET", "appliance/x/container/c/logs"),
         ("GET", "appliance/x/credentials"), ("GET", "appliance/x/events"), ("GET", "appliance/x/ui"),
         ("GET", "templates"), ("GET", "openapi.json"), ("GET", "appliance/x/sparkui"),
         ("GET", "appliance/x/sparkui/"), ("GET", "appliance/x/workerui/0/"), ("GET", "appliance/x/livy/sessions"),
         ("GET", "appliance/x/applications"), ("GET", "appliance/x/notebook/tree")]
WRITES = [("POST", "appliance"), ("DELETE", "appliance/x"), ("PATCH", "appliance/x/container/c"),
          ("POST", "appliance/x/livy/sessions")]


class TestAuthorizer:
    @pytest.fixture(params=["deny", "read-only"])
    def policy(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path, policy: str) -> dict[str, Any]:
        config = server_config(appliance_data_dir, event_stream_seconds=1.0)  # the server-wide stream ends
        config["ServerApp"]["authorizer_class"] = DenySparkAppliance if policy == "deny" else ReadOnlySparkAppliance
        return config

    async def test_the_authorizer_decides_every_route(self, api: Api, jp_fetch: Any, policy: str,
                                                     appliance_data_dir: Path) -> None:
        AUTH_CALLS.clear()
        routes = READS + WRITES + [("GET", "events")]
        for method, path in routes:
            body = {"instances": 1} if method == "PATCH" else (master_spec("x") if method == "POST" else None)
            code, reply = await api.call(method, path, body)
            denied = policy == "deny" or method != "GET"
            if denied:
                assert code == 403, (method, path, code, reply)
                action = "read" if method == "GET" else "write"
                if isinstance(reply, dict):  # the API's JSON; the proxies' too
                    assert reply["message"] == f"User is not authorized to {action} on resource: spark-appliance.", \
                        (method, path, reply)
            else:  # let through: the route answers as it does for anyone (unknown id x: 404)
                assert code != 403, (method, path, code, reply)
                expected = 200 if path in ("appliance", "templates", "openapi.json", "events") else 404
                assert code == expected, (method, path, code, reply)
        # The decisions were jupyter_server's authorizer's, for the resource "spark-appliance".
        assert ("read", "spark-appliance") in AUTH_CALLS and ("write", "spark-appliance") in AUTH_CALLS
        # Other resources are the authorizer's to allow: Jupyter's own API answers.
        response = await jp_fetch("api", "contents", raise_error=False)
        assert response.code == 200
        assert ("read", "contents") in AUTH_CALLS
        assert processes_under(appliance_data_dir) == [] and not appliance_data_dir.joinpath("x").exists()


# ---------------------------------------------------- restart_policy and jobs, on real containers


def boxes(engine: Any, app_id: str) -> dict[str, Any]:
    """The appliance's running containers on the engine, by container id of the spec."""
    found = engine.containers.list(filters={"label": f"{LABEL}.appliance={app_id}"})
    return {c.labels[f"{LABEL}.container"]: c for c in found}


def until_term(code: int) -> str:
    """A shell that sleeps until SIGTERM and then exits with ``code`` (an exit on demand)."""
    return f"trap 'exit {code}' TERM; sleep 300 & wait"


@pytest.mark.docker
class TestRestartPolicy:
    """``c.SparkApplianceApp.restart_policy = "always"`` from the server's config, and what overrides it."""

    @pytest.fixture
    def jp_server_config(self, appliance_data_dir: Path) -> dict[str, Any]:
        return server_config(appliance_data_dir, restart_policy="always")

    async def test_always_restarts_an_exit_0_on_failure_and_jobs_do_not_and_patch_during_delete_is_409(
            self, api: Api, jp_fetch: Any, jp_serverapp: Any, docker_engine: Any) -> None:
        engine = docker_engine
        app_id = unique("policy")

        def box(cid: str, cmd: str, **extra: Any) -> dict[str, Any]:
            return {"id": cid, "type": "service", "image": DEFAULT_IMAGES["spark-master"], "cmd": cmd,
                    "resources": {"cpus": 0.25, "mem": 64}, **extra}

        spec = {"id": app_id, "backend": "docker", "containers": [
            box("always", until_term(0)),  # the server's policy
            box("onfail", until_term(0), restart="on-failure"),  # its own
            box("job-ok", until_term(0), type="job"),
            box("job-bad", until_term(1), type="job"),
            box("stubborn", "sleep 300"),  # PID 1 ignores SIGTERM: a DELETE waits out the engine's grace
        ]}
        code, model = await api.call("POST", "appliance", spec)
        assert code == 201, model
        deleting: asyncio.Future[tuple[int, Any]] | None = None
        try:
            model = await api.wait_state(app_id, {"running", "failed"}, timeout=180)
            assert model["state"] == "running", model["reason"]
            for cid in ("onfail", "job-ok", "job-bad"):
                boxes(engine, app_id)[cid].kill(signal="SIGTERM")

            async def ended() -> dict[str, Any] | None:
                _, m = await api.call("GET", f"appliance/{app_id}")
                done = {c["id"]: c["state"] in ("success", "failed") or c["restarts"] > 0 for c in m["containers"]}
                return m if all(done[c] for c in ("onfail", "job-ok", "job-bad")) else None

            model = await wait_for("the three to end (or, wrongly, restart)", ended)
            # on-failure leaves an exit 0 alone; a job is never restarted, exit 0 or not (the server says always).
            for cid, state, code in (("onfail", "success", 0), ("job-ok", "success", 0), ("job-bad", "failed", 1)):
                c = container(model, cid)
                (inst,) = c["instance_states"]
                assert (c["state"], c["restarts"], inst["restarts"]) == (state, 0, 0), c
                if cid != "job-ok":
                    assert inst["reason"].startswith(f"its container exited with code {code}"), inst
            stream = await EventStream(jp_fetch, "appliance", app_id, "events").open()
            old = boxes(engine, app_id)["always"].id
            boxes(engine, app_id)["always"].kill(signal="SIGTERM")  # exits 0: "always" restarts it all the same

            async def restarted() -> dict[str, Any] | None:
                _, m = await api.call("GET", f"appliance/{app_id}")
                c = container(m, "always")
                return m if (c["restarts"] == 1 and c["state"] == "running") or c["state"] == "success" else None

            model = await wait_for("the always container to be restarted (or, wrongly, left ended)", restarted)
            assert (container(model, "always")["state"], container(model, "always")["restarts"]) == ("running", 1)
            (inst,) = container(model, "always")["instance_states"]
            assert inst["last_reason"].startswith("its container exited with code 0"), inst
            assert boxes(engine, app_id)["always"].id != old  # a new container
            # Each restart is a "restart" event on the events route, naming the instance.
            stream.close()
            restarts = [e["instance"] for e in stream.events if e["type"] == "restart"]
            assert [(i["container"], i["index"]) for i in restarts] == [("always", 0)], stream.events
            # Several reconciler ticks later the ended ones are still ended, never restarted.
            for cid in ("onfail", "job-ok", "job-bad"):
                assert container(model, cid)["restarts"] == 0 and cid not in boxes(engine, app_id)

            # PATCH while a DELETE is under way: 409 (the stubborn container holds the DELETE for ~10 s).
            record = jp_serverapp.web_app.settings["spark_appliance_manager"].get(app_id)
            deleting = asyncio.ensure_future(api.call("DELETE", f"appliance/{app_id}"))

            async def under_way() -> bool:
                return record.deleting

            await wait_for("the DELETE to be under way", under_way, timeout=30)
            code, body = await api.call("PATCH", f"appliance/{app_id}/container/always", {"instances": 2})
            assert (code, body["message"]) == (409, f"appliance {app_id!r} is being deleted"), body
            assert not deleting.done()
        finally:
            if deleting is None:
                deleting = asyncio.ensure_future(api.call("DELETE", f"appliance/{app_id}"))
            assert (await deleting)[0] == 204
        assert boxes(engine, app_id) == {}


# ---------------------------------------------------------------- a full disk: HTTP 507




class TestFullDisk:
    @pytest.fixture
    def jp_server_config(self, tiny_disk: Path) -> dict[str, Any]:
        return server_config(tiny_disk / "appliances")

    async def test_a_launch_on_a_full_disk_is_507_and_starts_nothing(self, api: Api, tiny_disk: Path) -> None:
        assert await api.call("GET", "appliance") == (200, {"appliances": []})  # the server has started
        fill(tiny_disk)
        code, body = await api.call("POST", "appliance", master_spec("full"))
        assert code == 507, body
        assert body["message"].startswith(f"cannot write the appliance's record in {tiny_disk / 'appliances'}: "), body
        assert "No space left on device" in body["message"], body
        assert await api.call("GET", "appliance") == (200, {"appliances": []})
        assert processes_under(tiny_disk) == []
        # Room again: the same id launches (nothing of the failed try holds it); stopped at once.
        for ballast in tiny_disk.glob("ballast*"):
            ballast.unlink()
        code, body = await api.call("POST", "appliance", master_spec("full"))
        assert code == 201, body
        assert (await api.call("DELETE", "appliance/full"))[0] == 204
        assert all(gone(p) for p in processes_under(tiny_disk))
