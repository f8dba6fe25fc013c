"""Appliance records on disk, so that a restarted server finds its appliances again.

One directory per appliance (record, logs, Spark work dirs); the record is
rewritten atomically on every change (ipyparallel's approach), and created
with O_EXCL so that two servers sharing a data dir cannot both claim an id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import SpecError
from .state import ApplianceRecord

log = logging.getLogger(__name__)

RECORD = "record.json"


@dataclass(frozen=True)
class Unreadable:
    """A record that cannot be read (a newer version, a hand edit, a torn disk): kept, not dropped.

    Its processes may still run and its id is still taken: the manager lists it as
    failed with the reason, and a DELETE stops what ``data`` still describes.
    """

    id: str
    reason: str
    data: dict[str, Any] | None  # the JSON, if it parsed at all
    created: float


class Store:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def dir(self, appliance_id: str) -> Path:
        return self.root / appliance_id

    def claim(self, appliance_id: str) -> bool:
        """Create the record file exclusively; False if the id is taken."""
        d = self.dir(appliance_id)
        d.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(d / RECORD, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def save(self, record: ApplianceRecord) -> None:
        d = self.dir(record.id)
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".record-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record.to_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, d / RECORD)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_all(self) -> list[ApplianceRecord]:
        return self.load()[0]

    def load(self) -> tuple[list[ApplianceRecord], list[Unreadable]]:
        """Every record, and the ones that cannot be read (with why)."""
        records: list[ApplianceRecord] = []
        unreadable: list[Unreadable] = []
        if not self.root.is_dir():
            return records, unreadable
        for path in sorted(self.root.glob(f"*/{RECORD}")):
            data: Any = None
            try:
                data = json.loads(path.read_text() or "null")
                if data is None:  # claimed but never written: a crash mid-create
                    shutil.rmtree(path.parent, ignore_errors=True)
                    continue
                records.append(ApplianceRecord.from_json(data))
            except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError, SpecError) as e:
                log.warning("Unreadable appliance record %s: %s", path, e)
                try:
                    created = path.stat().st_mtime
                except OSError:
                    created = 0.0
                reason = f"{type(e).__name__}: {e}"
                unreadable.append(Unreadable(path.parent.name, reason[:2000],
                                             data if isinstance(data, dict) else None, created))
        return records, unreadable

    def remove(self, appliance_id: str) -> None:
        shutil.rmtree(self.dir(appliance_id), ignore_errors=True)
