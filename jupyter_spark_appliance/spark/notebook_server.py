"""``python -m jupyter_spark_appliance.spark.notebook_server``: the sparkmagic role's Jupyter server.

PIVOT's seed has a fourth container, a Jupyter notebook with Sparkmagic that
points its kernels at the appliance's Livy. This wrapper starts that server,
the same code as a local process and inside the project's ``sparkmagic`` image:

- the token (``$JSA_NOTEBOOK_TOKEN``) and Livy's password (``$JSA_LIVY_PASSWORD``)
  come in the environment and are taken out of it: they go into 0600 files
  (the server's config, Sparkmagic's config), never into argv, and neither the
  server nor its kernels inherit them as variables;
- Sparkmagic's config (``SPARKMAGIC_CONF_DIR`` in the work dir) gives all three
  kernels the appliance's Livy with its Basic credentials;
- the server's Jupyter config, data and runtime dirs are its own, in the work
  dir (never the user's ~/.jupyter), and its config file turns *this*
  extension off, which the installation's config enables: a notebook server
  that launched appliances of its own would be wrong (an explicit setting wins
  over the ``jupyter_server_config.d`` ones); its kernelspecs are Sparkmagic's
  (``JUPYTER_PATH``) and ipykernel's own;
- it serves under ``--base-url``, the route the Jupyter server's proxy gives
  it, so its pages need no rewriting there. JupyterLab is its frontend when
  installed (Sparkmagic requires ``notebook``, which requires it), else it is a
  plain ``jupyter_server`` (REST and kernels only).

It then replaces itself with ``python -m jupyter_server --config FILE``, so the
server's pid is the instance's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from .roles import NOTEBOOK_LIVY_PASSWORD_ENV, NOTEBOOK_TOKEN_ENV

SERVER_CONFIG = "jupyter_server_config.json"
#: This package's JupyterLab extension: the panel talks to an extension the child does not run.
OWN_LABEXTENSION = "jupyter-spark-appliance"


def write_private(path: Path, data: Any) -> None:
    """JSON readable only by this user (created 0600, never chmod-ed down after being readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)


def sparkmagic_config(livy: str, username: str, password: str) -> dict[str, Any]:
    """Sparkmagic's config: every kernel on the appliance's Livy, logged in with its Basic credentials.

    Livy sessions start slowly on a busy machine (a driver JVM each): a longer
    start-up timeout than Sparkmagic's 60 s default, and executors that fit a small worker.
    """
    creds = {"url": livy, "username": username, "password": password,
             "auth": "Basic_Access" if username else "None"}
    return {
        "kernel_python_credentials": creds, "kernel_scala_credentials": creds, "kernel_r_credentials": creds,
        "livy_session_startup_timeout_seconds": 600,
        "session_configs": {"executorMemory": "512m", "driverMemory": "512m"},
    }


def server_config(args: argparse.Namespace, token: str, root: Path) -> dict[str, Any]:
    lab = importlib.util.find_spec("jupyterlab") is not None
    return {
        "ServerApp": {
            "ip": args.ip, "port": args.port, "port_retries": 0, "open_browser": False,
            "base_url": args.base_url, "root_dir": str(root),
            # The Jupyter server that started it runs as this user too (root, in some containers).
            "allow_root": os.geteuid() == 0,
            # Only what is asked for: never this package's extension, whatever the installation enables.
            "jpserver_extensions": {"jupyter_spark_appliance": False, "jupyterlab": lab},
        },
        "IdentityProvider": {"token": token},
        "LabApp": {"open_browser": False},
    }


def child_env(work: Path, sparkmagic_dir: Path) -> dict[str, str]:
    import sparkmagic

    env = {k: v for k, v in os.environ.items()
           if k not in (NOTEBOOK_TOKEN_ENV, NOTEBOOK_LIVY_PASSWORD_ENV, "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")}
    env.update({
        "JUPYTER_CONFIG_DIR": str(work / "jupyter" / "config"),
        "JUPYTER_DATA_DIR": str(work / "jupyter" / "data"),
        "JUPYTER_RUNTIME_DIR": str(work / "jupyter" / "runtime"),
        # Sparkmagic's kernelspecs (pysparkkernel, sparkkernel, sparkrkernel) are in its package's kernels/.
        "JUPYTER_PATH": str(Path(sparkmagic.__file__).parent),
        "SPARKMAGIC_CONF_DIR": str(sparkmagic_dir),
        "SPARKMAGIC_CONF_FILE": "config.json",
        "IPYTHONDIR": str(work / "ipython"),
    })
    return env


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jupyter_spark_appliance.spark.notebook_server",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--livy", required=True, help="the appliance's Livy URL")
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--username", default="")
    args = p.parse_args(argv)
    token = os.environ.pop(NOTEBOOK_TOKEN_ENV, "")
    password = os.environ.pop(NOTEBOOK_LIVY_PASSWORD_ENV, "")
    if not token:
        sys.exit(f"sparkmagic: no token (${NOTEBOOK_TOKEN_ENV}); refusing to serve a notebook without one")
    if not args.base_url.startswith("/") or not args.base_url.endswith("/"):
        sys.exit(f"sparkmagic: --base-url must start and end with '/', not {args.base_url!r}")
    work = Path(args.work_dir)
    for d in ("jupyter/config/labconfig", "jupyter/data", "jupyter/runtime", "notebooks", "ipython"):
        (work / d).mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)  # its runtime dir holds the kernels' connection files
    sparkmagic_dir = work / "sparkmagic"
    write_private(sparkmagic_dir / "config.json",
                  sparkmagic_config(args.livy, args.username if password else "", password))
    config = work / "jupyter" / SERVER_CONFIG
    write_private(config, server_config(args, token, work / "notebooks"))
    # JupyterLab reads which extensions are off from labconfig/ in the config dir.
    (work / "jupyter" / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {OWN_LABEXTENSION: True}}))
    env = child_env(work, sparkmagic_dir)
    argv_out = [sys.executable, "-m", "jupyter_server", f"--config={config}"]
    os.execve(sys.executable, argv_out, env)


if __name__ == "__main__":
    main()
