"""A class at once on one appliance (issue 19), on the local and the Docker backend.

spark-livy with 1 worker (1 core), as a class of students would share it: 20
Livy sessions opened at once (as 20 Sparkmagic notebooks do), each running
``spark.range(1000).count()`` ten times, then the same with 40 sessions. Every
statement must finish, or end with the gateway's "waiting for cluster
resources" error within its resource wait limit; none may hang. Printed per
backend and class size: statements that succeeded and that ended with that
error, the Spark applications (drivers) the sessions were packed onto, and the
statements' p50/p95 latency against one statement alone on an idle session of
the same appliance (measured in the same run).

    PYTHONPATH=. python benchmarks/class_at_once.py [--backends local docker] [--sizes 20 40] [--per-session 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from launch_local import livy_client, spark_livy
from livy_sessions import open_session, p95, timed, wait_idle

from common import appliance, jupyter_server, machine, table

CODE = "spark.range(1000).count()"


def one_session(url: str, http: requests.Session, per_session: int) -> dict[str, Any]:
    """A student: open a session, run CODE ``per_session`` times; what each statement ended as."""
    sid = open_session(url, http=http)
    try:
        wait_idle(url, sid, http)
        runs = [timed(url, sid, CODE, poll=0.2, timeout=900, http=http) for _ in range(per_session)]
        app = http.get(f"{url}/sessions/{sid}", timeout=60).json().get("appId")
    finally:
        http.delete(f"{url}/sessions/{sid}", timeout=120)
    return {"app": app, "runs": runs}


def a_class(url: str, http: requests.Session, sessions: int, per_session: int) -> dict[str, Any]:
    t0 = time.monotonic()
    with ThreadPoolExecutor(sessions) as pool:
        students = list(pool.map(lambda _: one_session(url, http, per_session), range(sessions)))
    took = time.monotonic() - t0
    runs = [r for s in students for r in s["runs"]]
    ok = sum((st.get("output") or {}).get("data", {}).get("text/plain") == "1000" for _, st in runs)
    gave_up = sum((st.get("output") or {}).get("ename") == "ClusterResourcesUnavailable" for _, st in runs)
    latencies = [t for t, _ in runs]
    return {"sessions": sessions, "statements": len(runs), "ok": ok, "gave_up": gave_up,
            "other": len(runs) - ok - gave_up, "drivers": len({s["app"] for s in students}),
            "p50": statistics.median(latencies), "p95": p95(latencies), "max": max(latencies), "took": took}


def measure(session: requests.Session, base: str, backend: str, sizes: list[int],
            per_session: int) -> dict[str, Any]:
    app_id = f"class-{backend}"
    with appliance(session, base, spark_livy(app_id, 1, backend, connect=False)):
        url, http = livy_client(session, base, app_id)
        sid = open_session(url, http=http)
        wait_idle(url, sid, http)
        timed(url, sid, CODE, http=http)  # its executor is up: the baseline is a statement alone, warm
        alone = statistics.median(timed(url, sid, CODE, http=http)[0] for _ in range(5))
        http.delete(f"{url}/sessions/{sid}", timeout=120)
        return {"alone": alone, "classes": [a_class(url, http, n, per_session) for n in sizes]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["local", "docker"], choices=["local", "docker"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 40])
    parser.add_argument("--per-session", type=int, default=10)
    args = parser.parse_args()
    where = machine()
    results: dict[str, dict[str, Any]] = {}
    with jupyter_server() as (session, base, _tmp):
        for backend in args.backends:
            print(f"measuring {backend} ...", file=sys.stderr, flush=True)
            try:
                results[backend] = measure(session, base, backend, args.sizes, args.per_session)
            except Exception as e:  # noqa: BLE001 - one backend failing must not lose the other's figures
                print(f"{backend} failed: {e!r}", file=sys.stderr, flush=True)
    print(f"A class at once: spark-livy, 1 worker with 1 core, {args.per_session} x `{CODE}` per session. "
          f"Machine: {where}.\n")
    rows = []
    for backend, r in results.items():
        for c in r["classes"]:
            print(f"{backend}, {c['sessions']} sessions: {c['ok']}/{c['statements']} succeeded, "
                  f"{c['gave_up']} ended waiting for resources, {c['other']} other; {c['drivers']} driver(s); "
                  f"max {c['max']:.1f} s; the class took {c['took']:.0f} s")
            rows.append((f"{backend}: p95 of {c['statements']} statements, {c['sessions']} sessions",
                         c["p95"], r["alone"]))
            rows.append((f"{backend}: p50, {c['sessions']} sessions", c["p50"], r["alone"]))
    print()
    print(table(rows, ("figure", "seconds", "one statement alone (s)")))


if __name__ == "__main__":
    main()
