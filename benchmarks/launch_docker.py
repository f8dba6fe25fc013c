"""Seconds to ready and per extra worker on the docker backend, beside the local
backend's figures from the same run (same Jupyter server, same template).

    python benchmarks/launch_docker.py [--workers N] [--repeat R]

The two backends' launches alternate (local, docker, local, ...) so that a busy
moment of the machine does not land on one backend only; figures are medians.
"""

from __future__ import annotations

import argparse

import requests
from launch_local import launch, spark_livy

from common import appliance, jupyter_server, median, table

KEYS = ("master", "workers", "livy", "connect", "running")


def launch_ready(session: requests.Session, base: str, backend: str, app_id: str, workers: int = 1) -> dict[str, float]:
    """time_to_running's marks for the spark-livy template on ``backend`` (deleted at once)."""
    with appliance(session, base, spark_livy(app_id, workers, backend)) as marks:
        marks.pop("model")
    return marks


def measure_docker(session: requests.Session, base: str, repeat: int = 3, workers: int = 1) -> dict[str, dict]:
    """Backend -> median seconds to each mark, alternating local and docker launches ``repeat`` times."""
    runs: dict[str, list[dict[str, float]]] = {"local": [], "docker": []}
    for i in range(repeat):
        for backend in runs:
            runs[backend].append(launch_ready(session, base, backend, f"bench-{backend}-{i}", workers))
    return {b: {k: median([r[k] for r in rs if k in r]) for k in KEYS if any(k in r for r in rs)}
            | {"runs": [r["workers"] for r in rs]} for b, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with jupyter_server() as (session, base, _):
        ready = measure_docker(session, base, args.repeat, args.workers)
        local = launch(session, base, args.workers, "local", "bench-local-more")
        docker = launch(session, base, args.workers, "docker", "bench-docker-more")
    d, lo = ready["docker"], ready["local"]
    print(f"spark-livy with {args.workers} worker(s), seconds: docker vs local (same run, median of {args.repeat})")
    print(table([
        ("POST -> master ALIVE", d["master"], lo["master"]),
        (f"POST -> {args.workers} worker(s) ALIVE", d["workers"], lo["workers"]),
        ("POST -> Livy answering", d["livy"], lo["livy"]),
        ("POST -> Spark Connect answering", d.get("connect"), lo.get("connect")),
        ("POST -> appliance running", d["running"], lo["running"]),
        ("PATCH +1 worker -> ALIVE", docker["one_more_worker"], local["one_more_worker"]),
    ], headers=("figure", "docker", "local")))


if __name__ == "__main__":
    main()
