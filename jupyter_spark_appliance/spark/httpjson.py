"""A tiny async JSON GET used by readiness probes (never raises)."""

from __future__ import annotations

import json
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


async def get_json(url: str, timeout: float = 2.0) -> Any | None:
    try:
        response = await AsyncHTTPClient().fetch(url, request_timeout=timeout, connect_timeout=timeout)
        return json.loads(response.body)
    except (HTTPClientError, OSError, ValueError):
        return None


async def get_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        response = await AsyncHTTPClient().fetch(
            url, request_timeout=timeout, connect_timeout=timeout, raise_error=False
        )
        return response.code if response.code != 599 else None
    except (HTTPClientError, OSError):  # e.g. the stream closed before a response
        return None
