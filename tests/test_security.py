"""Secure by default, for real: per-appliance credentials, Spark RPC authentication, clean environments.

A real appliance on the local backend (real JVMs, the real gateway) behind a
real Jupyter server. What an outsider on the same machine can do is tried for
real: a raw HTTP request to the gateway without (or with wrong) credentials, a
foreign PySpark driver against the master without the secret, reading every
process's argv as ``ps`` does; and the server's own secrets (a JupyterHub
token, cloud credentials) must not reach any process of the appliance.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request

import psutil
import pytest

from jupyter_spark_appliance.spark.child_env import child_environment
from jupyter_spark_appliance.spark.standalone import master_status

pytestmark = pytest.mark.spark

SERVER_SECRETS = {"JUPYTERHUB_API_TOKEN": "hub-token-must-not-leak", "JPY_SESSION_NAME": "jpy-must-not-leak",
                  "AWS_SECRET_ACCESS_KEY": "aws-must-not-leak"}


def request(url: str, method: str = "GET", body: dict | None = None, auth: tuple[str, str] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
    h = {"Content-Type": "application/json", "X-Requested-By": "test", **(headers or {})}
    if auth:
        h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, method=method, headers=h,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text or b"null")
        except ValueError:
            return e.code, {"text": text.decode(errors="replace")}


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


REFUSED_LINES = ("Failed to connect to master", "All masters are unresponsive")


def foreign_driver(master: str, name: str, conf: dict[str, str], timeout: float,
                   until_refused: bool = False) -> subprocess.CompletedProcess[str] | None:
    """A PySpark program of somebody else on this machine; None if it was still trying at the deadline.

    With ``until_refused`` it is stopped as soon as its own log says the master refused it
    (Spark's client retries its registration for a minute before it gives up by itself).
    It runs in a process group of its own, stopped whole: its JVM goes with it.
    """
    job = textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        b = SparkSession.builder.master({master!r}).appName({name!r}).config("spark.executor.memory", "512m")
        for k, v in {conf!r}.items():
            b = b.config(k, v)
        spark = b.getOrCreate()
        print("RESULT", spark.range(10).count())
        spark.stop()
    """)
    env = {**child_environment(), "SPARK_LOCAL_IP": "127.0.0.1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", job], stdout=out, stderr=err, text=True, env=env,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if until_refused:
                    err.seek(0)
                    if any(line in err.read() for line in REFUSED_LINES):
                        break
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the program's JVM with it
            code = proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if time.monotonic() >= deadline and not any(line in stderr for line in REFUSED_LINES):
        return None
    return subprocess.CompletedProcess(proc.args, code, stdout, stderr)


async def test_secure_by_default_on_a_shared_machine(api, appliance_data_dir, sparkmagic_conf_dir, monkeypatch):
    for key, value in SERVER_SECRETS.items():
        monkeypatch.setenv(key, value)  # the Jupyter server's own environment
    code, body = await api.call("POST", "appliance", {"template": "spark-livy", "id": "guarded", "workers": 1})
    assert code == 201, body
    model = await api.wait_state("guarded", {"running", "failed"})
    assert model["state"] == "running", model["reason"]

    # The appliance's secret: files only its user can read, handed out only through Jupyter's auth.
    for name in ("credentials.json", "spark-secret"):
        mode = stat.S_IMODE((appliance_data_dir / "guarded" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    code, creds = await api.call("GET", "appliance/guarded/credentials")
    assert code == 200
    assert (await api.call("GET", "appliance/guarded/credentials", headers={"Authorization": ""}))[0] == 403
    livy, user, password = creds["livy"]["url"], creds["livy"]["username"], creds["livy"]["password"]
    assert livy == model["links"]["livy"] and user == "jsa" and len(password) >= 32
    master = creds["spark"]["master"]
    assert creds["spark"]["conf"] == {"spark.authenticate": "true", "spark.authenticate.secret": password}

    # The gateway: 401 without or with wrong credentials, 200 with them.
    assert request(f"{livy}/sessions")[0] == 401
    assert request(f"{livy}/sessions", auth=(user, "wrong"))[0] == 401
    assert request(f"{livy}/sessions", "POST", {"kind": "pyspark"})[0] == 401
    assert request(f"{livy}/sessions", auth=(user, password))[0] == 200
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    code, _ = request(f"{livy}/sessions", auth=(user, password), headers={"Host": "evil.example"})
    assert code == 403

    # Sparkmagic's config carries the credentials (Basic_Access), so notebooks need no step.
    written = json.loads((sparkmagic_conf_dir / "config.json").read_text())["kernel_python_credentials"]
    assert written == {"url": livy, "username": user, "password": password, "auth": "Basic_Access"}

    # A foreign driver without the secret is refused by the master; with it, it runs.
    refused, wrong, allowed = await asyncio.gather(
        asyncio.to_thread(foreign_driver, master, "intruder-nosecret", {}, 150, True),
        asyncio.to_thread(foreign_driver, master, "intruder-wrongsecret",
                          {"spark.authenticate": "true", "spark.authenticate.secret": "guess"}, 150, True),
        asyncio.to_thread(foreign_driver, master, "intruder-allowed", creds["spark"]["conf"], 300))
    for intruder in (refused, wrong):
        assert intruder is None or "RESULT" not in intruder.stdout, intruder
        assert intruder is None or any(line in intruder.stderr for line in REFUSED_LINES), intruder.stderr[-3000:]
    # The master's own list: only the driver that had the secret ever registered.
    status = master_status(model["links"]["spark-ui"])
    assert status is not None, "the master UI does not answer"
    names = {a.get("name") for a in status.get("activeapps", []) + status.get("completedapps", [])}
    assert "intruder-allowed" in names and not names & {"intruder-nosecret", "intruder-wrongsecret"}, names
    assert allowed is not None and "RESULT 10" in allowed.stdout, allowed.stderr[-3000:] if allowed else "timeout"

    # A Livy session through the gateway runs (its drivers authenticate with the secret).
    code, session = request(f"{livy}/sessions", "POST", {"kind": "pyspark", "executorMemory": "512m"},
                            auth=(user, password))
    assert code == 201, session
    sid, deadline = session["id"], time.monotonic() + 240
    while request(f"{livy}/sessions/{sid}", auth=(user, password))[1]["state"] != "idle":
        assert time.monotonic() < deadline, "session never idle"
        await asyncio.sleep(0.5)
    _, st = request(f"{livy}/sessions/{sid}/statements", "POST", {"code": "spark.range(10).count()"},
                    auth=(user, password))
    while st["state"] not in ("available", "error"):
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.5)
        _, st = request(f"{livy}/sessions/{sid}/statements/{st['id']}", auth=(user, password))
    assert st["output"]["data"]["text/plain"] == "10", st

    # What `ps` shows (argv) never holds the secret; no process of the appliance (daemons,
    # gateway, its drivers, executors) inherited the server's tokens.
    record = json.loads((appliance_data_dir / "guarded" / "record.json").read_text())
    procs = [p for insts in record["instances"].values() for i in insts for p in tree(i["handle"]["pid"])]
    assert len(procs) >= 4, procs  # master, worker (+ executor), gateway (+ driver)
    for p in procs:
        try:
            argv, env = " ".join(p.cmdline()), p.environ()
        except psutil.NoSuchProcess:
            continue
        assert password not in argv, argv
        leaked = {k for k, v in env.items() if k in SERVER_SECRETS or v in SERVER_SECRETS.values()}
        assert not leaked, (p.pid, argv[:200], leaked)
    assert password not in (appliance_data_dir / "guarded" / "record.json").read_text()

    assert (await api.call("DELETE", "appliance/guarded"))[0] == 204
    assert not (appliance_data_dir / "guarded").exists()
