"""Livy batches (issue 14): ``/batches`` runs ``spark-submit`` in client mode against the
master, driven with pylivy's real client (PyPI ``livy``).

Real components: a standalone master and worker with ``spark.authenticate`` and the
secret (as in test_livy_security), the gateway as a process with the secret file,
spark-submit and PySpark applications. The batch gets the secret from a 0600
properties file, never from argv: checked in /proc while it runs.
"""

from __future__ import annotations

import secrets
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import requests

from jupyter_spark_appliance.spark.standalone import master_status, start_cluster

from test_livy_security import AUTH, PASSWORD, USER, start_gateway, stop

pytestmark = pytest.mark.spark

livy = pytest.importorskip("livy", reason="pylivy (pip install livy) drives these tests")

APP = textwrap.dedent("""
    import os, sys, time
    from pyspark.sql import SparkSession

    n, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    spark = SparkSession.builder.getOrCreate()
    deadline = time.monotonic() + 300
    while not os.path.exists(go) and time.monotonic() < deadline:  # the test looks at /proc meanwhile
        time.sleep(0.2)
    total = spark.sparkContext.parallelize(range(n), 4).map(lambda x: x * x).sum()
    print(f"RESULT={total}", flush=True)
    with open(out, "w") as f:
        f.write(str(total))
    spark.stop()
""")
FAILING = textwrap.dedent("""
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    spark.range(3).count()
    raise ValueError("planned failure of this batch")
""")


@pytest.fixture(scope="module")
def spark_secret():
    return secrets.token_hex(24)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, spark_secret):
    opts = "-Dspark.worker.timeout=30 -Dspark.authenticate=true"
    cluster = start_cluster(tmp_path_factory.mktemp("batch-cluster"), workers=1, worker_cores=2,
                            env={"_SPARK_AUTH_SECRET": spark_secret, "SPARK_MASTER_OPTS": opts,
                                 "SPARK_WORKER_OPTS": opts})
    proc = None
    try:
        tmp = tmp_path_factory.mktemp("batch-gateway")
        secret_file = tmp / "spark.secret"
        secret_file.write_text(spark_secret)
        secret_file.chmod(0o600)
        proc, url = start_gateway(cluster.master_url, tmp, "--no-warm", "--username", USER,
                                  "--master-ui", cluster.ui_url,
                                  env={"LIVY_GATEWAY_PASSWORD": PASSWORD,
                                       "JSA_SPARK_AUTH_SECRET_FILE": str(secret_file)})
        yield proc, url, cluster
    finally:
        if proc is not None:
            stop(proc)
        cluster.stop()


def answered_status(ui_url: str, timeout: float = 60) -> dict:
    """The master's /json/; master_status is None while a loaded master does not answer within 5 s."""
    deadline = time.monotonic() + timeout
    while (status := master_status(ui_url)) is None:
        assert time.monotonic() < deadline, f"the master at {ui_url} did not answer within {timeout:g} s"
        time.sleep(0.5)
    return status


def wait_state(url: str, bid: int, states: set[str], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while (state := requests.get(f"{url}/batches/{bid}/state", auth=AUTH).json()["state"]) not in states:
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    return state


def test_a_pyspark_batch_runs_to_success_with_its_result_in_the_log(gateway, tmp_path, spark_secret):
    from livy import LivyBatch, SessionState

    proc, url, cluster = gateway
    app = tmp_path / "squares.py"
    app.write_text(APP)
    out, go = tmp_path / "result.txt", tmp_path / "go"
    batch = LivyBatch.create(url, str(app), auth=AUTH, args=["1000", str(out), str(go)], name="squares",
                             spark_conf={"spark.hadoop.fs.s3a.secret.key": "S3-" + spark_secret[:6]})
    assert wait_state(url, batch.batch_id, {"running", "dead"}) == "running"
    info = requests.get(f"{url}/batches/{batch.batch_id}", auth=AUTH).json()
    assert info["name"] == "squares" and info["appId"].startswith("app-"), info
    # The application is registered with the authenticated master under its id.
    assert info["appId"] in [a["id"] for a in answered_status(cluster.ui_url)["activeapps"]]
    # spark-submit, its JVM and the Python application: no secret, no conf value on a command line.
    tree = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    assert any("SparkSubmit" in " ".join(p.cmdline()) for p in tree)
    for p in tree:
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{p.pid}/environ").read_bytes()
        assert spark_secret.encode() not in cmdline and spark_secret[:6].encode() + b"\0" not in cmdline, p.pid
        assert b"S3-" not in cmdline and PASSWORD.encode() not in environ, p.pid
    go.write_text("go")
    assert batch.wait() == SessionState.SUCCESS
    assert out.read_text() == str(sum(x * x for x in range(1000)))
    log = batch.client.get_batch_log(batch.batch_id, from_=0, size=100000)
    assert f"RESULT={sum(x * x for x in range(1000))}" in log.lines, log.lines[-20:]
    assert log.from_ == 0 and log.total >= len(log.lines)
    listed = requests.get(f"{url}/batches", auth=AUTH).json()
    assert [b["state"] for b in listed["sessions"] if b["id"] == batch.batch_id] == ["success"]
    batch.kill()  # DELETE /batches/{id}
    assert requests.get(f"{url}/batches/{batch.batch_id}", auth=AUTH).status_code == 404


def test_a_failing_batch_is_dead_with_the_reason_in_its_log(gateway, tmp_path):
    from livy import LivyBatch, SessionState

    _, url, _ = gateway
    app = tmp_path / "fails.py"
    app.write_text(FAILING)
    batch = LivyBatch.create(url, str(app), auth=AUTH)
    assert batch.wait() == SessionState.DEAD
    lines = batch.client.get_batch_log(batch.batch_id, size=200).lines
    assert any("ValueError: planned failure of this batch" in line for line in lines), lines[-30:]
    assert lines[-1] == "spark-submit exited with code 1"
    batch.kill()


def test_batch_kill_and_bad_requests(gateway, tmp_path):
    _, url, _ = gateway
    app = tmp_path / "forever.py"
    app.write_text("import time\nfrom pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate()\n"
                   "time.sleep(600)\n")
    r = requests.post(f"{url}/batches", json={"file": str(app)}, auth=AUTH)
    assert r.status_code == 201 and r.json()["state"] == "starting", r.text
    bid = r.json()["id"]
    assert r.headers["Location"] == f"/batches/{bid}"
    assert wait_state(url, bid, {"running", "dead"}) == "running"
    assert requests.delete(f"{url}/batches/{bid}", auth=AUTH).json() == {"msg": "deleted"}
    assert requests.get(f"{url}/batches/{bid}", auth=AUTH).status_code == 404
    deadline = time.monotonic() + 60
    while [a for a in answered_status(gateway[2].ui_url)["activeapps"] if a["name"] == f"livy-batch-{bid}"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    for body, words in (({}, "file"), ({"file": "relative.py"}, "absolute"), ({"file": "/no/such.py"}, "not exist"),
                        ({"file": str(app), "args": [1]}, "args"), ({"file": str(app), "className": "1x"}, "className"),
                        ({"file": str(app), "conf": []}, "conf"), ([], "JSON object"),
                        ({"file": str(app), "driverMemory": "lots"}, "driverMemory")):
        r = requests.post(f"{url}/batches", json=body, auth=AUTH)
        assert r.status_code == 400 and words in r.json()["msg"], (body, r.text)
    assert requests.get(f"{url}/batches/²", auth=AUTH).status_code == 404
