"""Readiness probes shared by the backends: a container's declared health_check."""

from __future__ import annotations

import asyncio

from ..httpjson import get_status
from ..ports import port_accepts
from ..spec import HealthCheck


async def health_check_passes(hc: HealthCheck, host: str, ports: dict[int, int]) -> bool:
    """``ports`` maps container ports to where this host reaches them."""
    port = ports.get(hc.port, hc.port)
    if hc.type == "http":
        code = await get_status(f"http://{host}:{port}{hc.path}")
        return code is not None and code < 500
    return await asyncio.to_thread(port_accepts, host, port)
