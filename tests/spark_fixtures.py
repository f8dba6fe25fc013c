"""A real Spark standalone cluster started by hand with spark-class, for tests of
components that need *a* master (the Livy gateway) without going through the
orchestrator under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from jupyter_spark_appliance.cds import FAST_DAEMON_JAVA_OPTS
from jupyter_spark_appliance.ports import allocate_port
from jupyter_spark_appliance.spark_home import find_spark_home


@dataclass
class HandRunCluster:
    master_url: str
    ui_url: str
    procs: list[subprocess.Popen]

    def alive_workers(self) -> int:
        with urllib.request.urlopen(self.ui_url + "/json/", timeout=5) as r:
            return sum(w["state"] == "ALIVE" for w in json.load(r)["workers"])

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_cluster(workdir: Path, workers: int = 1, worker_cores: int = 2, worker_mem: str = "1536M",
                  java_opts: str = FAST_DAEMON_JAVA_OPTS) -> HandRunCluster:
    spark_class = str(find_spark_home() / "bin" / "spark-class")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false -Dspark.worker.timeout=30",
           "SPARK_WORKER_OPTS": "-Dspark.worker.timeout=30", "SPARK_DAEMON_JAVA_OPTS": java_opts}
    port, ui = allocate_port("127.0.0.1"), allocate_port("127.0.0.1")
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "master.log", "ab")
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env, stdout=log, stderr=log)]
    cluster = HandRunCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", procs)
    for i in range(workers):
        wlog = open(workdir / f"worker-{i}.log", "ab")
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host", "127.0.0.1",
             "--port", "0", "--webui-port", "0", "--cores", str(worker_cores), "--memory", worker_mem,
             "--work-dir", str(workdir / f"work-{i}")], env=env, stdout=wlog, stderr=wlog))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if cluster.alive_workers() >= workers:
                return cluster
        except OSError:
            pass
        time.sleep(0.25)
    cluster.stop()
    raise RuntimeError(f"hand-run cluster not ready; see {workdir}")
