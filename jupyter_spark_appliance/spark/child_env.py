"""The environment a child process gets: an allow-list, never the server's whole environment.

A Jupyter server's environment carries what no Spark JVM needs and what other
code must not see: ``JUPYTERHUB_API_TOKEN`` (the user's hub token), ``JPY_*``,
cloud credentials (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``), tokens of every kind.
Masters, workers, the Livy gateway and its drivers (which run users' code) get
only what running Java and Python needs, the locale, and what the operator
allows with ``c.SparkApplianceApp.child_env_allow``; the appliance's own
``env`` and the role's command add to that.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping

#: Names (fnmatch patterns) every child may inherit from the server.
BASE_ALLOW: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM",
    "TMPDIR", "TEMP", "TMP",
    "JAVA_HOME", "JAVA_TOOL_OPTIONS", "SPARK_HOME", "SPARK_CONF_DIR", "HADOOP_CONF_DIR", "HADOOP_HOME",
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
    "LD_LIBRARY_PATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
)


def child_environment(extra_allow: Iterable[str] = (), *layers: Mapping[str, str],
                      source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of ``source`` (the server's environment), then ``layers`` on top."""
    patterns = (*BASE_ALLOW, *extra_allow)
    env = {k: v for k, v in (os.environ if source is None else source).items()
           if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    for layer in layers:
        env.update(layer)
    return env
