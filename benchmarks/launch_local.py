"""Seconds from POST to master ALIVE, all workers ALIVE, Livy answering, and one more
worker, on the local backend through a real Jupyter server; beside hand-run
spark-class JVMs with the same flags, measured in the same run.

    python benchmarks/launch_local.py [--workers N]
"""

from __future__ import annotations

import argparse
import time

from common import hand_run, jupyter_server, table


def container(model, cid):
    return next(c for c in model["containers"] if c["id"] == cid)


def launch(session, base, workers: int, backend: str = "local") -> dict[str, float]:
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    r = session.post(base + "/appliance", json={"template": "spark-livy", "id": "bench", "workers": workers,
                                                   "backend": backend})
    r.raise_for_status()
    while len(marks) < 3:  # 50 ms polling: finer than any figure we report
        model = session.get(base + "/appliance/bench").json()
        if model["state"] == "failed":
            raise RuntimeError(model["reason"])
        now = time.monotonic() - t0
        for cid, key in (("spark-master", "master"), ("spark-worker", "workers"), ("livy", "livy")):
            if key not in marks and container(model, cid)["state"] == "running":
                marks[key] = now
        time.sleep(0.05)
    t1 = time.monotonic()
    session.patch(base + "/appliance/bench/container/spark-worker", json={"instances": workers + 1}).raise_for_status()
    time.sleep(0.05)
    while container(session.get(base + "/appliance/bench").json(), "spark-worker")["state"] != "running":
        time.sleep(0.05)
    marks["one_more_worker"] = time.monotonic() - t1
    session.delete(base + "/appliance/bench").raise_for_status()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with jupyter_server() as (session, base, _):
        ours = launch(session, base, args.workers)
    hand = hand_run(args.workers)
    hand_more = hand_run(1)["worker_after_master"]
    print(f"local backend, spark-livy with {args.workers} worker(s); seconds")
    print(table([
        ("POST -> master ALIVE", ours["master"], hand["master"]),
        (f"POST -> {args.workers} worker(s) ALIVE", ours["workers"], hand["workers"]),
        ("POST -> Livy answering", ours["livy"], None),
        ("PATCH +1 worker -> ALIVE", ours["one_more_worker"], hand_more),
    ], headers=("figure", "ours", "hand-run")))


if __name__ == "__main__":
    main()
