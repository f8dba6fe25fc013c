"""Manager listener: when an appliance's Livy runs, point Sparkmagic at it.

What was written is shown in the appliance's model under ``sparkmagic`` so the
panel, the magic and the widgets can tell the user where Sparkmagic now points
and that running Sparkmagic kernels must restart to see it (Sparkmagic reads
its config once per process).
"""

from __future__ import annotations

import logging

from .spark.roles import LIVY
from .sparkmagic_config import SparkmagicConfig
from .state import ApplianceRecord, Instance, SparkmagicStatus

log = logging.getLogger(__name__)


def livy_url(record: ApplianceRecord, inst: Instance) -> str | None:
    """The Livy endpoint of ``inst``: a livy role's port, or a port the spec named "livy"."""
    (port,) = LIVY.ports
    is_livy = record.roles.get(inst.container) == LIVY.name
    for ep in inst.endpoints:
        if ep.name == port.name or (is_livy and ep.container_port == port.container_port):
            return f"http://{ep.host}:{ep.host_port}"
    return None


class SparkmagicWiring:
    def __call__(self, record: ApplianceRecord, inst: Instance | None, kind: str) -> None:
        if kind == "deleted":
            if record.sparkmagic is not None:
                SparkmagicConfig().restore(record.id)
            return
        if inst is None or inst.state != "running":
            return
        url = livy_url(record, inst)
        if url is None or (record.sparkmagic is not None and record.sparkmagic.url == url):
            return
        config = SparkmagicConfig()
        try:
            creds = record.credentials
            warning = config.write(record.id, url, *((creds.username, creds.password) if creds else ()))
        except OSError as e:
            record.sparkmagic = SparkmagicStatus(url, str(config.path), error=f"could not write: {e}")
            return
        record.sparkmagic = SparkmagicStatus(
            url, str(config.path), warning=warning,
            note="Sparkmagic kernels that are already running must be restarted to use this endpoint.")
        log.info("Sparkmagic now points at %s (%s)", url, config.path)
