"""Seconds to ready and per extra worker on the docker backend, beside the local
backend's figures from the same run (same Jupyter server, same template).

    python benchmarks/launch_docker.py [--workers N]
"""

from __future__ import annotations

import argparse

from launch_local import launch

from common import jupyter_server, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with jupyter_server() as (session, base, _):
        local = launch(session, base, args.workers, "local")
        docker = launch(session, base, args.workers, "docker")
    print(f"spark-livy with {args.workers} worker(s), seconds: docker vs local (same run)")
    print(table([
        ("POST -> master ALIVE", docker["master"], local["master"]),
        (f"POST -> {args.workers} worker(s) ALIVE", docker["workers"], local["workers"]),
        ("POST -> Livy answering", docker["livy"], local["livy"]),
        ("PATCH +1 worker -> ALIVE", docker["one_more_worker"], local["one_more_worker"]),
    ], headers=("figure", "docker", "local")))


if __name__ == "__main__":
    main()
