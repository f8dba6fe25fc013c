"""Manager listener: when an appliance's Livy runs, point Sparkmagic at it.

What was written is shown in the appliance's model under ``sparkmagic`` so the
panel, the magic and the widgets can tell the user where Sparkmagic now points
and that running Sparkmagic kernels must restart to see it (Sparkmagic reads
its config once per process).
"""

from __future__ import annotations

import logging

from .sparkmagic_config import SparkmagicConfig
from .state import ApplianceRecord, Instance

log = logging.getLogger(__name__)
LIVY_PORT = 8998


def livy_url(inst: Instance) -> str | None:
    for ep in inst.endpoints:
        if ep.name == "livy" or ep.container_port == LIVY_PORT:
            return f"http://{ep.host}:{ep.host_port}"
    return None


class SparkmagicWiring:
    def __call__(self, record: ApplianceRecord, inst: Instance | None, kind: str) -> None:
        if kind == "deleted":
            if record.extra.get("public", {}).get("sparkmagic"):
                SparkmagicConfig().restore(record.id)
            return
        if inst is None or inst.state != "running":
            return
        url = livy_url(inst)
        public = record.extra.setdefault("public", {})
        if url is None or public.get("sparkmagic", {}).get("url") == url:
            return
        config = SparkmagicConfig()
        try:
            warning = config.write(record.id, url)
        except OSError as e:
            public["sparkmagic"] = {"url": url, "config": str(config.path), "error": f"could not write: {e}"}
            return
        public["sparkmagic"] = {
            "url": url, "config": str(config.path), "warning": warning,
            "note": "Sparkmagic kernels that are already running must be restarted to use this endpoint.",
        }
        log.info("Sparkmagic now points at %s (%s)", url, config.path)
