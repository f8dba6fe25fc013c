"""End to end as a user: launch spark-livy through the REST API, then a real
Sparkmagic ``pysparkkernel`` (jupyter_client), reading the config the extension
wrote, runs a Spark cell on the appliance, and so does its Scala ``sparkkernel``."""

from __future__ import annotations

import json
import os

import pytest
import sparkmagic

from kernels import run_kernel_process

pytestmark = pytest.mark.spark


async def test_pysparkkernel_runs_spark_on_the_appliance(api, sparkmagic_conf_dir):
    code, _ = await api.call("POST", "appliance", {"template": "spark-livy", "id": "e2e", "workers": 1,
                                                   "connect": False})  # Sparkmagic needs only Livy
    assert code == 201
    model = await api.wait_state("e2e", {"running", "failed"})
    assert model["state"] == "running", model["reason"]
    config = json.loads((sparkmagic_conf_dir / "config.json").read_text())
    assert config["kernel_python_credentials"]["url"] == model["links"]["livy"]

    # Sparkmagic's own kernelspec, straight from the installed package.
    outputs = await run_kernel_process(
        "pysparkkernel",
        ["spark.range(1000).count()", "sc.parallelize(range(10)).map(lambda x: x * x).sum()"],
        env={"SPARKMAGIC_CONF_DIR": str(sparkmagic_conf_dir)},
        kernel_dirs=[os.path.join(os.path.dirname(sparkmagic.__file__), "kernels")],
    )
    # Exactly the values, each its cell's last line (before it: the session's start, Spark's progress widget).
    assert outputs[0].strip().splitlines()[-1] == "1000", outputs
    assert outputs[1].strip().splitlines()[-1] == "285", outputs
    # Sparkmagic's Scala kernel, through the credentials the extension wrote for it (issue 14 item 1).
    assert config["kernel_scala_credentials"]["url"] == model["links"]["livy"]
    scala = await run_kernel_process(
        "sparkkernel", ["spark.range(10).count()"],
        env={"SPARKMAGIC_CONF_DIR": str(sparkmagic_conf_dir)},
        kernel_dirs=[os.path.join(os.path.dirname(sparkmagic.__file__), "kernels")],
    )
    # Sparkmagic's start-up statement `spark` is res0 (as on Livy).
    assert scala[0].strip().splitlines()[-1] == "val res1: Long = 10", scala[0]
    assert (await api.call("DELETE", "appliance/e2e"))[0] == 204
