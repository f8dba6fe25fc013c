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

Completions (``op: complete``) run in a small pool of their own threads, never
in a session's statement thread, so a session busy with a long statement still
completes; each is answered with a ``completion`` event carrying the request's
number.

Protocol with the gateway: JSON lines on stdin (requests) and on the file
descriptor given by ``--reply-fd`` (events); stdout/stderr are the driver log.
The first line on stdin is the setup (master, name, Spark conf, where the Spark
secret is): none of it is on a command line. PySpark itself would put every
conf key on its JVM's ``spark-submit`` command line, so the JVM is started
with a ``--properties-file`` (0600, deleted once the JVM has read it) and the
secret is set in the SparkConf through py4j only (``spark.authenticate``; Spark
standalone takes the secret only from the driver's conf).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import shlex
import shutil
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from . import repl
from .repl import cap_output, error_output, execute, install_streams, ok_output
from .scala import ScalaInterpreter

SQL_ROW_LIMIT = 1000
MONITOR_INTERVAL = 0.5
COMPLETION_THREADS = 2  # completions at once per driver (each a py4j connection when it reaches the JVM)
CANCEL_RETRY_SECONDS = 0.5  # a cancelled statement's job group is cancelled again this often until it ends


SPARE_READY = "A Scala session made ahead is ready: the next Scala session opens at once"


class ScalaSpare:
    """One Scala session made ahead, interpreter and all, once this driver has had a Scala session.

    A Scala session's interpreter costs about 2.4 s to create even in a warm driver
    (the compiler's classes are loaded by then; the rest is the interpreter's own
    set-up and compiling the bindings), and must be created in the thread that will
    run its statements. So the next Scala session's thread is started, with its own
    SparkSession and interpreter, as soon as the previous one has opened, and the next
    Scala request adopts it: it opens at once. About 35 MB per driver, and nothing
    for a driver that never hosts Scala.
    """

    def __init__(self, make: Callable[[int | None, bool], Session]) -> None:
        self.make = make  # (sid, or None for a spare; spare?) -> a new Session
        self.spare: Session | None = None
        self.lock = threading.Lock()

    def open(self, sid: int) -> Session:
        with self.lock:
            session, self.spare = self.spare, None
        if session is None:
            session = self.make(sid, False)
        else:
            session.adopt(sid)
        threading.Thread(target=self._make_next_after, args=(session,), name="scala-spare", daemon=True).start()
        return session

    def _make_next_after(self, session: Session) -> None:
        session.opened.wait()  # not beside it: two interpreters compiling at once would slow both
        with self.lock:
            if self.spare is None:
                self.spare = self.make(None, True)


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
    def __init__(self, sid: int | None, kind: str, spark: Any, replies: Replies, output_dir: str = "",
                 spare: bool = False):
        """``spare``: made ahead of any request (see ScalaSpare), it opens once ``adopt`` gives it a sid."""
        from pyspark.sql import SQLContext

        self.sid, self.kind, self.replies = sid, kind, replies
        self.adopted = threading.Event()
        if not spare:
            self.adopted.set()
        self.opened = threading.Event()  # it has said "opened" (with or without an error)
        self.output_dir = output_dir  # the driver's spark.repl.class.outputDir, for Scala
        self.scala: ScalaInterpreter | None = None
        self.current_kind: str | None = None
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
        self.lock = threading.Lock()
        self.interruptible = False  # the thread runs a statement's code: a cancel may interrupt it
        self.thread = threading.Thread(target=self._loop, name=f"session-{'spare' if spare else sid}", daemon=True)
        self.thread.start()

    def adopt(self, sid: int) -> None:
        self.sid = sid
        self.adopted.set()

    def _say_opened(self, error: str | None = None) -> None:
        self.adopted.wait()
        if error is None:
            self.replies.send(event="opened", sid=self.sid)
        else:
            self.replies.send(event="opened", sid=self.sid, error=error)
        self.opened.set()

    def group(self, stmt: int) -> str:
        return f"livy-session-{self.sid}-statement-{stmt}"

    def scala_interpreter(self) -> ScalaInterpreter:
        if self.scala is None:
            self.scala = ScalaInterpreter(self.spark, self.output_dir)
        return self.scala

    def _loop(self) -> None:
        if self.kind == "spark":
            # A Scala session is open once its interpreter is: the first statement then runs at once.
            try:
                self.scala_interpreter()
            except Exception as e:  # noqa: BLE001 - the session fails, the driver does not
                traceback.print_exc()
                self._say_opened(f"{type(e).__name__}: {e}")
                return
            if not self.adopted.is_set():
                print(SPARE_READY, file=sys.__stderr__, flush=True)  # the driver log
        self._say_opened()
        while True:
            request = self.queue.get()
            if request is None:
                return
            stmt = request["statement"]
            if stmt in self.cancelled:
                self.replies.send(event="result", sid=self.sid, statement=stmt, cancelled=True, output=None)
                continue
            kind = request.get("kind") or self.kind
            self.current, self.current_kind = stmt, kind
            self.replies.send(event="started", sid=self.sid, statement=stmt)
            sc = self.spark.sparkContext
            sc.setJobGroup(self.group(stmt), f"Livy session {self.sid}", True)
            sc.setLocalProperty("spark.scheduler.pool", f"livy-session-{self.sid}")  # used in FAIR mode
            try:
                with self.lock:
                    self.interruptible = kind != "spark"  # a py4j call must not be interrupted in Python
                output = self.run(kind, request["code"], stmt)
                with self.lock:
                    self.interruptible = False
            except KeyboardInterrupt as e:  # a cancel's interrupt that landed just outside user code
                with self.lock:
                    self.interruptible = False
                output = error_output(e, stmt)
            self.current = None
            cancelled = stmt in self.cancelled
            output = cap_output(output, repl.OUTPUT_LIMIT)
            self.replies.send(event="result", sid=self.sid, statement=stmt, cancelled=cancelled, output=output)

    def run(self, kind: str, code: str, stmt: int) -> dict[str, Any]:
        if kind == "sql":
            return self._sql(code, stmt)
        if kind == "spark":
            try:
                return self.scala_interpreter().execute(code, stmt)
            except Exception as e:  # noqa: BLE001 - py4j, or the interpreter did not start (ScalaError)
                return error_output(e, stmt)
        return execute(code, self.namespace, stmt)

    def _sql(self, code: str, stmt: int) -> dict[str, Any]:
        try:
            df = self.spark.sql(code)
            rows = [list(r) for r in df.take(SQL_ROW_LIMIT)]
            return ok_output({"application/json": {"schema": json.loads(df.schema.json()), "data": rows}}, stmt)
        except BaseException as e:  # noqa: BLE001
            return error_output(e, stmt)

    def complete(self, kind: str, code: str, cursor: int) -> list[str]:
        """Candidates at ``cursor`` for code of ``kind``, from a completion thread (see Completions)."""
        if kind == "spark":
            # Only an interpreter that exists: one is created (and bound to its JVM thread) in the
            # session's own thread, by a statement; until then there is nothing Scala to complete.
            scala = self.scala
            return scala.complete(code, cursor) if scala is not None else []
        if kind == "sql":
            return []  # Livy's SQLInterpreter has no completion
        return repl.complete(code, cursor, self.namespace)

    def cancel(self, stmt: int) -> None:
        if stmt in self.cancelled:
            return
        self.cancelled.add(stmt)
        if self.current == stmt:
            if self.current_kind == "spark" and self.scala is not None:
                self.scala.interrupt()
            threading.Thread(target=self._cancel_until_done, args=(stmt,), name=f"cancel-{self.sid}-{stmt}",
                             daemon=True).start()

    def _cancel_until_done(self, stmt: int) -> None:
        """Cancel the statement's job group until the statement ends; interrupt it only outside the JVM.

        A cancel can arrive while the statement is still planning its job (a
        DataFrame's ``.rdd``, say): the job group has no job yet, so the group is
        cancelled again until the statement is over. Interrupting the thread
        while it waits in a py4j call would abandon the call and let PySpark
        finish the action outside the job group, as a job nobody cancels whose
        pending tasks keep dynamic allocation holding cores; so pure-Python
        code (which does not notice a job cancel) is interrupted only when no
        py4j call is on its stack.
        """
        while self.current == stmt:
            try:
                self.spark.sparkContext.cancelJobGroup(self.group(stmt))
            except Exception:  # noqa: BLE001 - the context is stopping: the statement ends with it
                return
            if not self._in_jvm_call():
                self.interrupt()
            time.sleep(CANCEL_RETRY_SECONDS)

    def _in_jvm_call(self) -> bool:
        frame = sys._current_frames().get(self.thread.ident or -1)
        while frame is not None:
            if f"{os.sep}py4j{os.sep}" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def interrupt(self) -> None:
        # Pure-Python code does not notice a job cancel: interrupt the thread too, but only
        # while it runs the statement (else the interrupt would kill the session's thread).
        with self.lock:
            if self.interruptible:
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
            if session.current_kind == "spark" and session.scala is not None:
                session.scala.check_output(repl.OUTPUT_LIMIT)
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


class Completions:
    """Completion requests, answered by a few threads of their own, apart from every session's.

    Daemon threads (not a ThreadPoolExecutor, whose workers the interpreter joins at exit): a
    completion stuck in a user's ``__getattr__`` must not keep the driver, and its JVM's cluster
    cores, from exiting.
    """

    def __init__(self, replies: Replies, threads: int = COMPLETION_THREADS):
        self.replies = replies
        self.queue: queue.Queue[tuple[Session | None, dict[str, Any]] | None] = queue.Queue()
        self.threads = [threading.Thread(target=self._loop, name=f"livy-complete-{i}", daemon=True)
                        for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, session: Session | None, request: dict[str, Any]) -> None:
        self.queue.put((session, request))

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            self._answer(*item)

    def _answer(self, session: Session | None, request: dict[str, Any]) -> None:
        candidates: list[str] = []
        try:
            if session is not None:
                candidates = session.complete(request.get("kind") or session.kind, str(request.get("code", "")),
                                              int(request.get("cursor") or 0))
        except Exception:  # noqa: BLE001 - no candidates; the driver log says why
            traceback.print_exc()
        self.replies.send(event="completion", sid=request.get("sid"), request=request.get("request"),
                          candidates=candidates)

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)


def java_properties(props: dict[str, str]) -> str:
    """A .properties file (ISO-8859-1 with \\uXXXX escapes, as java.util.Properties.load reads it)."""

    def escape(text: str, key: bool) -> str:
        out = []
        for i, ch in enumerate(text):
            code = ord(ch)
            if ch == "\\":
                out.append("\\\\")
            elif ch in "\n\r\t\f":
                out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}[ch])
            elif ch in "=:#!" or (ch == " " and (key or i == 0)):
                out.append("\\" + ch)
            elif code < 0x20 or code > 0x7E:
                data = ch.encode("utf-16-be")
                out.extend(f"\\u{int.from_bytes(data[j:j + 2], 'big'):04x}" for j in range(0, len(data), 2))
            else:
                out.append(ch)
        return "".join(out)

    return "".join(f"{escape(k, True)}={escape(v, False)}\n" for k, v in props.items())


def read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        secret = f.read().strip()
    if not secret:
        raise ValueError(f"the Spark secret file {path} is empty")
    return secret


def build_spark(master: str, app_name: str, conf: dict[str, str], secret: str | None = None,
                work_dir: str | None = None) -> Any:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    # The JVM reads every setting from a file only this user can read: PySpark would pass
    # a SparkConf given here as --conf arguments, in the JVM's argv.
    props = {"spark.master": master, "spark.app.name": app_name, **conf}
    fd, path = tempfile.mkstemp(prefix="spark-", suffix=".properties", dir=work_dir)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(java_properties(props))
    # --load-spark-defaults: conf/spark-defaults.conf still applies (below these), as without a file.
    os.environ["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {shlex.quote(path)} --load-spark-defaults pyspark-shell"
    try:
        SparkContext._ensure_initialized()
    finally:
        os.unlink(path)
        os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    if secret:
        # Through py4j into the JVM's SparkConf: in no file, no argv, no environment.
        builder = builder.config("spark.authenticate", "true").config("spark.authenticate.secret", secret)
    return builder.getOrCreate()


def _ui_url(sc: Any) -> str:
    """The application's UI as users reach it: through the Jupyter server when Spark's reverse
    proxy is set (the master proxies each application under ``<prefix>/proxy/<app-id>/``),
    so Sparkmagic's "Spark UI" link works from a remote browser; else the driver's own port."""
    conf = sc.getConf()
    prefix = conf.get("spark.ui.reverseProxyUrl", "")
    if conf.get("spark.ui.reverseProxy", "false") == "true" and prefix:
        return f"{prefix.rstrip('/')}/proxy/{sc.applicationId}/"
    return sc.uiWebUrl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reply-fd", type=int, required=True)
    args = parser.parse_args(argv)
    replies = Replies(args.reply_fd)
    try:
        setup = json.loads(sys.stdin.buffer.readline() or b"null")
        if not isinstance(setup, dict) or setup.get("op") != "setup":
            raise ValueError("the first line on stdin must be the setup")
    except ValueError as e:
        replies.send(event="fatal", error=str(e))
        return 2
    _, stderr = install_streams()

    # Warnings go to the driver log (%%logs), not into statement output: Spark 4
    # warns on every DataFrame.toJSON(), which would corrupt Sparkmagic's %%sql parsing.
    def log_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        stderr.fallback.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = log_warning
    conf = {str(k): str(v) for k, v in (setup.get("conf") or {}).items()}
    repl.OUTPUT_LIMIT = int(setup.get("max_output_bytes") or repl.OUTPUT_LIMIT)
    work_dir = setup.get("work_dir") or tempfile.mkdtemp(prefix="livy-driver-")
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    # Every driver can host Scala sessions: the classes their interpreters compile are
    # served to executors from here, which must be set before the SparkContext starts.
    conf.setdefault("spark.repl.class.outputDir", tempfile.mkdtemp(prefix="repl-", dir=work_dir))
    started = time.time()
    try:
        secret = read_secret(setup["secret_file"]) if setup.get("secret_file") else None
        root = build_spark(setup["master"], setup.get("name") or "livy-gateway-driver", conf, secret, work_dir)
    except BaseException as e:  # noqa: BLE001 - report, then die
        traceback.print_exc()
        replies.send(event="fatal", error=f"{type(e).__name__}: {e}")
        shutil.rmtree(work_dir, ignore_errors=True)
        return 1
    sc = root.sparkContext
    replies.send(event="ready", app_id=sc.applicationId, ui=_ui_url(sc), seconds=time.time() - started)
    sessions: dict[int, Session] = {}
    output_dir = conf["spark.repl.class.outputDir"]
    scala = ScalaSpare(lambda sid, spare: Session(sid, "spark", root.newSession(), replies, output_dir, spare))
    monitor = Monitor(sc, sessions, replies)
    completions = Completions(replies)
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        op, sid = request.get("op"), request.get("sid")
        try:
            if op == "open" and request.get("kind") == "spark":
                sessions[sid] = scala.open(sid)
            elif op == "open":
                sessions[sid] = Session(sid, request.get("kind", "pyspark"), root.newSession(), replies, output_dir)
            elif op == "execute" and sid in sessions:
                sessions[sid].queue.put(request)
            elif op == "complete":
                completions.submit(sessions.get(sid), request)
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
    completions.stop()
    monitor.stop()
    try:
        root.stop()
    except Exception:  # noqa: BLE001 - exiting anyway; the log has it
        traceback.print_exc()
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
