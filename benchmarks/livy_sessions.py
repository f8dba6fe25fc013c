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

from jupyter_spark_appliance.cds import FAST_DAEMON_JAVA_OPTS, ClassDataSharing  # noqa: E402
from jupyter_spark_appliance.cds_recording import record_archives  # noqa: E402
from jupyter_spark_appliance.ports import allocate_port  # noqa: E402
from jupyter_spark_appliance.spark_home import find_spark_home  # noqa: E402


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


def measure_gateway(master_url: str, log_dir: Path, *extra: str) -> dict[str, float]:
    port = allocate_port("127.0.0.1")
    gateway = subprocess.Popen([sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", master_url,
                                "--port", str(port), "--log-dir", str(log_dir), *extra],
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
        # right after launch. Its first statement also waits for the first executor.
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
    return {"first_idle": first_idle, "first_result": first_result, "warm_idle": warm_idle,
            "warm_result": warm_result, "rss_1": rss_1, "rss_6": rss_6}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jsa-livy-bench-"))
    cluster = start_cluster(tmp / "cluster", workers=1)
    try:
        cold = cold_get_or_create(cluster.master_url)
        plain = measure_gateway(cluster.master_url, tmp / "drivers-plain")
        # What the server records in the background when it starts (cds.py).
        cds_dir = tmp / "cds"
        record_archives(ClassDataSharing(cds_dir), find_spark_home(), FAST_DAEMON_JAVA_OPTS, tmp / "rec",
                        python=sys.executable)
        archived = measure_gateway(cluster.master_url, tmp / "drivers-cds", "--cds-dir", str(cds_dir))
    finally:
        cluster.stop()
    print("Livy gateway (sessions share a warm driver); seconds and MB, without and with the driver and")
    print("executor class-data-sharing archives")
    rows = [
        ("first session: POST -> idle (driver starting)", "first_idle", "s"),
        ("first session: POST -> first result", "first_result", "s"),
        ("warm driver: POST -> idle", "warm_idle", "s"),
        ("warm driver: POST -> first result", "warm_result", "s"),
        ("RSS gateway + drivers, 1 idle session", "rss_1", "MB"),
        ("RSS gateway + drivers, 6 idle sessions", "rss_6", "MB"),
    ]
    print(f"{'figure':<48} {'plain':>9} {'archives':>9}")
    print(f"{'cold SparkSession.getOrCreate (baseline), s':<48} {cold:9.2f}")
    for name, key, unit in rows:
        print(f"{name + ', ' + unit:<48} {plain[key]:9.2f} {archived[key]:9.2f}")
    print(f"warm idle / cold: {archived['warm_idle'] / cold:.3f}; 6 sessions target < 2048 MB")


if __name__ == "__main__":
    main()
