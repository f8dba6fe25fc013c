"""Run one statement the way Livy's Python REPL does, with no Spark knowledge.

Kept apart from the driver process so it can be tested without a JVM: the
last expression's value is shown (``single`` mode), output is captured per
thread, errors become Livy's ``{ename, evalue, traceback}``, and the REPL
magics ``%table``, ``%json`` and ``%matplot`` produce their MIME bundles.
``complete`` answers ``POST /sessions/{id}/completion`` for Python with the
standard library's rlcompleter in the session's namespace.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import rlcompleter
import sys
import threading
import traceback
from typing import Any

TABLE_MIME = "application/vnd.livy.table.v1+json"
OUTPUT_LIMIT = 1024 * 1024  # bytes of a statement's output JSON (the gateway's --max-output-bytes)


class CappedBuffer(io.StringIO):
    """A statement's captured stdout/stderr, which stops growing at ``limit`` characters."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.size, self.dropped = limit, 0, 0

    def write(self, text: str) -> int:
        room = self.limit - self.size
        if room <= 0:
            self.dropped += len(text)
            return len(text)
        if len(text) > room:
            self.dropped += len(text) - room
            text_kept = text[:room]
        else:
            text_kept = text
        self.size += len(text_kept)
        super().write(text_kept)
        return len(text)


def truncation_note(size: int, limit: int) -> str:
    return (f"\n[output truncated: {size} bytes, more than the gateway's limit of {limit} bytes "
            "(--max-output-bytes)]")


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace"))


def _cut_to(text: str, budget: int, note: str) -> str:
    """The start of ``text`` plus ``note``, at most ``budget`` bytes as JSON (escapes count: a newline is 2)."""
    cut = max(0, min(len(text), budget - len(note)))
    while cut and _json_size(text[:cut] + note) > budget:
        cut = int(cut * 0.9)
    return text[:cut] + note


def cap_output(output: dict[str, Any] | None, limit: int) -> dict[str, Any] | None:
    """A Livy output of at most about ``limit`` bytes: strings cut with a note, rows dropped, still valid."""
    if output is None or limit <= 0:
        return output
    size = _json_size(output)
    if size <= limit:
        return output
    note = truncation_note(size, limit)
    out = dict(output)
    if out.get("status") == "error":
        out["evalue"] = str(out.get("evalue", ""))[: limit // 4]
        kept, used = [], 0
        for line in out.get("traceback") or []:
            line = str(line)
            if used + len(line) > limit // 2:
                kept.append(line[: max(0, limit // 2 - used)])
                break
            kept.append(line)
            used += len(line)
        out["traceback"] = kept + [note.strip() + "\n"]
        return out
    data = dict(out.get("data") or {})
    budget = max(256, (limit - 512) // max(1, len(data)))
    for mime in list(data):
        value = data[mime]
        if _json_size(value) <= budget:
            continue
        if isinstance(value, str) and mime.startswith("text/"):
            data[mime] = _cut_to(value, budget, note)
        elif isinstance(value, dict) and isinstance(value.get("data"), list):  # sql and %table: fewer rows
            rows = value["data"]
            lo, hi = 0, len(rows)
            while lo < hi:  # the most rows that fit
                mid = (lo + hi + 1) // 2
                if _json_size({**value, "data": rows[:mid]}) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            data[mime] = {**value, "data": rows[:lo]}
            if _json_size(data[mime]) > budget:  # the schema alone is too big
                del data[mime]
            data["text/plain"] = (str(data.get("text/plain", ""))[: budget // 2]
                                  + f"\n[{len(rows) - lo} of {len(rows)} rows left out]" + note)
        else:
            del data[mime]
            data["text/plain"] = str(data.get("text/plain", ""))[: budget // 2] + f"\n[{mime} left out]" + note
    out["data"] = data
    return out


class ThreadStream(io.TextIOBase):
    """sys.stdout/sys.stderr stand-in: each statement thread writes to its own buffer."""

    def __init__(self, fallback: Any):
        self.fallback = fallback
        self.local = threading.local()

    def capture(self, buffer: io.StringIO | None) -> None:
        self.local.buffer = buffer

    def write(self, text: str) -> int:
        buffer = getattr(self.local, "buffer", None)
        if buffer is None:
            return self.fallback.write(text)
        return buffer.write(text)

    def flush(self) -> None:
        if getattr(self.local, "buffer", None) is None:
            self.fallback.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


_installed: tuple[ThreadStream, ThreadStream] | None = None


def install_streams() -> tuple[ThreadStream, ThreadStream]:
    global _installed
    if _installed is None:
        _installed = (ThreadStream(sys.stdout), ThreadStream(sys.stderr))
        sys.stdout, sys.stderr = _installed
    return _installed


def _displayhook(value: Any) -> None:
    if value is not None:
        sys.stdout.write(repr(value) + "\n")


def run_python(code: str, namespace: dict[str, Any]) -> None:
    """exec ``code``; the value of a trailing expression is printed like a REPL's."""
    tree = ast.parse(code, "<stdin>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Interactive(body=[tree.body.pop()])
    if tree.body:
        exec(compile(tree, "<stdin>", "exec"), namespace)
    if last is not None:
        saved = sys.displayhook
        sys.displayhook = _displayhook  # the default one also rebinds builtins._ across sessions
        try:
            exec(compile(last, "<stdin>", "single"), namespace)
        finally:
            sys.displayhook = saved


def error_output(exc: BaseException, execution_count: int) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    # Drop our own frames: the user's code starts at "<stdin>".
    lines = [line for line in tb if 'File "<stdin>"' in line or not line.startswith("  File ")]
    return {
        "status": "error",
        "execution_count": execution_count,
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": lines,
    }


def ok_output(data: dict[str, Any], execution_count: int) -> dict[str, Any]:
    return {"status": "ok", "execution_count": execution_count, "data": data}


def run_magic(code: str, namespace: dict[str, Any]) -> dict[str, Any] | None:
    """Livy's REPL magics; None when ``code`` is not one."""
    stripped = code.strip()
    if not stripped.startswith("%") or "\n" in stripped:
        return None
    name, _, arg = stripped[1:].partition(" ")
    arg = arg.strip()
    if name == "json":
        value = _to_plain(eval(arg, namespace))
        return {"application/json": value, "text/plain": json.dumps(value)}
    if name == "table":
        return table_bundle(eval(arg, namespace))
    if name == "matplot":
        plt = eval(arg, namespace)
        buf = io.BytesIO()
        fig = plt.gcf()
        fig.savefig(buf, format="png")
        plt.clf()
        return {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": ""}
    raise NameError(f"unknown magic %{name} (known: %table, %json, %matplot)")


def _to_plain(value: Any) -> Any:
    if hasattr(value, "asDict"):
        return _to_plain(value.asDict(recursive=True))
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def scalar_table_type(value: Any) -> str | None:
    """Livy's table column type of a JSON scalar (None for a list or a map), for both languages' %table."""
    if value is None:
        return "NULL_TYPE"
    if isinstance(value, bool):
        return "BOOLEAN_TYPE"
    if isinstance(value, int):
        return "BIGINT_TYPE"
    if isinstance(value, float):
        return "DOUBLE_TYPE"
    if isinstance(value, str):
        return "STRING_TYPE"
    return None


def _type_name(value: Any) -> str:
    return scalar_table_type(value) or "STRING_TYPE"


def table_bundle(value: Any) -> dict[str, Any]:
    """A list of dicts / Rows / sequences -> Livy's table MIME type plus text."""
    rows = [_to_plain(r) for r in value]
    if rows and all(isinstance(r, dict) for r in rows):
        names: list[str] = []
        for r in rows:
            names += [k for k in r if k not in names]
        data = [[r.get(n) for n in names] for r in rows]
    else:
        data = [r if isinstance(r, list) else [r] for r in rows]
        names = [str(i) for i in range(max((len(r) for r in data), default=0))]
    types = [_type_name(next((row[i] for row in data if i < len(row) and row[i] is not None), None))
             for i in range(len(names))]
    text = table_text(names, data)
    return {
        TABLE_MIME: {"headers": [{"name": n, "type": t} for n, t in zip(names, types, strict=True)], "data": data},
        "text/plain": text,
    }


def table_text(names: list[str], data: list[list[Any]]) -> str:
    """A table's text/plain: tab-separated, the header line first (Sparkmagic shows text/plain)."""
    return "\n".join(["\t".join(names)] + ["\t".join("" if v is None else str(v) for v in row) for row in data])


def utf16_prefix(code: str, cursor: int) -> str:
    """``code`` up to ``cursor`` counted in UTF-16 code units, as Livy's (JVM) clients count it."""
    if code.isascii():
        return code[:cursor]
    return code.encode("utf-16-le", "surrogatepass")[: 2 * cursor].decode("utf-16-le", "ignore")


TOKEN = re.compile(r"[^\W\d][\w.]*$")  # a name or dotted name that ends at the cursor


def complete(code: str, cursor: int, namespace: dict[str, Any]) -> list[str]:
    """Python completions of the (dotted) name before ``cursor``, as rlcompleter finds them.

    Candidates replace the whole token, like rlcompleter's (``spark.rang`` -> ``spark.range``),
    without the ``(`` or ``:`` it adds for readline. Nothing is called: rlcompleter only looks
    names and attributes up (and no longer evaluates properties), so completing while a
    statement runs in the same namespace is safe; a namespace changing under it is retried.
    """
    match = TOKEN.search(utf16_prefix(code, cursor))
    if match is None:
        return []
    text = match.group(0)
    for _ in range(3):
        completer = rlcompleter.Completer(namespace)
        found: list[str] = []
        try:
            for state in range(10000):
                candidate = completer.complete(text, state)
                if candidate is None:
                    break
                found.append(candidate.rstrip("(: "))
            return list(dict.fromkeys(found))
        except RuntimeError:  # "dictionary changed size during iteration": a statement defines names
            continue
        except Exception:  # noqa: BLE001 - an attribute lookup that fails: no candidates, like a REPL
            return []
    return []


def execute(code: str, namespace: dict[str, Any], execution_count: int) -> dict[str, Any]:
    """One pyspark/python statement -> Livy's output object."""
    out = CappedBuffer(OUTPUT_LIMIT + 1)
    stdout, stderr = install_streams()
    stdout.capture(out)
    stderr.capture(out)
    try:
        bundle = run_magic(code, namespace)
        if bundle is None:
            run_python(code, namespace)
            bundle = {"text/plain": out.getvalue().rstrip("\n")}
        elif out.getvalue():
            bundle["text/plain"] = (out.getvalue() + bundle.get("text/plain", "")).rstrip("\n")
        return ok_output(bundle, execution_count)
    except BaseException as e:  # noqa: BLE001 - user code may raise anything, even SystemExit
        result = error_output(e, execution_count)
        if out.getvalue():
            result["traceback"] = [out.getvalue()] + result["traceback"]
        return result
    finally:
        stdout.capture(None)
        stderr.capture(None)
