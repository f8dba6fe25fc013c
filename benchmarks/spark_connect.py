"""Spark Connect's first result after launch, beside a cold in-kernel getOrCreate on the same master.

Local backend, through a real Jupyter server. spark-livy starts a Connect server by
default; the moment the appliance runs (what ``%spark_appliance up --connect`` waits
for), a fresh Python, as a new kernel, imports PySpark, connects to
``links["connect"]`` with the appliance's token and runs ``spark.range(1000).count()``.
Baseline, in the same run: a fresh Python's cold ``SparkSession.builder.getOrCreate()``
against the same appliance's master (with the credentials route's settings, as
``%spark_appliance session`` does): a driver JVM of its own. Both clocks start before
``from pyspark.sql import SparkSession``.

    python benchmarks/spark_connect.py [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import requests
from launch_local import spark_livy
from livy_sessions import cold_session

from common import appliance, appliance_memory, jupyter_server, median, run_python_json

CONNECT_CLIENT = """
import json, sys, time
t0 = time.monotonic()
args = json.loads(sys.stdin.readline())
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(args["url"]).create()
t1 = time.monotonic()
n = spark.range(args["count"]).count()
t2 = time.monotonic()
spark.stop()
print(json.dumps({"session": t1 - t0, "first_result": t2 - t0, "count": n}))
"""


def connect_once(session: requests.Session, base: str, data_dir: Path, app_id: str) -> dict[str, float]:
    """One launch: Connect's first result (client seconds and from POST), then the cold baseline on its master."""
    with appliance(session, base, spark_livy(app_id)) as marks:
        url = marks["model"]["links"].get("connect")  # type: ignore[attr-defined]
        if not url:
            raise RuntimeError(f"{app_id} runs without a Connect link: {marks['model']['links']}")  # type: ignore[index]
        r = session.get(f"{base}/appliance/{app_id}/credentials", timeout=30)
        r.raise_for_status()
        creds = r.json()
        # The token is the appliance's secret, as magic.py's `connect` takes it; it goes in on stdin.
        token = creds["spark"]["conf"].get("spark.authenticate.secret") or creds["livy"]["password"]
        t0 = time.monotonic()
        client = run_python_json(CONNECT_CLIENT, {"url": f"{url}/;token={token}", "count": 1000})
        wall = time.monotonic() - t0
        if client["count"] != 1000:
            raise RuntimeError(f"Connect counted {client['count']}")
        memory = appliance_memory(data_dir, app_id)
        cold = cold_session(creds["spark"]["master"], creds["spark"]["conf"])
    return {"session": client["session"], "first_result": client["first_result"], "client_wall": wall,
            "launch_to_first_result": marks["running"] + wall, "cold_get_or_create": cold["get_or_create"],
            "connect_mb": memory.get("spark-connect", {}).get("total", 0.0)}


def measure_connect(session: requests.Session, base: str, data_dir: Path, repeat: int = 3) -> dict[str, float]:
    """Medians over ``repeat`` fresh launches of connect_once's figures, and the runs' first results."""
    runs = [connect_once(session, base, data_dir, f"bench-connect-{i}") for i in range(repeat)]
    out = {k: median([r[k] for r in runs]) for k in runs[0]}
    return {**out, "repeat": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with jupyter_server() as (session, base, tmp):
        c = measure_connect(session, base, tmp / "data", args.repeat)
    print(f"Spark Connect, local backend, spark-livy with 1 worker; seconds, median of {args.repeat}")
    print(f"{'client: import + connect (create())':<52} {c['session']:8.2f}")
    print(f"{'client: import + connect + range(1000).count()':<52} {c['first_result']:8.2f}")
    print(f"{'the same, with the client Python starting':<52} {c['client_wall']:8.2f}")
    print(f"{'POST appliance -> Connect first result':<52} {c['launch_to_first_result']:8.2f}")
    print(f"{'baseline: cold in-kernel getOrCreate(), same master':<52} {c['cold_get_or_create']:8.2f}")
    print(f"{'ratio first result / baseline (goal <= 0.6)':<52} {c['first_result'] / c['cold_get_or_create']:8.2f}")
    print(f"{'Connect server RSS after the count, MB':<52} {c['connect_mb']:8.0f}")


if __name__ == "__main__":
    main()
