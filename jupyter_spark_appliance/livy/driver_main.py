"""The driver process: one SparkContext hosting many Livy sessions.

Livy gives every session its own driver JVM (~400 MB each, the PIVOT note's
"6 sessions in 4 GB"). Here sessions whose driver-level settings agree share
one driver: each gets its own SparkSession (``spark.newSession()``: own SQL
conf, temp views, UDFs), its own namespace and its own statement thread, and
its jobs run in their own job group so cancelling one session's statement
never touches another's, and in their own fair-scheduler pool so one session's
long job does not queue every other session's jobs behind it.

A monitor thread reports what the gateway cannot see: each running
statement's tasks (done, total, running) from the status tracker, and how
many executors the application has. From these the gateway derives Livy's
``progress`` and notices a statement waiting for cluster resources.

Protocol with the gateway: JSON lines on stdin (requests) and on the file
descriptor given by ``--reply-fd`` (events); stdout/stderr are the driver log.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import sys
import threading
import time
import traceback
import warnings
from typing import Any

from .repl import error_output, execute, install_streams, ok_output

SQL_ROW_LIMIT = 1000
MONITOR_INTERVAL = 0.5


class Replies:
    def __init__(self, fd: int):
        self.file = os.fdopen(fd, "w", buffering=1)
        self.lock = threading.Lock()

    def send(self, **message: Any) -> None:
        line = json.dumps(message, default=str)
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


class Session:
    def __init__(self, sid: int, kind: str, spark: Any, replies: Replies):
        from pyspark.sql import SQLContext

        self.sid, self.kind, self.replies = sid, kind, replies
        self.spark = spark
        sc = spark.sparkContext
        try:
            sql_context: Any = SQLContext(sc, spark)
        except Exception:  # noqa: BLE001 - removed in some Spark versions
            sql_context = None
        self.namespace: dict[str, Any] = {
            "__name__": "__main__", "__builtins__": __builtins__,
            "spark": spark, "sc": sc, "sqlContext": sql_context,
        }
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.current: int | None = None
        self.cancelled: set[int] = set()
        self.thread = threading.Thread(target=self._loop, name=f"session-{sid}", daemon=True)
        self.thread.start()

    def group(self, stmt: int) -> str:
        return f"livy-session-{self.sid}-statement-{stmt}"

    def _loop(self) -> None:
        while True:
            request = self.queue.get()
            if request is None:
                return
            stmt = request["statement"]
            if stmt in self.cancelled:
                self.replies.send(event="result", sid=self.sid, statement=stmt, cancelled=True, output=None)
                continue
            self.current = stmt
            self.replies.send(event="started", sid=self.sid, statement=stmt)
            kind = request.get("kind") or self.kind
            sc = self.spark.sparkContext
            sc.setJobGroup(self.group(stmt), f"Livy session {self.sid}", True)
            sc.setLocalProperty("spark.scheduler.pool", f"livy-session-{self.sid}")  # used in FAIR mode
            try:
                if kind == "sql":
                    output = self._sql(request["code"], stmt)
                else:
                    output = execute(request["code"], self.namespace, stmt)
            except KeyboardInterrupt as e:  # a cancel that landed outside user code
                output = error_output(e, stmt)
            self.current = None
            cancelled = stmt in self.cancelled
            self.replies.send(event="result", sid=self.sid, statement=stmt, cancelled=cancelled, output=output)

    def _sql(self, code: str, stmt: int) -> dict[str, Any]:
        try:
            df = self.spark.sql(code)
            rows = [list(r) for r in df.take(SQL_ROW_LIMIT)]
            return ok_output({"application/json": {"schema": json.loads(df.schema.json()), "data": rows}}, stmt)
        except BaseException as e:  # noqa: BLE001
            return error_output(e, stmt)

    def cancel(self, stmt: int) -> None:
        self.cancelled.add(stmt)
        if self.current == stmt:
            self.spark.sparkContext.cancelJobGroup(self.group(stmt))
            # Pure-Python code does not notice a job cancel: interrupt the thread too.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread.ident), ctypes.py_object(KeyboardInterrupt))


class Monitor:
    """Every MONITOR_INTERVAL: the running statements' task counts and the executor count, as events.

    Events are sent only when something changed: ``tasks`` (sid, statement, done,
    total, running, active) and ``executors`` (count, and the application's running
    tasks: ``running``, so "busy" can be told from "still starting"). A statement's tasks are its
    job group's jobs' stages; a finished job counts as all done (its skipped stages
    never run).
    """

    def __init__(self, sc: Any, sessions: dict[int, Session], replies: Replies):
        self.sc, self.sessions, self.replies = sc, sessions, replies
        self.sent: dict[tuple[int, int], tuple[int, int, int, bool]] = {}
        self.executors: tuple[int, int] | None = None
        self.failures = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="livy-monitor", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Before the SparkContext stops: a tick in flight finishes first."""
        self.stopped.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stopped.wait(MONITOR_INTERVAL):
            if self.sc._jsc is None:  # stopped (a statement may stop it, too)
                continue
            try:
                self.tick()
                self.failures = 0
            except Exception:  # noqa: BLE001 - the JVM may be stopping; say so in the log, not forever
                self.failures += 1
                if self.failures <= 3:
                    traceback.print_exc()

    def executor_count(self) -> int:
        infos = self.sc._jsc.sc().statusTracker().getExecutorInfos()  # the driver is listed too
        return max(0, len(infos) - 1)

    def statement_tasks(self, tracker: Any, group: str) -> tuple[int, int, int, bool]:
        done = total = running = 0
        active = False
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            if job is None:
                continue
            finished = job.status in ("SUCCEEDED", "FAILED")
            active = active or not finished
            for stage_id in job.stageIds:
                stage = tracker.getStageInfo(stage_id)
                if stage is None:
                    continue
                total += stage.numTasks
                if finished:
                    done += stage.numTasks
                else:
                    done += min(stage.numCompletedTasks, stage.numTasks)
                    running += stage.numActiveTasks
        return done, total, running, active

    def tick(self) -> None:
        tracker = self.sc.statusTracker()
        count = self.executor_count()
        running = 0
        for stage_id in tracker.getActiveStageIds():
            stage = tracker.getStageInfo(stage_id)
            running += stage.numActiveTasks if stage is not None else 0
        if (count, running) != self.executors:
            self.executors = (count, running)
            self.replies.send(event="executors", count=count, running=running)
        seen = set()
        for session in list(self.sessions.values()):
            stmt = session.current
            if stmt is None:
                continue
            key = (session.sid, stmt)
            seen.add(key)
            tasks = self.statement_tasks(tracker, session.group(stmt))
            if self.sent.get(key) != tasks:
                self.sent[key] = tasks
                done, total, running, active = tasks
                self.replies.send(event="tasks", sid=session.sid, statement=stmt, done=done, total=total,
                                  running=running, active=active)
        for key in set(self.sent) - seen:
            del self.sent[key]


def build_spark(master: str, app_name: str, conf: dict[str, str]) -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master", required=True)
    parser.add_argument("--name", default="livy-gateway-driver")
    parser.add_argument("--conf", action="append", default=[], help="key=value")
    parser.add_argument("--reply-fd", type=int, required=True)
    args = parser.parse_args(argv)
    replies = Replies(args.reply_fd)
    _, stderr = install_streams()

    # Warnings go to the driver log (%%logs), not into statement output: Spark 4
    # warns on every DataFrame.toJSON(), which would corrupt Sparkmagic's %%sql parsing.
    def log_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        stderr.fallback.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = log_warning
    conf = dict(item.split("=", 1) for item in args.conf)
    started = time.time()
    try:
        root = build_spark(args.master, args.name, conf)
    except BaseException as e:  # noqa: BLE001 - report, then die
        traceback.print_exc()
        replies.send(event="fatal", error=f"{type(e).__name__}: {e}")
        return 1
    sc = root.sparkContext
    replies.send(event="ready", app_id=sc.applicationId, ui=sc.uiWebUrl, seconds=time.time() - started)
    sessions: dict[int, Session] = {}
    monitor = Monitor(sc, sessions, replies)
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        op, sid = request.get("op"), request.get("sid")
        try:
            if op == "open":
                sessions[sid] = Session(sid, request.get("kind", "pyspark"), root.newSession(), replies)
                replies.send(event="opened", sid=sid)
            elif op == "execute" and sid in sessions:
                sessions[sid].queue.put(request)
            elif op == "cancel" and sid in sessions:
                sessions[sid].cancel(request["statement"])
            elif op == "close" and sid in sessions:
                session = sessions.pop(sid)
                session.queue.put(None)
                replies.send(event="closed", sid=sid)
            elif op == "shutdown":
                break
        except Exception as e:  # noqa: BLE001 - one bad request must not kill every session
            traceback.print_exc()
            replies.send(event="error", sid=sid, error=f"{type(e).__name__}: {e}")
    monitor.stop()
    try:
        root.stop()
    except Exception:  # noqa: BLE001 - exiting anyway; the log has it
        traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
