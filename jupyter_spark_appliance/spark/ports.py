"""Free-port allocation on the bind host.

The port is found by binding and releasing it, then handed to a JVM that binds
it a moment later. Ports handed out by this process are remembered so that two
instances starting concurrently never receive the same one.
"""

from __future__ import annotations

import random
import socket

_handed_out: set[int] = set()


def reachable_host(bind_host: str) -> str:
    """Where this machine reaches a listener bound to ``bind_host``: loopback for the wildcard."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "") else bind_host


def port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on it now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port(host: str, port_range: tuple[int, int] | None = None) -> int:
    """A port that is free now on ``host``, inside ``port_range`` if given."""
    if port_range and port_range[0] > 0:
        low, high = port_range
        candidates = list(range(low, high + 1))
        random.shuffle(candidates)
        for port in candidates:
            if port not in _handed_out and port_is_free(host, port):
                _handed_out.add(port)
                return port
        raise OSError(f"no free port on {host} in {low}-{high}")
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError(f"no free port on {host}")


def release_port(port: int) -> None:
    _handed_out.discard(port)


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
