"""Readiness probes shared by the backends: a declared health_check, and Spark's and Livy's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ..spec import HealthCheck
from .httpjson import get_json, get_status
from .ports import port_accepts


async def health_check_passes(hc: HealthCheck, host: str, ports: dict[int, int]) -> bool:
    """``ports`` maps container ports to where this host reaches them."""
    port = ports.get(hc.port, hc.port)
    if hc.type == "http":
        code = await get_status(f"http://{host}:{port}{hc.path}")
        return code is not None and code < 500
    return await asyncio.to_thread(port_accepts, host, port)


async def master_alive(ui: str) -> bool:
    """The standalone master's web UI (``http://host:port``) says it is ALIVE."""
    status = await get_json(f"{ui}/json/")
    return isinstance(status, dict) and status.get("status") == "ALIVE"


async def worker_alive(master_ui: str | None, is_this_worker: Callable[[dict[str, Any]], bool]) -> bool:
    """The master lists the worker (picked out by ``is_this_worker``) as ALIVE."""
    if master_ui is None:
        return False
    status = await get_json(f"{master_ui}/json/")
    return isinstance(status, dict) and any(
        is_this_worker(w) and w.get("state") == "ALIVE" for w in status.get("workers", []))


async def livy_answers(url: str) -> bool:
    """Livy speaks HTTP on its port: 200, or 401 when it requires credentials (it does by default)."""
    return await get_status(f"{url}/version") in (200, 401)


async def ports_accept(host: str, ports: Iterable[int]) -> bool:
    return all([await asyncio.to_thread(port_accepts, host, p) for p in ports])
