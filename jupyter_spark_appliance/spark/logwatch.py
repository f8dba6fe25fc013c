"""Readiness from log lines: cheaper and quicker than polling HTTP endpoints.

Spark's master logs "New state: ALIVE" the moment it can take workers, and a
worker logs "Successfully registered with master" when the master has it as
ALIVE; reading the new bytes of a log every 50 ms costs next to nothing,
whereas an HTTP probe of /json/ costs a request, a JSON render and a parse.
"""

from __future__ import annotations

from pathlib import Path


class LogWatcher:
    def __init__(self) -> None:
        self._offsets: dict[tuple[str, bytes], int] = {}
        self._found: set[tuple[str, bytes]] = set()

    def seen(self, path: str | Path, pattern: bytes) -> bool:
        """True once ``pattern`` has appeared in the file; reads only what is new."""
        key = (str(path), pattern)
        if key in self._found:
            return True
        offset = self._offsets.get(key, 0)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return False
        if pattern in data:
            self._found.add(key)
            return True
        # Resume after the last complete line, so a line cut mid-write is read again whole.
        cut = data.rfind(b"\n")
        if cut >= 0:
            self._offsets[key] = offset + cut + 1
        return False

    def forget(self, path: str | Path) -> None:
        for key in [k for k in self._offsets if k[0] == str(path)]:
            self._offsets.pop(key, None)
        self._found = {k for k in self._found if k[0] != str(path)}
