"""Seconds from POST to master ALIVE, all workers ALIVE, Livy answering, and one more
worker, on the local backend through a real Jupyter server; beside hand-run
spark-class JVMs with the same flags, measured in the same run.

    python benchmarks/launch_local.py [--workers N]
"""

from __future__ import annotations

import argparse
import time

from common import hand_run, jupyter_server, table, time_to_running, wait_workers_running


def launch(session, base, workers: int, backend: str = "local") -> dict[str, float]:  # noqa: ANN001
    body = {"template": "spark-livy", "id": "bench", "workers": workers, "backend": backend}
    marks, _ = time_to_running(session, base, body, "bench")
    t1 = time.monotonic()
    session.patch(base + "/appliance/bench/container/spark-worker", json={"instances": workers + 1}).raise_for_status()
    wait_workers_running(session, base, "bench", workers + 1)
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
