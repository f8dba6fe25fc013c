"""Seconds to ready and per extra worker on the swarm backend, beside the docker and local
backends in the same run (same Jupyter server, same document).

    python benchmarks/launch_swarm.py [--workers N] [--cpus C]

The engine must be a swarm manager (.ci/docker-setup makes it a single-node swarm).
Every backend gets the spark-livy template's document with ``--cpus`` per container
(default 0.5): Swarm reserves what a container asks for, and the template's one CPU
each for Livy, the master and the workers does not fit a 2-core machine.
"""

from __future__ import annotations

import argparse
import time

from jupyter_spark_appliance.templates import render_template

from common import jupyter_server, table, time_to_running, wait_workers_running


def document(app_id: str, workers: int, cpus: float, backend: str) -> dict:
    doc = render_template("spark-livy", {"id": app_id, "workers": workers})
    for c in doc["containers"]:
        c["resources"]["cpus"] = cpus
    return {**doc, "backend": backend}


def launch(session, base: str, workers: int, cpus: float, backend: str) -> dict[str, float]:  # noqa: ANN001
    app_id = f"bench-{backend}"
    marks, _ = time_to_running(session, base, document(app_id, workers, cpus, backend), app_id)
    t1 = time.monotonic()
    session.patch(f"{base}/appliance/{app_id}/container/spark-worker",
                  json={"instances": workers + 1}).raise_for_status()
    wait_workers_running(session, base, app_id, workers + 1)
    marks["one_more_worker"] = time.monotonic() - t1
    t2 = time.monotonic()
    session.delete(f"{base}/appliance/{app_id}").raise_for_status()
    marks["delete"] = time.monotonic() - t2
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus", type=float, default=0.5)
    args = parser.parse_args()
    with jupyter_server() as (session, base, _):
        results = {b: launch(session, base, args.workers, args.cpus, b) for b in ("swarm", "docker", "local")}
    swarm, docker, local = results["swarm"], results["docker"], results["local"]
    rows = [
        ("POST -> master ALIVE", "master"),
        (f"POST -> {args.workers} worker(s) ALIVE", "workers"),
        ("POST -> Livy answering", "livy"),
        ("PATCH +1 worker -> ALIVE", "one_more_worker"),
        ("DELETE -> everything stopped", "delete"),
    ]
    print(f"spark-livy with {args.workers} worker(s), {args.cpus:g} CPU each, seconds (same run)")
    print("swarm vs docker")
    print(table([(name, swarm[k], docker[k]) for name, k in rows], headers=("figure", "swarm", "docker")))
    print("swarm vs local")
    print(table([(name, swarm[k], local[k]) for name, k in rows], headers=("figure", "swarm", "local")))


if __name__ == "__main__":
    main()
