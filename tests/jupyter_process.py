"""A real ``jupyter server`` process with the extension, for tests that must stop, kill or fuzz it.

pytest-jupyter's server runs inside the test process, on its event loop: it
cannot be SIGKILLed, and a blocking client (schemathesis, requests) would
block it. This one is a separate process with its own Jupyter dirs, the
extension enabled the way an install enables it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jupyter_spark_appliance.spark.child_env import child_environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``jupyter server`` process with the extension, in its own Jupyter dirs."""

    def __init__(self, root: Path, data_dir: Path, *options: str):
        self.port, self.token = free_port(), "t0k3n-" + os.urandom(8).hex()
        self.url = f"http://127.0.0.1:{self.port}/spark-appliance"
        env = {**child_environment(), "JUPYTER_CONFIG_DIR": str(root / "config"),
               "JUPYTER_DATA_DIR": str(root / "data"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
               "SPARKMAGIC_CONF_DIR": str(root / "sparkmagic")}
        self.log = open(root / f"server-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={self.port}", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             f"--SparkApplianceApp.data_dir={data_dir}", "--SparkApplianceApp.prepare_cds=False", *options],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.call("GET", "appliance")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, self.tail()
            time.sleep(0.3)

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        req = urllib.request.Request(f"{self.url}/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait(self, app_id: str, predicate, what: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        model: dict = {}
        while time.monotonic() < deadline:
            code, model = self.call("GET", f"appliance/{app_id}")
            if code == 200 and predicate(model):
                return model
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(model)[:2000]}\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
