"""A reaper: the local appliances' processes die with the Jupyter server, even on SIGKILL.

Local instances run in sessions of their own (so that Ctrl-C on the server's
terminal cannot kill them behind the orchestrator's back), so nothing ties
them to the server: a server killed with SIGKILL or by the OOM killer would
leave JVMs, gateways and users' drivers running and holding ports. The
reaper is a small process of its own that holds the read end of a pipe whose
write end only the server has. The server tells it, line by line, which
process groups to watch (``+ PGID CREATE_TIME``) and which to forget
(``- PGID``); when the pipe ends, because the server is gone however it went,
the reaper stops every group it still watches (SIGTERM, then SIGKILL), checking
each leader's start time so that a reused pid is never hit.

Not used when ``stop_on_shutdown`` is off: then the processes are meant to
outlive the server, for the next one to re-adopt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from jupyter_spark_appliance.spark.processes import group_alive

GRACE_SECONDS = 10.0


class Reaper:
    """The server's side: starts the reaper on first use and feeds it groups."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [self.python, "-m", "jupyter_spark_appliance.spark.reaper"], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                    env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                    pass_fds=())
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:  # it died: the next line starts a new one
                self._proc = None

    def watch(self, pgid: int, create_time: float) -> None:
        self._send(f"+ {pgid} {create_time!r}")

    def forget(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def close(self) -> None:
        """The server stops on purpose, having stopped its appliances: the reaper ends with nothing to do."""
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None


def _same_process(pid: int, create_time: float) -> bool:
    try:
        import psutil

        return abs(psutil.Process(pid).create_time() - create_time) < 0.05
    except Exception:  # noqa: BLE001 - gone, or no psutil: do not risk a reused pid
        return False


def reap(groups: dict[int, float], grace: float = GRACE_SECONDS) -> None:
    alive = [g for g, t in groups.items() if _same_process(g, t)]
    for g in alive:
        try:
            os.killpg(g, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [g for g in alive if group_alive(g)]
    for g in alive:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of the pipe ends it
    groups: dict[int, float] = {}
    for raw in sys.stdin.buffer:
        parts = raw.decode(errors="replace").split()
        try:
            if parts[:1] == ["+"] and len(parts) == 3:
                groups[int(parts[1])] = float(parts[2])
            elif parts[:1] == ["-"] and len(parts) == 2:
                groups.pop(int(parts[1]), None)
        except ValueError:
            continue
    reap(groups)


if __name__ == "__main__":
    main()
