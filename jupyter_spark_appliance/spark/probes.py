"""Readiness probes shared by the backends: a declared health_check, and Spark's and Livy's own."""

from __future__ import annotations

import asyncio
import socket
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


#: What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4


def http2_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """A gRPC server (Spark Connect) is listening there: it answers an HTTP/2 preface with its SETTINGS.

    A TCP connect alone is not enough: Docker's userland proxy accepts on a published
    port before anything in the container listens, then closes the connection.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(HTTP2_PREFACE)
            header = b""
            while len(header) < 9:
                chunk = s.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return header[3] == HTTP2_SETTINGS


async def grpc_answers(host: str, port: int) -> bool:
    return await asyncio.to_thread(http2_answers, host, port)
