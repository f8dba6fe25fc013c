"""Issue 19 end to end: a full cluster shows in the appliance's model, in a Sparkmagic cell, and one
more worker ends the wait.

Real JVMs: a 1-worker, 1-core appliance whose Livy gives up on a statement after
waiting 30 s for cluster resources (the template's ``resource_wait_limit``). One
Livy session's long job, on a driver of its own, holds the only core. A second
session with other driver settings gets another driver, whose statement can get no
executor, and so does a real Sparkmagic ``pysparkkernel`` cell (a default
session, on the gateway's warm driver). The model's ``resources`` (asked of the gateway by the
server) says so within seconds, with the gateway's message, and so does the notebook widget
(its words and its "Add a worker" button shown); both statements end
with that message and the limit, which is what the Sparkmagic cell prints; the
scale request the panel's and the widget's "Add a worker" button sends lets the
statement run again and finish, and ``resources`` is no longer short.
"""

from __future__ import annotations

import asyncio
import html
import os
import time

import pytest
import sparkmagic

from jupyter_spark_appliance.client import ApplianceClient
from jupyter_spark_appliance.widgets import ApplianceView

from kernels import run_kernel_process
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


async def test_a_full_cluster_says_so_and_one_more_worker_ends_the_wait(api, sparkmagic_conf_dir, jp_serverapp,
                                                                         jp_base_url):
    limit = 30
    body = {"template": "spark-livy", "id": "full", "workers": 1, "worker_cores": 1, "connect": False,
            "resource_wait_limit": limit}
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

    hog = await idle_session({"kind": "pyspark", "conf": {"spark.jsa.test": "hog"}})  # a driver of its own
    livy_request(f"{livy}/sessions/{hog}/statements", "POST",
                 {"code": "sc.parallelize([0], 1).map(lambda x: __import__('time').sleep(900)).count()"}, auth)
    await until(lambda: livy_request(f"{livy}/sessions/{hog}/statements/0", auth=auth)["progress"] == 0
                and livy_request(f"{livy}/appliance/resources", auth=auth)["cores_free"] == 0,
                "the long job to hold the only core")
    # Other driver settings: a driver of its own, which finds no free core.
    other = await idle_session({"kind": "pyspark", "executorMemory": "512m", "conf": {"spark.jsa.test": "other"}})
    waiting = livy_request(f"{livy}/sessions/{other}/statements", "POST", {"code": "spark.range(10).count()"}, auth)
    # A notebook user meanwhile: Sparkmagic's own kernel, a default session, whose driver gets no executor either.
    cell = asyncio.create_task(run_kernel_process(
        "pysparkkernel", ["spark.range(10).count()"], env={"SPARKMAGIC_CONF_DIR": str(sparkmagic_conf_dir)},
        kernel_dirs=[os.path.join(os.path.dirname(sparkmagic.__file__), "kernels")]))

    # The notebook widget (%spark_appliance status) reads the model: it polls here, so what it shows
    # is checked against the very model it rendered. (In this process, in a thread: its client blocks.)
    client = ApplianceClient(f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}",
                             jp_serverapp.identity_provider.token)
    view = await asyncio.to_thread(ApplianceView, client, "full", "spark-worker", 3600.0)

    async def short():
        m = await asyncio.to_thread(view.refresh)
        return m if (m.get("resources") or {}).get("short") else None

    # "short" holds from the notice (3 s into the wait) until the give-up: a generous deadline
    # cannot pass it by, and on a loaded machine the driver's first job may take a while to exist.
    model = await until(short, "the model to say the appliance is short of cores", timeout=3 * limit)
    res = model["resources"]
    assert res["waiting_sessions"] >= 1 and res["cores_free"] == 0 and res["cores_total"] == 1, res
    assert "scale the workers" in res["message"], res
    # The widget says the same, with its "Add a worker" button shown beside the words.
    assert view.short_box.layout.display == "flex" and view.short.value == html.escape(res["message"])
    assert view.short_box.children == (view.short, view.add_worker) and view.add_worker.description == "Add a worker"

    def statement(sid: int, stmt: int):
        st = livy_request(f"{livy}/sessions/{sid}/statements/{stmt}", auth=auth)
        return st if st["state"] in ("available", "error", "cancelled") else None

    # Past the limit the statement ends, as Livy's failed statements do, with the reason and what to do.
    st = await until(lambda: statement(other, waiting["id"]), "the waiting statement to give up", timeout=4 * limit)
    out = st["output"]
    assert st["state"] == "available" and out["status"] == "error", st
    assert out["ename"] == "ClusterResourcesUnavailable", out
    assert out["evalue"].startswith("waiting for cluster resources: 0 of 1 core free"), out
    assert f"Gave up after {limit} s" in out["evalue"] and "Add a worker" in out["evalue"], out
    session_log = livy_request(f"{livy}/sessions/{other}/log", auth=auth)["log"]
    assert f"statement {waiting['id']}: cancelled after waiting {limit} s for cluster resources" in session_log
    # What the Sparkmagic cell printed: the same words (Sparkmagic prints an error's evalue).
    printed = (await asyncio.wait_for(cell, 600))[0]
    assert "waiting for cluster resources: 0 of 1 core free" in printed and "scale the workers" in printed, printed
    assert f"Gave up after {limit} s" in printed, printed

    # What the "Add a worker" button does: one more worker; the statement, run again, finishes.
    code, body = await api.call("PATCH", "appliance/full/container/spark-worker", {"instances": 2})
    assert code == 202, body
    # The new core is free: the statements that gave up left no Spark job behind asking for it.
    await until(lambda: (r := livy_request(f"{livy}/appliance/resources", auth=auth))["cores_total"] == 2
                and r["cores_free"] >= 1, "the second worker's core to be free", timeout=120)
    again = livy_request(f"{livy}/sessions/{other}/statements", "POST", {"code": "spark.range(10).count()"}, auth)
    st = await until(lambda: statement(other, again["id"]), "the statement to run on the new worker", timeout=300)
    assert st["output"]["status"] == "ok" and st["output"]["data"]["text/plain"] == "10", st["output"].get("evalue")

    async def not_short():
        m = await asyncio.to_thread(view.refresh)
        return m if m.get("resources") and not m["resources"]["short"] else None

    await until(not_short, "the model to stop saying it is short", timeout=60)
    assert view.short_box.layout.display == "none" and view.short.value == ""  # as it rendered that model
    view.close()
    assert (await api.call("DELETE", "appliance/full"))[0] == 204
