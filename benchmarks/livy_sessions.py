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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from jupyter_spark_appliance.spark.cds import FAST_DAEMON_JAVA_OPTS, ClassDataSharing
from jupyter_spark_appliance.spark.cds_recording import record_archives
from jupyter_spark_appliance.spark.home import find_spark_home
from jupyter_spark_appliance.spark.ports import allocate_port
from jupyter_spark_appliance.spark.processes import stop_group
from jupyter_spark_appliance.spark.standalone import start_cluster

from common import http_session, process_tree_mb, run_python_json

PLAIN = http_session()  # a hand-run gateway has no Basic auth; an appliance's gets http_session(its credentials)
Memory = Callable[[], dict[str, float]]  # named MB figures, "total" being the one a goal is about


def tree_rss_mb(pid: int) -> float:
    return process_tree_mb(pid)


def wait_idle(url: str, sid: int, http: requests.Session = PLAIN, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while (state := http.get(f"{url}/sessions/{sid}", timeout=30).json()["state"]) != "idle":
        if state in ("dead", "error", "killed"):
            raise RuntimeError(http.get(f"{url}/sessions/{sid}/log", timeout=30).json())
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {sid} still {state} after {timeout:.0f} s")
        time.sleep(0.05)


def open_session(url: str, kind: str = "pyspark", http: requests.Session = PLAIN) -> int:
    r = http.post(url + "/sessions", json={"kind": kind}, timeout=60)
    r.raise_for_status()
    return r.json()["id"]


def statement(url: str, sid: int, code: str, http: requests.Session = PLAIN) -> dict:
    return timed(url, sid, code, http=http)[1]


COLD_SESSION = """
import json, sys, time
t0 = time.monotonic()
args = json.loads(sys.stdin.readline())
from pyspark.sql import SparkSession
builder = SparkSession.builder.master(args["master"])
for key, value in args["conf"].items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
t1 = time.monotonic()
n = spark.range(args["count"]).count() if args["count"] else None
t2 = time.monotonic()
spark.stop()
print(json.dumps({"get_or_create": t1 - t0, "first_result": t2 - t0, "count": n}))
"""


def cold_session(master: str, conf: dict[str, str] | None = None, count: int = 0) -> dict[str, float]:
    """A new kernel's cold ``SparkSession.builder.getOrCreate()`` on ``master``, then ``range(count).count()``.

    The baseline a user has without the appliance's warm driver: a fresh Python
    imports PySpark, starts a driver JVM and registers with the master (and, with
    ``count``, waits for an executor). Seconds from before the import. ``conf``
    (Spark's RPC secret for an appliance's master) goes in on stdin, not argv.
    """
    settings = {"spark.driver.memory": "512m", "spark.executor.memory": "512m",
                "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", **(conf or {})}
    out = run_python_json(COLD_SESSION, {"master": master, "conf": settings, "count": count})
    if count and out["count"] != count:
        raise RuntimeError(f"cold session counted {out['count']}, not {count}")
    return out


def cold_get_or_create(master: str) -> float:
    return cold_session(master)["get_or_create"]


def start_gateway(master_url: str, log_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A hand-run Livy gateway (no auth) in its own process group, once it answers."""
    port = allocate_port("127.0.0.1")
    gateway = subprocess.Popen([sys.executable, "-m", "jupyter_spark_appliance.livy", "--master", master_url,
                                "--port", str(port), "--log-dir", str(log_dir), *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            PLAIN.get(url + "/version", timeout=1)
            return gateway, url
        except requests.ConnectionError:
            if time.monotonic() > deadline or gateway.poll() is not None:
                stop_gateway(gateway)
                raise RuntimeError("the gateway did not answer") from None
            time.sleep(0.1)


def stop_gateway(gateway: subprocess.Popen[bytes]) -> None:
    """The gateway with its drivers (its process group), even if it ignores SIGTERM."""
    stop_group(gateway.pid, gateway, grace=30)


def measure_gateway(master_url: str, log_dir: Path, *extra: str) -> dict[str, float]:
    gateway, url = start_gateway(master_url, log_dir, *extra)
    try:
        # First session while the warm driver may still be starting: what a user sees
        # right after launch. Its first statement also waits for the first executor.
        t0 = time.monotonic()
        sid = open_session(url)
        wait_idle(url, sid)
        first_idle = time.monotonic() - t0
        assert statement(url, sid, "spark.range(100).count()")["output"]["data"]["text/plain"] == "100"
        first_result = time.monotonic() - t0
        # A session once the driver is warm.
        t1 = time.monotonic()
        sid2 = open_session(url)
        wait_idle(url, sid2)
        warm_idle = time.monotonic() - t1
        statement(url, sid2, "1 + 1")
        warm_result = time.monotonic() - t1
        PLAIN.delete(f"{url}/sessions/{sid2}")
        time.sleep(1)
        rss_1 = tree_rss_mb(gateway.pid)
        ids = [open_session(url) for _ in range(5)]
        for s in ids:
            wait_idle(url, s)
            statement(url, s, "spark.range(10).count()")
        time.sleep(1)
        rss_6 = tree_rss_mb(gateway.pid)
    finally:
        stop_gateway(gateway)
    return {"first_idle": first_idle, "first_result": first_result, "warm_idle": warm_idle,
            "warm_result": warm_result, "rss_1": rss_1, "rss_6": rss_6}


def timed(url: str, sid: int, code: str, poll: float = 0.05, timeout: float = 300,
          http: requests.Session = PLAIN) -> tuple[float, dict]:
    """Seconds from POST to ``available``, and the statement."""
    t0 = time.monotonic()
    r = http.post(f"{url}/sessions/{sid}/statements", json={"code": code}, timeout=60)
    r.raise_for_status()
    stmt = r.json()
    while stmt["state"] not in ("available", "cancelled", "error"):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"statement stuck: {stmt}")
        time.sleep(poll)
        stmt = http.get(f"{url}/sessions/{sid}/statements/{stmt['id']}", timeout=60).json()
    return time.monotonic() - t0, stmt


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def measure_many(master_url: str, log_dir: Path, sessions: int = 20, per_session: int = 10,
                 alone_runs: int = 20) -> dict[str, float]:
    """A class at once on a hand-run gateway (its defaults): what measure_many_at measures, its RSS."""
    gateway, url = start_gateway(master_url, log_dir)
    try:
        return measure_many_at(url, lambda: {"total": tree_rss_mb(gateway.pid)}, PLAIN, sessions, per_session,
                               alone_runs)
    finally:
        stop_gateway(gateway)


def measure_many_at(url: str, memory: Memory, http: requests.Session = PLAIN, sessions: int = 20,
                    per_session: int = 10, alone_runs: int = 20) -> dict[str, float]:
    """A class at once on the gateway at ``url``: memory and statement latency.

    One session runs a job and then ``alone_runs`` trivial statements alone (the
    baseline, its median); then ``sessions`` sessions open at once, each runs
    ``spark.range(1000).count()`` (memory is read then: ``memory()`` before and
    after, its "total" being the goal's figure) and then ``per_session`` trivial
    statements each, all sessions at once. Every session is deleted at the end.
    """
    one = open_session(url, http=http)
    wait_idle(url, one, http)
    timed(url, one, "spark.range(1000).count()", http=http)
    time.sleep(1)
    mem_1 = memory()
    alone = statistics.median(timed(url, one, "1 + 1", http=http)[0] for _ in range(alone_runs))
    http.delete(f"{url}/sessions/{one}", timeout=60)

    ids: list[int] = []
    try:
        with ThreadPoolExecutor(sessions) as pool:
            ids = list(pool.map(lambda _: open_session(url, http=http), range(sessions)))
            for sid in ids:
                wait_idle(url, sid, http)
            counts = list(pool.map(lambda sid: timed(url, sid, "spark.range(1000).count()", http=http)[1], ids))
            assert all(c["output"]["data"]["text/plain"] == "1000" for c in counts), counts
            time.sleep(1)
            mem_n = memory()
            apps = {http.get(f"{url}/sessions/{sid}", timeout=30).json()["appId"] for sid in ids}

            def burst(sid: int) -> list[tuple[float, dict]]:
                return [timed(url, sid, f"{i} + 1", http=http) for i in range(per_session)]

            results = [r for rs in pool.map(burst, ids) for r in rs]
    finally:
        for sid in ids:
            http.delete(f"{url}/sessions/{sid}", timeout=60)
    ok = sum((stmt.get("output") or {}).get("status") == "ok" for _, stmt in results)
    latencies = [t for t, _ in results]
    out: dict[str, float] = {"rss_1": mem_1["total"], "rss_n": mem_n["total"], "drivers": len(apps),
                             "alone": alone, "statements": len(results), "ok": ok, "sessions": sessions,
                             "p50": statistics.median(latencies), "p95": p95(latencies), "max": max(latencies)}
    out.update({f"mem_1_{k}": v for k, v in mem_1.items()})
    out.update({f"mem_n_{k}": v for k, v in mem_n.items()})
    return out


def measure_scala(master_url: str, log_dir: Path) -> dict[str, float]:
    """Gateway defaults (one warm driver) on a hand-run gateway: what measure_scala_at measures."""
    gateway, url = start_gateway(master_url, log_dir)
    try:
        return measure_scala_at(url, lambda: tree_rss_mb(gateway.pid), PLAIN)
    finally:
        stop_gateway(gateway)


def measure_scala_at(url: str, rss: Callable[[], float], http: requests.Session = PLAIN) -> dict[str, float]:
    """RSS and POST -> idle of PySpark and Scala sessions on the gateway at ``url``'s warm driver.

    "cold" is the driver's first Scala session: its interpreter starts the way
    spark-shell's does (the Scala compiler's classes load and warm up), inside a
    driver that already runs; "warm" is the next one on the same driver.
    """
    opened: list[int] = []

    def session_of(kind: str, code: str) -> float:
        t0 = time.monotonic()
        sid = open_session(url, kind, http)
        opened.append(sid)
        wait_idle(url, sid, http)
        seconds = time.monotonic() - t0
        statement(url, sid, code, http)
        return seconds

    try:
        session_of("pyspark", "spark.range(10).count()")  # the driver is up and has run a job
        time.sleep(2)
        rss_0 = rss()
        py_idle = session_of("pyspark", "spark.range(10).count()")
        time.sleep(2)
        rss_py = rss()
        cold = session_of("spark", "spark.range(10).count()")
        time.sleep(2)
        rss_scala1 = rss()
        warm = session_of("spark", "spark.range(10).count()")
        time.sleep(2)
        rss_scala2 = rss()
    finally:
        for sid in opened:
            http.delete(f"{url}/sessions/{sid}", timeout=60)
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
