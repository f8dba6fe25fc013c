"""The Livy gateway against a hand-run Spark cluster: seconds from POST /sessions to
idle and to the first statement's result (warm driver and, for comparison, a cold
SparkSession.getOrCreate), and the total RSS of gateway plus drivers with 1 and
with 6 idle sessions.

    python benchmarks/livy_sessions.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from spark_fixtures import start_cluster  # noqa: E402

from jupyter_spark_appliance.ports import allocate_port  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc] + proc.children(recursive=True)
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def wait_idle(url: str, sid: int) -> None:
    while (state := requests.get(f"{url}/sessions/{sid}").json()["state"]) != "idle":
        if state in ("dead", "error"):
            raise RuntimeError(requests.get(f"{url}/sessions/{sid}/log").json())
        time.sleep(0.05)


def statement(url: str, sid: int, code: str) -> dict:
    stmt = requests.post(f"{url}/sessions/{sid}/statements", json={"code": code}).json()
    while stmt["state"] != "available":
        time.sleep(0.05)
        stmt = requests.get(f"{url}/sessions/{sid}/statements/{stmt['id']}").json()
    return stmt


def cold_get_or_create(master: str) -> float:
    code = ("import time; t=time.monotonic(); from pyspark.sql import SparkSession; "
            f"s=SparkSession.builder.master('{master}').config('spark.driver.memory','512m')"
            ".config('spark.executor.memory','512m').getOrCreate(); print(time.monotonic()-t); s.stop()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jsa-livy-bench-"))
    cluster = start_cluster(tmp / "cluster", workers=1)
    try:
        cold = cold_get_or_create(cluster.master_url)
        port = allocate_port("127.0.0.1")
        gateway = subprocess.Popen([sys.executable, "-m", "jupyter_spark_appliance.livy", "--master",
                                    cluster.master_url, "--port", str(port), "--log-dir", str(tmp / "drivers")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    requests.get(url + "/version", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            # First session while the warm driver may still be starting: what a user sees
            # right after launch.
            t0 = time.monotonic()
            sid = requests.post(url + "/sessions", json={"kind": "pyspark"}).json()["id"]
            wait_idle(url, sid)
            first_idle = time.monotonic() - t0
            assert statement(url, sid, "spark.range(100).count()")["output"]["data"]["text/plain"] == "100"
            first_result = time.monotonic() - t0
            # A session once the driver is warm.
            t1 = time.monotonic()
            sid2 = requests.post(url + "/sessions", json={"kind": "pyspark"}).json()["id"]
            wait_idle(url, sid2)
            warm_idle = time.monotonic() - t1
            statement(url, sid2, "1 + 1")
            warm_result = time.monotonic() - t1
            requests.delete(f"{url}/sessions/{sid2}")
            time.sleep(1)
            rss_1 = tree_rss_mb(gateway.pid)
            ids = [requests.post(url + "/sessions", json={"kind": "pyspark"}).json()["id"] for _ in range(5)]
            for s in ids:
                wait_idle(url, s)
                statement(url, s, "spark.range(10).count()")
            time.sleep(1)
            rss_6 = tree_rss_mb(gateway.pid)
        finally:
            gateway.terminate()
            gateway.wait(60)
    finally:
        cluster.stop()
    print("Livy gateway (sessions share a warm driver); seconds and MB")
    print(f"{'cold SparkSession.getOrCreate (baseline)':<52} {cold:8.2f} s")
    print(f"{'first session: POST -> idle (driver starting)':<52} {first_idle:8.2f} s")
    print(f"{'first session: POST -> first result':<52} {first_result:8.2f} s")
    print(f"{'warm driver: POST -> idle':<52} {warm_idle:8.2f} s  ({warm_idle / cold:.3f} x cold)")
    print(f"{'warm driver: POST -> first result':<52} {warm_result:8.2f} s")
    print(f"{'RSS gateway + drivers, 1 idle session':<52} {rss_1:8.0f} MB")
    print(f"{'RSS gateway + drivers, 6 idle sessions':<52} {rss_6:8.0f} MB  (target < 2048)")


if __name__ == "__main__":
    main()
