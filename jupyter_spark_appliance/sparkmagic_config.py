"""Point Sparkmagic at an appliance's Livy endpoint, without clobbering anything.

Sparkmagic reads one JSON file ($SPARKMAGIC_CONF_DIR/$SPARKMAGIC_CONF_FILE,
default ~/.sparkmagic/config.json). We change only the ``url`` and auth fields
of its three ``kernel_*_credentials`` and keep every other key; the write is
atomic (temp file + fsync + rename) and the previous file is copied to
``config.json.bak``. What we changed is remembered in a sidecar file, so that
deleting the appliance restores the previous endpoints, but only if they are
still ours (a user who edited the file since wins).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CREDENTIAL_KEYS = ("kernel_python_credentials", "kernel_scala_credentials", "kernel_r_credentials")
SIDECAR = ".jupyter-spark-appliance.json"


class ConfigProblem(Exception):
    pass


def config_path() -> Path:
    conf_dir = os.environ.get("SPARKMAGIC_CONF_DIR") or os.path.join(os.path.expanduser("~"), ".sparkmagic")
    return Path(conf_dir) / (os.environ.get("SPARKMAGIC_CONF_FILE") or "config.json")


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def credentials(url: str, username: str = "", password: str = "") -> dict[str, str]:
    return {"username": username, "password": password, "url": url,
            "auth": "Basic_Access" if username else "None"}


class SparkmagicConfig:
    def __init__(self, path: Path | None = None):
        self.path = path or config_path()
        self.sidecar = self.path.parent / SIDECAR

    def _read(self) -> tuple[dict[str, Any], str | None]:
        """The current config, or {} plus a warning when it had to be set aside."""
        if not self.path.exists():
            return {}, None
        text = self.path.read_text()
        try:
            data = json.loads(text) if text.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("the top level is not a JSON object")
        except ValueError as e:
            backup = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.copy2(self.path, backup)
            return {}, f"{self.path} was not valid JSON ({e}); it was kept as {backup}"
        return data, None

    def _entries(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.sidecar.read_text())
            return entries if isinstance(entries, list) else []
        except (OSError, ValueError):
            return []

    def write(self, appliance_id: str, url: str, username: str = "", password: str = "") -> str | None:
        """Point every kernel at ``url``; returns a warning for the user, if any.

        Writing again for the same appliance (its Livy restarted on a new port, or
        scaled 0 -> 1) must not record our own URL as what the user had: the entry
        keeps what the first write found, so a restore gives the user's own back.
        """
        existed = self.path.exists()
        data, warning = self._read()
        entries = self._entries()
        index = next((i for i, e in enumerate(entries) if e.get("appliance") == appliance_id), None)
        if index is None and not entries and existed and warning is None:
            # Only the user's own file is worth a backup, never one we wrote.
            shutil.copy2(self.path, self.path.with_name(self.path.name + ".bak"))
        found = {k: data.get(k) for k in CREDENTIAL_KEYS}
        if index is None:
            previous = found
            # Whether the file was ours to begin with is a fact of the bottom of the stack.
            created = bool(entries[0].get("created_file")) if entries else not existed
        else:
            entry = entries.pop(index)
            created = bool(entry.get("created_file"))
            if index < len(entries):
                # Others wrote after it: the next one now restores to what this one found,
                # and this one, on top again, to what is there now.
                entries[index]["previous"] = entry["previous"]
                entries[index]["created_file"] = created
                previous, created = found, False
            else:
                previous = entry["previous"]
        for key in CREDENTIAL_KEYS:
            merged = dict(data.get(key) or {}) if isinstance(data.get(key), dict) else {}
            merged.update(credentials(url, username, password))
            data[key] = merged
        atomic_write_json(self.path, data)
        entries.append({"appliance": appliance_id, "url": url, "previous": previous, "created_file": created})
        atomic_write_json(self.sidecar, entries)
        return warning

    def restore(self, appliance_id: str) -> bool:
        """Undo our write for ``appliance_id`` if its URL is still the one in use."""
        entries = self._entries()
        index = next((i for i, e in enumerate(entries) if e.get("appliance") == appliance_id), None)
        if index is None:
            return False
        entry = entries.pop(index)
        if index < len(entries):
            # Not the newest: the next entry should restore to what this one found.
            entries[index]["previous"] = entry["previous"]
            entries[index]["created_file"] = entry.get("created_file", False)
            atomic_write_json(self.sidecar, entries)
            return False
        data, warning = self._read()
        restored = False
        if warning is None and all(
            isinstance(data.get(k), dict) and data[k].get("url") == entry["url"] for k in CREDENTIAL_KEYS
        ):
            for key in CREDENTIAL_KEYS:
                prev = entry["previous"].get(key)
                if prev is None:
                    data.pop(key, None)
                else:
                    data[key] = prev
            if not data and entry.get("created_file") and not entries:
                # We made the file (and so every backup of it): leave none behind.
                self.path.unlink(missing_ok=True)
                self.path.with_name(self.path.name + ".bak").unlink(missing_ok=True)
            else:
                atomic_write_json(self.path, data)
            restored = True
        if entries:
            atomic_write_json(self.sidecar, entries)
        else:
            self.sidecar.unlink(missing_ok=True)
        return restored

    def current_url(self) -> str | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        creds = data.get("kernel_python_credentials") if isinstance(data, dict) else None
        return creds.get("url") if isinstance(creds, dict) else None
