"""Each appliance's own secret: the Livy gateway's password, Spark's RPC secret, a connect token.

On a shared machine (a JupyterHub node, a lab server) anyone can reach
127.0.0.1 and read every process's argv in ``ps``. So every appliance gets a
random secret of its own, kept in two files readable only by the Jupyter
user beside its record (never in argv, never in the environment of processes
outside the appliance): ``credentials.json`` for the server, and
``spark-secret`` (just the secret) for the processes that must read it (the
gateway hands its path to its drivers). The gateway requires it with HTTP
Basic, Spark's master and workers with ``spark.authenticate``; the Sparkmagic
config is written with it, so notebooks work with no step from the user.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

USERNAME = "jsa"
CREDENTIALS_FILE = "credentials.json"
SECRET_FILE = "spark-secret"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str  # also Spark's spark.authenticate.secret
    secret_file: Path  # holds just the password, mode 0600

    def spark_conf(self) -> dict[str, str]:
        """What a driver that talks to the appliance's master needs (set in its SparkConf, not argv)."""
        return {"spark.authenticate": "true", "spark.authenticate.secret": self.password}

    def notebook_token(self) -> str:
        """The token of the appliance's own notebook servers (the sparkmagic role): see :func:`notebook_token`."""
        return notebook_token(self.password)


def notebook_token(secret: str) -> str:
    """A notebook server's token, derived from the appliance's secret rather than stored.

    The server's proxy adds it to what it forwards (proxy.py), the role gives it
    to the notebook server it starts (spark/notebook_server.py), and both know the
    secret already, so no third file holds it; a restarted instance keeps it.
    It is an HMAC, so the token (which the model reports) reveals nothing of the
    secret, which is also Livy's password and Spark's RPC secret.
    """
    if not secret:
        raise ValueError("a notebook server's token needs the appliance's secret")
    return hmac.new(secret.encode(), b"jupyter-spark-appliance notebook token", hashlib.sha256).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable only by us, atomically (a reader never sees it half written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_credentials(directory: Path) -> Credentials | None:
    try:
        data = json.loads((directory / CREDENTIALS_FILE).read_text())
        creds = Credentials(str(data["username"]), str(data["password"]), directory / SECRET_FILE)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not creds.secret_file.exists():
        _write_private(creds.secret_file, creds.password)
    return creds


def ensure_credentials(directory: Path) -> Credentials:
    """The appliance's credentials, made on first use."""
    existing = load_credentials(directory)
    if existing is not None:
        return existing
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    _write_private(directory / SECRET_FILE, password)
    _write_private(directory / CREDENTIALS_FILE, json.dumps({"username": USERNAME, "password": password}))
    return Credentials(USERNAME, password, directory / SECRET_FILE)
