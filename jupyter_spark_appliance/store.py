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
from pathlib import Path

from .spec import SpecError
from .state import ApplianceRecord

log = logging.getLogger(__name__)

RECORD = "record.json"


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
        records = []
        if not self.root.is_dir():
            return records
        for path in sorted(self.root.glob(f"*/{RECORD}")):
            try:
                data = json.loads(path.read_text() or "null")
                if data is None:  # claimed but never written: a crash mid-create
                    shutil.rmtree(path.parent, ignore_errors=True)
                    continue
                records.append(ApplianceRecord.from_json(data))
            except (OSError, ValueError, KeyError, TypeError, SpecError) as e:
                log.warning("Ignoring unreadable appliance record %s: %s", path, e)
        return records

    def remove(self, appliance_id: str) -> None:
        shutil.rmtree(self.dir(appliance_id), ignore_errors=True)
