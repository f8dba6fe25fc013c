"""A hypothesis-driven fuzz of every gateway route: random methods, paths, query
strings, headers and bodies, with valid credentials, against a real gateway
process on a real one-worker cluster (one warm driver; --max-drivers 1 so random
session settings cannot start a JVM each, --max-sessions 8 so the limit is hit,
--max-batches 2).

The properties: no answer is a 5xx, every answer with a body is a JSON object with
a ``msg`` or the route's shape, and the gateway still answers a real statement at
the end. The counts of requests and statuses are printed (pytest -s shows them).
"""

from __future__ import annotations

import collections
import json
import time
import urllib.parse

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_spark_appliance.spark.standalone import start_cluster

from test_livy_security import AUTH, PASSWORD, USER, start_gateway, stop

pytestmark = pytest.mark.spark

FIELDS = ["kind", "proxyUser", "jars", "pyFiles", "files", "driverMemory", "driverCores", "executorMemory",
          "executorCores", "numExecutors", "archives", "queue", "name", "conf", "heartbeatTimeoutInSecond", "ttl",
          "idleTimeout", "code", "file", "className", "args", "from", "size", "cursor"]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
                      st.sampled_from(["pyspark", "spark", "sql", "sparkr", "512m", "1g", "", "\x00", "²", "-1"]))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=12)
livy_body = st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=5)
ident = st.one_of(st.integers(min_value=0, max_value=3).map(str),
                  st.integers(min_value=0, max_value=12).map(str), st.just("9" * 5000), st.just("²"),
                  st.text(min_size=1, max_size=12).map(lambda t: urllib.parse.quote(t, safe="")))
path = st.one_of(
    st.sampled_from(["/sessions", "/version", "/appliance/resources", "/batches", "/", "/sessions/"]),
    st.builds(lambda i, tail: f"/sessions/{i}{tail}", ident,
              st.sampled_from(["", "/state", "/log", "/statements", "/completion", "/"])),
    st.builds(lambda i, j, tail: f"/sessions/{i}/statements/{j}{tail}", ident, ident, st.sampled_from(["", "/cancel"])),
    st.builds(lambda i, tail: f"/batches/{i}{tail}", ident, st.sampled_from(["", "/state", "/log"])),
    st.text(max_size=20).map(lambda t: "/" + urllib.parse.quote(t)),
)
query = st.dictionaries(st.sampled_from(["from", "size", "x"]),
                        st.one_of(st.integers(-5, 10 ** 20).map(str), st.text(max_size=6)), max_size=2)
valid = st.sampled_from([{"kind": "pyspark"}, {"code": "1 + 1"}, {"code": "SELECT 1", "kind": "sql"},
                         {"kind": "pyspark", "conf": {"spark.sql.shuffle.partitions": "3"}}, {},
                         {"code": "1", "kind": "spark"}, {"file": "/nonexistent.py"}],
                        ).map(lambda b: json.dumps(b).encode())
body = st.one_of(st.none(), valid, valid, livy_body.map(lambda b: json.dumps(b).encode()),
                 json_value.map(lambda b: json.dumps(b).encode()), st.binary(max_size=40))
headers = st.fixed_dictionaries({}, optional={
    "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "application/json; charset=utf-8", ""]),
    "X-Requested-By": st.sampled_from(["fuzz", ""]),
})
method = st.sampled_from(["GET", "GET", "GET", "POST", "POST", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"])


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("fuzz-cluster"), workers=1, worker_cores=1)
    proc = None
    try:
        proc, url = start_gateway(cluster.master_url, tmp_path_factory.mktemp("fuzz-gateway"), "--username", USER,
                                  "--max-drivers", "1", "--max-sessions", "8", "--max-batches", "2",
                                  "--master-ui", cluster.ui_url,
                                  env={"LIVY_GATEWAY_PASSWORD": PASSWORD})
        yield url
    finally:
        if proc is not None:
            stop(proc)
        cluster.stop()


def test_fuzz_every_route(fuzz_gateway):
    url = fuzz_gateway
    http = requests.Session()
    http.auth = AUTH
    sid = http.post(f"{url}/sessions", json={"kind": "pyspark"}).json()["id"]
    deadline = time.monotonic() + 240
    while http.get(f"{url}/sessions/{sid}").json()["state"] != "idle":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    seen: collections.Counter[int] = collections.Counter()
    problems: list[str] = []

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(method=method, path=path, query=query, body=body, headers=headers)
    def one_request(method, path, query, body, headers):  # noqa: ANN001
        r = http.request(method, url + path, params=query, data=body, headers=headers, timeout=60)
        seen[r.status_code] += 1
        where = f"{method} {path[:80]} {query} {body[:80] if body else body!r} {headers}"
        if r.status_code >= 500:
            problems.append(f"{r.status_code} for {where}: {r.text[:300]}")
        if method != "HEAD":
            try:
                data = r.json()
            except ValueError:
                problems.append(f"not JSON ({r.status_code}) for {where}: {r.text[:300]}")
                return
            if not isinstance(data, dict) or (r.status_code >= 400 and not isinstance(data.get("msg"), str)):
                problems.append(f"not a Livy body ({r.status_code}) for {where}: {r.text[:300]}")

    one_request()
    total = sum(seen.values())
    print(f"\nfuzz: {total} requests; statuses: {dict(sorted(seen.items()))}")
    assert not problems, problems[:10]
    assert total >= 600 and len(seen) >= 4, seen
    # Still serving: a fresh session's statement on the same driver.
    r = http.post(f"{url}/sessions", json={"kind": "pyspark"})
    if r.status_code == 429:  # the fuzz filled the session limit: make room, as a user would
        for s in http.get(f"{url}/sessions").json()["sessions"]:
            http.delete(f"{url}/sessions/{s['id']}")
        r = http.post(f"{url}/sessions", json={"kind": "pyspark"})
    assert r.status_code == 201, r.text
    new = r.json()["id"]
    deadline = time.monotonic() + 240
    while (state := http.get(f"{url}/sessions/{new}").json()["state"]) != "idle":
        assert state not in ("dead", "error") and time.monotonic() < deadline, state
        time.sleep(0.3)
    stmt = http.post(f"{url}/sessions/{new}/statements", json={"code": "spark.range(7).count()"}).json()
    while stmt["state"] != "available":
        assert time.monotonic() < deadline, stmt
        time.sleep(0.2)
        stmt = http.get(f"{url}/sessions/{new}/statements/{stmt['id']}").json()
    assert stmt["output"]["data"]["text/plain"] == "7"
