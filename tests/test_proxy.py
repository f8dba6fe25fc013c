"""Every UI through the Jupyter server's URL, under its auth (issue 15), against real JVMs.

A real Jupyter server with a non-root base URL (as JupyterHub gives one,
``/user/alice/``), a real spark-livy appliance on the local backend: the
master's UI, a worker's page and an application's jobs page come through the
server's proxy with every link under that prefix; Livy is reached through it
with Jupyter's token alone; a running job's progress is seen moving; nothing
is served without a Jupyter login.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

pytestmark = pytest.mark.spark
BASE = "/user/alice/"
APP = "proxied"
PREFIX = f"{BASE}spark-appliance/appliance/{APP}/"


@pytest.fixture
def jp_base_url():
    return BASE


@pytest.fixture
def server(jp_serverapp):
    return {"origin": f"http://127.0.0.1:{jp_serverapp.port}", "token": jp_serverapp.identity_provider.token}


async def http(server: dict[str, str], method: str, path: str, body: Any = None, token: bool = True,
               headers: dict[str, str] | None = None) -> HTTPResponse:
    """One request to the Jupyter server (no redirect followed)."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"token {server['token']}"
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    data = json.dumps(body) if body is not None else (b"" if method == "POST" else None)
    return await AsyncHTTPClient().fetch(server["origin"] + path, method=method, headers=h, body=data,
                                         follow_redirects=False, raise_error=False, request_timeout=120)


async def get_json(server: dict[str, str], path: str) -> Any:
    r = await http(server, "GET", path)
    assert r.code == 200, (path, r.code, r.body[:500])
    return json.loads(r.body)


async def until(what: str, check, timeout: float = 240.0, interval: float = 0.5) -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"gave up waiting for {what}; last: {last!r}")


def local_links(page: str) -> set[str]:
    """Every href/src of a page that stays on this server (absolute paths)."""
    return {u for u in re.findall(r'(?:href|src)="(/[^"]*)"', page)}


async def livy_session(server: dict[str, str]) -> str:
    """A PySpark session through the proxy, with Jupyter's token only: the proxy logs in to the gateway."""
    r = await http(server, "POST", PREFIX + "livy/sessions", {"kind": "pyspark"})
    assert r.code == 201, r.body
    session = json.loads(r.body)
    assert r.headers["Location"] == f"{PREFIX}livy/sessions/{session['id']}"
    url = f"{PREFIX}livy/sessions/{session['id']}"

    async def idle() -> Any:
        state = (await get_json(server, url))["state"]
        assert state not in ("dead", "error", "killed"), state
        return state == "idle"

    await until("the Livy session to be idle", idle)
    return url


async def statement(server: dict[str, str], session: str, code: str) -> dict[str, Any]:
    r = await http(server, "POST", session + "/statements", {"code": code})
    assert r.code == 201, r.body
    url = f"{session}/statements/{json.loads(r.body)['id']}"

    async def done() -> Any:
        st = await get_json(server, url)
        return st if st["state"] == "available" else None

    return await until("the statement", done, timeout=300)


async def test_every_ui_through_the_jupyter_server_under_its_base_url(api, server):
    code, model = await api.call("POST", "appliance", {"template": "spark-livy", "id": APP, "workers": 1,
                                                       "connect": False, "backend": "local"})
    assert code == 201, model
    model = await api.wait_state(APP, {"running", "failed"})
    assert model["state"] == "running", model["reason"]
    assert model["ui"] == {"spark-ui": PREFIX + "sparkui/", "livy": PREFIX + "livy/",
                           "worker-ui": PREFIX + "workerui/0/"}
    # The raw endpoints stay as they are (host and port on this machine).
    assert model["links"]["spark-ui"].startswith("http://127.0.0.1:")

    # The master's page: Spark's reverse proxy put every link under the prefix.
    async def master_lists_the_worker() -> Any:
        r = await http(server, "GET", PREFIX + "sparkui/")
        assert r.code == 200, r.body[:300]
        page = r.body.decode()
        return page if "/proxy/worker-" in page else None

    page = await until("the master to list its worker", master_lists_the_worker)
    links = local_links(page)
    assert links and all(u.startswith(PREFIX + "sparkui") for u in links), sorted(links)
    assert any(u.startswith(PREFIX + "sparkui/static/") for u in links)
    workers = sorted(u for u in links if "/proxy/worker-" in u)
    assert len(workers) == 1
    r = await http(server, "GET", PREFIX + "sparkui/static/webui.css")
    assert r.code == 200 and r.headers["Content-Type"].startswith("text/css")

    # The model's worker link redirects to the master's proxy of that worker; its page links stay under the prefix.
    r = await http(server, "GET", model["ui"]["worker-ui"])
    assert r.code == 302 and r.headers["Location"].rstrip("/") == workers[0].rstrip("/")
    r = await http(server, "GET", r.headers["Location"])
    assert r.code == 200 and "<title>Spark Worker at 127.0.0.1:" in r.body.decode()
    assert all(u.startswith(PREFIX + "sparkui") for u in local_links(r.body.decode()))

    # Livy through the proxy, with Jupyter's token only; a statement runs.
    session = await livy_session(server)
    out = await statement(server, session, "spark.range(100).count()")
    assert out["output"]["status"] == "ok" and out["output"]["data"]["text/plain"] == "100", out

    # The gateway's driver is a running application, with its UI under the prefix.
    async def gateway_app_done() -> dict[str, Any] | None:
        # Spark's status store hears of the job's end on its listener thread, after the statement
        # has its result: the latest job may still read RUNNING for a moment. And on a loaded
        # machine the driver's UI may not answer through the master yet ("error" says so).
        apps = (await get_json(server, PREFIX + "applications"))["applications"]
        app = next(a for a in apps if a["name"].startswith("livy-gateway"))
        return app if app["jobs"] and app["jobs"][0]["status"] != "RUNNING" and app["error"] is None else None

    gateway = await until("the count() job to end in the gateway's application", gateway_app_done, timeout=30)
    assert gateway["ui"] == f"{PREFIX}sparkui/proxy/{gateway['id']}/" and gateway["error"] is None
    assert gateway["jobs"][0]["status"] == "SUCCEEDED"  # the count() above, the latest job
    assert gateway["jobs"][0]["progress"]["progress"] == 1.0
    r = await http(server, "GET", gateway["ui"])
    assert r.code == 302 and r.headers["Location"] == f"{gateway['ui']}jobs/"
    r = await http(server, "GET", r.headers["Location"])
    jobs_page = r.body.decode()
    assert r.code == 200 and "Spark Jobs" in jobs_page
    assert all(u.startswith(PREFIX + "sparkui") for u in local_links(jobs_page)), sorted(local_links(jobs_page))

    # A long job's progress moves: values strictly between 0 and 1, then done.
    long = asyncio.ensure_future(statement(server, session, (
        "import time\n"
        "sc.setJobDescription('slow')\n"
        "spark.sparkContext.parallelize(range(40), 40).map(lambda x: time.sleep(0.4) or x).sum()")))
    seen: list[float] = []

    async def finished() -> Any:
        for a in (await get_json(server, PREFIX + "applications"))["applications"]:
            for j in a["jobs"]:
                if j["progress"]["tasks"] == 40:
                    if j["status"] == "RUNNING":
                        seen.append(j["progress"]["progress"])
                    elif j["status"] == "SUCCEEDED":
                        return j
        return None

    job = await until("the 40-task job to finish", finished, timeout=300, interval=0.3)
    assert (await long)["output"]["data"]["text/plain"] == str(sum(range(40)))
    assert any(0 < p < 1 for p in seen), seen
    assert seen == sorted(seen), seen  # never going back
    assert job["progress"] == {"tasks": 40, "done": 40, "active": 0, "failed": 0, "progress": 1.0}

    # DELETE through the proxy ends the session, as Livy's own DELETE does.
    r = await http(server, "DELETE", session)
    assert (r.code, json.loads(r.body)) == (200, {"msg": "deleted"}), r.body
    assert (await http(server, "GET", session)).code == 404
    sessions = (await get_json(server, PREFIX + "livy/sessions"))["sessions"]
    assert session.rsplit("/", 1)[1] not in [str(s["id"]) for s in sessions], sessions

    # Without a Jupyter login nothing is served: pages redirect to the login, the API and Livy are refused.
    for path in ("sparkui/", model["ui"]["worker-ui"][len(PREFIX):], "applications", "livy/sessions"):
        r = await http(server, "GET", PREFIX + path, token=False)
        assert r.code in (302, 403), (path, r.code)
        if r.code == 302:
            assert urlsplit(r.headers["Location"]).path == f"{BASE}login", r.headers["Location"]
        assert b"Spark" not in r.body and b"sessions" not in r.body
    r = await http(server, "POST", PREFIX + "livy/sessions", {"kind": "pyspark"}, token=False)
    assert r.code == 403
    r = await http(server, "GET", PREFIX + "sparkui/", token=False, headers={"Authorization": "token wrong"})
    assert r.code in (302, 403)


async def test_proxy_errors_are_clear_json(api, server):
    r = await http(server, "GET", f"{BASE}spark-appliance/appliance/nothing-here/sparkui/")
    assert r.code == 404 and json.loads(r.body)["message"] == "no appliance with id 'nothing-here'"
    r = await http(server, "GET", f"{BASE}spark-appliance/appliance/nothing-here/applications")
    assert r.code == 404 and json.loads(r.body)["message"] == "no appliance with id 'nothing-here'"
    # A master alone: no Livy to proxy, said so; no application yet.
    code, body = await api.call("POST", "appliance", {"id": "lonely", "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
         "ports": [{"container_port": 8080, "name": "spark-ui"}, {"container_port": 7077}]}]})
    assert code == 201, body
    assert (await api.wait_state("lonely", {"running", "failed"}))["state"] == "running"
    r = await http(server, "GET", f"{BASE}spark-appliance/appliance/lonely/livy/sessions")
    assert r.code == 503 and json.loads(r.body)["message"] == "appliance 'lonely' has no running Livy"
    r = await http(server, "GET", f"{BASE}spark-appliance/appliance/lonely/workerui/0/")
    assert r.code == 404 and json.loads(r.body)["message"] == "appliance 'lonely' has no running worker instance 0"
    body = await get_json(server, f"{BASE}spark-appliance/appliance/lonely/applications")
    assert body == {"appliance": "lonely", "applications": [], "error": None}
    # Not a template's appliance: Spark runs without the reverse proxy, so the model offers no proxied UI.
    assert (await api.call("GET", "appliance/lonely"))[1]["ui"] == {}
    assert (await api.call("DELETE", "appliance/lonely"))[0] == 204
    r = await http(server, "GET", f"{BASE}spark-appliance/appliance/lonely/sparkui/")
    assert r.code == 404 and json.loads(r.body)["message"] == "no appliance with id 'lonely'"
