"""Spark Connect (issue 15.3): the spark-livy template's Connect server, used from a real IPython kernel.

A real Jupyter server, real JVMs, pyspark's real Connect client: ``%spark_appliance
up --connect`` gives the kernel ``spark`` in one step; it counts and round-trips a
pandas DataFrame (Arrow); the token never shows in the notebook nor in any
process's argv; a client without the token, or with a wrong one, is refused.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

from kernels import run_kernel_process

pytestmark = pytest.mark.spark
APP = "conn"


@pytest.fixture
def kernel_env(jp_serverapp, jp_base_url):
    url = f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}"
    return {"JUPYTER_SPARK_APPLIANCE_URL": url, "JUPYTER_SPARK_APPLIANCE_TOKEN": jp_serverapp.identity_provider.token}


async def connect_client(url: str) -> str:
    """A Connect client in a process of its own: what ``range(3).count()`` gives, or the error's first line."""
    code = ("from pyspark.sql import SparkSession\n"
            f"s = SparkSession.builder.remote({url!r}).create()\n"
            "try:\n    print('RESULT', s.range(3).count())\n"
            "except Exception as e:\n    print('REFUSED', ' '.join(str(e).split())[:600])\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    return next((x for x in out.decode().splitlines() if x.startswith(("RESULT", "REFUSED"))), out.decode()[-2000:])


async def test_connect_from_a_kernel_and_refused_without_the_token(api, kernel_env, appliance_data_dir):
    out = await run_kernel_process("python3", [
        "%load_ext jupyter_spark_appliance",
        "%spark_appliance connect --id nothing-here",
        f"%spark_appliance up --workers 1 --id {APP} --connect",
        "print('COUNT', spark.range(10).count())",
        "import pandas as pd\n"
        "pdf = pd.DataFrame({'i': [1, 2, 3], 's': ['a', 'b', None], 'f': [0.5, 1.5, 2.5]})\n"
        "back = spark.createDataFrame(pdf).toPandas()\n"
        "print('ROUNDTRIP', back.equals(pdf), list(back.dtypes.astype(str)))\n"
        "print('SQL', spark.sql('select sum(id) as s from range(1, 101)').toPandas().to_dict('records'))",
    ], env=kernel_env)
    # Its JVM started from the drivers' class-data-sharing archive: the kernel shows it mapped.
    (jvm,) = [p for p in psutil.process_iter(["cmdline"])
              if "SparkConnectServer" in " ".join(p.info["cmdline"] or []) and str(appliance_data_dir) in
              " ".join(p.info["cmdline"] or [])]
    archives = [m.path for m in jvm.memory_maps() if "/spark-driver-" in m.path and m.path.endswith(".jsa")]
    assert archives, [m.path for m in jvm.memory_maps() if m.path.endswith(".jsa")]
    assert "Error: no appliance with id 'nothing-here'" in out[1], out[1]
    code, model = await api.call("GET", f"appliance/{APP}")
    url = model["links"]["connect"]
    assert url.startswith("sc://localhost:") and url == f"sc://localhost:{int(url.rsplit(':', 1)[1])}"
    assert f"`spark` is a Spark Connect session on {url} (Spark " in out[2], out[2]
    assert "COUNT 10" in out[3], out[3]
    assert "ROUNDTRIP True ['int64', 'object', 'float64']" in out[4], out[4]
    assert "SQL [{'s': 5050}]" in out[4], out[4]
    assert not any("ERROR" in o for o in out), out

    # The token is the appliance's secret: never in the notebook, never in a process's argv.
    _, creds = await api.call("GET", f"appliance/{APP}/credentials")
    token = creds["livy"]["password"]
    assert len(token) >= 32 and token not in "".join(out) and token not in str(model)
    for proc in psutil.process_iter(["cmdline"]):
        try:
            assert token not in " ".join(proc.info["cmdline"] or []), proc.info["cmdline"]
        except psutil.Error:
            continue
    properties = next(Path(appliance_data_dir).glob(f"{APP}/work/spark-connect-0/connect.properties"))
    assert stat.S_IMODE(os.stat(properties).st_mode) == 0o600

    # A client without the token, or with a wrong one, is refused; with it, it works.
    refused = await connect_client(url)
    assert refused.startswith("REFUSED") and "UNAUTHENTICATED" in refused, refused
    wrong = await connect_client(f"{url}/;token=not-the-token")
    assert wrong.startswith("REFUSED") and "UNAUTHENTICATED" in wrong, wrong
    assert await connect_client(f"{url}/;token={token}") == "RESULT 3"

    # With the Connect server scaled away, the magic says so clearly.
    out = await run_kernel_process("python3", [
        "%load_ext jupyter_spark_appliance",
        f"%spark_appliance scale 0 --container spark-connect --id {APP}",
        f"%spark_appliance connect --id {APP}",
        f"%spark_appliance down --id {APP}",
    ], env=kernel_env)
    assert (f"Error: {APP} has no running Spark Connect server (the spark-livy template starts one unless "
            "launched with connect false)") in out[2], out[2]
    assert f"{APP} stopped and removed" in out[3]


def test_the_connect_server_refuses_to_run_without_token_support_or_a_secret(tmp_path):
    """A Spark whose Connect server ignores spark.connect.authenticate.token would serve anyone: not started."""
    import subprocess
    import zipfile

    old = tmp_path / "spark"
    (old / "jars").mkdir(parents=True)
    with zipfile.ZipFile(old / "jars" / "spark-connect_2.12-3.5.1.jar", "w") as z:
        z.writestr("org/apache/spark/sql/connect/config/Connect$.class", b"spark.connect.grpc.binding.port")
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    args = [sys.executable, "-m", "jupyter_spark_appliance.spark.connect_server", "--spark-home", str(old),
            "--master", "spark://127.0.0.1:1", "--properties-file", str(tmp_path / "p.properties")]
    env = {**os.environ, "JSA_SPARK_AUTH_SECRET_FILE": str(secret)}
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "has no spark.connect.authenticate.token (Spark 4 has)" in r.stderr, r.stderr
    env.pop("JSA_SPARK_AUTH_SECRET_FILE")
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "refusing to serve without one" in r.stderr, r.stderr
    assert not (tmp_path / "p.properties").exists()
