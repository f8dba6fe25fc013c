"""The gateway's handle on one driver process (see driver_main for the other side).

Nothing about a driver's settings is on its command line, where every local
user reads it in ``ps``: the driver's Spark conf (a session's ``conf`` may hold
S3 keys) and where the Spark secret lives go to the driver as the first JSON
line on its stdin, which also has no size limit (argv has, E2BIG). The
driver's environment is the gateway's minus the gateway's own credentials.

The driver's stdout/stderr (its log) come through a pipe: the gateway keeps
the last lines in memory (what ``GET /sessions`` and ``/log`` show, never a
read of a whole file) and writes them to a log file that is rotated at a size.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..spark.processes import set_priority

log = logging.getLogger(__name__)

OnEvent = Callable[["DriverProcess", dict[str, Any]], None]

#: Never passed on to drivers, whose users run arbitrary code in them.
SECRET_ENV = ("LIVY_GATEWAY_PASSWORD", "LIVY_GATEWAY_USERNAME", "JSA_SPARK_AUTH_SECRET_FILE", "_SPARK_AUTH_SECRET")
LOG_LINES_KEPT = 10000  # per driver, in memory
LOG_LINE_MAX = 8192  # characters; longer lines are cut (a log is for people)
LOG_FILE_MAX = 10 * 1024 * 1024  # bytes before driver-N.log becomes driver-N.log.1


def driver_environment(source: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if source is None else source)
    for name in SECRET_ENV:
        env.pop(name, None)
    return env


class LogBuffer:
    """A driver's log: the last ``keep`` lines, numbered from the first line ever written.

    Lines are also appended to ``path``, which is rotated (one ``.1`` kept) past ``max_bytes``.
    """

    def __init__(self, path: Path | None, keep: int = LOG_LINES_KEPT, max_bytes: int = LOG_FILE_MAX):
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.total = 0  # lines ever seen; the first kept one is number total - len(lines)
        self.lock = threading.Lock()
        self.path, self.max_bytes = path, max_bytes
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "ab")  # noqa: SIM115 - closed in close()

    def append(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if len(line) > LOG_LINE_MAX:
            line = line[:LOG_LINE_MAX] + f" ... [{len(line) - LOG_LINE_MAX} more characters]"
        with self.lock:
            self.lines.append(line)
            self.total += 1
            if self._file is not None:
                try:
                    self._file.write(line.encode("utf-8", "replace") + b"\n")
                    self._file.flush()
                    if self._file.tell() > self.max_bytes:
                        self._rotate()
                except OSError:
                    pass  # a full disk must not stop the driver: the lines stay in memory

    def _rotate(self) -> None:
        assert self._file is not None and self.path is not None
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab")  # noqa: SIM115

    def tail(self, n: int) -> list[str]:
        with self.lock:
            if n <= 0:
                return []
            start = max(0, len(self.lines) - n)
            return [self.lines[i] for i in range(start, len(self.lines))]

    def slice(self, start: int, size: int) -> tuple[int, list[str]]:
        """Lines numbered start.. (at most size); (first line number returned, lines)."""
        with self.lock:
            first = self.total - len(self.lines)
            start = max(start, first)
            lo = start - first
            hi = min(len(self.lines), lo + max(0, size))
            return start, [self.lines[i] for i in range(lo, hi)] if lo < hi else []

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class DriverProcess:
    def __init__(self, key: tuple, master: str, conf: dict[str, str], log_path: Path,
                 on_event: OnEvent, name: str, python: str = sys.executable, nice: int = 0,
                 options: dict[str, Any] | None = None):
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
        self.log = LogBuffer(log_path)
        self._loop = asyncio.get_running_loop()
        self._stdin_lock = threading.Lock()
        read_fd, write_fd = os.pipe()
        argv = [python, "-m", "jupyter_spark_appliance.livy.driver_main", "--reply-fd", str(write_fd)]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                                         env=driver_environment())
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.nice = nice
        self._hurried = False
        if nice:
            # Set before the child has spawned its JVM (it is still importing pyspark),
            # so the JVM inherits it.
            self._set_priority(nice)
        self._replies = os.fdopen(read_fd, "rb")
        setup = {"op": "setup", "master": master, "name": name, "conf": conf, **(options or {})}
        # The first line on stdin; written from a thread, as a big conf may fill the pipe
        # before the driver reads it.
        threading.Thread(target=self._write_line, args=(json.dumps(setup),), name=f"driver-setup-{self.pid}",
                         daemon=True).start()
        threading.Thread(target=self._read, name=f"driver-{self.proc.pid}", daemon=True).start()
        threading.Thread(target=self._read_log, name=f"driver-log-{self.proc.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_lines(self, n: int = LOG_LINES_KEPT) -> list[str]:
        """The driver log's last n lines (from memory)."""
        return self.log.tail(n)

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.log.append(raw.decode("utf-8", "replace"))
        self.proc.stdout.close()
        self.log.close()

    def _read(self) -> None:
        for line in self._replies:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._loop.call_soon_threadsafe(self._dispatch, event)
        code = self.proc.wait()
        self._replies.close()
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

    def hurry(self) -> None:
        """Back to normal priority while still starting, because a session now waits for this driver.

        The warm driver starts niced so that it does not slow the workers starting beside it;
        once a user waits on it, it is the thing to finish first (a niced JVM on a loaded
        machine took over 60 s to start, past Sparkmagic's session timeout). Where lowering
        niceness is not allowed (not root) it simply stays nice. Once per driver: the walk scans
        every process of the machine, and twenty sessions may arrive at once; "ready" renices
        again, for a process forked while this one walked the tree.
        """
        if self.nice and self.state == "starting" and not self._hurried:
            self._hurried = True
            self._set_priority(0)

    def _set_priority(self, value: int) -> None:
        set_priority(self.proc.pid, value)

    def _write_line(self, line: str) -> None:
        if self.proc.stdin is None:
            return
        with self._stdin_lock:
            try:
                self.proc.stdin.write((line + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the exit event follows

    def send(self, **request: Any) -> None:
        if self.state == "dead":
            return
        self._write_line(json.dumps(request))

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
