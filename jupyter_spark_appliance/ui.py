"""Where browsers reach an appliance's UIs: paths under the Jupyter server's own URL.

A remote user (JupyterHub, a lab server behind a proxy) reaches only the Jupyter
server, never 127.0.0.1 of the machine that runs the JVMs. So every UI is
served by the server's own authenticated proxy routes (proxy.py), under
``{base_url}spark-appliance/appliance/{id}/``:

- ``sparkui/``: the master's web UI. Spark runs with ``spark.ui.reverseProxy``
  and ``spark.ui.reverseProxyUrl`` set to exactly this path, so every link it
  makes carries it, and the master itself proxies each worker's and each
  running application's UI at ``sparkui/proxy/<worker-or-app-id>/``;
- ``workerui/<n>/``: a redirect to worker instance n's page (its Spark id is
  known only to the master);
- ``livy/``: the Livy gateway, logged in with the appliance's own credentials.

The server's base URL is known to request handlers; ``configure`` records it
(handlers call it on every request, so the first launch already has it).
"""

from __future__ import annotations

import re

#: The container env variable that carries an appliance's UI prefix to its role commands (roles.py).
UI_PREFIX_ENV = "JSA_UI_PREFIX"
# Spark refuses a reverse-proxy URL with these words in it (and then runs without the setting).
_SPARK_REFUSES = re.compile("proxy|history", re.IGNORECASE)

_base_url = "/"


def configure(base_url: str) -> None:
    global _base_url
    _base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"


def base_url() -> str:
    return _base_url


def appliance_path(app_id: str) -> str:
    return f"{_base_url}spark-appliance/appliance/{app_id}/"


def spark_ui_prefix(app_id: str) -> str:
    """Spark's ``spark.ui.reverseProxyUrl`` for the appliance (no trailing slash, as Spark wants)."""
    return appliance_path(app_id) + "sparkui"


def usable_prefix(prefix: str) -> bool:
    """Whether Spark accepts ``prefix`` as its reverse-proxy URL."""
    return not _SPARK_REFUSES.search(prefix)


def ui_links(app_id: str, names: set[str], workers: int) -> dict[str, str]:
    """The browser's URLs (absolute paths on the Jupyter server) of what is running."""
    out: dict[str, str] = {}
    root = appliance_path(app_id)
    if "spark-ui" in names:
        out["spark-ui"] = root + "sparkui/"
    if "livy" in names:
        out["livy"] = root + "livy/"
    for n in range(workers):
        out[f"worker-ui-{n}"] = root + f"workerui/{n}/"
    return out
