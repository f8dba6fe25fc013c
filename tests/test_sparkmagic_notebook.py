"""Issue 14 item 4: the seed appliance's fourth container, a Sparkmagic notebook, as PIVOT writes it.

The whole four-container seed (tests/data/pivot-spark-livy-sparkmagic.json: the
design document's JSON, commas fixed) is POSTed as it is, image names,
``is_privileged: true`` and ``--NotebookApp.token=""`` included. It runs on
the local backend (real JVMs, the project's own Jupyter server for the
notebook); a user who holds only the outer Jupyter's login then opens the
notebook through the server's proxy, starts Sparkmagic's ``pysparkkernel``
there (REST, then the kernel's websocket channels through the proxy) and runs
a Spark statement on the appliance. The same on Docker with the project's images.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest
from tornado.httpclient import AsyncHTTPClient

from jupyter_spark_appliance.spark.notebook_server import OWN_LABEXTENSION, SERVER_CONFIG

from appliance_processes import record_pids, wait_gone

SEED = (Path(__file__).parent / "data" / "pivot-spark-livy-sparkmagic.json").read_text()
CELL = "spark.range(10).count()"
APP = json.loads(SEED)["id"]


def seed_on_docker(app_id: str) -> dict[str, Any]:
    """The seed with the project's images (no registry here has heliumdatacommons'), and a smaller worker."""
    from jupyter_spark_appliance.templates import DEFAULT_IMAGES

    doc = json.loads(SEED)
    doc["id"] = app_id
    for c in doc["containers"]:
        c["image"] = DEFAULT_IMAGES[c["id"]]
        if c["id"] == "spark-worker":
            c["resources"] = {"cpus": 1, "mem": 1024}  # the seed's 4 CPUs and 4 GB are more than 2 cores have
    return doc


def execute_request(code: str, session: str) -> tuple[str, str]:
    """A kernel message (Jupyter's JSON websocket format, no subprotocol) and its msg_id."""
    msg_id = uuid.uuid4().hex
    msg = {"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                      "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
           "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
           "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                       "allow_stdin": False}}
    return json.dumps(msg), msg_id


async def run_cell(ws: Any, code: str, timeout: float = 900) -> tuple[str, str]:
    """Run ``code`` over the kernel's channels; (its stdout, its execute_reply status)."""
    text, msg_id = execute_request(code, uuid.uuid4().hex)
    await ws.write_message(text)
    out: list[str] = []
    status = ""
    idle = False
    deadline = time.monotonic() + timeout
    while not (idle and status):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no reply to {code!r} in {timeout} s; got {out}"
        raw = await asyncio.wait_for(ws.read_message(), remaining)
        assert raw is not None, f"the kernel's websocket closed; got {out}"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content.get("name") == "stdout":
            out.append(content["text"])
        elif kind == "error":
            out.append("ERROR " + "\n".join(content["traceback"]))
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    return "".join(out), status


def descendants(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            out += [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return out


async def open_lab(jp_fetch: Any, parts: tuple[str, ...], path: str) -> None:
    """JupyterLab is the notebook's frontend: its page through the proxy, configured for the proxy's path.

    What a browser gets at ``ui.notebook`` + ``lab``: the page, whose config sends every request
    of the frontend under the proxy's path, with this project's own panel turned off (it has no
    server extension in there), and its scripts, which load through the proxy too.
    """
    r = await jp_fetch(*parts, "lab")
    page = r.body.decode()
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
    assert r.code == 200 and found, page[:2000]
    config = json.loads(found.group(1))
    assert config["appName"] == "JupyterLab" and config["baseUrl"] == path, config
    assert OWN_LABEXTENSION in config["disabledExtensions"], config["disabledExtensions"]
    scripts = [src for src in re.findall(r'<script[^>]*\ssrc="([^"]+)"', page) if src.startswith(path)]
    assert scripts, page[:2000]
    for src in scripts:
        js = await jp_fetch(*parts, *src[len(path):].split("?")[0].split("/"))
        assert js.code == 200 and len(js.body) > 1000 and "javascript" in js.headers["Content-Type"], src


async def use_the_notebook(jp_fetch: Any, jp_ws_fetch: Any, jp_auth_header: dict[str, str], app_id: str,
                           model: dict[str, Any], jp_base_url: str) -> None:
    """What a user who holds only the outer Jupyter's login does with the notebook: a Spark cell."""
    path = f"{jp_base_url}spark-appliance/appliance/{app_id}/notebook/"
    assert model["ui"]["notebook"] == path
    # Its own link (for a user on this machine) carries a token of its own: never the seed's empty one.
    link = urlsplit(model["links"]["notebook"])
    (token,) = parse_qs(link.query)["token"]
    assert len(token) == 64 and link.path == path
    direct = f"{link.scheme}://{link.netloc}{path}api/status"
    refused = await AsyncHTTPClient().fetch(direct, raise_error=False)
    assert refused.code == 403  # the seed's --NotebookApp.token="" did not turn its authentication off
    ok = await AsyncHTTPClient().fetch(direct, headers={"Authorization": f"token {token}"}, raise_error=False)
    assert ok.code == 200, ok.body

    parts = ("spark-appliance", "appliance", app_id, "notebook")
    # Without the outer Jupyter's login: refused (a page's GET goes to the login page, the API's POST is a 403).
    anonymous = {"Authorization": ""}
    r = await jp_fetch(*parts, "api", "kernels", method="POST", body=json.dumps({"name": "pysparkkernel"}),
                       headers=anonymous, raise_error=False)
    assert r.code == 403
    r = await jp_fetch(*parts, "api", "status", headers=anonymous, raise_error=False, follow_redirects=False)
    assert r.code == 302 and "/login" in r.headers["Location"]
    # With it: the notebook server's API, through the proxy. A browser logged in by URL (?token=
    # the outer Jupyter's) gets through too: the proxy drops that token, which the notebook
    # server would otherwise take for its own and refuse.
    outer_token = jp_auth_header["Authorization"].split(" ", 1)[1]
    r = await jp_fetch(*parts, "api", "status", headers=anonymous, params={"token": outer_token})
    assert r.code == 200
    r = await jp_fetch(*parts, "api", "kernelspecs")
    assert {"pysparkkernel", "sparkkernel"} <= set(json.loads(r.body)["kernelspecs"])
    # The notebook server does not run this extension itself.
    r = await jp_fetch(*parts, "spark-appliance", "templates", raise_error=False)
    assert r.code == 404
    await open_lab(jp_fetch, parts, path)

    r = await jp_fetch(*parts, "api", "kernels", method="POST", body=json.dumps({"name": "pysparkkernel"}))
    assert r.code == 201
    kernel = json.loads(r.body)["id"]
    with pytest.raises(Exception) as refused_ws:  # noqa: PT011 - tornado raises HTTPClientError or WebSocketError
        await jp_ws_fetch(*parts, "api", "kernels", kernel, "channels", headers=anonymous)
    assert "403" in str(refused_ws.value)
    ws = await jp_ws_fetch(*parts, "api", "kernels", kernel, "channels")
    try:
        out, status = await run_cell(ws, CELL)
    finally:
        ws.close()
    assert status == "ok", out
    # Sparkmagic prints the session's start, then the statement's result: exactly 10.
    assert out.strip().splitlines()[-1] == "10", out
    r = await jp_fetch(*parts, "api", "kernels", kernel, method="DELETE")
    assert r.code == 204


@pytest.mark.spark
async def test_the_seed_with_its_notebook_runs_spark_on_local(api, jp_fetch, jp_ws_fetch, jp_base_url,
                                                               jp_auth_header, appliance_data_dir):
    code, model = await api.call("POST", "appliance", raw=SEED.encode())  # as written, id and all
    assert code == 201, model
    model = await api.wait_state(APP, {"running", "failed"}, timeout=400)
    assert model["state"] == "running", model["reason"]
    roles = {c["id"]: c["role"] for c in model["containers"]}
    assert roles["sparkmagic"] == "sparkmagic"
    # What the seed asked for and did not get says so.
    assert "containers[3].is_privileged: not granted; 'sparkmagic' runs as the project's sparkmagic role, " \
           "which needs no privilege" in model["warnings"]
    assert any(w.startswith("containers[3].args: ignored") for w in model["warnings"])

    # Its kernels' Sparkmagic config points at the appliance's Livy (@livy resolved to Livy's real
    # port) with its Basic credentials, in a file only this user reads.
    config_file = appliance_data_dir / APP / "work" / "sparkmagic-0" / "sparkmagic" / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    config = json.loads(config_file.read_text())
    _, creds = await api.call("GET", f"appliance/{APP}/credentials")
    for key in ("kernel_python_credentials", "kernel_scala_credentials"):
        assert config[key] == {"url": model["links"]["livy"], "username": creds["livy"]["username"],
                               "password": creds["livy"]["password"], "auth": "Basic_Access"}

    # Its Jupyter files are its own, in its work dir: its server config (with this extension off), and
    # its runtime dir, where the server wrote its own runtime file (not into the user's).
    work = config_file.parent.parent
    server_config = json.loads((work / "jupyter" / SERVER_CONFIG).read_text())
    assert server_config["ServerApp"]["jpserver_extensions"]["jupyter_spark_appliance"] is False
    assert list((work / "jupyter" / "runtime").glob("jpserver-*.json")), list((work / "jupyter").rglob("*"))

    await use_the_notebook(jp_fetch, jp_ws_fetch, jp_auth_header, APP, model, jp_base_url)

    pids = record_pids(appliance_data_dir, APP)
    pids += descendants(pids)
    assert (await api.call("DELETE", f"appliance/{APP}"))[0] == 204
    assert wait_gone(pids) == []


@pytest.mark.docker
async def test_the_seed_with_its_notebook_runs_spark_on_docker(api, jp_fetch, jp_ws_fetch, jp_base_url,
                                                                jp_auth_header, docker_engine):
    from jupyter_spark_appliance.backends.docker import LABEL

    doc = {**seed_on_docker("dockseed"), "backend": "docker"}
    # is_privileged stays as the seed writes it: the project's images get no privilege, and no 400.
    assert doc["containers"][3]["is_privileged"] is True
    code, model = await api.call("POST", "appliance", doc)
    assert code == 201, model
    model = await api.wait_state("dockseed", {"running", "failed"}, timeout=600)
    assert model["state"] == "running", model["reason"]
    (notebook,) = docker_engine.containers.list(filters={"label": [f"{LABEL}.appliance=dockseed",
                                                                   f"{LABEL}.container=sparkmagic"]})
    assert notebook.attrs["HostConfig"]["Privileged"] is False
    for bindings in notebook.attrs["NetworkSettings"]["Ports"].values():
        assert all(b["HostIp"] == "127.0.0.1" for b in bindings or [])

    await use_the_notebook(jp_fetch, jp_ws_fetch, jp_auth_header, "dockseed", model, jp_base_url)

    assert (await api.call("DELETE", "appliance/dockseed"))[0] == 204
    assert docker_engine.containers.list(all=True, filters={"label": f"{LABEL}.appliance=dockseed"}) == []
