"""The local processes of an appliance, as its record names them: shared by the real-process tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil


def record_pids(data_dir: Path, app_id: str) -> list[int]:
    """The pids the local backend recorded for the appliance's instances (record.json's handles)."""
    record = json.loads((data_dir / app_id / "record.json").read_text())
    handles = [i.get("handle") or {} for insts in record["instances"].values() for i in insts]
    return [h["pid"] for h in handles if "pid" in h]


def gone(pid: int) -> bool:
    """Exited (a zombie counts: only its parent's wait is left)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    """Wait until every pid has exited; the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return []
        time.sleep(0.3)
    return [p for p in pids if not gone(p)]
