"""Scala statements in the PySpark driver's own JVM (Livy's ``spark`` kind).

No Scala installation is needed: pyspark's jars hold ``scala-compiler``,
``scala-reflect`` and ``spark-repl``. Each Scala session (or PySpark session
running ``kind: "spark"`` statements) gets its own ``IMain`` (the Scala REPL's
interpreter), so sessions' definitions stay apart, bound to that session's own
SparkSession (a ``newSession()`` of the shared driver): the session's thread
makes it the JVM thread's active session, and the interpreter's first line
reads it back. Interpreters share the driver's ``spark.repl.class.outputDir``,
from which executors load the classes they compile by name; each interpreter
numbers its lines in its own block (``$line100001``, ...), so two sessions
never write, or run, each other's classes.

Output is what the Scala REPL prints (``val res0: Long = 10``), as Livy's
SparkInterpreter returns it: the interpreter's text, ``println`` included.
Errors are Livy's: ``ename`` "Error", ``evalue`` the first line that says what
went wrong, ``traceback`` the rest; an incomplete statement is Livy's
"incomplete statement" error.

Everything runs through py4j in the session's thread, which PySpark pins to
one JVM thread: the job group and pool the session sets apply to the Scala
code, and a cancel interrupts that JVM thread (and cancels the job group)
instead of raising in the Python thread, which would leave py4j's connection
mid-answer.
"""

from __future__ import annotations

import threading
from typing import Any

from .repl import ok_output

BIND = ("@transient val spark = org.apache.spark.sql.SparkSession.getActiveSession.get\n"
        "@transient val sc = spark.sparkContext")
# Livy's SparkInterpreter imports these for every session.
IMPORTS = ("import org.apache.spark.SparkContext._\nimport spark.implicits._\nimport spark.sql\n"
           "import org.apache.spark.sql.functions._")


class ScalaError(Exception):
    pass


LINE_COUNTER = "scala$tools$nsc$interpreter$Naming$$_freshLineId"
LINE_BLOCK = 100_000  # line numbers per interpreter: 21474 interpreters per driver before int overflow

_console_lock = threading.Lock()
_interpreters = 0  # interpreters created in this driver
_console_out: Any = None  # scala.Console's DynamicVariable for Console.out (per JVM thread)


def _console_out_variable(jvm: Any) -> Any:
    """The DynamicVariable behind scala.Console.out: setting it in a thread redirects println there."""
    global _console_out
    with _console_lock:
        if _console_out is None:
            cls = jvm.java.lang.Class.forName("scala.Console$")
            field = cls.getDeclaredField("outVar")
            field.setAccessible(True)
            _console_out = field.get(cls.getField("MODULE$").get(None))
        return _console_out


class ScalaInterpreter:
    """One session's Scala REPL; create it and call it from the session's thread only."""

    def __init__(self, spark: Any, output_dir: str):
        jvm = spark._jvm
        self.jvm = jvm
        self.thread = jvm.java.lang.Thread.currentThread()  # the JVM thread py4j pins to this Python thread
        settings = jvm.scala.tools.nsc.Settings()
        settings.processArgumentString("-usejavacp -Yrepl-class-based -nowarn")
        getattr(settings.Yreploutdir(), "value_$eq")(output_dir)
        self.buffer = jvm.java.io.ByteArrayOutputStream()
        self.stream = jvm.java.io.PrintStream(self.buffer, True, "UTF-8")
        reporter = jvm.scala.tools.nsc.interpreter.shell.ReplReporterImpl(settings, jvm.java.io.PrintWriter(
            self.stream, True))
        self.imain = jvm.scala.tools.nsc.interpreter.IMain(settings, reporter)
        self._number_lines_apart()
        self.console = _console_out_variable(jvm)
        self.head: str | None = None  # the start of an output that outgrew the limit (see check_output)
        self.lock = threading.Lock()
        jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
        for code in (BIND, IMPORTS):
            result, text = self._interpret(code)
            if result != "Success":
                raise ScalaError(f"the Scala interpreter did not start: {text.strip()}")

    def _number_lines_apart(self) -> None:
        """Give this interpreter its own block of line numbers ($line<k*100000+n>).

        Each IMain counts its lines from 1, and they all write into the driver's one class
        output directory, from which executors load classes by name: two sessions' "$line4"
        would overwrite each other, and an executor that loaded one would run it for the
        other (seen: serialVersionUID mismatches). The counter is a private field of the
        interpreter's naming object (Scala 2.13); without it, only one interpreter may run.
        """
        global _interpreters
        with _console_lock:
            index, _interpreters = _interpreters, _interpreters + 1
        try:
            naming = self.imain.naming()
            field = naming.getClass().getDeclaredField(LINE_COUNTER)
            field.setAccessible(True)
            field.setInt(naming, index * LINE_BLOCK)
        except Exception as e:  # noqa: BLE001 - py4j errors: another Scala version
            if index:
                raise ScalaError("this Scala REPL cannot number its lines apart from another session's, "
                                 f"so only one Scala session can run per driver ({e})") from None

    def _interpret(self, code: str) -> tuple[str, str]:
        getattr(self.console, "value_$eq")(self.stream)  # println in this thread -> our buffer
        try:
            result = self.imain.interpret(code).toString()
        finally:
            getattr(self.console, "value_$eq")(self.jvm.java.lang.System.out)
            self.jvm.java.lang.Thread.interrupted()  # a cancel's interrupt must not reach the next statement
        with self.lock:
            text = self.buffer.toString("UTF-8")
            self.buffer.reset()
            if self.head is not None:
                text, self.head = self.head + "\n[... more output left out]\n" + text[-2000:], None
        return result, text

    def check_output(self, limit: int) -> None:
        """From the driver's monitor while a statement runs: an output past ``limit`` stops growing.

        The buffer is a JVM ByteArrayOutputStream (println from the statement's JVM thread goes
        straight into it); past the limit its start is kept here and the buffer is emptied, so a
        statement printing without end cannot fill the shared driver's heap.
        """
        with self.lock:
            if self.buffer.size() <= limit:
                return
            if self.head is None:
                self.head = self.buffer.toString("UTF-8")[:limit]
            self.buffer.reset()

    def execute(self, code: str, execution_count: int) -> dict[str, Any]:
        if not code.strip():
            return ok_output({"text/plain": ""}, execution_count)
        result, text = self._interpret(code)
        if result == "Success":
            return ok_output({"text/plain": text.rstrip("\n")}, execution_count)
        if result == "Incomplete":
            return {"status": "error", "execution_count": execution_count, "ename": "Error",
                    "evalue": "incomplete statement", "traceback": []}
        lines = text.splitlines(keepends=True)
        # A compile error starts with the caret line; say the "error: ..." line first.
        first = next((i for i, line in enumerate(lines) if line.strip() and line.strip() != "^"), 0)
        evalue = lines[first].strip() if lines else "error"
        return {"status": "error", "execution_count": execution_count, "ename": "Error", "evalue": evalue,
                "traceback": lines[first + 1:] if lines else []}

    def interrupt(self) -> None:
        """From another thread: interrupt the JVM thread running this interpreter's statement."""
        self.thread.interrupt()

