"""Seconds to ready and per extra worker on the swarm backend, beside the docker and local
backends in the same run (same Jupyter server, same document).

    python benchmarks/launch_swarm.py [--workers N] [--cpus C]

The engine must be a swarm manager (.ci/docker-setup makes it a single-node swarm).
Every backend gets the spark-livy template's document with ``--cpus`` per container
(default 0.4): Swarm reserves what a container asks for, and the template's one CPU
each for Livy, the master, the worker and the Connect server does not fit a 2-core
machine; with 0.4 the four of them and the extra worker of the PATCH figure fit two
cores (with 0.5 the extra worker would wait for a free CPU for ever).
"""

from __future__ import annotations

import argparse
import time

import requests

from jupyter_spark_appliance.templates import render_template

from common import appliance, jupyter_server, median, table, wait_workers_running

KEYS = ("master", "workers", "livy", "connect", "running")
CPUS = 0.4  # per container: 5 of them (spark-livy's 4 and one extra worker) fit 2 cores


def document(app_id: str, workers: int, cpus: float, backend: str) -> dict:
    doc = render_template("spark-livy", {"id": app_id, "workers": workers})
    for c in doc["containers"]:
        c["resources"]["cpus"] = cpus
    return {**doc, "backend": backend}


def launch(session: requests.Session, base: str, workers: int, cpus: float, backend: str,
           app_id: str | None = None, extra_worker: bool = True) -> dict[str, float]:
    """time_to_running's marks, then (``extra_worker``) PATCH +1 -> it runs, and DELETE -> all stopped."""
    app_id = app_id or f"bench-{backend}"
    with appliance(session, base, document(app_id, workers, cpus, backend)) as marks:
        marks.pop("model")
        if extra_worker:
            t1 = time.monotonic()
            session.patch(f"{base}/appliance/{app_id}/container/spark-worker",
                          json={"instances": workers + 1}).raise_for_status()
            wait_workers_running(session, base, app_id, workers + 1)
            marks["one_more_worker"] = time.monotonic() - t1
        t2 = time.monotonic()
        session.delete(f"{base}/appliance/{app_id}", timeout=300).raise_for_status()
        marks["delete"] = time.monotonic() - t2
    return marks


def measure_swarm(session: requests.Session, base: str, repeat: int = 3, workers: int = 1, cpus: float = CPUS,
                  backends: tuple[str, ...] = ("swarm", "docker")) -> dict[str, dict]:
    """Backend -> median seconds to each mark (and DELETE), launches alternating ``repeat`` times."""
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
    for i in range(repeat):
        for backend in backends:
            runs[backend].append(launch(session, base, workers, cpus, backend, f"bench-{backend}-{i}",
                                        extra_worker=False))
    keys = (*KEYS, "delete")
    return {b: {k: median([r[k] for r in rs if k in r]) for k in keys if any(k in r for r in rs)}
            | {"runs": [r["workers"] for r in rs]} for b, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus", type=float, default=CPUS)
    args = parser.parse_args()
    with jupyter_server() as (session, base, _):
        results = {b: launch(session, base, args.workers, args.cpus, b) for b in ("swarm", "docker", "local")}
    swarm, docker, local = results["swarm"], results["docker"], results["local"]
    rows = [
        ("POST -> master ALIVE", "master"),
        (f"POST -> {args.workers} worker(s) ALIVE", "workers"),
        ("POST -> Livy answering", "livy"),
        ("POST -> Spark Connect answering", "connect"),
        ("POST -> appliance running", "running"),
        ("PATCH +1 worker -> ALIVE", "one_more_worker"),
        ("DELETE -> everything stopped", "delete"),
    ]
    print(f"spark-livy with {args.workers} worker(s), {args.cpus:g} CPU each, seconds (same run)")
    print("swarm vs docker")
    print(table([(name, swarm.get(k), docker.get(k)) for name, k in rows], headers=("figure", "swarm", "docker")))
    print("swarm vs local")
    print(table([(name, swarm.get(k), local.get(k)) for name, k in rows], headers=("figure", "swarm", "local")))


if __name__ == "__main__":
    main()
