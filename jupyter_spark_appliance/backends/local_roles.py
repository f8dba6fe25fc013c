"""How a PIVOT container becomes a local process: its *role*.

A local machine has no images, so the local backend maps each container to one
of the processes it knows how to run. The mapping is data (regular expressions
matched against the image, then the container id) so users can point their own
images at a role: ``c.SparkApplianceApp.local_roles = {"my-org/spark": "spark-worker"}``.
Order matters: the first pattern that matches wins.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..spec import Container

ROLES = ("spark-master", "spark-worker", "livy")

DEFAULT_LOCAL_ROLES: dict[str, str] = {
    r"spark-master": "spark-master",
    r"spark(-r)?-worker": "spark-worker",
    r"livy": "livy",
}

# Container ports a role listens on, by meaning. The local backend allocates a
# loopback port for each, and reports it against the declared container_port.
ROLE_PORTS: dict[str, dict[str, int]] = {
    "spark-master": {"rpc": 7077, "ui": 8080},
    "spark-worker": {"rpc": 7078, "ui": 8081},
    "livy": {"http": 8998},
}
# Names for ports a user's spec declares without one, so the panel can link them.
PORT_NAMES = {("spark-master", 8080): "spark-ui", ("spark-master", 7077): "spark",
              ("livy", 8998): "livy", ("spark-worker", 8081): "worker-ui"}


def role_of(container: Container, roles: Mapping[str, str]) -> str | None:
    for text in (container.image, container.id):
        for pattern, role in roles.items():
            if re.search(pattern, text):
                return role
    return None


def worker_cores(container: Container) -> int:
    return max(1, math.ceil(container.resources.cpus - 1e-9))


def memory_mb(container: Container) -> int:
    return max(1, int(container.resources.mem))
