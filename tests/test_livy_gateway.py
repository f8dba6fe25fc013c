"""The Livy gateway driven by Sparkmagic's own client (sparkmagic.livyclientlib)
against a real Spark master, plus raw-protocol checks for what Sparkmagic
does not exercise (shapes, states, cancel, errors)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import requests

from jupyter_spark_appliance.spark.cds import ClassDataSharing
from jupyter_spark_appliance.spark.home import find_spark_home
from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.standalone import start_cluster

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


def _start_gateway(cluster, tmp_path, *extra: str, env: dict[str, str] | None = None):
    port = allocate_port("127.0.0.1")
    log = open(tmp_path / "gateway.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", cluster.master_url,
         "--port", str(port), "--log-dir", str(tmp_path / "drivers"),
         # Beside the other xdist worker's JVMs an executor can take longer than the default
         # 30 s to start (ci3); the limit itself is test_short_of_resources.py's and capacity's.
         "--resource-wait-limit", "120", *extra],
        stdout=log, stderr=log, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/version", timeout=2)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError((tmp_path / "gateway.log").read_text())


@pytest.fixture(scope="module")
def gateway(cluster, tmp_path_factory):
    proc, url = _start_gateway(cluster, tmp_path_factory.mktemp("gateway"))
    yield url
    proc.terminate()
    proc.wait(30)


def wait_session(url: str, sid: int, states=("idle",), timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = requests.get(f"{url}/sessions/{sid}").json()
        if s["state"] in states or s["state"] in ("dead", "error", "killed"):
            return s
        time.sleep(0.3)
    raise AssertionError(f"session {sid} stuck in {s['state']}")


def run_statement(url: str, sid: int, code: str, kind: str | None = None, timeout: float = 240) -> dict:
    body = {"code": code} | ({"kind": kind} if kind else {})
    r = requests.post(f"{url}/sessions/{sid}/statements", json=body)
    assert r.status_code == 201, r.text
    stmt = r.json()
    deadline = time.monotonic() + timeout
    while stmt["state"] not in ("available", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        stmt = requests.get(f"{url}/sessions/{sid}/statements/{stmt['id']}").json()
    return stmt


def test_sparkmagic_client_end_to_end(gateway):
    from hdijupyterutils.ipythondisplay import IpythonDisplay
    from sparkmagic.livyclientlib.command import Command
    from sparkmagic.livyclientlib.endpoint import Endpoint
    from sparkmagic.livyclientlib.sparkcontroller import SparkController
    from sparkmagic.livyclientlib.sqlquery import SQLQuery

    controller = SparkController(IpythonDisplay())
    endpoint = Endpoint(gateway, None)
    controller.add_session("s1", endpoint, False, {"kind": "pyspark"})
    session = controller.get_session_by_name_or_default("s1")
    assert session.status == "idle"

    ok, out, mime = Command("spark.range(1000).count()").execute(session)
    assert ok and out.strip() == "1000", out

    ok, out, _ = Command("print('hello'); 1/0").execute(session)
    assert not ok
    assert "ZeroDivisionError" in out and "division by zero" in out

    ok, out, _ = Command("spark.range(5).createOrReplaceTempView('t')").execute(session)
    assert ok, out
    df = SQLQuery("SELECT count(*) AS n FROM t").execute(session)
    assert list(df.columns) == ["n"] and int(df["n"][0]) == 5

    info = controller.get_all_sessions_endpoint_info(endpoint)
    assert any("pyspark" in line and "idle" in line for line in info), info
    # %%logs: the session's driver log from its start, as the driver's JVM wrote it (Spark's
    # log4j set-up line, which no part of the gateway writes).
    logs = controller.get_logs("s1")
    assert "Using Spark's default log4j profile: org/apache/spark/log4j2-defaults.properties" in logs, logs[:3000]

    controller.delete_session_by_name("s1")
    assert requests.get(f"{gateway}/sessions").json()["total"] == 0


def test_progress_is_the_fraction_of_the_statements_tasks_done(gateway):
    # Issue 14 item 2: Sparkmagic's progress bar shows `progress` while the statement runs.
    sid = requests.post(f"{gateway}/sessions", json={"kind": "pyspark"}).json()["id"]
    wait_session(gateway, sid)
    code = "import time\nsc.parallelize(range(100), 100).map(lambda x: (time.sleep(0.05), x)[1]).count()"
    r = requests.post(f"{gateway}/sessions/{sid}/statements", json={"code": code})
    seen = []
    deadline = time.monotonic() + 240
    while True:
        stmt = requests.get(f"{gateway}/sessions/{sid}/statements/{r.json()['id']}").json()
        seen.append(stmt["progress"])
        if stmt["state"] == "available":
            break
        assert time.monotonic() < deadline, stmt
        time.sleep(0.1)
    assert stmt["output"]["data"]["text/plain"] == "100"
    assert seen == sorted(seen) and seen[-1] == 1.0, seen
    assert [p for p in seen if 0 < p < 1], seen
    requests.delete(f"{gateway}/sessions/{sid}")


def test_protocol_shapes_states_and_errors(gateway):
    r = requests.post(f"{gateway}/sessions", json={"kind": "sparkr"})
    assert r.status_code == 400 and "not supported" in r.json()["msg"]
    r = requests.post(f"{gateway}/sessions", json={"kind": "pyspark", "driverMemory": "lots"})
    assert r.status_code == 400 and "driverMemory" in r.json()["msg"]
    assert requests.get(f"{gateway}/sessions/999").status_code == 404

    r = requests.post(f"{gateway}/sessions", json={"kind": "pyspark", "name": "shapes", "someFutureField": 1})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/sessions/{r.json()['id']}")
    sid = r.json()["id"]
    s = wait_session(gateway, sid)
    assert s["state"] == "idle" and s["kind"] == "pyspark" and s["appId"]
    assert requests.get(f"{gateway}/sessions/shapes").json()["id"] == sid  # by name
    assert requests.get(f"{gateway}/sessions/{sid}/state").json() == {"id": sid, "state": "idle"}

    stmt = run_statement(gateway, sid, "x = 41\nx + 1")
    assert stmt["state"] == "available" and stmt["output"] == {
        "status": "ok", "execution_count": stmt["id"], "data": {"text/plain": "42"}}
    assert stmt["completed"] >= stmt["started"] > 0

    stmt = run_statement(gateway, sid, "%json {'a': [1, 2]}")
    assert stmt["output"]["data"]["application/json"] == {"a": [1, 2]}
    stmt = run_statement(gateway, sid, "%table [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]")
    table = stmt["output"]["data"]["application/vnd.livy.table.v1+json"]
    assert [h["name"] for h in table["headers"]] == ["a", "b"] and table["data"] == [[1, "x"], [2, "y"]]

    stmt = run_statement(gateway, sid, "SELECT 1 AS one, 'a' AS letter", kind="sql")
    data = stmt["output"]["data"]["application/json"]
    assert data["data"] == [[1, "a"]] and [f["name"] for f in data["schema"]["fields"]] == ["one", "letter"]
    # A session of kind sql: its statements, with no kind of their own, are SQL (Livy's SQL interpreter).
    sql_sid = requests.post(f"{gateway}/sessions", json={"kind": "sql"}).json()["id"]
    assert wait_session(gateway, sql_sid)["kind"] == "sql"
    data = run_statement(gateway, sql_sid, "SELECT 2 AS two")["output"]["data"]["application/json"]
    assert data["data"] == [[2]] and [f["name"] for f in data["schema"]["fields"]] == ["two"], data
    assert run_statement(gateway, sql_sid, "SELECT x")["output"]["ename"] == "AnalysisException"  # no Python x here
    requests.delete(f"{gateway}/sessions/{sql_sid}")

    stmt = run_statement(gateway, sid, "undefined_name")
    assert stmt["state"] == "available" and stmt["output"]["status"] == "error"
    assert stmt["output"]["ename"] == "NameError"

    # cancel a long Spark job: the statement ends cancelled and the session stays usable
    r = requests.post(f"{gateway}/sessions/{sid}/statements",
                      json={"code": "import time\nspark.range(4).rdd.map(lambda x: time.sleep(120) or x).collect()"})
    long_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while requests.get(f"{gateway}/sessions/{sid}/statements/{long_id}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert requests.post(f"{gateway}/sessions/{sid}/statements/{long_id}/cancel", json={}).json() == {"msg": "canceled"}
    deadline = time.monotonic() + 90
    while (state := requests.get(f"{gateway}/sessions/{sid}/statements/{long_id}").json()["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert run_statement(gateway, sid, "2 * 21")["output"]["data"]["text/plain"] == "42"

    listing = requests.get(f"{gateway}/sessions/{sid}/statements").json()
    assert listing["total_statements"] == len(listing["statements"]) >= 7
    log = requests.get(f"{gateway}/sessions/{sid}/log", params={"from": 0, "size": 5}).json()
    assert log["from"] == 0 and len(log["log"]) <= 5 and log["total"] >= len(log["log"])
    assert requests.delete(f"{gateway}/sessions/{sid}").json() == {"msg": "deleted"}
    assert requests.get(f"{gateway}/sessions/{sid}").status_code == 404


def test_matplot_magic_returns_a_png(gateway):
    sid = requests.post(f"{gateway}/sessions", json={"kind": "pyspark"}).json()["id"]
    wait_session(gateway, sid)
    stmt = run_statement(gateway, sid, "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                                        "plt.plot([1, 2, 3], [1, 4, 9])")
    assert stmt["output"]["status"] == "ok", stmt["output"]
    stmt = run_statement(gateway, sid, "%matplot plt")
    data = stmt["output"]["data"]
    import base64

    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n" and data["text/plain"] == ""
    requests.delete(f"{gateway}/sessions/{sid}")


def test_pyspark_sessions_sharing_a_driver_keep_their_names_sql_conf_and_temp_views(gateway):
    a, b = (requests.post(f"{gateway}/sessions", json={"kind": "pyspark"}).json()["id"] for _ in range(2))
    assert wait_session(gateway, a)["appId"] == wait_session(gateway, b)["appId"]  # one driver, one application

    def value(sid: int, code: str) -> str:
        out = run_statement(gateway, sid, code)["output"]
        assert out["status"] == "ok", out
        return out["data"]["text/plain"]

    value(a, "only_a = 1\nspark.conf.set('spark.sql.shuffle.partitions', '7')\n"
             "spark.range(3).createOrReplaceTempView('view_of_a')")
    views_and_conf = "(spark.catalog.tableExists('view_of_a'), spark.conf.get('spark.sql.shuffle.partitions'))"
    assert value(a, f"('only_a' in globals(),) + {views_and_conf}") == "(True, True, '7')"
    assert value(b, f"('only_a' in globals(),) + {views_and_conf}") == "(False, False, '200')"
    # What they share is the SparkContext: one application.
    assert value(a, "sc.applicationId") == value(b, "sc.applicationId")
    for sid in (a, b):
        requests.delete(f"{gateway}/sessions/{sid}")


def test_heartbeat_timeout_ends_an_abandoned_session(gateway):
    r = requests.post(f"{gateway}/sessions", json={"kind": "pyspark", "heartbeatTimeoutInSecond": 2})
    sid = r.json()["id"]
    wait_session(gateway, sid)  # polling GET /sessions/{id} is the heartbeat
    abandoned = time.monotonic()  # from now on nobody asks for it (the listing is no heartbeat)

    def listed() -> bool:
        return sid in [s["id"] for s in requests.get(f"{gateway}/sessions").json()["sessions"]]

    assert listed()
    while listed():
        assert time.monotonic() - abandoned < 30, "an abandoned session with a 2 s heartbeat outlived 30 s"
        time.sleep(0.2)


def test_driver_settings_get_their_own_driver_and_a_crash_makes_it_dead(gateway):
    # (2-core executors do not fit this cluster's 1-core worker: this session runs no Spark job.)
    r = requests.post(f"{gateway}/sessions", json={"kind": "pyspark", "executorMemory": "600m", "executorCores": 2,
                                                    "conf": {"spark.sql.shuffle.partitions": "3"}})
    sid = r.json()["id"]
    assert wait_session(gateway, sid)["state"] == "idle"
    executor_conf = "(sc.getConf().get('spark.executor.memory'), sc.getConf().get('spark.executor.cores'))"
    out = run_statement(gateway, sid, f"{executor_conf} + (spark.conf.get('spark.sql.shuffle.partitions'),)")
    assert out["output"]["data"]["text/plain"] == "('600m', '2', '3')"
    shared = requests.post(f"{gateway}/sessions", json={"kind": "pyspark"}).json()["id"]
    assert wait_session(gateway, shared)["state"] == "idle"
    # The defaults: executors of 512 MB and 1 core, released after 20 s idle (30 s holding shuffle
    # files, 10 min holding cached blocks).
    assert run_statement(gateway, shared, executor_conf)["output"]["data"]["text/plain"] == "('512m', '1')"
    idle_conf = "tuple(sc.getConf().get('spark.dynamicAllocation.' + k) for k in " \
                "('enabled', 'executorIdleTimeout', 'shuffleTracking.timeout', 'cachedExecutorIdleTimeout'))"
    assert run_statement(gateway, shared, idle_conf)["output"]["data"]["text/plain"] == \
        "('true', '20s', '30s', '10min')"
    assert wait_session(gateway, sid)["appId"] != wait_session(gateway, shared)["appId"]

    # Kill this session's interpreter: it goes dead with the reason in its log; the
    # default driver's session is untouched.
    requests.post(f"{gateway}/sessions/{sid}/statements", json={"code": "import os; os._exit(3)"})
    dead = wait_session(gateway, sid, states=("dead",), timeout=60)
    assert dead["state"] == "dead"
    log = requests.get(f"{gateway}/sessions/{sid}/log").json()["log"]
    assert any("interpreter died" in line and "code 3" in line for line in log)
    assert run_statement(gateway, shared, "1 + 1")["output"]["data"]["text/plain"] == "2"
    for s in (sid, shared):
        requests.delete(f"{gateway}/sessions/{s}")


def test_the_warm_driver_starts_niced_and_a_waiting_session_hurries_it(cluster, tmp_path):
    # Niced so that it does not slow the workers starting beside it; once a session waits for
    # it, normal priority (this test runs as root, which may lower niceness; others stay nice).
    if os.geteuid() != 0:
        pytest.skip("lowering a process's niceness needs root")
    proc, url = _start_gateway(cluster, tmp_path)
    try:
        (driver,) = [p for p in psutil.Process(proc.pid).children()
                     if "jupyter_spark_appliance.livy.driver_main" in " ".join(p.cmdline())]
        niceness = driver.nice()  # read first: if it is still starting after, it was niced then
        if requests.get(f"{url}/appliance/resources").json()["drivers"][0]["state"] == "starting":
            assert niceness == 10  # (a fast machine may have it ready already: "ready" reniced it)
        sid = requests.post(f"{url}/sessions", json={"kind": "pyspark"}).json()["id"]
        assert driver.nice() == 0
        assert wait_session(url, sid)["state"] == "idle"
        tree = [driver, *driver.children(recursive=True)]
        assert {p.nice() for p in tree} == {0}, [(p.pid, p.name(), p.nice()) for p in tree]
    finally:
        proc.terminate()
        proc.wait(30)


def test_basic_auth_and_csrf(cluster, tmp_path):
    proc, url = _start_gateway(cluster, tmp_path, "--no-warm", "--username", "alice",
                               env={"LIVY_GATEWAY_PASSWORD": "s3cret"})
    try:
        assert requests.get(f"{url}/sessions").status_code == 401
        assert requests.get(f"{url}/sessions", auth=("alice", "wrong")).status_code == 401
        assert requests.get(f"{url}/sessions", auth=("alice", "s3cret")).json()["total"] == 0
        # A web page's "simple" POST (text/plain, no X-Requested-By) is refused; CSRF is on by default.
        r = requests.post(f"{url}/sessions", data='{"kind": "pyspark"}', auth=("alice", "s3cret"),
                          headers={"Content-Type": "text/plain"})
        assert r.status_code == 400 and "CSRF" in r.json()["msg"]
        r = requests.post(f"{url}/sessions", json={"kind": "sparkr"}, auth=("alice", "s3cret"),
                          headers={"X-Requested-By": "me"})
        assert r.status_code == 400 and "not supported" in r.json()["msg"]  # past auth and CSRF
    finally:
        proc.terminate()
        proc.wait(30)


def test_drivers_and_executors_start_from_recorded_archives(tmp_path, shared_cds_dir):
    # What the server does in the background when it starts: record all four archives. The
    # run's shared recording (conftest) is that call, with the server's options, waited for;
    # recording them again here would be four more throwaway JVMs (a minute on two cores).
    cds = ClassDataSharing(shared_cds_dir)
    home = find_spark_home()
    recorded = json.loads((shared_cds_dir / "done").read_text())  # record_archives' return value
    assert recorded == ["spark-master", "spark-worker", "spark-driver", "spark-executor"]
    assert not list(shared_cds_dir.glob("*.tmp.jsa")) and not list(shared_cds_dir.glob("*.recording"))
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(shared_cds_dir / "recording") in " ".join(p.info["cmdline"] or [])]

    # A cluster of its own: the module's cluster has its cores held by other tests' drivers.
    cluster = start_cluster(tmp_path / "cluster")
    proc, url = _start_gateway(cluster, tmp_path, "--no-warm", "--cds-dir", str(shared_cds_dir))
    try:
        sid = requests.post(f"{url}/sessions", json={"kind": "pyspark"}).json()["id"]
        wait_session(url, sid)
        assert run_statement(url, sid, "spark.range(100).count()")["output"]["data"]["text/plain"] == "100"
        # The driver's JVM and its executor's JVM were started with their archive, and the
        # kernel shows the archive mapped into each (-Xshare:auto would silently skip a bad one).
        # The executor's own archive may be missing (its worker can kill it before it is
        # written): then it runs from the driver's.
        executor_role = "spark-executor" if cds.archive("spark-executor", home).is_file() else "spark-driver"
        for main_class, role in (("org.apache.spark.deploy.SparkSubmit", "spark-driver"),
                                 ("org.apache.spark.executor.CoarseGrainedExecutorBackend", executor_role)):
            archive = str(cds.archive(role, home))
            jvms = [p for p in psutil.process_iter(["cmdline"])
                    if main_class in (p.info["cmdline"] or []) and f"-XX:SharedArchiveFile={archive}" in
                    (p.info["cmdline"] or [])]
            assert jvms, (main_class, role)
            for jvm in jvms:
                assert archive in {m.path for m in jvm.memory_maps()}, (main_class, role)
        requests.delete(f"{url}/sessions/{sid}")
    finally:
        proc.terminate()
        proc.wait(30)
        cluster.stop()


def test_drivers_exit_when_the_gateway_is_killed(cluster, tmp_path):
    # SIGKILL gives the gateway no chance to stop its drivers: they see their stdin close
    # (and their log pipe break) and stop with their JVMs, instead of holding cluster cores.
    proc, url = _start_gateway(cluster, tmp_path, "--no-warm")
    try:
        sid = requests.post(f"{url}/sessions", json={"kind": "pyspark"}).json()["id"]
        assert wait_session(url, sid)["state"] == "idle"
        assert run_statement(url, sid, "spark.range(3).count()")["output"]["data"]["text/plain"] == "3"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("SparkSubmit" in " ".join(p.cmdline()) for p in children if p.is_running())
    finally:
        proc.kill()
        proc.wait(30)
    _, alive = psutil.wait_procs(children, timeout=120)
    left = [" ".join(p.cmdline())[:200] for p in alive if p.is_running()]
    for p in alive:  # the test's own processes: none may outlive it, even when it fails
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not left, left
