"""Is the appliance short of cluster resources? Asked of its Livy gateway, shown in the model.

When every core is taken, a Livy statement waits for an executor; the gateway
knows (its ``GET /appliance/resources``: sessions waiting, free and total
cores, the message it also puts in the statement and the session log). The
manager asks running gateways every few seconds and puts the answer in the
model as ``resources``, so the panel and the widget can say so and offer one
click to add a worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

POLL_SECONDS = 3.0


@dataclass(frozen=True)
class Capacity:
    short: bool  # statements wait for cores now
    message: str | None
    waiting_sessions: int
    cores_free: int | None
    cores_total: int | None
    checked: float  # epoch seconds

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def from_gateway(data: Any) -> Capacity | None:
    """The gateway's ``/appliance/resources`` answer, or None if it is not one."""
    if not isinstance(data, dict):
        return None

    def count(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    waiting = count("waiting_sessions") or 0
    message = data.get("message") if isinstance(data.get("message"), str) else None
    return Capacity(short=waiting > 0, message=message if waiting else None, waiting_sessions=waiting,
                    cores_free=count("cores_free"), cores_total=count("cores_total"), checked=time.time())


async def ask_gateway(url: str, username: str, password: str, timeout: float = 3.0) -> Capacity | None:
    """One question to a gateway; None when it does not answer (starting, stopping, a real Livy)."""
    try:
        response = await AsyncHTTPClient().fetch(
            f"{url}/appliance/resources", auth_username=username or None, auth_password=password or None,
            request_timeout=timeout, connect_timeout=timeout, headers={"X-Requested-By": "jupyter-spark-appliance"})
        return from_gateway(json.loads(response.body))
    except (HTTPClientError, OSError, ValueError):
        return None
