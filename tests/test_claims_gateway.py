"""README claims about the Livy gateway that no other test drove (issue #18).

One hand-run cluster for the module (a master and one worker with two cores) and
two gateway processes on it, as a backend starts them:

* ``default``: the defaults a backend gives (``--master-ui``), with odd idle
  timeouts for executors holding shuffle files or cached blocks, so their values can
  be read back from a driver's SparkConf;
* ``other``: ``--host 127.0.0.2 --no-warm --idle-timeout 4 --max-batches 1``.

Each check waits on a condition with a deadline; none asserts how long something took.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.standalone import StandaloneCluster, start_cluster

from test_livy_gateway import wait_session

pytestmark = pytest.mark.spark

IDLE_TIMEOUT = 4  # seconds, the ``other`` gateway's --idle-timeout


def wait_until(condition: Callable[[], Any], timeout: float, what: Callable[[], Any]) -> Any:
    """The first truthy value of ``condition()``; fails with ``what()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)
    return value


class Gateway:
    """A ``python -m jupyter_spark_appliance.livy`` process bound to ``host``, its log in ``log``."""

    def __init__(self, cluster: StandaloneCluster, workdir: Path, host: str, *extra: str):
        # Free on 127.0.0.1 for either host: a gateway on 127.0.0.2 is then alone on its port everywhere.
        self.host, self.port = host, allocate_port("127.0.0.1")
        self.log = workdir / "gateway.log"
        with open(self.log, "ab") as out:
            args = ["--host", host] if host != "127.0.0.1" else []  # the default is the claim under test
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", cluster.master_url,
                 "--port", str(self.port), "--log-dir", str(workdir / "drivers"), "--master-ui", cluster.ui_url,
                 *args, *extra], stdout=out, stderr=out)
        self.url = f"http://{host}:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/version", timeout=2)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(self.log.read_text()) from None
                time.sleep(0.2)

    def get(self, path: str) -> Any:
        return requests.get(self.url + path, timeout=30).json()

    def listening(self) -> set[tuple[str, int]]:
        """The addresses the gateway process itself (not its drivers) accepts connections on."""
        return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(self.proc.pid).net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    c = start_cluster(tmp_path_factory.mktemp("cluster"), workers=1, worker_cores=2)
    yield c
    c.stop()


@contextlib.contextmanager
def running(gateway: Gateway) -> Iterator[Gateway]:
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def default(cluster, tmp_path_factory) -> Iterator[Gateway]:
    with running(Gateway(cluster, tmp_path_factory.mktemp("default"), "127.0.0.1",
                         "--shuffle-idle-timeout", "7s", "--cached-executor-idle-timeout", "13min")) as g:
        yield g


@pytest.fixture(scope="module")
def other(cluster, tmp_path_factory) -> Iterator[Gateway]:
    with running(Gateway(cluster, tmp_path_factory.mktemp("other"), "127.0.0.2", "--no-warm",
                         "--idle-timeout", str(IDLE_TIMEOUT), "--max-batches", "1")) as g:
        yield g


def submit(g: Gateway, sid: int, code: str) -> str:
    """POST a statement; its path for GETs."""
    r = requests.post(f"{g.url}/sessions/{sid}/statements", json={"code": code}, timeout=30)
    assert r.status_code == 201, r.text
    return f"/sessions/{sid}/statements/{r.json()['id']}"


def result(g: Gateway, path: str, timeout: float = 120) -> dict:
    """The statement once it is available (or cancelled)."""
    return wait_until(lambda: (s := g.get(path))["state"] in ("available", "cancelled") and s, timeout,
                      lambda: (g.get(path), g.get(path.rsplit("/statements", 1)[0] + "/log")["log"][-20:]))


def ok(text: str, stmt: dict) -> bool:
    return stmt["output"] == {"status": "ok", "execution_count": stmt["id"], "data": {"text/plain": text}}


def test_one_sessions_long_job_neither_queues_nor_is_cancelled_with_another_sessions_statements(default, tmp_path):
    """Two default sessions share the warm driver; each has its own statement thread, job group and FAIR pool.

    A's job has thousands of short tasks (about 12 minutes of work on the worker's two cores),
    so under FIFO scheduling, or with one statement thread per driver, B would wait for all
    of them: B's statements end while A's still runs. Then A is cancelled while B's task runs,
    and B's statement ends with its own result.
    """
    g = default
    ids = [requests.post(f"{g.url}/sessions", json={"kind": "pyspark"}, timeout=30).json()["id"] for _ in range(2)]
    a, b = ids
    sessions = [wait_session(g.url, sid) for sid in ids]
    assert [s["state"] for s in sessions] == ["idle", "idle"]
    assert sessions[0]["appId"] == sessions[1]["appId"] is not None  # one driver, one Spark application

    long_job = submit(g, a, "import time\n"
                            "sc.parallelize(range(5000), 5000).map(lambda x: time.sleep(0.3) or x).count()")
    # A's tasks hold the executor's cores (some are done: its job is scheduled and running).
    wait_until(lambda: g.get(long_job)["progress"] > 0, 180, lambda: (g.get(long_job), g.get("/appliance/resources")))

    # B's plain Python statement: its own thread, not queued behind A's.
    stmt = result(g, submit(g, b, "21 * 2"))
    assert ok("42", stmt), stmt
    assert g.get(long_job)["state"] == "running"
    # B's Spark job: its own pool gets the next free core, not the end of A's 5000 tasks.
    stmt = result(g, submit(g, b, "sc.parallelize(range(10), 1).sum()"))
    assert ok("45", stmt), stmt
    assert g.get(long_job)["state"] == "running"

    # B runs a task that waits for a file; A is cancelled meanwhile.
    started, release = tmp_path / "started", tmp_path / "release"
    hold = submit(g, b, "import os, time\n"
                        f"def hold(x):\n    open({str(started)!r}, 'w').close()\n"
                        f"    while not os.path.exists({str(release)!r}):\n        time.sleep(0.1)\n    return x\n"
                        "sc.parallelize([5], 1).map(hold).sum()")
    wait_until(started.exists, 120, lambda: g.get(hold))
    r = requests.post(f"{g.url}{long_job}/cancel", json={}, timeout=30)
    assert r.json() == {"msg": "canceled"}, r.text
    assert result(g, long_job)["state"] == "cancelled"
    stmt = g.get(hold)
    assert stmt["state"] == "running" and stmt["output"] is None, stmt  # untouched by A's cancel
    release.touch()
    stmt = result(g, hold)
    assert ok("5", stmt), stmt
    for sid in ids:
        assert requests.delete(f"{g.url}/sessions/{sid}", timeout=60).json() == {"msg": "deleted"}


def test_shuffle_and_cached_executor_idle_timeouts_reach_the_drivers_sparkconf(default):
    g = default
    sid = requests.post(f"{g.url}/sessions", json={"kind": "pyspark"}, timeout=30).json()["id"]
    assert wait_session(g.url, sid)["state"] == "idle"
    stmt = result(g, submit(g, sid, "c = sc.getConf()\n"
                                    "(c.get('spark.dynamicAllocation.shuffleTracking.timeout'), "
                                    "c.get('spark.dynamicAllocation.cachedExecutorIdleTimeout'))"))
    assert ok("('7s', '13min')", stmt), stmt
    assert requests.delete(f"{g.url}/sessions/{sid}", timeout=60).json() == {"msg": "deleted"}


def other_addresses(but: str) -> list[str]:
    """IPv4 addresses of this machine other than ``but``: another loopback one, and any interface's."""
    found = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}
    return sorted(({"127.0.0.1", "127.0.0.2"} | found) - {but})


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((host, port)) != 0


def test_the_gateway_binds_loopback_unless_host_says_otherwise(default, other):
    assert default.listening() == {("127.0.0.1", default.port)}
    assert all(refused(host, default.port) for host in other_addresses("127.0.0.1")), other_addresses("127.0.0.1")

    assert other.listening() == {("127.0.0.2", other.port)}
    assert requests.get(f"{other.url}/version", timeout=30).json()["version"]
    assert all(refused(host, other.port) for host in other_addresses("127.0.0.2"))


def test_a_session_idle_past_idle_timeout_is_deleted_and_the_log_says_why(other):
    g = other
    r = requests.post(f"{g.url}/sessions", json={"kind": "pyspark"}, timeout=30)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    # Sent while the session starts (no warm driver here): it runs as soon as the session opens,
    # and keeps it busy for longer than the idle timeout, which must not end a busy session.
    stmt = result(g, submit(g, sid, f"import time\ntime.sleep({IDLE_TIMEOUT + 2})\n7"), timeout=240)
    assert ok("7", stmt), stmt
    # Idle from then on: deleted after the timeout. Polling the session is no activity.
    wait_until(lambda: requests.get(f"{g.url}/sessions/{sid}/state", timeout=30).status_code == 404, 60,
               lambda: g.get(f"/sessions/{sid}"))
    assert requests.get(f"{g.url}/sessions/{sid}", timeout=30).json() == {"msg": f"Session '{sid}' not found."}
    assert f"session {sid} idle for {IDLE_TIMEOUT} s; deleting" in g.log.read_text()


def test_max_batches_refuses_a_second_running_batch_with_a_429_naming_the_limit(other, tmp_path):
    g = other
    app = tmp_path / "app.py"
    app.write_text("print('RESULT', 1)\n")
    first = requests.post(f"{g.url}/batches", json={"file": str(app)}, timeout=30)
    assert first.status_code == 201 and first.json()["state"] == "starting", first.text
    second = requests.post(f"{g.url}/batches", json={"file": str(app)}, timeout=30)
    assert second.status_code == 429 and second.headers["Content-Type"].startswith("application/json"), second.text
    msg = second.json()["msg"]
    assert msg.startswith("too many batches running (limit 1: --max-"), msg
    assert g.get("/batches")["total"] == 1

    # The limit counts running batches: once the first is gone, another one starts.
    assert requests.delete(f"{g.url}/batches/{first.json()['id']}", timeout=60).json() == {"msg": "deleted"}
    third = requests.post(f"{g.url}/batches", json={"file": str(app)}, timeout=30)
    assert third.status_code == 201, third.text
    assert requests.delete(f"{g.url}/batches/{third.json()['id']}", timeout=60).json() == {"msg": "deleted"}
    assert msg == "too many batches running (limit 1: --max-batches)", msg

