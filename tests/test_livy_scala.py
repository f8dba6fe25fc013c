"""Scala sessions (issue 14 item 1): ``kind: "spark"`` sessions and per-statement
``kind: "spark"`` run in a Scala interpreter inside the session's driver JVM, bound
to that session's own SparkSession.

Real components: a standalone master and worker, the gateway as a process,
Sparkmagic's own ``sparkkernel`` (jupyter_client) and the raw Livy protocol.
Outputs are checked exactly: the Scala 2.13 REPL's ``val res0: Long = 10``, which
is what Livy's SparkInterpreter returns (the interpreter's text).
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import requests
import sparkmagic

from jupyter_spark_appliance.livy.driver_main import SPARE_READY
from jupyter_spark_appliance.spark.standalone import start_cluster

from kernels import run_kernel_process
from test_livy_gateway import _start_gateway, run_statement, wait_session

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("cluster"), workers=1, worker_cores=2)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def gateway(cluster, tmp_path_factory):
    proc, url = _start_gateway(cluster, tmp_path_factory.mktemp("gateway"), "--master-ui", cluster.ui_url)
    yield url
    proc.terminate()
    proc.wait(60)


def text(stmt: dict) -> str:
    assert stmt["state"] == "available", stmt
    assert stmt["output"]["status"] == "ok", stmt["output"]
    return stmt["output"]["data"]["text/plain"]


def scala_session(url: str, **body) -> int:
    r = requests.post(f"{url}/sessions", json={"kind": "spark", **body})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    s = wait_session(url, sid)
    assert s["state"] == "idle" and s["kind"] == "spark", s
    return sid


def test_sparkkernel_runs_scala_on_the_gateway(gateway, sparkmagic_conf_dir):
    (sparkmagic_conf_dir / "config.json").write_text(json.dumps({
        "kernel_scala_credentials": {"username": "", "password": "", "url": gateway, "auth": "None"},
        "livy_session_startup_timeout_seconds": 300,
    }))
    outputs = await_kernel([
        "spark.range(10).count()",
        "sc.parallelize(1 to 100, 4).map(_ * 2).sum",
        'val x: Int = "no"',
        'throw new RuntimeException("boom")',
        "spark.range(3).createOrReplaceTempView(\"t\")",
        "%%sql -q -o tens_df\nSELECT id * 10 AS tens FROM t ORDER BY id",
        '%%local\nprint(tens_df["tens"].tolist())',
    ], sparkmagic_conf_dir)
    # The first cell also shows the session starting; Sparkmagic's start-up statement `spark` is
    # res0, so the user's first value is res1 (as on Livy).
    assert "SparkSession available as 'spark'" in outputs[0]
    assert outputs[0].strip().splitlines()[-1] == "val res1: Long = 10", outputs[0]
    assert outputs[1].strip().splitlines()[-1] == "val res2: Double = 10100.0", outputs[1]
    assert "error: type mismatch" in outputs[2] and 'found   : String("no")' in outputs[2], outputs[2]
    assert "java.lang.RuntimeException: boom" in outputs[3], outputs[3]
    # %%sql from the Scala kernel: Sparkmagic sends Scala (spark.sql(...).toJSON.take(n).foreach(println)).
    # -o copies the result into the kernel's Python (pandas), -q shows no table widget.
    assert outputs[6].strip() == "[0, 10, 20]", outputs[6]


def await_kernel(cells: list[str], conf_dir) -> list[str]:
    import asyncio

    return asyncio.run(run_kernel_process(
        "sparkkernel", cells, env={"SPARKMAGIC_CONF_DIR": str(conf_dir)},
        kernel_dirs=[os.path.join(os.path.dirname(sparkmagic.__file__), "kernels")]))


def test_scala_outputs_errors_and_isolation(gateway):
    a = scala_session(gateway)
    assert text(run_statement(gateway, a, "spark.range(10).count()")) == "val res0: Long = 10"
    # A closure over an earlier line's value runs on a real executor (spark/sc are @transient).
    assert text(run_statement(gateway, a, "val k = 3")) == "val k: Int = 3"
    assert text(run_statement(gateway, a, "sc.parallelize(1 to 4, 2).map(_ * k).collect().sum")) == \
        "val res1: Int = 30"
    assert text(run_statement(gateway, a, 'println("hello")\n1 + 1')) == "hello\nval res2: Int = 2"
    assert text(run_statement(gateway, a, "case class P(a: Int)\nspark.createDataFrame(Seq(P(1), P(2))).count()")) \
        == "class P\nval res3: Long = 2"
    assert text(run_statement(gateway, a, "spark.createDataFrame(Seq(P(1), P(2), P(3))).count()")).endswith(
        "Long = 3")

    err = run_statement(gateway, a, 'val y: Int = "no"')["output"]
    assert err["status"] == "error" and err["ename"] == "Error", err
    assert err["evalue"] == "error: type mismatch;", err
    assert "".join(err["traceback"]).split() == ["found", ":", 'String("no")', "required:", "Int"], err
    err = run_statement(gateway, a, 'throw new RuntimeException("boom")')["output"]
    assert (err["status"], err["ename"], err["evalue"]) == ("error", "Error", "java.lang.RuntimeException: boom")
    assert "elided" in "".join(err["traceback"]), err
    err = run_statement(gateway, a, "def f(")["output"]
    assert (err["ename"], err["evalue"], err["traceback"]) == ("Error", "incomplete statement", [])
    # Output past --max-output-bytes (1 MiB) stops growing in the driver and ends with a note.
    big = run_statement(gateway, a, '(1 to 300000).foreach(i => println("x" * 20))')["output"]
    assert big["status"] == "ok" and big["data"]["text/plain"].startswith("x" * 20 + "\n"), big["status"]
    assert "[output truncated:" in big["data"]["text/plain"] and len(json.dumps(big)) <= 1024 * 1024 + 512
    # Printing for a while: the driver's monitor empties the buffer once it passes the limit.
    slow = run_statement(gateway, a, '(1 to 60).foreach { i => println("y" * 100000); Thread.sleep(50) }')["output"]
    plain = slow["data"]["text/plain"]
    assert plain.startswith("y" * 100000 + "\n") and len(json.dumps(slow)) <= 1024 * 1024 + 512
    # 6 MB were printed; what reached the gateway was cut in the driver to about the limit.
    seen = int(re.search(r"\[output truncated: (\d+) bytes", plain).group(1))
    assert 1024 * 1024 < seen < 3 * 1024 * 1024, seen
    assert text(run_statement(gateway, a, "1 + 2")).endswith("Int = 3")
    # sql-kind statements in a Scala session
    sql = run_statement(gateway, a, "SELECT 2 AS two", kind="sql")["output"]["data"]["application/json"]
    assert sql["data"] == [[2]] and [f["name"] for f in sql["schema"]["fields"]] == ["two"]

    # Another Scala session on the same driver: its own definitions, its own SparkSession.
    # It is the one the driver made ahead once `a` had opened (its interpreter and all).
    def driver_log() -> list[str]:
        return requests.get(f"{gateway}/sessions/{a}/log", params={"from": 0, "size": 100000}).json()["log"]

    deadline = time.monotonic() + 120
    while not any(SPARE_READY in line for line in driver_log()):
        assert time.monotonic() < deadline, driver_log()[-30:]
        time.sleep(0.5)
    b = scala_session(gateway)
    assert wait_session(gateway, a)["appId"] == wait_session(gateway, b)["appId"]
    assert text(run_statement(gateway, a, 'spark.conf.set("livy.test", "a"); spark.conf.get("livy.test")')) \
        .endswith('String = a')
    assert text(run_statement(gateway, b, 'spark.conf.getOption("livy.test")')) == \
        "val res0: Option[String] = None"
    err = run_statement(gateway, b, "k")["output"]
    assert err["status"] == "error" and "not found: value k" in err["evalue"] + "".join(err["traceback"]), err
    # The same code in both sessions compiles to classes of their own: on the same executors,
    # each closure sees its own session's k (the interpreters number their lines apart).
    assert text(run_statement(gateway, b, "val k = 5")) == "val k: Int = 5"
    assert text(run_statement(gateway, b, "sc.parallelize(1 to 4, 2).map(_ * k).collect().sum")) == \
        "val res2: Int = 50"  # res1 went to the failed `k`
    assert text(run_statement(gateway, a, "sc.parallelize(1 to 4, 2).map(_ * k).collect().sum")).endswith(
        "Int = 30")
    for sid in (a, b):
        assert requests.delete(f"{gateway}/sessions/{sid}").json() == {"msg": "deleted"}


TABLE = "application/vnd.livy.table.v1+json"


def test_scala_magics_and_completion(gateway):
    # Livy's AbstractSparkInterpreter magics: %json and %table of a value (json4s), also on the
    # line after code (Livy's "do table magic"); a text/plain rendering as on the PySpark side.
    sid = scala_session(gateway)
    out = run_statement(gateway, sid, 'val x = List((1, "a"), (3, "b"))\n%table x')["output"]
    assert out == {"status": "ok", "execution_count": 0, "data": {
        TABLE: {"headers": [{"type": "BIGINT_TYPE", "name": "_1"}, {"type": "STRING_TYPE", "name": "_2"}],
                "data": [[1, "a"], [3, "b"]]},
        "text/plain": "_1\t_2\n1\ta\n3\tb"}}, out
    # Code after a magic: its text is the output (Livy's "allow magic inside statements"), and a
    # magic takes no resN name.
    assert text(run_statement(gateway, sid, "val y = 2\n%json x\ny + 1")) == "val res0: Int = 3"
    data = run_statement(gateway, sid, '%json Map("a" -> 1, "b" -> List(1.5, 2.0))')["output"]["data"]
    assert data == {"application/json": {"a": 1, "b": [1.5, 2.0]}, "text/plain": '{"a": 1, "b": [1.5, 2.0]}'}
    data = run_statement(gateway, sid, '%table List(List(1, "a"), List(3, "b"))')["output"]["data"]
    assert data[TABLE] == {"headers": [{"type": "BIGINT_TYPE", "name": "0"}, {"type": "STRING_TYPE", "name": "1"}],
                           "data": [[1, "a"], [3, "b"]]}
    # An RDD: its first 10 elements (Livy's take(10)), computed on the executor.
    data = run_statement(gateway, sid, "%json sc.parallelize(1 to 100, 4)")["output"]["data"]
    assert data["application/json"] == list(range(1, 11))
    data = run_statement(gateway, sid, '%table spark.range(3).selectExpr("id", "id * 2 AS twice")')["output"]["data"]
    assert data[TABLE] == {"headers": [{"type": "BIGINT_TYPE", "name": "id"}, {"type": "BIGINT_TYPE", "name": "twice"}],
                           "data": [[0, 0], [1, 2], [2, 4]]}
    assert data["text/plain"] == "id\ttwice\n0\t0\n1\t2\n2\t4"
    err = run_statement(gateway, sid, '%table List(Map("a" -> 1), Map("a" -> "s"))')["output"]
    assert (err["status"], err["ename"], err["evalue"]) == ("error", "TypeError", "table rows have different types")
    err = run_statement(gateway, sid, "%foo x")["output"]
    assert (err["status"], err["ename"], err["evalue"]) == ("error", "UnknownMagic", "Unknown magic command foo")
    err = run_statement(gateway, sid, "%json nope")["output"]
    assert (err["status"], err["ename"], err["evalue"]) == ("error", "Error", "error: not found: value nope")

    def complete(code: str, cursor: int, kind: str = "spark") -> list[str]:
        r = requests.post(f"{gateway}/sessions/{sid}/completion", json={"code": code, "kind": kind, "cursor": cursor})
        assert r.status_code == 200, r.text
        return r.json()["candidates"]

    # The Scala REPL's completion in this session's interpreter: its definitions, the members'
    # names (as Livy's SparkInterpreter answers: names, not whole expressions).
    assert complete("x.hea", 5) == ["head", "headOption"]
    assert complete("x.hea + 1", 5) == ["head", "headOption"]
    assert complete("sc.paralle", 10) == ["parallelize"]
    assert complete("spark.rang", 10) == ["range"]
    members = complete('"a".', 4)
    assert "compare" in members and "contains" in members  # Livy's InteractiveIT
    assert complete("x_nothing.", 10) == []
    # While a statement runs the compiler is busy: no candidates, at once, and the statement goes on.
    r = requests.post(f"{gateway}/sessions/{sid}/statements", json={"code": "Thread.sleep(300000); 1"})
    busy = r.json()["id"]
    deadline = time.monotonic() + 60
    while complete("x.hea", 5):
        assert time.monotonic() < deadline
    assert requests.get(f"{gateway}/sessions/{sid}/statements/{busy}").json()["state"] == "running"
    requests.post(f"{gateway}/sessions/{sid}/statements/{busy}/cancel", json={})
    deadline = time.monotonic() + 60
    while (state := requests.get(f"{gateway}/sessions/{sid}/statements/{busy}").json()["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert complete("x.hea", 5) == ["head", "headOption"]
    assert text(run_statement(gateway, sid, "y + 2")) == "val res2: Int = 4"  # res1 went to the cancelled one
    requests.delete(f"{gateway}/sessions/{sid}")


def test_cancel_a_long_scala_statement(gateway):
    sid = scala_session(gateway)
    r = requests.post(f"{gateway}/sessions/{sid}/statements",
                      json={"code": "sc.parallelize(1 to 2, 2).map { x => Thread.sleep(120000); x }.collect()"})
    long_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        stmt = requests.get(f"{gateway}/sessions/{sid}/statements/{long_id}").json()
        if stmt["state"] == "running" and stmt["progress"] == 0:
            break
        assert time.monotonic() < deadline, stmt
        time.sleep(0.3)
    time.sleep(1)  # the job is submitted (or about to be)
    assert requests.post(f"{gateway}/sessions/{sid}/statements/{long_id}/cancel", json={}).json() == \
        {"msg": "canceled"}
    deadline = time.monotonic() + 90
    while (state := requests.get(f"{gateway}/sessions/{sid}/statements/{long_id}").json()["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    # A statement that waits in the JVM thread (no Spark job) is interrupted too.
    r = requests.post(f"{gateway}/sessions/{sid}/statements", json={"code": "Thread.sleep(300000); 1"})
    sleep_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while requests.get(f"{gateway}/sessions/{sid}/statements/{sleep_id}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    requests.post(f"{gateway}/sessions/{sid}/statements/{sleep_id}/cancel", json={})
    deadline = time.monotonic() + 60
    while (state := requests.get(f"{gateway}/sessions/{sid}/statements/{sleep_id}").json()["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert text(run_statement(gateway, sid, "21 * 2")).endswith("Int = 42")
    requests.delete(f"{gateway}/sessions/{sid}")


def test_pyspark_session_with_scala_statements(gateway):
    r = requests.post(f"{gateway}/sessions", json={"kind": "pyspark"})
    sid = r.json()["id"]
    assert wait_session(gateway, sid)["state"] == "idle"

    def complete(code: str, kind: str) -> list[str]:
        r = requests.post(f"{gateway}/sessions/{sid}/completion", json={"code": code, "kind": kind})
        assert r.status_code == 200, r.text
        return r.json()["candidates"]

    # No Scala interpreter before the session's first Scala statement: nothing to complete yet.
    assert complete("spark.rang", "spark") == []
    assert text(run_statement(gateway, sid, "spark.range(3).createOrReplaceTempView('pyview')")) == ""
    # The Scala statement sees the session's own SparkSession (its temp view) and runs a job.
    assert text(run_statement(gateway, sid, 'spark.table("pyview").count()', kind="spark")) == "val res0: Long = 3"
    assert text(run_statement(gateway, sid, "spark.range(5).count()", kind="scala")) == "val res1: Long = 5"
    assert text(run_statement(gateway, sid, "spark.range(4).count()")) == "4"  # back to Python
    assert complete("spark.rang", "scala") == ["range"]
    assert complete("spark.rang", "pyspark") == ["spark.range"]
    listing = requests.get(f"{gateway}/sessions/{sid}").json()
    assert listing["kind"] == "pyspark"
    requests.delete(f"{gateway}/sessions/{sid}")
