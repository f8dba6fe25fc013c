"""Every start-up figure in one run, each beside its plain baseline, as a table.

Local backend, through a real Jupyter server. Baselines, measured in the same run:
hand-run spark-class JVMs with Spark's default flags, the same JVMs with our
flags (to isolate the orchestration's own cost), and a cold
SparkSession.getOrCreate for the Livy session figures.

    python benchmarks/run_all.py [--markdown docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import psutil
import requests
from livy_sessions import cold_get_or_create, statement, tree_rss_mb, wait_idle

from common import DAEMON_OPTS, hand_run, jupyter_server, time_to_running, wait_workers_running


def launch(session, base, workers: int, app_id: str) -> dict:  # noqa: ANN001
    body = {"template": "spark-livy", "id": app_id, "workers": workers}
    marks, model = time_to_running(session, base, body, app_id)
    return {**marks, "model": model}


def spark_only(workers: int, app_id: str) -> dict:
    """Master and workers without Livy: the same JVMs as the hand-run baseline."""
    return {"id": app_id, "containers": [
        {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 1024},
         "ports": [{"container_port": 8080}, {"container_port": 7077}]},
        {"id": "spark-worker", "type": "service", "image": "spark-worker", "instances": workers,
         "resources": {"cpus": 1, "mem": 1024}, "args": ["@spark-master:7077"], "dependencies": ["spark-master"]}]}


def launch_spark_only(session, base, workers: int) -> float:
    app_id = f"orch{workers}"
    t0 = time.monotonic()
    session.post(base + "/appliance", json=spark_only(workers, app_id)).raise_for_status()
    wait_workers_running(session, base, app_id, workers)
    took = time.monotonic() - t0
    session.delete(f"{base}/appliance/{app_id}").raise_for_status()
    return took


def rss_by_kind(data_dir: Path, app_id: str) -> dict[str, float]:
    record = json.loads((data_dir / "spark_appliance" / "appliances" / app_id / "record.json").read_text())
    out: dict[str, float] = {}
    for cid, insts in record["instances"].items():
        for inst in insts:
            try:
                mb = tree_rss_mb(inst["handle"]["pid"])
            except (psutil.Error, KeyError):
                continue
            out[cid] = max(out.get(cid, 0.0), mb)
    return out


NOTES = """## What makes it fast, and how to read the table

- **JVM flags for short-lived daemons**: `-XX:TieredStopAtLevel=1 -XX:+UseSerialGC`
  (`c.SparkApplianceApp.daemon_java_opts`), heaps from `resources.mem`.
- **Class-data-sharing archives** (`cds.py`): recorded once per Spark version and JDK, in the
  background when the server starts (a throwaway master, worker and PySpark application at
  nice 19, about a minute), or else by the first master and worker when they stop; later JVMs
  start from them (a master is ALIVE in about 1 s instead of about 2; the Livy gateway's
  drivers and their executors start from theirs through `--cds-dir`).
- **Readiness from log lines** (`logwatch.py`, 50 ms): "New state: ALIVE", "Successfully
  registered with master", the gateway's "listening" line, instead of probing HTTP.
- **Parallel start**: every container starts as soon as its own dependencies run, so the
  workers and Livy start together once the master is ALIVE.
- **Warm interpreter**: the Livy gateway starts its default driver with itself (at low
  priority, so it does not slow the workers starting beside it) and sessions share it, so a
  session is idle at once when that driver is ready.

"Hand-run, our flags + CDS" runs the same `spark-class` JVMs by hand with exactly our flags
and archives; the "orchestration only" rows compare like with like (master and workers, no
Livy) and show what the orchestrator itself costs. The full spark-livy rows also start the
Livy gateway and its warm driver on the same two cores, which the hand-run baseline does not.
The first session right after launch waits for the warm driver that is still starting, and
its first result includes starting executors (dynamic allocation).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    rows: list[tuple[str, float, float | None, float | None]] = []  # figure, ours, default-flags, same-flags
    with jupyter_server() as (session, base, tmp):
        # Warm-up: the first master and worker ever started record the class-data-sharing
        # archives when they stop (cds.py); every later launch starts from them.
        launch(session, base, 1, "warmup")
        session.delete(f"{base}/appliance/warmup").raise_for_status()
        cds = tmp / "data" / "spark_appliance" / "cds"
        for n in (1, 2, 4):
            ours = launch(session, base, n, f"bench{n}")
            model = ours.pop("model")  # type: ignore[arg-type]
            if n == 1:
                livy = model["links"]["livy"]
                t0 = time.monotonic()  # right after launch: the warm driver may still be starting
                sid = requests.post(livy + "/sessions", json={"kind": "pyspark"}).json()["id"]
                wait_idle(livy, sid)
                idle_first = time.monotonic() - t0
                statement(livy, sid, "spark.range(100).count()")
                first_first = time.monotonic() - t0
                t0 = time.monotonic()  # a session once the warm driver is ready
                sid = requests.post(livy + "/sessions", json={"kind": "pyspark"}).json()["id"]
                wait_idle(livy, sid)
                idle = time.monotonic() - t0
                statement(livy, sid, "spark.range(100).count()")
                first = time.monotonic() - t0
                rss = rss_by_kind(tmp / "data", "bench1")
                t1 = time.monotonic()
                session.patch(f"{base}/appliance/bench1/container/spark-worker", json={"instances": 2})
                wait_workers_running(session, base, "bench1", 2)
                more = time.monotonic() - t1
            session.delete(f"{base}/appliance/bench{n}").raise_for_status()
            default = hand_run(n, None)
            same = hand_run(n, DAEMON_OPTS, cds)
            if n == 1:
                rows.append(("POST -> master ALIVE", ours["master"], default["master"], same["master"]))
            rows.append((f"POST -> {n} worker(s) ALIVE (cluster ready)", ours["workers"], default["workers"],
                         same["workers"]))
            if n == 1:
                rows.append(("POST -> Livy answering", ours["livy"], None, None))
                more_default, more_same = hand_run(1, None), hand_run(1, DAEMON_OPTS, cds)
                rows.append(("one more worker -> ALIVE", more, more_default["worker_after_master"],
                             more_same["worker_after_master"]))
        for n in (1, 2, 4):
            ours_only = launch_spark_only(session, base, n)
            rows.append((f"orchestration only: master + {n} worker(s), no Livy", ours_only,
                         hand_run(n, None)["workers"], hand_run(n, DAEMON_OPTS, cds)["workers"]))
    cold = cold_get_or_create_from_cluster()
    rows.append(("POST /sessions -> idle, right after launch", idle_first, cold, None))
    rows.append(("POST /sessions -> first result, right after launch", first_first, cold, None))
    rows.append(("POST /sessions -> idle, warm driver ready", idle, cold, None))
    rows.append(("POST /sessions -> first result, warm driver ready", first, cold, None))

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {psutil.cpu_count()} cores, "
        f"Python {platform.python_version()}, local backend, after one warm-up launch (which records the "
        "class-data-sharing archives). Seconds; ratios are ours / baseline.",
        "",
        "| figure | ours | baseline: default flags (or cold getOrCreate) | ratio | hand-run, our flags + CDS | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ours_s, base_s, same_s in rows:
        r1 = f"{ours_s / base_s:.2f}" if base_s else "-"
        r2 = f"{ours_s / same_s:.2f}" if same_s else "-"
        lines.append(f"| {name} | {ours_s:.2f} | {base_s if base_s is None else f'{base_s:.2f}'} | {r1} | "
                     f"{same_s if same_s is None else f'{same_s:.2f}'} | {r2} |")
    lines += ["", "| process kind | RSS (MB, incl. children) |", "|---|---:|"]
    for kind, mb in sorted(rss.items()):
        lines.append(f"| {kind} | {mb:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text("# Performance\n\nWritten by `python benchmarks/run_all.py --markdown "
                                       f"{args.markdown}`.\n\n{table}\n\n{NOTES}")


def cold_get_or_create_from_cluster() -> float:
    """A cold driver against a fresh hand-run master (the Livy-per-session cost)."""
    import tempfile

    from jupyter_spark_appliance.spark.standalone import start_cluster

    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="jsa-cold-")), workers=1)
    try:
        return cold_get_or_create(cluster.master_url)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
