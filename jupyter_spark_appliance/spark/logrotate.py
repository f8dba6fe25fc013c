"""Cap a log file that a child process writes itself: "copytruncate" rotation.

A local instance writes its log through its own file descriptor (stdout and
stderr point at ``logs/<name>.log``); the server holds no pipe between the
child and the file, so the process outlives a server restart
(``stop_on_shutdown = False``) and the next server re-adopts it. That rules out
the usual rename-and-reopen rotation, since only the child could reopen its
stdout, and a JVM does not. What remains is logrotate's ``copytruncate``:
copy the live file to ``<name>.log.1`` (older copies shift to ``.2`` ...),
then truncate the live file to 0. The child opened the file with
``O_APPEND``, so its next write lands at the new end, offset 0: no hole of NUL
bytes up to its old offset, which a plain ``O_WRONLY`` descriptor would leave.

The caveat is logrotate's too: what the child writes between the end of the
copy and the truncation is lost. The copy reads up to the end of the file and
truncates right after, so that window is one system call wide.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

COPY_CHUNK = 1 << 20


def open_append(path: Path) -> int:
    """A new, empty log opened ``O_APPEND`` (a descriptor to hand to a child as stdout).

    Truncated, not continued: a restarted instance's readiness is judged from its
    own lines, not from its predecessor's (the orchestrator has those in the reason).
    """
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)


def backup_path(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate_if_larger(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it is larger than ``max_bytes`` (0: never); True if it did.

    The check is one ``stat``, cheap enough for every instance on every tick of the
    reconciler. Keeps at most ``backups`` old files (``.1`` the newest); 0 keeps none.
    """
    if max_bytes <= 0:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size <= max_bytes:
        return False
    backups = max(0, backups)
    for n in range(backups - 1, 0, -1):
        older = backup_path(path, n)
        if older.exists():
            os.replace(older, backup_path(path, n + 1))
    if backups:
        tmp = path.with_name(f"{path.name}.1.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, st.st_mode & 0o777)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                # To the end of the file as it is now, bounded so a child that writes
                # faster than we copy cannot keep us here.
                left = st.st_size + max_bytes
                while left > 0 and (chunk := src.read(min(COPY_CHUNK, left))):
                    dst.write(chunk)
                    left -= len(chunk)
                os.truncate(path, 0)  # right after the last read: the lost window is this call
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, backup_path(path, 1))  # readers of .1 never see half a copy
    else:
        os.truncate(path, 0)
    _remove_beyond(path, backups)
    return True


def _remove_beyond(path: Path, backups: int) -> None:
    """Old files past ``backups`` (left when the setting was lowered)."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) > backups:
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a log, read on into ``.1`` when the live file was just rotated.

    Reads only the end of each file (about 400 bytes a line), whatever their size; ``.1``
    only when the whole live file holds fewer than ``n`` lines.
    """
    if n <= 0:
        return []
    lines, whole = _tail(path, n)
    if whole and len(lines) < n:
        older, _ = _tail(backup_path(path, 1), n - len(lines))
        lines = older + lines
    return lines[-n:]


def _tail(path: Path, n: int) -> tuple[list[str], bool]:
    """(the last ``n`` lines, whether that is the whole file)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - n * 400)
            f.seek(start)
            data = f.read()
    except OSError:
        return [], True
    return data.decode("utf-8", "replace").splitlines()[-n:], start == 0


def remove_backups(path: Path) -> None:
    """Every old file of ``path`` (a new process starts a new log, and its history)."""
    _remove_beyond(path, 0)
