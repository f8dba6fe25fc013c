"""REST client for kernels (the magic and the widgets): find the server, call the API.

A kernel is a separate process from the Jupyter server, so it must find the
server: explicit JUPYTER_SPARK_APPLIANCE_URL / _TOKEN win; otherwise Jupyter's
running-server files, preferring the server that started this kernel (our
parent process).
"""

from __future__ import annotations

import os
import time
from typing import Any

import requests

URL_ENV, TOKEN_ENV = "JUPYTER_SPARK_APPLIANCE_URL", "JUPYTER_SPARK_APPLIANCE_TOKEN"


class ApplianceError(Exception):
    """A failed API call, with the server's message (and spec problems) for the user."""

    def __init__(self, message: str, status: int | None = None, problems: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.problems = status, problems or []

    def __str__(self) -> str:
        lines = [self.args[0]] + [f"  {p['path']}: {p['message']}" for p in self.problems]
        return "\n".join(lines)


def find_server() -> tuple[str, str]:
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV].rstrip("/") + "/", os.environ.get(TOKEN_ENV, "")
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError as e:
        raise ApplianceError(f"jupyter_server is not installed here; set {URL_ENV}") from e
    servers = list(list_running_servers())
    if not servers:
        raise ApplianceError(f"no running Jupyter server found; set {URL_ENV} (and {TOKEN_ENV})")
    parent = os.getppid()
    server = next((s for s in servers if s.get("pid") == parent), servers[0])
    return server["url"].rstrip("/") + "/", server.get("token", "")


class ApplianceClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        if url is None:
            url, found_token = find_server()
            token = token if token is not None else found_token
        self.base = url.rstrip("/") + "/spark-appliance/"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"token {token}"
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            r = self.session.request(method, self.base + path, json=body, params=params or None,
                                     timeout=self.timeout)
        except requests.ConnectionError:
            raise ApplianceError(f"the Jupyter server at {self.base} is not reachable") from None
        if r.status_code == 204:
            return None
        try:
            data = r.json()
        except ValueError:
            data = {"message": r.text[:500]}
        if r.status_code >= 400:
            raise ApplianceError(data.get("message", r.reason), r.status_code, data.get("problems"))
        return data

    def list(self) -> list[dict[str, Any]]:
        return self.call("GET", "appliance")["appliances"]

    def get(self, app_id: str) -> dict[str, Any]:
        return self.call("GET", f"appliance/{app_id}")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "appliance", body)

    def delete(self, app_id: str) -> None:
        self.call("DELETE", f"appliance/{app_id}")

    def scale(self, app_id: str, container: str, instances: int) -> dict[str, Any]:
        return self.call("PATCH", f"appliance/{app_id}/container/{container}", {"instances": instances})

    def credentials(self, app_id: str) -> dict[str, Any]:
        """The appliance's Livy login and the Spark settings a driver of its master needs."""
        return self.call("GET", f"appliance/{app_id}/credentials")

    def applications(self, app_id: str) -> dict[str, Any]:
        """The appliance's running Spark applications with their jobs' progress (the Applications shape)."""
        return self.call("GET", f"appliance/{app_id}/applications")

    def logs(self, app_id: str, container: str, tail: int = 50) -> list[dict[str, Any]]:
        return self.call("GET", f"appliance/{app_id}/container/{container}/logs", tail=tail)["instances"]

    def wait(self, app_id: str, states=("running", "failed"), timeout: float = 600,
             progress=None, until=None) -> dict[str, Any]:  # noqa: ANN001
        """Poll until the appliance is in one of ``states`` (and ``until(model)`` holds, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.get(app_id)
            if progress:
                progress(model)
            if model["state"] in states and (until is None or until(model)):
                return model
            if time.monotonic() > deadline:
                raise ApplianceError(f"{app_id} is still {model['state']} after {timeout:g} s")
            time.sleep(0.5)
