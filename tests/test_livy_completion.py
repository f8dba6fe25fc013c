"""``POST /sessions/{id}/completion`` (issue 14 item 5) for PySpark sessions, against the real
gateway and its real driver: Livy's ``{code, kind, cursor}`` -> ``{"candidates": [...]}``,
completed in the session's own namespace (rlcompleter, as in Livy's Python REPL), from a
thread apart from the session's, so a session busy with a statement still completes.

Scala completion is in test_livy_scala.py (it needs a Scala interpreter).
"""

from __future__ import annotations

import time

import pytest
import requests

from jupyter_spark_appliance.spark.standalone import start_cluster

from test_livy_gateway import _start_gateway, run_statement, wait_session

pytestmark = pytest.mark.spark

KINDS = "pyspark, python, spark, scala or sql"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("cluster"), workers=1, worker_cores=1)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def gateway(cluster, tmp_path_factory):
    # No warm driver: the first session waits for its driver, so it is "starting" for a while.
    proc, url = _start_gateway(cluster, tmp_path_factory.mktemp("gateway"), "--no-warm",
                               "--master-ui", cluster.ui_url)
    yield url
    proc.terminate()
    proc.wait(60)


def complete(url: str, sid: int, body) -> requests.Response:
    return requests.post(f"{url}/sessions/{sid}/completion", json=body, timeout=60)


def candidates(url: str, sid: int, **body) -> list[str]:
    r = complete(url, sid, body)
    assert r.status_code == 200, r.text
    return r.json()["candidates"]


def test_pyspark_completion(gateway):
    r = requests.post(f"{gateway}/sessions", json={"kind": "pyspark"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    # Livy completes only in a running session (InteractiveSession.ensureRunning), with its words.
    r = complete(gateway, sid, {"code": "x", "kind": "pyspark", "cursor": 1})
    assert (r.status_code, r.json()) == (400, {"msg": "Session is in state starting"})
    assert wait_session(gateway, sid)["state"] == "idle"

    assert run_statement(gateway, sid, "import time\nx_value = 1\nx_other = 2")["output"]["status"] == "ok"
    assert candidates(gateway, sid, code="x_va", kind="pyspark", cursor=4) == ["x_value"]
    assert candidates(gateway, sid, code="x_", kind="python", cursor=2) == ["x_value", "x_other"]
    assert candidates(gateway, sid, code="spark.rang", kind="pyspark", cursor=10) == ["spark.range"]
    assert candidates(gateway, sid, code="sc.paralleli", kind="pyspark", cursor=12) == ["sc.parallelize"]
    # The token before the cursor, wherever the cursor is; kind and cursor default to the
    # session's kind and the end of the code.
    assert candidates(gateway, sid, code="y = x_va + 1", kind="pyspark", cursor=8) == ["x_value"]
    assert candidates(gateway, sid, code="print(x_va") == ["x_value"]
    # The cursor counts UTF-16 code units, as Livy's (JVM) clients count: the emoji is 2.
    assert candidates(gateway, sid, code="s = '\U0001f600'; x_va", cursor=14) == ["x_value"]
    assert candidates(gateway, sid, code="x_value + ", kind="pyspark", cursor=10) == []
    assert candidates(gateway, sid, code="SELECT x_va", kind="sql", cursor=11) == []  # as Livy's SQL interpreter

    # Bad input: 400 naming the field.
    bad = [
        ({"kind": "pyspark", "cursor": 0}, "code: a string is required"),
        ({"code": 5, "kind": "pyspark", "cursor": 0}, "code: a string is required"),
        ({"code": "x_va", "cursor": "4"}, "cursor: must be an integer from 0 to 4 (the length of code)"),
        ({"code": "x_va", "cursor": 5}, "cursor: must be an integer from 0 to 4 (the length of code)"),
        ({"code": "x_va", "cursor": -1}, "cursor: must be an integer from 0 to 4 (the length of code)"),
        ({"code": "x_va", "cursor": True}, "cursor: must be an integer from 0 to 4 (the length of code)"),
        ({"code": "x_va", "cursor": 4, "kind": "sparkr"}, f"kind: 'sparkr' is not supported: use {KINDS}"),
        ({"code": "x_va", "cursor": 4, "kind": "cobol"}, f"kind: 'cobol' is not supported: use {KINDS}"),
        ({"code": "x_va", "cursor": 4, "kind": 3}, f"kind: must be a string ({KINDS})"),
        ([1], "the request body must be a JSON object, not list"),
    ]
    for body, msg in bad:
        r = complete(gateway, sid, body)
        assert (r.status_code, r.json()) == (400, {"msg": msg}), body
    r = complete(gateway, 987654, {"code": "x", "cursor": 1})
    assert (r.status_code, r.json()) == (404, {"msg": "Session '987654' not found."})

    # A busy session completes: the answer comes from a thread apart from the statement's.
    # `time` was imported by an earlier statement: "running" is set just before the code runs, so
    # an import in this one could still be ahead of the completion request (stop 24's CI).
    sleeper = "for _ in range(3000):\n    time.sleep(0.1)"  # a cancel interrupts it between sleeps
    r = requests.post(f"{gateway}/sessions/{sid}/statements", json={"code": sleeper})
    busy = r.json()["id"]
    deadline = time.monotonic() + 120
    while requests.get(f"{gateway}/sessions/{sid}/statements/{busy}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert candidates(gateway, sid, code="x_va", kind="pyspark", cursor=4) == ["x_value"]
    assert candidates(gateway, sid, code="time.slee", kind="pyspark", cursor=9) == ["time.sleep"]
    assert requests.get(f"{gateway}/sessions/{sid}/statements/{busy}").json()["state"] == "running"
    assert requests.get(f"{gateway}/sessions/{sid}").json()["state"] == "busy"
    requests.post(f"{gateway}/sessions/{sid}/statements/{busy}/cancel", json={})
    deadline = time.monotonic() + 60
    while (state := requests.get(f"{gateway}/sessions/{sid}/statements/{busy}").json()["state"]) != "cancelled":
        assert time.monotonic() < deadline, state
        time.sleep(0.2)

    assert requests.delete(f"{gateway}/sessions/{sid}").json() == {"msg": "deleted"}
    r = complete(gateway, sid, {"code": "x_va", "cursor": 4})
    assert (r.status_code, r.json()) == (404, {"msg": f"Session '{sid}' not found."})
