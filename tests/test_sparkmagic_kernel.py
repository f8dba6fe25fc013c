"""End to end as a user: launch spark-livy through the REST API, then a real
Sparkmagic ``pysparkkernel`` (jupyter_client), reading the config the extension
wrote, runs a Spark cell on the appliance."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sys

import pytest
from jupyter_client.kernelspec import KernelSpecManager
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


def run_kernel(conf_dir, cells: list[str]) -> list[str]:
    """Start Sparkmagic's own pysparkkernel (kernelspec straight from the package) and run cells.

    In a thread: jupyter_client's blocking API runs its own event loop.
    """
    import sparkmagic

    specs = KernelSpecManager(kernel_dirs=[os.path.join(os.path.dirname(sparkmagic.__file__), "kernels")])
    km = KernelManager(kernel_name="pysparkkernel", kernel_spec_manager=specs)
    km.start_kernel(env={**os.environ, "SPARKMAGIC_CONF_DIR": str(conf_dir)})
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(120)
        return [run_cell(client, code) for code in cells]
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


async def run_kernel_process(conf_dir, cells: list[str]) -> list[str]:
    """run_kernel in a child process: jupyter_client's blocking API wants its own event loop."""
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"from test_sparkmagic_kernel import run_kernel; "
            f"print('OUTPUTS=' + json.dumps(run_kernel({str(conf_dir)!r}, {cells!r})))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    text = out.decode()
    line = next((x for x in text.splitlines() if x.startswith("OUTPUTS=")), None)
    assert line is not None, text[-5000:]
    return json.loads(line[len("OUTPUTS="):])


async def test_pysparkkernel_runs_spark_on_the_appliance(api, sparkmagic_conf_dir):
    code, _ = await api.call("POST", "appliance", {"template": "spark-livy", "id": "e2e", "workers": 1})
    assert code == 201
    model = await api.wait_state("e2e", {"running", "failed"})
    assert model["state"] == "running", model["reason"]
    config = json.loads((sparkmagic_conf_dir / "config.json").read_text())
    assert config["kernel_python_credentials"]["url"] == model["links"]["livy"]

    outputs = await run_kernel_process(sparkmagic_conf_dir, [
        "spark.range(1000).count()",
        "sc.parallelize(range(10)).map(lambda x: x * x).sum()",
    ])
    assert "1000" in outputs[0], outputs[0]
    assert "285" in outputs[1], outputs[1]
    assert (await api.call("DELETE", "appliance/e2e"))[0] == 204
