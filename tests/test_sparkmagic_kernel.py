"""End to end as a user: launch spark-livy through the REST API, then a real
Sparkmagic ``pysparkkernel`` (jupyter_client), reading the config the extension
wrote, runs a Spark cell on the appliance."""

from __future__ import annotations

import asyncio
import json
import os
import queue

import pytest
from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.spark


def run_cell(client, code: str, timeout: float = 300) -> str:
    msg_id = client.execute(code)
    texts = []
    while True:
        try:
            msg = client.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply in {timeout} s; got {texts}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "stream":
            texts.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            texts.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            texts.append("\n".join(content["traceback"]))
        elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
            return "\n".join(texts)


async def test_pysparkkernel_runs_spark_on_the_appliance(api, sparkmagic_conf_dir):
    code, _ = await api.call("POST", "appliance", {"template": "spark-livy", "id": "e2e", "workers": 1})
    assert code == 201
    model = await api.wait_state("e2e", {"running", "failed"})
    assert model["state"] == "running", model["reason"]
    config = json.loads((sparkmagic_conf_dir / "config.json").read_text())
    assert config["kernel_python_credentials"]["url"] == model["links"]["livy"]

    km = KernelManager(kernel_name="pysparkkernel")
    km.start_kernel(env={**os.environ, "SPARKMAGIC_CONF_DIR": str(sparkmagic_conf_dir)})
    client = km.client()
    client.start_channels()
    try:
        await asyncio.to_thread(client.wait_for_ready, 120)
        out = await asyncio.to_thread(run_cell, client, "spark.range(1000).count()")
        assert "1000" in out, out
        out = await asyncio.to_thread(run_cell, client, "sc.parallelize(range(10)).map(lambda x: x * x).sum()")
        assert "285" in out, out
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
    assert (await api.call("DELETE", "appliance/e2e"))[0] == 204
