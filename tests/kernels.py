"""Run cells in a real Jupyter kernel (jupyter_client) from async tests.

The kernel is driven from a child process because jupyter_client's blocking
API runs its own event loop, which cannot nest in the test's running loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sys


def run_cell(client, code: str, timeout: float = 300) -> str:  # noqa: ANN001
    """What the cell showed, one part per output, as a notebook shows it.

    Consecutive stream messages of one stream are one output, joined as they came, as
    JupyterLab merges them: ipykernel flushes a stream on a timer, so under load one
    ``print`` can arrive in two messages ("expands to", " 43\\n").
    """
    msg_id = client.execute(code)
    texts: list[str] = []
    last_stream = None
    while True:
        try:
            msg = client.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply in {timeout} s; got {texts}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "stream":
            if last_stream == content["name"]:
                texts[-1] += content["text"]
            else:
                texts.append(content["text"])
            last_stream = content["name"]
            continue
        if msg["msg_type"] in ("execute_result", "display_data"):
            data = content["data"]
            texts.append(data.get("text/plain", "") + ("\n[widget]" if "application/vnd.jupyter.widget-view+json"
                                                        in data else ""))
            last_stream = None
        elif msg["msg_type"] == "error":
            texts.append("ERROR " + "\n".join(content["traceback"]))
            last_stream = None
        elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
            return "\n".join(texts)


def run_kernel(kernel_name: str, cells: list[str], env: dict[str, str], kernel_dirs: list[str] | None) -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=kernel_dirs) if kernel_dirs else KernelSpecManager()
    km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=specs)
    km.start_kernel(env={**os.environ, **env})
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(120)
        return [run_cell(client, code) for code in cells]
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


async def run_kernel_process(kernel_name: str, cells: list[str], env: dict[str, str] | None = None,
                             kernel_dirs: list[str] | None = None, timeout: float = 900) -> list[str]:
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            "from kernels import run_kernel; "
            f"print('OUTPUTS=' + json.dumps(run_kernel({kernel_name!r}, {cells!r}, {env or {}!r}, "
            f"{kernel_dirs!r})))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode()
    line = next((x for x in text.splitlines() if x.startswith("OUTPUTS=")), None)
    assert line is not None, text[-5000:]
    return json.loads(line[len("OUTPUTS="):])
