"""Seconds from POST to master ALIVE, all workers ALIVE, Livy answering, the Connect server
and the whole appliance running, and one more worker, on the local backend through a
real Jupyter server; beside hand-run spark-class JVMs with the same flags, measured in
the same run. Then a Livy session right after a launch: POST /sessions -> idle and ->
the first ``spark.range(1000).count()``.

    python benchmarks/launch_local.py [--workers N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import requests
from livy_sessions import open_session, statement, wait_idle

from common import (
    appliance,
    appliance_memory,
    hand_run,
    http_session,
    jupyter_server,
    table,
    wait_workers_running,
)


def spark_livy(app_id: str, workers: int = 1, backend: str = "local", **params: object) -> dict:
    """The spark-livy template's request body (Livy, master, workers, Spark Connect by default)."""
    return {"template": "spark-livy", "id": app_id, "workers": workers, "backend": backend, **params}


def launch(session: requests.Session, base: str, workers: int, backend: str = "local",
           app_id: str = "bench") -> dict[str, float]:
    """time_to_running's marks for spark-livy, and ``one_more_worker``: PATCH +1 -> it runs."""
    with appliance(session, base, spark_livy(app_id, workers, backend)) as marks:
        marks.pop("model")
        t1 = time.monotonic()
        session.patch(f"{base}/appliance/{app_id}/container/spark-worker",
                      json={"instances": workers + 1}).raise_for_status()
        wait_workers_running(session, base, app_id, workers + 1)
        marks["one_more_worker"] = time.monotonic() - t1
    return marks


def livy_client(session: requests.Session, base: str, app_id: str) -> tuple[str, requests.Session]:
    """The appliance's Livy URL and a client with its Basic credentials (the credentials route), as Sparkmagic has."""
    r = session.get(f"{base}/appliance/{app_id}/credentials", timeout=30)
    r.raise_for_status()
    livy = r.json()["livy"]
    auth = (livy["username"], livy["password"]) if livy["username"] else None
    return livy["url"], http_session(auth)


def first_result_after_launch(session: requests.Session, base: str, data_dir: Path, app_id: str,
                              workers: int = 1) -> dict[str, float | dict]:
    """Launch spark-livy; the moment it runs, a Livy session and its first count, then a second session.

    The first session is what a user sees right after ``%spark_appliance up``: it may
    wait for the warm driver that is still starting, and its first result includes
    the first executor's start (dynamic allocation). The second one shows the warm
    driver once ready. ``memory`` is appliance_memory once the first result is in.
    """
    with appliance(session, base, spark_livy(app_id, workers)) as marks:
        marks.pop("model")
        livy, http = livy_client(session, base, app_id)
        t0 = time.monotonic()
        sid = open_session(livy, http=http)
        wait_idle(livy, sid, http)
        idle = time.monotonic() - t0
        out = statement(livy, sid, "spark.range(1000).count()", http)
        first = time.monotonic() - t0
        if out["output"]["data"]["text/plain"] != "1000":
            raise RuntimeError(f"first statement: {out}")
        time.sleep(1)
        memory = appliance_memory(data_dir, app_id)
        t1 = time.monotonic()
        sid2 = open_session(livy, http=http)
        wait_idle(livy, sid2, http)
        warm_idle = time.monotonic() - t1
        statement(livy, sid2, "spark.range(1000).count()", http)
        warm_first = time.monotonic() - t1
    return {**marks, "session_idle": idle, "first_result": first, "launch_to_first_result": marks["running"] + first,
            "warm_idle": warm_idle, "warm_first_result": warm_first, "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with jupyter_server() as (session, base, tmp):
        ours = launch(session, base, args.workers)
        first = first_result_after_launch(session, base, tmp / "data", "bench-first", args.workers)
    hand = hand_run(args.workers, None)
    hand_more = hand_run(1, None)["worker_after_master"]
    print(f"local backend, spark-livy with {args.workers} worker(s); seconds; hand-run: Spark's default flags")
    print(table([
        ("POST -> master ALIVE", ours["master"], hand["master"]),
        (f"POST -> {args.workers} worker(s) ALIVE", ours["workers"], hand["workers"]),
        ("POST -> Livy answering", ours["livy"], None),
        ("POST -> Spark Connect answering", ours.get("connect"), None),
        ("POST -> appliance running", ours["running"], None),
        ("PATCH +1 worker -> ALIVE", ours["one_more_worker"], hand_more),
        ("right after launch: POST /sessions -> idle", first["session_idle"], None),  # type: ignore[arg-type]
        ("right after launch: POST /sessions -> result", first["first_result"], None),  # type: ignore[arg-type]
        ("warm driver: POST /sessions -> result", first["warm_first_result"], None),  # type: ignore[arg-type]
    ], headers=("figure", "ours", "hand-run")))


if __name__ == "__main__":
    main()
