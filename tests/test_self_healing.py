"""Self-healing for real: instances killed with SIGKILL come back with no request.

Real JVMs on the local backend and real containers on a real Docker engine,
through the real Jupyter server's REST API. The same logic is driven in
milliseconds with a fake backend in test_orchestrator.py; this file proves the
real processes and containers behave as the model says: the master's /json/
lists the expected ALIVE workers again and a Livy statement still runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import urllib.request
import uuid

import pytest

from jupyter_spark_appliance.spark.standalone import alive_workers
from jupyter_spark_appliance.templates import DEFAULT_IMAGES

pytestmark = pytest.mark.spark


def container(model: dict, cid: str) -> dict:
    return next(c for c in model["containers"] if c["id"] == cid)


async def wait_model(api, app_id: str, predicate, what: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    model: dict = {}
    while time.monotonic() < deadline:
        _, model = await api.call("GET", f"appliance/{app_id}")
        if predicate(model):
            return model
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(model)[:3000]}")


def livy_request(url: str, method: str = "GET", body: dict | None = None, auth: tuple[str, str] = ("", "")) -> dict:
    login = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", "X-Requested-By": "test",
                                          "Authorization": f"Basic {login}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


async def livy_statement(livy: str, code: str, auth: tuple[str, str], timeout: float = 240) -> dict:
    """Open a PySpark session, run one statement, close the session; the statement's output."""
    session = livy_request(f"{livy}/sessions", "POST", {"kind": "pyspark", "executorMemory": "512m"}, auth)
    sid = session["id"]
    try:
        deadline = time.monotonic() + timeout
        while livy_request(f"{livy}/sessions/{sid}", auth=auth)["state"] != "idle":
            assert time.monotonic() < deadline, "session never became idle"
            await asyncio.sleep(0.5)
        st = livy_request(f"{livy}/sessions/{sid}/statements", "POST", {"code": code}, auth)
        while st["state"] not in ("available", "error", "cancelled"):
            assert time.monotonic() < deadline, f"statement still {st['state']}"
            await asyncio.sleep(0.5)
            st = livy_request(f"{livy}/sessions/{sid}/statements/{st['id']}", auth=auth)
        return st["output"]
    finally:
        livy_request(f"{livy}/sessions/{sid}", "DELETE", auth=auth)


def restarted_running(cid: str, restarts: int):
    def check(model: dict) -> bool:
        c = container(model, cid)
        return c["restarts"] >= restarts and all(i["state"] == "running" for i in c["instance_states"]) \
            and model["state"] == "running"
    return check


async def kill_and_heal(api, app_id: str, kill) -> None:
    """The scenario of issue 11, for whichever backend ``kill`` SIGKILLs instances of."""
    model = await wait_model(api, app_id, lambda m: m["state"] in ("running", "failed"), "launch", timeout=400)
    assert model["state"] == "running", model["reason"]
    assert alive_workers(model["links"]["spark-ui"]) == 1

    # A worker killed behind our back: restarted with no request, counted, with the reason.
    kill(model, "spark-worker")
    model = await wait_model(api, app_id, restarted_running("spark-worker", 1), "the worker to come back")
    inst = container(model, "spark-worker")["instance_states"][0]
    assert inst["restarts"] == 1 and inst["last_reason"], inst
    assert "SIGKILL" in inst["last_reason"] or "137" in inst["last_reason"], inst["last_reason"]
    model = await wait_model(api, app_id, lambda m: alive_workers(m["links"]["spark-ui"]) == 1,
                             "the replaced worker to register")

    # The master killed: it comes back on its ports, Livy restarts with it (its drivers'
    # applications lived in the old master), the worker registers again.
    def ports(m: dict, cid: str) -> dict[int, int]:
        return {e["container_port"]: e["host_port"] for e in container(m, cid)["instance_states"][0]["endpoints"]}

    before = {cid: ports(model, cid) for cid in ("spark-master", "livy")}
    kill(model, "spark-master")
    model = await wait_model(api, app_id, restarted_running("spark-master", 1), "the master to come back")
    master = container(model, "spark-master")["instance_states"][0]
    assert master["restarts"] == 1 and master["last_reason"], master
    model = await wait_model(api, app_id, lambda m: m["state"] == "running" and "spark-ui" in m["links"]
                             and alive_workers(m["links"]["spark-ui"]) == 1, "the worker to re-register", 300)
    assert container(model, "livy")["restarts"] >= 1
    # Both replacements are where they were: the workers' master URL and Sparkmagic's Livy URL still hold.
    assert {cid: ports(model, cid) for cid in before} == before, before
    _, creds = await api.call("GET", f"appliance/{app_id}/credentials")
    login = (creds["livy"]["username"], creds["livy"]["password"])
    output = await livy_statement(creds["livy"]["url"], "spark.range(10).count()", login)
    assert output["status"] == "ok" and output["data"]["text/plain"] == "10", output


async def test_local_instances_killed_with_sigkill_come_back(api, appliance_data_dir):
    app_id = f"heal-{uuid.uuid4().hex[:6]}"
    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "id": app_id, "workers": 1,
                                                      "connect": False})  # one JVM fewer: not this test's subject
    assert code == 201, body

    def kill(model: dict, cid: str) -> None:
        record = json.loads((appliance_data_dir / app_id / "record.json").read_text())
        os.kill(record["instances"][cid][0]["handle"]["pid"], signal.SIGKILL)

    try:
        await kill_and_heal(api, app_id, kill)
    finally:
        assert (await api.call("DELETE", f"appliance/{app_id}"))[0] in (204, 404)


@pytest.mark.docker
async def test_docker_containers_killed_come_back_and_a_crash_loop_backs_off(api, docker_engine,
                                                                            appliance_data_dir):
    app_id = f"heal-{uuid.uuid4().hex[:6]}"
    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "id": app_id, "backend": "docker",
                                                      "workers": 1, "connect": False})
    assert code == 201, body

    def kill(model: dict, cid: str) -> None:
        record = json.loads((appliance_data_dir / app_id / "record.json").read_text())
        docker_engine.containers.get(record["instances"][cid][0]["handle"]["container_id"]).kill()  # SIGKILL

    try:
        await kill_and_heal(api, app_id, kill)
    finally:
        assert (await api.call("DELETE", f"appliance/{app_id}"))[0] in (204, 404)

    # A container whose command always fails (after it was up) backs off, shows why, and
    # does not spin: starts are spaced 1, 2, 4 ... s apart.
    loop_id = f"loop-{uuid.uuid4().hex[:6]}"
    spec = {"id": loop_id, "backend": "docker", "containers": [
        {"id": "flaky", "type": "service", "image": DEFAULT_IMAGES["spark-master"],
         "resources": {"cpus": 0.5, "mem": 128}, "cmd": "sleep 2; echo giving up >&2; exit 3"}]}
    assert (await api.call("POST", "appliance", spec))[0] == 201
    try:
        model = await wait_model(api, loop_id, lambda m: container(m, "flaky")["restarts"] >= 3,
                                 "three restarts", timeout=180)
        inst = container(model, "flaky")["instance_states"][0]
        assert "3" in inst["last_reason"] and "giving up" in inst["last_reason"], inst
        started = time.monotonic()
        model = await wait_model(api, loop_id, lambda m: container(m, "flaky")["instance_states"][0]["restart_at"]
                                 is not None, "a back-off", timeout=60)
        inst = container(model, "flaky")["instance_states"][0]
        assert inst["state"] == "pending" and "restarting in" in inst["reason"], inst
        # Back-off bounds the starts: from restart 3 on, at least 2 + 4 s pass before restart 5.
        count = container(model, "flaky")["restarts"]
        await asyncio.sleep(4)
        _, model = await api.call("GET", f"appliance/{loop_id}")
        assert container(model, "flaky")["restarts"] <= count + 2, (count, time.monotonic() - started)
    finally:
        assert (await api.call("DELETE", f"appliance/{loop_id}"))[0] in (204, 404)
