"""The Livy gateway against a hand-run Spark cluster: seconds from POST /sessions to
idle and to the first statement's result (warm driver and, for comparison, a cold
SparkSession.getOrCreate), and the total RSS of gateway plus drivers with 1 and
with 6 idle sessions.

A class at once (issue 19): 20 sessions opened at once, each having run a Spark
statement, and their total RSS against one session's; then 200 trivial statements
from those 20 sessions at once, all of which must succeed, their p95 latency
against one statement alone on an idle session (measured in the same run).

Scala sessions (issue 14 item 1): POST -> idle for the first Scala session of a
driver (cold: the Scala compiler's classes load and warm up) and for the next one
(warm), their ratio, and the RSS each adds against what a PySpark session adds.

    python benchmarks/livy_sessions.py [--many-only | --scala-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from jupyter_spark_appliance.spark.cds import FAST_DAEMON_JAVA_OPTS, ClassDataSharing  # noqa: E402
from jupyter_spark_appliance.spark.cds_recording import record_archives  # noqa: E402
from jupyter_spark_appliance.spark.home import find_spark_home  # noqa: E402
from jupyter_spark_appliance.spark.ports import allocate_port  # noqa: E402
from jupyter_spark_appliance.spark.standalone import start_cluster  # noqa: E402


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


def start_gateway(master_url: str, log_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = allocate_port("127.0.0.1")
    gateway = subprocess.Popen([sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", master_url,
                                "--port", str(port), "--log-dir", str(log_dir), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(url + "/version", timeout=1)
            return gateway, url
        except requests.ConnectionError:
            if time.monotonic() > deadline or gateway.poll() is not None:
                gateway.kill()
                raise RuntimeError("the gateway did not answer") from None
            time.sleep(0.1)


def timed(url: str, sid: int, code: str, poll: float = 0.05, timeout: float = 300) -> tuple[float, dict]:
    """Seconds from POST to ``available``, and the statement."""
    t0 = time.monotonic()
    stmt = requests.post(f"{url}/sessions/{sid}/statements", json={"code": code}).json()
    while stmt["state"] not in ("available", "cancelled"):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"statement stuck: {stmt}")
        time.sleep(poll)
        stmt = requests.get(f"{url}/sessions/{sid}/statements/{stmt['id']}").json()
    return time.monotonic() - t0, stmt


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def measure_many(master_url: str, log_dir: Path, sessions: int = 20, per_session: int = 10) -> dict[str, float]:
    """A class at once on the warm driver (the gateway's defaults): RSS and statement latency."""
    gateway, url = start_gateway(master_url, log_dir)
    try:
        one = requests.post(url + "/sessions", json={"kind": "pyspark"}).json()["id"]
        wait_idle(url, one)
        timed(url, one, "spark.range(1000).count()")
        time.sleep(1)
        rss_1 = tree_rss_mb(gateway.pid)
        # Baseline: one trivial statement alone on an idle session (median of 20).
        alone = statistics.median(timed(url, one, "1 + 1")[0] for _ in range(20))
        requests.delete(f"{url}/sessions/{one}")

        with ThreadPoolExecutor(sessions) as pool:
            ids = list(pool.map(lambda _: requests.post(url + "/sessions", json={"kind": "pyspark"}).json()["id"],
                                range(sessions)))
            for sid in ids:
                wait_idle(url, sid)
            counts = list(pool.map(lambda sid: timed(url, sid, "spark.range(1000).count()")[1], ids))
            assert all(c["output"]["data"]["text/plain"] == "1000" for c in counts), counts
            time.sleep(1)
            rss_n = tree_rss_mb(gateway.pid)
            apps = {requests.get(f"{url}/sessions/{sid}").json()["appId"] for sid in ids}

            def burst(sid: int) -> list[tuple[float, dict]]:
                return [timed(url, sid, f"{i} + 1") for i in range(per_session)]

            results = [r for rs in pool.map(burst, ids) for r in rs]
        ok = sum(stmt["output"]["status"] == "ok" for _, stmt in results)
        latencies = [t for t, _ in results]
        for sid in ids:
            requests.delete(f"{url}/sessions/{sid}")
    finally:
        gateway.terminate()
        gateway.wait(60)
    return {"rss_1": rss_1, "rss_n": rss_n, "drivers": len(apps), "alone": alone, "statements": len(results),
            "ok": ok, "p50": statistics.median(latencies), "p95": p95(latencies), "max": max(latencies)}


def measure_scala(master_url: str, log_dir: Path) -> dict[str, float]:
    """Gateway defaults (one warm driver): RSS and POST -> idle of PySpark and Scala sessions on it."""
    gateway, url = start_gateway(master_url, log_dir)
    try:
        def open_session(kind: str, code: str) -> tuple[float, int]:
            t0 = time.monotonic()
            sid = requests.post(url + "/sessions", json={"kind": kind}).json()["id"]
            wait_idle(url, sid)
            seconds = time.monotonic() - t0
            statement(url, sid, code)
            return seconds, sid

        py_first, _ = open_session("pyspark", "spark.range(10).count()")  # the driver is up and has run a job
        time.sleep(2)
        rss_0 = tree_rss_mb(gateway.pid)
        py_idle, _ = open_session("pyspark", "spark.range(10).count()")
        time.sleep(2)
        rss_py = tree_rss_mb(gateway.pid)
        cold, _ = open_session("spark", "spark.range(10).count()")
        time.sleep(2)
        rss_scala1 = tree_rss_mb(gateway.pid)
        warm, _ = open_session("spark", "spark.range(10).count()")
        time.sleep(2)
        rss_scala2 = tree_rss_mb(gateway.pid)
    finally:
        gateway.terminate()
        gateway.wait(60)
    return {"py_idle": py_idle, "cold": cold, "warm": warm, "rss_0": rss_0, "py_mb": rss_py - rss_0,
            "scala1_mb": rss_scala1 - rss_py, "scala2_mb": rss_scala2 - rss_scala1, "rss_total": rss_scala2}


def print_scala(sc: dict[str, float]) -> None:
    print("\nScala sessions on the warm driver (gateway defaults, 1 worker)")
    print(f"{'figure':<62} {'value':>9} {'baseline':>9} {'ratio':>7}")
    rows = [
        ("Scala session idle, cold interpreter start (POST -> idle), s", sc["cold"], sc["py_idle"],
         "baseline: a PySpark session"),
        ("Scala session idle, warm interpreter start (POST -> idle), s", sc["warm"], sc["cold"],
         "baseline: the cold start"),
        ("RSS a first Scala session adds (having run a job), MB", sc["scala1_mb"], sc["py_mb"],
         "baseline: what a PySpark session adds"),
        ("RSS a second Scala session adds, MB", sc["scala2_mb"], sc["py_mb"], "baseline: a PySpark session"),
    ]
    for name, value, base, note in rows:
        ratio = f"{value / base:7.2f}" if base > 0.5 else f"{'-':>7}"
        print(f"{name:<62} {value:9.2f} {base:9.2f} {ratio}   ({note})")
    print(f"{'RSS gateway + driver, 2 PySpark + 2 Scala sessions, MB':<62} {sc['rss_total']:9.0f}")


def print_many(many: dict[str, float], sessions: int = 20) -> None:
    n = int(many["statements"])
    rows = [
        (f"{sessions} sessions open at once, each having run a statement: RSS, MB",
         f"{many['rss_n']:9.0f} {many['rss_1']:9.0f} {many['rss_n'] / many['rss_1']:7.2f}", "baseline: 1 session"),
        (f"{n} trivial statements from {sessions} sessions at once: succeeded",
         f"{many['ok']:9.0f} {n:9d}", ""),
        ("  their p95 latency, s",
         f"{many['p95']:9.3f} {many['alone']:9.3f} {many['p95'] / many['alone']:7.2f}",
         "baseline: one statement alone on an idle session, median of 20"),
        ("  their p50 and max latency, s", f"{many['p50']:9.3f} {many['max']:9.3f}", ""),
    ]
    print(f"\nA class at once (gateway defaults, 1 worker): {sessions} sessions on {many['drivers']:.0f} driver(s)")
    print(f"{'figure':<62} {'value':>9} {'baseline':>9} {'ratio':>7}")
    for name, values, note in rows:
        print(f"{name:<62} {values}" + (f"   ({note})" if note else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--many-only", action="store_true", help="only the 20-sessions figures")
    parser.add_argument("--scala-only", action="store_true", help="only the Scala session figures")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jsa-livy-bench-"))
    cluster = start_cluster(tmp / "cluster", workers=1)
    if args.scala_only:
        try:
            scala = measure_scala(cluster.master_url, tmp / "drivers-scala")
        finally:
            cluster.stop()
        print_scala(scala)
        return
    if args.many_only:
        try:
            many = measure_many(cluster.master_url, tmp / "drivers-many")
        finally:
            cluster.stop()
        print_many(many)
        return
    try:
        cold = cold_get_or_create(cluster.master_url)
        plain = measure_gateway(cluster.master_url, tmp / "drivers-plain")
        # What the server records in the background when it starts (cds.py).
        cds_dir = tmp / "cds"
        record_archives(ClassDataSharing(cds_dir), find_spark_home(), FAST_DAEMON_JAVA_OPTS, tmp / "rec",
                        python=sys.executable)
        archived = measure_gateway(cluster.master_url, tmp / "drivers-cds", "--cds-dir", str(cds_dir))
        many = measure_many(cluster.master_url, tmp / "drivers-many")
        scala = measure_scala(cluster.master_url, tmp / "drivers-scala")
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
    print_many(many)
    print_scala(scala)


if __name__ == "__main__":
    main()
