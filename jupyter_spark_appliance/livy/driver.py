"""The gateway's handle on one driver process (see driver_main for the other side)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

OnEvent = Callable[["DriverProcess", dict[str, Any]], None]


class DriverProcess:
    def __init__(self, key: tuple, master: str, conf: dict[str, str], log_path: Path,
                 on_event: OnEvent, name: str, python: str = sys.executable, nice: int = 0):
        self.key = key
        self.name = name
        self.conf = conf
        self.log_path = log_path
        self.on_event = on_event
        self.state = "starting"  # starting -> ready -> dead
        self.app_id: str | None = None
        self.ui: str | None = None
        self.error: str | None = None
        self.sessions: set[int] = set()
        self.executors: int | None = None  # reported by the driver's monitor
        self.running_tasks = 0  # the application's, reported with executors
        self._loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        argv = [python, "-m", "jupyter_spark_appliance.livy.driver_main", "--master", master,
                "--name", name, "--reply-fd", str(write_fd)]
        for k, v in conf.items():
            argv += ["--conf", f"{k}={v}"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as logfile:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=logfile,
                                         stderr=subprocess.STDOUT, pass_fds=(write_fd,))
        os.close(write_fd)
        self.nice = nice
        if nice:
            # Set before the child has spawned its JVM (it is still importing pyspark),
            # so the JVM inherits it.
            self._set_priority(nice)
        self._replies = os.fdopen(read_fd, "rb")
        threading.Thread(target=self._read, name=f"driver-{self.proc.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self._replies:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._loop.call_soon_threadsafe(self._dispatch, event)
        code = self.proc.wait()
        self._loop.call_soon_threadsafe(self._dispatch, {"event": "exit", "code": code})

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            self.state, self.app_id, self.ui = "ready", event.get("app_id"), event.get("ui")
            if self.nice:
                self._set_priority(0)  # back to normal for sessions, where allowed (root)
        elif kind == "fatal":
            self.error = event.get("error")
        elif kind == "exit":
            self.state = "dead"
            self.error = self.error or f"the driver process exited with code {event.get('code')}"
        self.on_event(self, event)

    def _set_priority(self, value: int) -> None:
        """Set the niceness of every thread of the driver and its JVM (Linux: per thread)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            try:
                tids = [t.id for t in proc.threads()]
            except psutil.Error:
                continue
            for tid in tids:
                try:
                    os.setpriority(os.PRIO_PROCESS, tid, value)
                except OSError:
                    pass  # lowering niceness needs privileges: then it stays nice

    def send(self, **request: Any) -> None:
        if self.state == "dead" or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the exit event follows

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self, timeout: float = 10.0) -> None:
        self.send(op="shutdown")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
