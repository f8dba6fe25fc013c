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

Livy's Scala magics: a line ``%json <expr>`` gives ``application/json`` of the
value, ``%table <expr>`` gives ``application/vnd.livy.table.v1+json``
(``headers`` and ``data``), both with a ``text/plain`` rendering as on the
PySpark side. As in Livy's AbstractSparkInterpreter a magic line may follow
code in the same statement (``val x = List((1, "a"))`` then ``%table x``); the
value goes through json4s (Livy's ``Extraction.decompose``), an RDD as its
first 10 elements, a Dataset as its first 1000 rows.

Completion (``POST /sessions/{id}/completion``) is the REPL's own
(``ReplCompletion``, the presentation compiler Livy's SparkInterpreter uses).
The compiler is not thread-safe, so a completion waits for a running statement
only briefly (COMPLETE_WAIT) and answers no candidates if it still runs.

Everything runs through py4j in the session's thread, which PySpark pins to
one JVM thread: the job group and pool the session sets apply to the Scala
code, and a cancel interrupts that JVM thread (and cancels the job group)
instead of raising in the Python thread, which would leave py4j's connection
mid-answer.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from .repl import TABLE_MIME, ok_output, scalar_table_type, table_text

BIND = ("@transient val spark = org.apache.spark.sql.SparkSession.getActiveSession.get\n"
        "@transient val sc = spark.sparkContext")
# Livy's SparkInterpreter imports these for every session.
IMPORTS = ("import org.apache.spark.SparkContext._\nimport spark.implicits._\nimport spark.sql\n"
           "import org.apache.spark.sql.functions._")


class ScalaError(Exception):
    pass


# A magic line, as Livy's MAGIC_REGEX "^%(\w+)\W*(.*)" finds them; Livy's argument is a name, here
# it is an expression, so nothing after the magic's name is dropped ("%json (1, 2)", "%json {...}").
MAGIC = re.compile(r"%(\w+)(.*)")
MAGIC_ROWS = 1000  # rows of a Dataset that %json / %table take (the sql kind's limit)
MAGIC_RDD_ITEMS = 10  # Livy: an RDD's first 10 elements
COMPLETE_WAIT = 1.0  # seconds a completion waits for the interpreter to finish a statement
HOLDER = "livy$magic"  # a magic's JSON comes back through this AtomicReference (never a REPL value)
# The value of a magic's expression as JSON, inside the JVM (json4s, as Livy); "+" JSON, or "-" why not.
TO_JSON = """val livy$m: Unit = livy$magic.set({{ val livy$v: Any = ({expr}
); try {{ val livy$json = org.json4s.jackson.JsonMethods.compact(org.json4s.Extraction.decompose(livy$v match {{
  case r: org.apache.spark.rdd.RDD[_] => r.take({rdd_items}).toList
  case d: org.apache.spark.sql.Dataset[_] =>
    d.toDF().take({rows}).map(r => r.getValuesMap[Any](r.schema.fieldNames.toSeq)).toList
  case o => o
}})(org.json4s.DefaultFormats)); if (livy$json.length > {limit}) "-the value's JSON is " + livy$json.length +
  " characters, more than the gateway's limit of {limit}" else "+" + livy$json }}
  catch {{ case scala.util.control.NonFatal(e) => "-" + e }} }})"""


class TypesDoNotMatch(Exception):
    pass


def table_type(value: Any) -> str:
    """Livy's convertTableType, on the value's JSON."""
    scalar = scalar_table_type(value)
    if scalar is not None:
        return scalar
    items = list(value.values()) if isinstance(value, dict) else list(value)
    if len({table_type(v) for v in items}) > 1:
        raise TypesDoNotMatch
    return "MAP_TYPE" if isinstance(value, dict) else "ARRAY_TYPE"


def _header_order(name: str) -> tuple[int, int, str]:
    # Livy sorts names as strings; numbered columns (a row that is a list) sort as numbers here,
    # so that column 10 follows 9 and the data rows' order matches the headers'.
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def table_from_json(value: Any) -> dict[str, Any]:
    """Livy's extractTableFromJValue: a list of rows (lists, objects, or single values) -> headers and data.

    Raises TypesDoNotMatch when a column's values have different types, as Livy does.
    """
    rows = value if isinstance(value, list) else [value]
    headers: dict[str, str] = {}
    parsed = []
    for row in rows:
        if isinstance(row, list):
            cols = [(str(i), v) for i, v in enumerate(row)]
        elif isinstance(row, dict):
            cols = sorted(row.items())
        else:
            cols = [("0", row)]
        for name, v in cols:
            kind = table_type(v)
            if headers.setdefault(name, kind) != kind:
                raise TypesDoNotMatch
        parsed.append(dict(cols))
    names = sorted(headers, key=_header_order)
    data = [[row.get(n) for n in names] for row in parsed]
    return {"headers": [{"type": headers[n], "name": n} for n in names], "data": data}


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
        self.running = threading.Lock()  # held while the compiler works: a statement, or a completion
        self.holder: Any = None  # the AtomicReference magics return their JSON through
        self.completer: Any = None
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

    def _interpret(self, code: str, quiet: bool = False) -> tuple[str, str]:
        """Run code; (Success/Error/Incomplete, what it printed). quiet: no "val x: T = ..." lines."""
        reporter = self.imain.reporter()
        getattr(self.console, "value_$eq")(self.stream)  # println in this thread -> our buffer
        try:
            with self.running:
                if quiet:
                    getattr(reporter, "printResults_$eq")(False)
                try:
                    result = self.imain.interpret(code).toString()
                finally:
                    if quiet:
                        getattr(reporter, "printResults_$eq")(True)
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
        chunks = split_magics(code)
        if len(chunks) == 1 and chunks[0][0] is None:
            return self._run(code, execution_count)
        # Livy runs a statement line by line: code, then a magic, then maybe more code. The
        # statement's output is the last part's (text parts after the last magic run together).
        output: dict[str, Any] = ok_output({"text/plain": ""}, execution_count)
        for magic, text in chunks:
            if magic is None:
                part = self._run(text, execution_count)
                if part["status"] == "ok" and "text/plain" in output["data"] and len(output["data"]) == 1:
                    joined = "\n".join(t for t in (output["data"]["text/plain"], part["data"]["text/plain"]) if t)
                    part = ok_output({"text/plain": joined}, execution_count)
            else:
                part = self._magic(magic, text, execution_count)
            if part["status"] != "ok":
                return part
            output = part
        return output

    def _run(self, code: str, execution_count: int) -> dict[str, Any]:
        result, text = self._interpret(code)
        if result == "Success":
            return ok_output({"text/plain": text.rstrip("\n")}, execution_count)
        if result == "Incomplete":
            return {"status": "error", "execution_count": execution_count, "ename": "Error",
                    "evalue": "incomplete statement", "traceback": []}
        return self._error(text, execution_count)

    def _error(self, text: str, execution_count: int) -> dict[str, Any]:
        lines = text.splitlines(keepends=True)
        # A compile error starts with the caret line; say the "error: ..." line first.
        first = next((i for i, line in enumerate(lines) if line.strip() and line.strip() != "^"), 0)
        evalue = lines[first].strip() if lines else "error"
        return {"status": "error", "execution_count": execution_count, "ename": "Error", "evalue": evalue,
                "traceback": lines[first + 1:] if lines else []}

    def _magic(self, name: str, expr: str, execution_count: int) -> dict[str, Any]:
        """Livy's %json and %table: the value of ``expr`` as JSON, or as a table of its rows."""
        def error(ename: str, evalue: str, traceback: list[str] | None = None) -> dict[str, Any]:
            return {"status": "error", "execution_count": execution_count, "ename": ename, "evalue": evalue,
                    "traceback": traceback or []}

        if name not in ("json", "table"):
            return error("UnknownMagic", f"Unknown magic command {name}")
        if not expr.strip():
            return error("Error", f"%{name} needs an expression, e.g. %{name} x")
        from . import repl

        if self.holder is None:
            result, text = self._interpret(
                f"val {HOLDER} = new java.util.concurrent.atomic.AtomicReference[String]()", quiet=True)
            if result != "Success":
                return self._error(text, execution_count)
            self.holder = self.imain.valueOfTerm(HOLDER).get()
        code = TO_JSON.format(expr=expr, rows=MAGIC_ROWS, rdd_items=MAGIC_RDD_ITEMS, limit=repl.OUTPUT_LIMIT)
        result, printed = self._interpret(code, quiet=True)
        answer = self.holder.getAndSet(None)
        if result == "Incomplete":
            return error("Error", "incomplete statement")
        if result != "Success":
            return self._error(printed, execution_count)
        if not answer or answer[0] != "+":
            # Livy's words when json4s cannot convert the value
            return error("ValueError", "Failed to convert value into a JSON value", [str(answer or "")[1:] + "\n"])
        value = json.loads(answer[1:])
        if name == "json":
            bundle = {"application/json": value, "text/plain": json.dumps(value)}
        else:
            try:
                table = table_from_json(value)
            except TypesDoNotMatch:
                return error("TypeError", "table rows have different types")
            bundle = {TABLE_MIME: table,
                      "text/plain": table_text([h["name"] for h in table["headers"]], table["data"])}
        if printed.strip():
            bundle["text/plain"] = printed.rstrip("\n") + "\n" + bundle["text/plain"]
        return ok_output(bundle, execution_count)

    def complete(self, code: str, cursor: int) -> list[str]:
        """The Scala REPL's completions at ``cursor`` (a JVM string index): member or name candidates.

        From a thread other than the session's: the compiler serves one caller at a time, so a
        statement that runs longer than COMPLETE_WAIT means no candidates (not a wait for it).
        """
        if not self.running.acquire(timeout=COMPLETE_WAIT):
            return []
        try:
            if self.completer is None:
                shell = self.jvm.scala.tools.nsc.interpreter.shell
                self.completer = shell.ReplCompletion(self.imain, shell.Accumulator())
            result = self.completer.complete(code, cursor)
            candidates = self.jvm.scala.jdk.javaapi.CollectionConverters.asJava(result.candidates())
            names = [str(c.name()) for c in candidates]
            with self.lock:
                if self.head is None:
                    self.buffer.reset()  # nothing runs: whatever the compiler said is not a statement's
        finally:
            self.running.release()
        return [n for n in dict.fromkeys(names) if n and not n.startswith("livy$")]

    def interrupt(self) -> None:
        """From another thread: interrupt the JVM thread running this interpreter's statement."""
        self.thread.interrupt()


def split_magics(code: str) -> list[tuple[str | None, str]]:
    """Code and magic lines, in order: (None, code) or (magic name, its argument)."""
    chunks: list[tuple[str | None, str]] = []
    pending: list[str] = []
    for line in code.strip().split("\n"):
        m = MAGIC.fullmatch(line.rstrip("\r"))
        if m is None:
            pending.append(line)
            continue
        if "\n".join(pending).strip():
            chunks.append((None, "\n".join(pending)))
        pending = []
        chunks.append((m.group(1), m.group(2).strip()))
    if "\n".join(pending).strip() or not chunks:
        chunks.append((None, "\n".join(pending)))
    return chunks

