"""Launch real Spark appliances through the REST API on the local backend.

Real JVMs (pyspark's spark-class), a real Jupyter server (pytest-jupyter),
the real Livy gateway; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest

from jupyter_spark_appliance import wire
from jupyter_spark_appliance.backends.local import LocalBackend, LocalConfig
from jupyter_spark_appliance.manager import ApplianceManager
from jupyter_spark_appliance.spark.ports import port_is_free
from jupyter_spark_appliance.spark.standalone import alive_workers
from jupyter_spark_appliance.store import Store

from appliance_processes import gone, record_pids, wait_gone

pytestmark = pytest.mark.spark


def alive(model: dict) -> int:
    return alive_workers(model["links"]["spark-ui"])


def container(model: dict, cid: str) -> dict:
    return next(c for c in model["containers"] if c["id"] == cid)


def graph_of(page: str) -> tuple[dict[str, dict[str, str]], set[tuple[str, str]]]:
    """What a dependency graph's SVG (in ``page``) shows: per node, its name, state, state line and colour;
    and each arrow as (dependant, dependency), read from where it is drawn: it starts on the dependency's
    right edge and its head ends on the dependant's left edge."""
    found = re.search(r"<svg[\s\S]*</svg>", page)
    assert found, page[:2000]
    root = ElementTree.fromstring(found.group(0))

    def tag(element: ElementTree.Element) -> str:
        return element.tag.rsplit("}", 1)[-1]

    nodes: dict[str, dict[str, str]] = {}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for g in (e for e in root.iter() if tag(e) == "g"):
        rect = next(e for e in g if tag(e) == "rect")
        name, status = (e for e in g if tag(e) == "text")
        nodes[g.get("data-container", "")] = {"name": name.text or "", "state": g.get("data-state", ""),
                                              "text": status.text or "", "stroke": rect.get("stroke", ""),
                                              "colour": status.get("fill", "")}
        boxes[g.get("data-container", "")] = tuple(float(rect.get(k, "nan")) for k in ("x", "y", "width", "height"))

    def node_at(x: float, y: float, right_edge: bool) -> str:
        hits = [cid for cid, (bx, by, bw, bh) in boxes.items()
                if (bx + bw if right_edge else bx) == x and by <= y <= by + bh]
        assert len(hits) == 1, (x, y, boxes)
        return hits[0]

    edges = set()
    for line in (e for e in root.iter() if tag(e) == "line"):
        assert line.get("marker-end") == "url(#arrow)", line.attrib
        dependency = node_at(float(line.get("x1", "nan")), float(line.get("y1", "nan")), right_edge=True)
        dependant = node_at(float(line.get("x2", "nan")), float(line.get("y2", "nan")), right_edge=False)
        edges.add((dependant, dependency))
    return nodes, edges


RUNNING_GREEN = "#2e7d32"  # the graph's colour of a running container (graph_view.STATE_COLOURS)
SPARK_LIVY_EDGES = {("livy", "spark-master"), ("spark-worker", "spark-master"), ("spark-connect", "spark-master")}


async def wait_until(predicate, timeout: float = 240, what: str = "condition", interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


async def test_spark_livy_lifecycle(api, appliance_data_dir, sparkmagic_conf_dir, shared_cds_dir):
    user_config = {"kernel_python_credentials": {"url": "http://user-livy:8998", "username": "", "password": "",
                                                 "auth": "None"},
                   "custom_headers": {"X-Mine": "keep"}, "logging_config": {"version": 1}}
    (sparkmagic_conf_dir / "config.json").write_text(json.dumps(user_config))

    code, model = await api.call("POST", "appliance", {"template": "spark-livy", "workers": 1})
    assert code == 201, model
    assert model["id"] == "spark-livy" and model["backend"] == "local"
    wire.validator("Appliance").validate(model)
    model = await api.wait_state("spark-livy", {"running", "failed"})
    assert model["state"] == "running", model["reason"]
    wire.validator("Appliance").validate(model)  # every field of a real running appliance is declared
    assert [c["id"] for c in model["containers"]] == ["spark-master", "livy", "spark-worker", "spark-connect"]
    assert alive(model) == 1
    for c in model["containers"]:
        assert c["state"] == "running"
        for ep in c["endpoints"]:
            assert ep["host"] == "127.0.0.1" and ep["protocol"] == "tcp" and ep["host_port"] > 0
    # cds_dir, configured (conftest's config file names the run's shared dir): the daemons start from its archives.
    argvs = [psutil.Process(pid).cmdline() for pid in record_pids(appliance_data_dir, "spark-livy")]
    daemons = {main: argv for argv in argvs for main in ("deploy.master.Master", "deploy.worker.Worker")
               if f"org.apache.spark.{main}" in argv}
    for main, argv in daemons.items():
        assert [a for a in argv if a.startswith(f"-XX:SharedArchiveFile={shared_cds_dir}/")], (main, argv)
    assert len(daemons) == 2, daemons

    # The dependency graph page: one node per container with its live state, an arrow from each
    # container's dependency to it.
    code, page = await api.call("GET", "appliance/spark-livy/ui")
    assert code == 200 and "<h3>spark-livy: running</h3>" in page, page[:2000]
    nodes, edges = graph_of(page)
    assert {cid: (n["name"], n["state"], n["text"]) for cid, n in nodes.items()} == {
        cid: (cid, "running", "running · 1/1 running") for cid in ("spark-master", "livy", "spark-worker",
                                                                  "spark-connect")}
    assert {(n["stroke"], n["colour"]) for n in nodes.values()} == {(RUNNING_GREEN, RUNNING_GREEN)}
    assert edges == SPARK_LIVY_EDGES

    # Sparkmagic now points at our Livy, the user's other keys intact, the old file backed up.
    livy = model["links"]["livy"]
    written = json.loads((sparkmagic_conf_dir / "config.json").read_text())
    for key in ("kernel_python_credentials", "kernel_scala_credentials", "kernel_r_credentials"):
        assert written[key]["url"] == livy
    assert written["custom_headers"] == {"X-Mine": "keep"} and written["logging_config"] == {"version": 1}
    assert json.loads((sparkmagic_conf_dir / "config.json.bak").read_text()) == user_config
    assert model["sparkmagic"]["url"] == livy
    assert written["kernel_python_credentials"]["auth"] == "Basic_Access"
    login = base64.b64encode(f"{written['kernel_python_credentials']['username']}:"
                             f"{written['kernel_python_credentials']['password']}".encode()).decode()
    req = urllib.request.Request(livy + "/version", headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(req, timeout=5) as r:  # with the credentials Sparkmagic was given
        assert json.load(r)["version"]

    # Scale 1 -> 3 -> 1; the master is the judge.
    code, body = await api.call("PATCH", "appliance/spark-livy/container/spark-worker", {"instances": 3})
    assert code == 202, body
    assert container(body, "spark-worker")["instances"] == 3  # the reply shows the new desired count
    wire.validator("Appliance").validate(body)
    code, body = await api.call("PATCH", "appliance/spark-livy/container/spark-worker", {"instances": 65})
    assert code == 400 and body["problems"][0]["path"] == "instances"
    assert "must be at most 64" in body["problems"][0]["message"]

    async def n_alive(n):
        _, m = await api.call("GET", "appliance/spark-livy")
        return m if container(m, "spark-worker")["state"] == "running" and alive(m) == n else None

    model = await wait_until(lambda: n_alive(3), what="3 ALIVE workers")
    assert len(container(model, "spark-worker")["instance_states"]) == 3
    nodes, edges = graph_of((await api.call("GET", "appliance/spark-livy/ui"))[1])  # live: the new count
    assert nodes["spark-worker"]["text"] == "running · 3/3 running" and edges == SPARK_LIVY_EDGES
    code, _ = await api.call("PATCH", "appliance/spark-livy/container/spark-worker", {"instances": 1})
    assert code == 202
    model = await wait_until(lambda: n_alive(1), what="1 ALIVE worker")
    assert [i["state"] for i in container(model, "spark-worker")["instance_states"]] == ["running"]

    # A PySpark job of the user's own against the master endpoint, with the settings Spark's
    # authentication needs (from the credentials route, set in its SparkConf).
    master = next(e for e in container(model, "spark-master")["endpoints"] if e["container_port"] == 7077)
    _, creds = await api.call("GET", "appliance/spark-livy/credentials")
    assert creds["spark"]["master"] == f"spark://127.0.0.1:{master['host_port']}"
    job = textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        b = SparkSession.builder.master("spark://127.0.0.1:{master['host_port']}")
        for k, v in {creds['spark']['conf']!r}.items():
            b = b.config(k, v)
        spark = b.config("spark.executor.memory", "512m").config("spark.driver.memory", "512m").getOrCreate()
        print("RESULT", spark.range(1, 101).selectExpr("sum(id)").first()[0])
        spark.stop()
    """)
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", job], capture_output=True, text=True,
                                  timeout=300, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert "RESULT 5050" in out.stdout, out.stderr[-3000:]

    # Logs of a container.
    code, logs = await api.call("GET", "appliance/spark-livy/container/spark-master/logs", tail=50)
    assert code == 200 and any("Master" in line for line in logs["instances"][0]["lines"])

    # A worker JVM killed behind our back comes back by itself (no request), on its old
    # ports, counted in the model with the reason, and registers with the master again.
    record = json.loads((appliance_data_dir / "spark-livy" / "record.json").read_text())
    worker_pid = record["instances"]["spark-worker"][0]["handle"]["pid"]
    os.kill(worker_pid, signal.SIGKILL)

    async def worker_restarted():
        _, m = await api.call("GET", "appliance/spark-livy")
        inst = container(m, "spark-worker")["instance_states"][0]
        return m if inst["state"] == "running" and inst["restarts"] == 1 else None

    model = await wait_until(worker_restarted, timeout=120, what="the killed worker to be replaced")
    inst = container(model, "spark-worker")["instance_states"][0]
    assert "SIGKILL" in inst["last_reason"], inst
    assert container(model, "spark-worker")["restarts"] == 1 and model["state"] == "running"
    model = await wait_until(lambda: n_alive(1), what="the replaced worker to register")
    assert worker_pid not in record_pids(appliance_data_dir, model["id"])

    # A server restart: a new manager over the same records re-adopts everything.
    restarted = ApplianceManager(
        Store(appliance_data_dir),
        {"local": lambda: LocalBackend(LocalConfig(), Store(appliance_data_dir).dir)},
        stop_on_shutdown=False,
    )
    await restarted.start()
    try:
        adopted = restarted.list()
        assert [m["id"] for m in adopted] == ["spark-livy"]
        assert adopted[0]["state"] == "running"
        assert {c["id"]: c["state"] for c in adopted[0]["containers"]} == {
            "spark-master": "running", "livy": "running", "spark-worker": "running", "spark-connect": "running"}
    finally:
        await restarted.shutdown()

    # DELETE: nothing of the appliance remains, its ports are free, Sparkmagic restored.
    all_pids = record_pids(appliance_data_dir, model["id"])
    ports = [e["host_port"] for c in model["containers"] for e in c["endpoints"]]
    code, _ = await api.call("DELETE", "appliance/spark-livy")
    assert code == 204
    assert [p for p in all_pids if not gone(p)] == [], [psutil.Process(p).cmdline() for p in all_pids if not gone(p)]
    assert [p for p in ports if not port_is_free("127.0.0.1", p)] == []
    assert (await api.call("GET", "appliance/spark-livy"))[0] == 404
    assert json.loads((sparkmagic_conf_dir / "config.json").read_text()) == user_config


async def test_failed_launch_cleans_up_and_reports(api, jp_fetch, appliance_data_dir):
    spec = {"id": "broken", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}],
         "env": {"SPARK_MASTER_OPTS": "-javaagent:/nonexistent/agent.jar"}},
        {"id": "spark-worker", "type": "service", "image": "spark-worker", "resources": {"cpus": 1, "mem": 512},
         "args": ["@spark-master:7077"]}]}
    events: list[dict] = []
    buffer = b""
    connected = asyncio.Event()

    def on_chunk(chunk: bytes) -> None:
        nonlocal buffer
        connected.set()
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.decode().splitlines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    stream = asyncio.ensure_future(jp_fetch("spark-appliance", "events", streaming_callback=on_chunk,
                                            request_timeout=120, raise_error=False))
    await asyncio.wait_for(connected.wait(), 30)
    code, _ = await api.call("POST", "appliance", spec)
    assert code == 201
    model = await api.wait_state("broken", {"failed", "running"}, timeout=120)
    assert model["state"] == "failed"
    assert "exited with code 1" in model["reason"]  # with the JVM's own words after it
    assert container(model, "spark-worker")["state"] in ("killed", "submitted")
    assert all(gone(p) for p in record_pids(appliance_data_dir, model["id"]))
    # The graph shows each container's own state, in its colour (failed red), the worker's arrow from the master.
    code, page = await api.call("GET", "appliance/broken/ui")
    assert code == 200 and "<h3>broken: failed</h3>" in page, page[:2000]
    nodes, edges = graph_of(page)
    assert nodes["spark-master"]["state"] == "failed" and nodes["spark-master"]["text"] == "failed · 0/1 running"
    assert nodes["spark-master"]["stroke"] == nodes["spark-master"]["colour"] == "#c62828"
    worker_state = container(model, "spark-worker")["state"]
    assert nodes["spark-worker"]["state"] == worker_state and nodes["spark-worker"]["text"].startswith(worker_state)
    assert nodes["spark-worker"]["stroke"] != RUNNING_GREEN and edges == {("spark-worker", "spark-master")}
    def master_states() -> list[str]:
        return [e["instance"]["state"] for e in events
                if e.get("id") == "broken" and e.get("instance", {}).get("container") == "spark-master"]

    async def failed_seen() -> list[str] | None:  # the stream may trail the model the test polled
        states = master_states()
        return states if "failed" in states else None

    states = await wait_until(failed_seen, 30, "the master's failed event on the stream", interval=0.1)
    stream.cancel()
    transitions = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert transitions[:3] == ["pending", "staging", "failed"], states
    assert (await api.call("DELETE", "appliance/broken"))[0] == 204


async def test_concurrent_posts_one_id_exactly_one_wins(api):
    spec = {"id": "race", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}
    results = await asyncio.gather(*(api.call("POST", "appliance", spec) for _ in range(2)))
    assert sorted(code for code, _ in results) == [201, 409]
    conflict = next(body for code, body in results if code == 409)
    assert "race" in conflict["message"]
    model = await api.wait_state("race", {"running", "failed"})
    assert model["state"] == "running"
    assert (await api.call("DELETE", "appliance/race"))[0] == 204


@pytest.mark.own_cds
async def test_class_data_sharing_archive_is_recorded_once_then_used(api, appliance_data_dir):
    spec = {"id": "cds", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}
    cds_dir = appliance_data_dir.parent / "cds"

    async def run_once() -> list[str]:
        assert (await api.call("POST", "appliance", spec))[0] == 201
        model = await api.wait_state("cds", {"running", "failed"})
        assert model["state"] == "running", model["reason"]
        (pid,) = record_pids(appliance_data_dir, model["id"])
        cmdline = psutil.Process(pid).cmdline()
        assert (await api.call("DELETE", "appliance/cds"))[0] == 204
        return cmdline

    first = await run_once()
    assert any(a.startswith("-XX:ArchiveClassesAtExit=") for a in first)
    archives = list(cds_dir.glob("spark-master-*.jsa"))
    assert len(archives) == 1 and archives[0].stat().st_size > 1_000_000
    assert not list(cds_dir.glob("*.tmp.jsa")) and not list(cds_dir.glob("*.recording"))
    second = await run_once()
    assert f"-XX:SharedArchiveFile={archives[0]}" in second


MASTER_ONLY = {"containers": [
    {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
     "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}


async def test_restart_shows_vanished_as_failed_and_shutdown_leaves_no_jvm(api, jp_serverapp, appliance_data_dir):
    for app_id in ("vanishing", "staying"):
        assert (await api.call("POST", "appliance", {"id": app_id, **MASTER_ONLY}))[0] == 201
    for app_id in ("vanishing", "staying"):
        assert (await api.wait_state(app_id, {"running", "failed"}))["state"] == "running"
    vanishing = record_pids(appliance_data_dir, "vanishing")
    staying = record_pids(appliance_data_dir, "staying")
    manager = jp_serverapp.web_app.settings["spark_appliance_manager"]
    manager._monitor.cancel()  # the server is "down": nobody watches while the JVM dies
    os.kill(vanishing[0], signal.SIGKILL)
    assert wait_gone(vanishing[:1], 30) == []  # exited (a zombie), as the re-adoption will find it

    restarted = ApplianceManager(Store(appliance_data_dir),
                                 {"local": lambda: LocalBackend(LocalConfig(), Store(appliance_data_dir).dir)},
                                 stop_on_shutdown=False)
    await restarted.start()
    try:
        states = {m["id"]: m for m in restarted.list()}
        assert states["staying"]["state"] == "running"
        # What died while nobody watched is restarted by the new server, with the reason.
        inst = states["vanishing"]["containers"][0]["instance_states"][0]
        assert inst["last_reason"].startswith("gone while the server was down"), inst
        assert inst["state"] in ("pending", "staging", "running"), inst

        async def back():
            m = restarted.model(restarted.get("vanishing"))
            i = m["containers"][0]["instance_states"][0]
            return m if i["state"] == "running" and i["restarts"] == 1 else None

        model = await wait_until(back, timeout=120, what="the vanished master to be restarted")
        assert vanishing[0] not in record_pids(appliance_data_dir, model["id"])
        await restarted.delete("vanishing")  # the new process is the restarted manager's to stop
    finally:
        await restarted.shutdown()

    # The real server stops (stop_on_shutdown is on by default): no JVM survives it.
    await manager.shutdown()
    assert all(gone(p) for p in staying)
    assert not list(appliance_data_dir.glob("*/record.json"))


async def test_delete_during_launch_stops_what_started(api, appliance_data_dir):
    spec = {"id": "hasty", "containers": MASTER_ONLY["containers"] + [
        {"id": "spark-worker", "type": "service", "image": "spark-worker", "resources": {"cpus": 1, "mem": 512},
         "args": ["@spark-master:7077"], "instances": 2}]}
    assert (await api.call("POST", "appliance", spec))[0] == 201
    # As soon as the master's process is recorded (the workers wait for it to be ALIVE): a fixed
    # sleep here was a guess at how long the record's saves take on a loaded machine.
    async def recorded() -> list[int]:
        return record_pids(appliance_data_dir, "hasty")

    started = await wait_until(recorded, 30, "a process recorded after the POST", interval=0.05)
    assert (await api.call("DELETE", "appliance/hasty"))[0] == 204
    assert started and all(gone(p) for p in started)
    assert (await api.call("GET", "appliance"))[1] == {"appliances": []}
    leftovers = []
    for proc in psutil.process_iter(["cwd"]):
        try:
            if str(proc.info["cwd"] or "").startswith(str(appliance_data_dir)):
                leftovers.append(proc.pid)
        except psutil.Error:
            continue
    assert leftovers == []


def test_a_server_records_the_archives_in_the_background_at_start_unless_prepare_cds_is_off(tmp_path):
    """``prepare_cds``: a server started with it starts recording the archives itself, at nice 19, with no
    launch and no request; one started without it records none, although it has been up longer.

    The recording's throwaway master and worker are seen running at nice 19 with
    ``-XX:ArchiveClassesAtExit`` into the server's ``cds_dir``; the test does not wait
    for the archives: at nice 19, beside another pytest-xdist worker's JVMs, that can
    take minutes. That the same recording writes them is test_livy_gateway.py's
    ``test_drivers_and_executors_start_from_recorded_archives`` and conftest's
    ``shared_cds_dir``, which every server test uses.
    """
    from jupyter_process import Server

    dirs = {name: tmp_path / name for name in ("off", "on")}
    for d in dirs.values():
        d.mkdir()
    # Server() passes prepare_cds=False; a later option overrides it, as on any command line.
    off = Server(dirs["off"], dirs["off"] / "appliances", f"--SparkApplianceApp.cds_dir={dirs['off'] / 'cds'}")
    on = None
    try:
        on = Server(dirs["on"], dirs["on"] / "appliances", f"--SparkApplianceApp.cds_dir={dirs['on'] / 'cds'}",
                    "--SparkApplianceApp.prepare_cds=True")
        servers = {off.proc.pid, on.proc.pid}  # their command lines name their cds dirs too

        def recorders(d: Path) -> list[psutil.Process]:
            found = []
            for proc in psutil.process_iter(["cmdline"]):
                if proc.pid not in servers and str(d / "cds") in " ".join(proc.info["cmdline"] or []):
                    found.append(proc)
            return found

        seen: dict[str, set[int]] = {}  # the recording JVM's main class -> its niceness
        deadline = time.monotonic() + 300
        wanted = {"org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"}
        while not wanted <= seen.keys():
            for proc in recorders(dirs["on"]):
                try:
                    cmdline = proc.cmdline()
                    if time.time() - proc.create_time() < 1:
                        continue  # reniced right after its start
                    main = next((c for c in cmdline if c in wanted), None)
                    if main and any(c.startswith(f"-XX:ArchiveClassesAtExit={dirs['on'] / 'cds'}/") for c in cmdline):
                        seen.setdefault(main, set()).add(proc.nice())
                except psutil.Error:
                    pass
            assert on.proc.poll() is None and time.monotonic() < deadline, (seen, on.tail())
            time.sleep(0.5)
        assert all(niceness == {19} for niceness in seen.values()), seen
        # prepare_cds = False: up since before the other started, and it recorded nothing, started nothing.
        assert off.proc.poll() is None
        assert list((dirs["off"] / "cds").glob("*")) == []
        assert recorders(dirs["off"]) == []
    finally:
        for server in (on, off):
            if server is not None:
                server.stop()
    # Stopping the server stopped its recording's JVMs too.
    deadline = time.monotonic() + 60
    while recorders(dirs["on"]):
        assert time.monotonic() < deadline, [p.cmdline()[-3:] for p in recorders(dirs["on"])]
        time.sleep(0.5)
