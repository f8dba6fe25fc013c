"""The extension in real Jupyter server processes: its own start-up path, a real restart, a SIGKILL.

Each test starts ``jupyter server`` as a separate process with the extension
enabled the way an install enables it (the shipped jupyter_server_config.d),
talks to it over HTTP with its token, and stops or kills it for real, which an
in-process pytest-jupyter server cannot do.
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil
import pytest

from jupyter_spark_appliance.spark.standalone import alive_workers

from appliance_processes import gone, record_pids, wait_gone
from jupyter_process import Server

pytestmark = pytest.mark.spark

MASTER_ONLY = {"containers": [
    {"id": "spark-master", "type": "service", "image": "spark-master", "resources": {"cpus": 1, "mem": 512},
     "ports": [{"container_port": 8080}, {"container_port": 7077}]}]}


def running(model: dict) -> bool:
    return model["state"] in ("running", "failed")


def test_a_sigkilled_server_takes_its_appliances_with_it(tmp_path, shared_cds_dir):
    """stop_on_shutdown (the default): even a SIGKILL of the server leaves no JVM behind."""
    server = Server(tmp_path, tmp_path / "appliances", f"--SparkApplianceApp.cds_dir={shared_cds_dir}")
    try:
        assert server.call("POST", "appliance", {"id": "doomed", **MASTER_ONLY})[0] == 201
        model = server.wait("doomed", running, "the master")
        assert model["state"] == "running", model["reason"]
        started = record_pids(tmp_path / "appliances", "doomed")
        assert started and not any(gone(p) for p in started)
        server.stop(signal.SIGKILL)
        assert wait_gone(started) == [], [psutil.Process(p).cmdline() for p in started if not gone(p)]
    finally:
        server.stop()


def test_a_new_server_process_readopts_scales_and_deletes(tmp_path, shared_cds_dir):
    """stop_on_shutdown=False: the appliance outlives its server; the next server process takes it over."""
    data = tmp_path / "appliances"
    first = Server(tmp_path, data, "--SparkApplianceApp.stop_on_shutdown=False",
                   f"--SparkApplianceApp.cds_dir={shared_cds_dir}")
    try:
        code, body = first.call("POST", "appliance", {"template": "spark-livy", "id": "kept", "workers": 1})
        assert code == 201, body
        model = first.wait("kept", running, "the launch")
        assert model["state"] == "running", model["reason"]
        assert alive_workers(model["links"]["spark-ui"]) == 1
    finally:
        first.stop()
    survivors = record_pids(data, "kept")
    assert len(survivors) == sum(c["instances"] for c in model["containers"])  # one process per instance
    assert not any(gone(p) for p in survivors)  # they outlived their server

    second = Server(tmp_path, data, f"--SparkApplianceApp.cds_dir={shared_cds_dir}")
    try:
        model = second.wait("kept", lambda m: m["state"] == "running", "re-adoption")
        assert record_pids(data, "kept") == survivors  # the same processes, not new ones
        code, body = second.call("PATCH", "appliance/kept/container/spark-worker", {"instances": 2})
        assert code == 202 and next(c for c in body["containers"] if c["id"] == "spark-worker")["instances"] == 2
        second.wait("kept", lambda m: m["state"] == "running" and alive_workers(m["links"]["spark-ui"]) == 2,
                    "two ALIVE workers")
        everything = record_pids(data, "kept")
        assert second.call("DELETE", "appliance/kept")[0] == 204
        assert wait_gone(everything) == []
        assert second.call("GET", "appliance")[1] == {"appliances": []}
    finally:
        second.stop()
        # stop_on_shutdown was off for the first server: if anything above failed, what it
        # left must not outlive the test.
        for pid in record_pids(data, "kept") if (data / "kept" / "record.json").exists() else []:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
