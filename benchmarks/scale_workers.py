"""Scaling out: PATCH the spark-worker container from 1 to 8 instances, seconds until all 8
are ALIVE in the master (its /json/), against PATCH 1 -> 2 (one extra worker), both on
the local backend in the same run and on the same appliance (scaled back to 1 between).

The orchestrator starts the new instances in parallel, so 8 should cost little more
than 1. Workers get ``--worker-memory`` MB (default 512) and 1 core each: on a 2-core
machine 8 worker JVMs oversubscribe the cores while they start, which the output says.

    python benchmarks/scale_workers.py [--to 8] [--worker-memory 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import psutil
import requests
from launch_local import spark_livy

from jupyter_spark_appliance.spark.standalone import alive_workers

from common import appliance, container, get_model, jupyter_server, machine


def worker_jvms(data_dir: Path | None, app_id: str) -> dict[int, psutil.Process]:
    """This appliance's worker JVMs (local backend), by pid."""
    if data_dir is None:
        return {}
    work = str(data_dir / "spark_appliance" / "appliances" / app_id / "work")
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "org.apache.spark.deploy.worker.Worker" in cmdline and work in cmdline:
            found[proc.pid] = proc
    return found


def cpu_seconds(procs: dict[int, psutil.Process]) -> float:
    total = 0.0
    for proc in procs.values():
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def scale_to(session: requests.Session, base: str, app_id: str, master_ui: str, n: int,
             timeout: float = 600, data_dir: Path | None = None) -> float:
    """PATCH spark-worker to ``n``; seconds until the master lists exactly ``n`` ALIVE workers and the model agrees.

    The clock stops at the master's count (what a job sees); the model must also
    show ``n`` running instances before the next step, so that a scale-down has
    really stopped the surplus.
    """
    before = worker_jvms(data_dir, app_id)
    t0 = time.monotonic()
    session.patch(f"{base}/appliance/{app_id}/container/spark-worker", json={"instances": n},
                  timeout=60).raise_for_status()
    alive_at = None
    while True:
        if alive_at is None and alive_workers(master_ui) == n:
            alive_at = time.monotonic() - t0
            new = {pid: p for pid, p in worker_jvms(data_dir, app_id).items() if pid not in before}
            LAST_CPU["seconds"], LAST_CPU["workers"] = cpu_seconds(new), len(new)
        if alive_at is not None:
            worker = container(get_model(session, base, app_id), "spark-worker")
            if worker["instances"] == n and sum(i["state"] == "running" for i in worker["instance_states"]) == n:
                return alive_at
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{app_id}: {alive_workers(master_ui)} of {n} workers ALIVE after {timeout:.0f} s")
        time.sleep(0.05)


#: CPU seconds the new worker JVMs had used when the last scale_to saw them all ALIVE.
LAST_CPU: dict[str, float] = {"seconds": 0.0, "workers": 0}


def measure_scale(session: requests.Session, base: str, to: int = 8, worker_memory: int = 512,
                  app_id: str = "bench-scale", settle: float = 5.0,
                  data_dir: Path | None = None) -> dict[str, float]:
    """Seconds for 1 -> 2 and 1 -> ``to`` workers ALIVE, on one spark-livy appliance (1 core per worker).

    With ``data_dir`` (the server's Jupyter data dir), also the CPU seconds the new
    workers' JVMs used until they were ALIVE: divided by the machine's cores, the
    shortest a scale-out could take if the start were only computing.
    """
    with appliance(session, base, spark_livy(app_id, 1, worker_memory=worker_memory)) as marks:
        ui = marks["model"]["links"]["spark-ui"]  # type: ignore[index]
        deadline = time.monotonic() + 120
        while alive_workers(ui) != 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the master at {ui} does not list 1 ALIVE worker")
            time.sleep(0.1)
        time.sleep(settle)  # the gateway's warm driver and the Connect server finish starting
        one = scale_to(session, base, app_id, ui, 2, data_dir=data_dir)
        one_cpu = LAST_CPU["seconds"]
        scale_to(session, base, app_id, ui, 1)
        time.sleep(settle)
        many = scale_to(session, base, app_id, ui, to, data_dir=data_dir)
        many_cpu, many_workers = LAST_CPU["seconds"], LAST_CPU["workers"]
    cores = psutil.cpu_count() or 1
    return {"one_extra": one, "to_n": many, "n": to, "worker_memory": worker_memory, "cores": cores,
            "oversubscribed": float(to > cores), "one_cpu": one_cpu, "to_n_cpu": many_cpu,
            "to_n_cpu_workers": many_workers, "cpu_floor": many_cpu / cores}


def describe(s: dict[str, float]) -> str:
    """The machine beside the figure: 8 one-core workers on 2 cores start slower than on 8."""
    over = (f"{int(s['n'])} one-core workers on {int(s['cores'])} cores: the cores are oversubscribed while "
            "they start" if s["oversubscribed"] else f"{int(s['n'])} one-core workers fit {int(s['cores'])} cores")
    return f"{over}; {int(s['worker_memory'])} MB each; {machine(load=False)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", type=int, default=8)
    parser.add_argument("--worker-memory", type=int, default=512)
    args = parser.parse_args()
    with jupyter_server() as (session, base, tmp):
        s = measure_scale(session, base, args.to, args.worker_memory, data_dir=tmp / "data")
    print(f"scale out, local backend, seconds until ALIVE in the master ({describe(s)})")
    print(f"{'PATCH 1 -> 2 workers (one extra)':<36} {s['one_extra']:8.2f}  (its JVM: {s['one_cpu']:.2f} CPU s)")
    print(f"{f'PATCH 1 -> {args.to} workers':<36} {s['to_n']:8.2f}  (their JVMs: {s['to_n_cpu']:.2f} CPU s)")
    print(f"{'ratio (goal <= 2)':<36} {s['to_n'] / s['one_extra']:8.2f}")
    print(f"{'CPU floor: their CPU s / cores':<36} {s['cpu_floor']:8.2f}  "
          f"({s['cpu_floor'] / s['one_extra']:.2f}x one extra worker)")


if __name__ == "__main__":
    main()
