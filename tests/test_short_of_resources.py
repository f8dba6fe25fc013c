"""Issue 19 end to end: a full cluster shows in the appliance's model, and one more worker ends the wait.

Real JVMs: a 1-worker, 1-core appliance. One Livy session's long job holds the
only core; a second session with other driver settings gets a driver of its
own, whose statement can get no executor. The model's ``resources`` (asked of
the gateway by the server) says so within seconds, with the gateway's
message; the scale request the panel's and the widget's "Add a worker" button
sends lets the waiting statement finish, and ``resources`` is no longer short.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from test_self_healing import livy_request

pytestmark = pytest.mark.spark


async def until(check, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_full_cluster_says_so_and_one_more_worker_ends_the_wait(api):
    body = {"template": "spark-livy", "id": "full", "workers": 1, "worker_cores": 1, "connect": False}
    assert (await api.call("POST", "appliance", body))[0] == 201
    model = await api.wait_state("full", {"running", "failed"})
    assert model["state"] == "running", model["reason"]
    _, creds = await api.call("GET", "appliance/full/credentials")
    livy, auth = creds["livy"]["url"], (creds["livy"]["username"], creds["livy"]["password"])

    async def idle_session(payload: dict) -> int:
        sid = livy_request(f"{livy}/sessions", "POST", payload, auth)["id"]
        await until(lambda: livy_request(f"{livy}/sessions/{sid}", auth=auth)["state"] == "idle",
                    f"session {sid} idle")
        return sid

    hog = await idle_session({"kind": "pyspark", "executorMemory": "512m"})
    livy_request(f"{livy}/sessions/{hog}/statements", "POST",
                 {"code": "sc.parallelize([0], 1).map(lambda x: __import__('time').sleep(600)).count()"}, auth)
    # Other driver settings: a driver of its own, which finds no free core.
    other = await idle_session({"kind": "pyspark", "executorMemory": "512m", "conf": {"spark.jsa.test": "other"}})
    waiting = livy_request(f"{livy}/sessions/{other}/statements", "POST", {"code": "spark.range(10).count()"}, auth)

    async def short():
        _, m = await api.call("GET", "appliance/full")
        return m if (m.get("resources") or {}).get("short") else None

    model = await until(short, "the model to say the appliance is short of cores", timeout=60)
    res = model["resources"]
    assert res["waiting_sessions"] >= 1 and res["cores_free"] == 0 and res["cores_total"] == 1, res
    assert "scale the workers" in res["message"], res

    # What the "Add a worker" button does: one more worker; the waiting statement then runs.
    code, body = await api.call("PATCH", "appliance/full/container/spark-worker", {"instances": 2})
    assert code == 202, body

    async def done():
        st = livy_request(f"{livy}/sessions/{other}/statements/{waiting['id']}", auth=auth)
        return st if st["state"] in ("available", "error") else None

    st = await until(done, "the waiting statement to finish on the new worker", timeout=300)
    assert st["output"]["status"] == "ok" and st["output"]["data"]["text/plain"] == "10", st

    async def not_short():
        _, m = await api.call("GET", "appliance/full")
        return m if m.get("resources") and not m["resources"]["short"] else None

    await until(not_short, "the model to stop saying it is short", timeout=60)
    assert (await api.call("DELETE", "appliance/full"))[0] == 204
