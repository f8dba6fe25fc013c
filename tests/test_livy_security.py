"""Issue 12, the gateway's part: credentials, Host check, CSRF, no CORS, Spark RPC
authentication for the drivers, nothing secret on a command line or in a driver's
environment, limits and bad input as clear 4xx.

Real components: the gateway as a process, pylivy's and Sparkmagic's own clients,
and a real standalone master and worker started with ``spark.authenticate`` and the
secret (``_SPARK_AUTH_SECRET`` in their environment, as the worker also hands it to
its executors). A plain PySpark application without the secret is refused by that
master, while a session through the gateway runs on it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from test_security import foreign_driver

from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.standalone import master_status, start_cluster

pytestmark = pytest.mark.spark

USER, PASSWORD = "alice", "pw-" + secrets.token_hex(8)
AUTH = (USER, PASSWORD)
S3_SECRET = "S3KEY-" + secrets.token_hex(6)


def start_gateway(master: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    port = allocate_port("127.0.0.1")
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = open(tmp_path / "gateway.log", "ab")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", master, "--port", str(port),
         "--log-dir", str(tmp_path / "drivers"), *extra],
        stdout=log, stderr=log, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
        try:
            requests.get(url + "/version", timeout=2)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError((tmp_path / "gateway.log").read_text())


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def gateway_without_spark(tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    """Routes that need no driver: --no-warm, and a master nobody listens on."""
    proc, url = start_gateway(f"spark://127.0.0.1:{allocate_port('127.0.0.1')}", tmp_path, "--no-warm",
                              "--master-ui", "http://127.0.0.1:9", *extra, env=env)
    try:
        yield url
    finally:
        stop(proc)


def gateway_env() -> dict[str, str]:
    return {"LIVY_GATEWAY_PASSWORD": PASSWORD}


ROUTES = ["/version", "/sessions", "/sessions/0", "/sessions/0/state", "/sessions/0/log",
          "/sessions/0/statements", "/sessions/0/statements/0", "/appliance/resources", "/batches",
          "/batches/0", "/nowhere"]


def test_every_route_needs_credentials(tmp_path):
    with gateway_without_spark(tmp_path, "--username", USER, env=gateway_env()) as url:
        for path in ROUTES:
            for auth in (None, (USER, "wrong"), ("bob", PASSWORD)):
                r = requests.get(url + path, auth=auth)
                assert r.status_code == 401, (path, auth, r.text)
                assert r.headers["WWW-Authenticate"] == 'Basic realm="livy"'
                assert r.json() == {"msg": "Authentication required"}
            r = requests.post(url + path, json={}, auth=None)
            assert r.status_code == 401, (path, r.text)
            assert requests.delete(url + path).status_code == 401
            # A broken Authorization header is a 401 too, never a 500.
            assert requests.get(url + path, headers={"Authorization": "Basic !!!"}).status_code == 401
            assert requests.get(url + path, auth=AUTH).status_code in (200, 404), path
        assert requests.get(url + "/sessions", auth=AUTH).json() == {"from": 0, "total": 0, "sessions": []}
        assert requests.get(url + "/appliance/resources", auth=AUTH).json()["waiting_sessions"] == 0


def test_username_without_a_password_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LIVY_GATEWAY_PASSWORD"}
    r = subprocess.run([sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", "spark://127.0.0.1:1",
                        "--username", USER, "--no-warm", "--port", str(allocate_port("127.0.0.1"))],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "LIVY_GATEWAY_PASSWORD" in r.stderr


def test_host_header_must_be_an_allowed_name(tmp_path):
    with gateway_without_spark(tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", "localhost.evil.example"):
            r = requests.get(url + "/sessions", headers={"Host": host})
            assert r.status_code == 403, (host, r.text)
            assert "not allowed" in r.json()["msg"] and "--allowed-hosts" in r.json()["msg"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}",
                     f"{socket.gethostname()}:{port}"):
            assert requests.get(url + "/sessions", headers={"Host": host}).status_code == 200, host
    with gateway_without_spark(tmp_path / "named", "--allowed-hosts", "gw.internal, 10.1.2.3") as url:
        assert requests.get(url + "/version", headers={"Host": "gw.internal:1"}).status_code == 200
        assert requests.get(url + "/version", headers={"Host": "10.1.2.3"}).status_code == 200
        assert requests.get(url + "/version", headers={"Host": "localhost"}).status_code == 403


def test_csrf_is_on_by_default_and_no_cors(tmp_path):
    with gateway_without_spark(tmp_path) as url:
        # What a web page can send without a preflight: text/plain, a form, no body.
        for headers, data in (({"Content-Type": "text/plain"}, '{"kind": "cobol"}'),
                              ({"Content-Type": "application/x-www-form-urlencoded"}, "kind=cobol"),
                              ({}, None)):
            r = requests.post(url + "/sessions", data=data, headers={**headers, "Origin": "http://evil.example"})
            assert r.status_code == 400 and r.json() == {"msg": "Missing Required Header for CSRF protection."}
            assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
        # Livy's header, or JSON (Sparkmagic and pylivy), gets past the check (to the validation).
        r = requests.post(url + "/sessions", data='{"kind": "cobol"}', headers={"X-Requested-By": "me"})
        assert r.status_code == 400 and "kind 'cobol' is unknown" in r.json()["msg"]
        r = requests.post(url + "/sessions", json={"kind": "cobol"})
        assert r.status_code == 400 and "kind 'cobol' is unknown" in r.json()["msg"]
        # A CORS preflight is never granted.
        r = requests.options(url + "/sessions", headers={"Origin": "http://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
        assert r.status_code == 405 and "msg" in r.json()
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
    with gateway_without_spark(tmp_path / "off", "--no-csrf") as url:
        r = requests.post(url + "/sessions", data='{"kind": "cobol"}', headers={"Content-Type": "text/plain"})
        assert r.status_code == 400 and "kind 'cobol' is unknown" in r.json()["msg"]


def test_bad_input_is_a_clear_4xx(tmp_path):
    with gateway_without_spark(tmp_path, "--max-sessions", "2") as url:
        cases = [
            ("GET", "/sessions/²", None, 404, "not found"),
            ("GET", "/sessions/٣", None, 404, "not found"),
            ("GET", "/sessions/" + "9" * 5000, None, 404, "not found"),
            ("GET", "/sessions/0/statements/" + "9" * 5000, None, 404, "not found"),
            ("POST", "/sessions/0/statements/" + "9" * 5000 + "/cancel", {}, 404, "not found"),
            ("GET", "/sessions?from=" + "9" * 5000, None, 400, "from"),
            ("GET", "/sessions?size=-1", None, 400, "size"),
            ("GET", "/sessions?from=x", None, 400, "from"),
            ("POST", "/sessions", [1, 2], 400, "JSON object"),
            ("POST", "/sessions", "pyspark", 400, "JSON object"),
            ("POST", "/sessions", {"kind": []}, 400, "kind"),
            ("POST", "/sessions", {"kind": "pyspark", "name": "a\x00b"}, 400, "NUL"),
            ("POST", "/sessions", {"conf": {"spark.x": "a\x00"}}, 400, "NUL"),
            ("POST", "/sessions", {"conf": {"spark.x": {"nested": 1}}}, 400, "conf"),
            ("POST", "/sessions", {"conf": {"spark.x": "v" * 70000}}, 400, "conf"),
            ("POST", "/sessions", {"numExecutors": 10 ** 400}, 400, "numExecutors"),
            ("POST", "/sessions", {"heartbeatTimeoutInSecond": 10 ** 30}, 400, "heartbeatTimeoutInSecond"),
            ("POST", "/sessions", {"ttl": 1e308}, 400, "ttl"),
            ("POST", "/sessions", {"ttl": "9" * 5000}, 400, "ttl"),
            ("POST", "/sessions", {"idleTimeout": -5}, 400, "idleTimeout"),
            ("POST", "/sessions", {"driverCores": True}, 400, "driverCores"),
            ("POST", "/sessions", {"jars": "x.jar"}, 400, "jars"),
            ("POST", "/sessions", {"proxyUser": "someone-else"}, 400, "proxyUser"),
            ("POST", "/sessions", {"proxyUser": 7}, 400, "proxyUser"),
            ("POST", "/batches", {"file": "/x.py", "proxyUser": "someone-else"}, 400, "proxyUser"),
        ]
        for method, path, body, status, words in cases:
            r = requests.request(method, url + path, json=body)
            assert r.status_code == status, (path, body if not isinstance(body, dict) else list(body), r.text[:300])
            assert words in r.json()["msg"], (path, r.json())
        raw = [b'{"kind": NaN}', b'{"kind": "pyspark"', b"[" * 100000 + b"]" * 100000, b"\xff\xfe\x00",
               b'{"numExecutors": 1' + b"0" * 5000 + b"}"]
        for body in raw:
            r = requests.post(url + "/sessions", data=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and "not JSON" in r.json()["msg"], (body[:30], r.text[:300])
        # A session (its driver never starts: no master) takes statements, and checks them.
        sid = requests.post(url + "/sessions", json={"kind": "pyspark"}).json()["id"]
        for body, words in (({"code": "1", "kind": []}, "kind"), ({"code": 1}, "code"), ([], "JSON object"),
                            ({"code": "1", "kind": "cobol"}, "kind")):
            r = requests.post(f"{url}/sessions/{sid}/statements", json=body)
            assert r.status_code == 400 and words in r.json()["msg"], (body, r.text)
        assert requests.get(f"{url}/sessions/{sid}/log?from=5000&size=10").json()["log"] == []
        assert requests.get(f"{url}/sessions/{sid}/state").json() == {"id": sid, "state": "starting"}
        # proxyUser is accepted when it names the user the gateway runs as (no impersonation).
        r = requests.post(url + "/sessions", json={"kind": "pyspark", "proxyUser": getpass.getuser(),
                                                   "heartbeatTimeoutInSecond": 600})
        assert r.status_code == 201, r.text
        assert (r.json()["proxyUser"], r.json()["heartbeatTimeoutInSecond"]) == (getpass.getuser(), 600)
        r = requests.post(url + "/sessions", json={"kind": "pyspark"})
        assert r.status_code == 429 and r.json()["msg"].startswith("too many sessions (limit 2: --max-sessions)")


def test_secret_file_must_be_private(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x" * 32)
    secret.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", "spark://127.0.0.1:1",
                        "--no-warm", "--port", str(allocate_port("127.0.0.1"))],
                       env={**os.environ, "JSA_SPARK_AUTH_SECRET_FILE": str(secret)}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "chmod 600" in r.stderr, r.stderr


# ---------------------------------------------------------------- an authenticated cluster


@pytest.fixture(scope="module")
def spark_secret():
    return secrets.token_hex(24)


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory, spark_secret):
    opts = "-Dspark.worker.timeout=30 -Dspark.authenticate=true"
    c = start_cluster(tmp_path_factory.mktemp("auth-cluster"), workers=1, worker_cores=2,
                      env={"_SPARK_AUTH_SECRET": spark_secret, "SPARK_MASTER_OPTS": opts,
                           "SPARK_WORKER_OPTS": opts})
    yield c
    c.stop()


@pytest.fixture(scope="module")
def auth_gateway(auth_cluster, spark_secret, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth-gateway")
    secret_file = tmp / "spark.secret"
    secret_file.write_text(spark_secret + "\n")
    secret_file.chmod(0o600)
    proc, url = start_gateway(auth_cluster.master_url, tmp, "--username", USER, "--master-ui", auth_cluster.ui_url,
                              env={**gateway_env(), "JSA_SPARK_AUTH_SECRET_FILE": str(secret_file)})
    yield proc, url
    stop(proc)


def wait_idle(url: str, sid: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = requests.get(f"{url}/sessions/{sid}", auth=AUTH).json()
        if s["state"] in ("idle", "dead", "error", "killed"):
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.3)


def run(url: str, sid: int, code: str, timeout: float = 240) -> dict:
    r = requests.post(f"{url}/sessions/{sid}/statements", json={"code": code}, auth=AUTH)
    assert r.status_code == 201, r.text
    stmt = r.json()
    deadline = time.monotonic() + timeout
    while stmt["state"] not in ("available", "cancelled"):
        assert time.monotonic() < deadline, stmt
        time.sleep(0.2)
        stmt = requests.get(f"{url}/sessions/{sid}/statements/{stmt['id']}", auth=AUTH).json()
    return stmt


def driver_processes(gateway_proc: subprocess.Popen) -> list[psutil.Process]:
    """The gateway's drivers (python driver_main) and their JVMs (and Python workers), zombies left out."""
    return [p for p in psutil.Process(gateway_proc.pid).children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE]


def test_sessions_run_on_an_authenticated_cluster_with_nothing_secret_in_argv_or_env(
        auth_gateway, auth_cluster, spark_secret):
    from livy import LivySession, SessionKind

    proc, url = auth_gateway
    # pylivy's real client, with Basic auth; it sends JSON, so CSRF is satisfied.
    with LivySession.create(url, kind=SessionKind.PYSPARK, auth=AUTH) as session:
        session.wait()
        assert session.run("spark.range(10).count()").text == "10"
        out = session.run("(sc.getConf().get('spark.authenticate'), "
                          "len(sc.getConf().get('spark.authenticate.secret')))").text
        assert out == f"('true', {len(spark_secret)})"
        assert session.run("import os; 'LIVY_GATEWAY_PASSWORD' in os.environ").text == "False"
        # A session with its own conf (an S3 key) gets its own driver; the key reaches its SparkConf.
        r = requests.post(f"{url}/sessions", json={"kind": "pyspark", "conf": {
            "spark.hadoop.fs.s3a.secret.key": S3_SECRET}}, auth=AUTH)
        sid = r.json()["id"]
        assert wait_idle(url, sid)["state"] == "idle"
        # Its JSON shows the key redacted (as Spark's UI does); the driver has the real value.
        shown = requests.get(f"{url}/sessions/{sid}", auth=AUTH).json()["conf"]
        assert shown == {"spark.hadoop.fs.s3a.secret.key": "*********(redacted)"}
        assert S3_SECRET not in requests.get(f"{url}/sessions", auth=AUTH).text
        assert run(url, sid, "sc.getConf().get('spark.hadoop.fs.s3a.secret.key')")["output"]["data"][
            "text/plain"] == repr(S3_SECRET)
        assert run(url, sid, "sc.parallelize(range(10), 2).sum()")["output"]["data"]["text/plain"] == "45"

        procs = driver_processes(proc)
        drivers = [p for p in procs if "jupyter_spark_appliance.livy.driver_main" in " ".join(p.cmdline())]
        jvms = [p for p in procs if "org.apache.spark.deploy.SparkSubmit" in " ".join(p.cmdline())]
        assert len(drivers) == 2 and len(jvms) == 2, [p.cmdline() for p in procs]
        for p in [psutil.Process(proc.pid), *procs]:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{p.pid}/environ").read_bytes()
            for word in (spark_secret, S3_SECRET, PASSWORD):
                assert word.encode() not in cmdline, (p.pid, cmdline)
            if p.pid != proc.pid:
                assert b"LIVY_GATEWAY_PASSWORD" not in environ and PASSWORD.encode() not in environ, p.pid
                assert spark_secret.encode() not in environ and S3_SECRET.encode() not in environ, p.pid
        # The executors of the cluster's worker have no secret on their command line either.
        executors = [p for p in psutil.process_iter(["cmdline"])
                     if "CoarseGrainedExecutorBackend" in " ".join(p.info["cmdline"] or [])]
        assert executors
        for p in executors:  # the command line as read above: an executor may exit meanwhile (idle timeout)
            assert spark_secret not in " ".join(p.info["cmdline"]), p.pid
        requests.delete(f"{url}/sessions/{sid}", auth=AUTH)


def test_a_foreign_application_without_the_secret_is_refused(auth_cluster):
    # A plain PySpark application from another process, as another local user could start. It is
    # stopped once the master has turned it away: Spark's client would retry twice, 20 s apart.
    app = foreign_driver(auth_cluster.master_url, "foreign-app", {"spark.ui.enabled": "false"}, 420,
                         until_refused=True)
    assert app is not None, "still trying to register after 420 s"
    assert "RESULT" not in app.stdout, app.stdout
    refused = f"Failed to connect to master {auth_cluster.master_url.removeprefix('spark://')}"
    assert refused in app.stderr, app.stderr[-2000:]
    status = master_status(auth_cluster.ui_url)
    names = [a.get("name") for a in status.get("activeapps", []) + status.get("completedapps", [])]
    assert "foreign-app" not in names, names


def test_output_is_capped_and_logs_are_read_from_memory(auth_gateway):
    proc, url = auth_gateway
    sid = requests.post(f"{url}/sessions", json={"kind": "pyspark"}, auth=AUTH).json()["id"]
    assert wait_idle(url, sid)["state"] == "idle"
    out = run(url, sid, "print('x' * 5_000_000)")["output"]
    assert out["status"] == "ok"
    text = out["data"]["text/plain"]
    assert text.startswith("x" * 1000) and "[output truncated:" in text and "--max-output-bytes" in text
    assert len(json.dumps(out)) <= 1024 * 1024 + 512
    out = run(url, sid, "raise ValueError('y' * 3_000_000)")["output"]
    assert out["status"] == "error" and out["ename"] == "ValueError"
    assert "[output truncated:" in out["traceback"][-1] and len(json.dumps(out)) <= 1024 * 1024 + 512
    log = requests.get(f"{url}/sessions/{sid}/log", params={"from": 0, "size": 3}, auth=AUTH).json()
    assert log["from"] == 0 and len(log["log"]) == 3 and log["total"] > 3
    tail = requests.get(f"{url}/sessions/{sid}/log", params={"size": 2}, auth=AUTH).json()
    assert tail["from"] == tail["total"] - 2 and len(tail["log"]) == 2
    assert run(url, sid, "1 + 1")["output"]["data"]["text/plain"] == "2"
    requests.delete(f"{url}/sessions/{sid}", auth=AUTH)
