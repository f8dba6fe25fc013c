"""The appliance's UIs and its Livy through the Jupyter server, under Jupyter's authentication.

Routes under ``{base_url}spark-appliance/appliance/{id}/`` (see ui.py):

- ``sparkui/PATH``: GET/HEAD forwarded to the appliance's master web UI. Spark
  runs with its reverse proxy set to this prefix, so its pages need no
  rewriting, and the master proxies workers' and applications' UIs itself;
- ``workerui/N/``: a redirect to worker instance N's page through the master;
- ``livy/PATH``: the Livy gateway (GET, HEAD, POST, DELETE); the client's own
  credentials (Jupyter's token or cookie) never go on, the appliance's
  Basic credentials are added;
- ``applications``: the master's running applications with their jobs' and
  stages' progress (Spark's REST API of each application, through the master);
- ``notebook/PATH``: the sparkmagic role's Jupyter server, every method and its
  websockets (kernels' channels, terminals). The child serves under exactly this
  path (its base_url), so nothing is rewritten; the proxy adds the child's own
  token (``Authorization: token ...``) and never passes on the user's Jupyter
  token, cookies or ``?token=``: Jupyter's login is all a user needs.

Requests only ever go to the appliance's own recorded endpoints, never to a host
or port taken from the request. jupyter-server-proxy's handlers were not used:
they proxy to a port named in the URL and bring aiohttp and process
supervision, none of which this needs; a forward is a few lines, and the
notebook's websocket follows its pattern (one handler class for HTTP and
websockets, dispatched on ``Upgrade``; the upstream connection is made first, so
the subprotocol the browser gets is the one the child chose).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, WebSocketHandler, websocket_connect

from . import ui
from .manager import ApplianceManager
from .spark.roles import NOTEBOOK_PORT, NOTEBOOK_ROUTE
from .state import ApplianceRecord

log = logging.getLogger(__name__)

AUTH_RESOURCE = "spark-appliance"
#: Response headers passed back to the browser (hop-by-hop ones, cookies and encodings are not).
RESPONSE_HEADERS = ("Content-Type", "Cache-Control", "Content-Disposition", "Last-Modified", "ETag", "Expires")
REQUEST_HEADERS = ("Accept", "Content-Type", "X-Requested-By", "If-None-Match", "If-Modified-Since")
RECENT_JOBS = 3  # finished jobs listed after the running ones


def endpoint(record: ApplianceRecord, role: str, container_port: int, index: int | None = None) -> str | None:
    """``host:port`` of a running instance of ``role`` for ``container_port``, from the record."""
    for inst in record.all_instances():
        if record.roles.get(inst.container) != role or inst.state != "running":
            continue
        if index is not None and inst.index != index:
            continue
        for ep in inst.endpoints:
            if ep.container_port == container_port:
                return f"{ep.host}:{ep.host_port}"
    return None


class ProxyBase(ExtensionHandlerMixin, JupyterHandler):
    """A JupyterHandler (not an APIHandler, whose CSP would block Spark's scripts), errors as JSON."""

    auth_resource = AUTH_RESOURCE
    upstream_name = ""

    async def prepare(self) -> None:
        ui.configure(self.base_url)
        await super().prepare()
        await self.manager.ensure_started()

    @property
    def manager(self) -> ApplianceManager:
        return self.settings["spark_appliance_manager"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        reason = self._reason
        message = reason
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], web.HTTPError) and exc_info[1].log_message:
            message = exc_info[1].log_message % exc_info[1].args if exc_info[1].args else exc_info[1].log_message
        self.finish(json.dumps({"message": message, "reason": reason}))

    def record_or_404(self, app_id: str) -> ApplianceRecord:
        record = self.manager.get(app_id)
        if record is None:
            raise web.HTTPError(404, f"no appliance with id {app_id!r}")
        return record

    def rest_of_path(self, marker: str) -> str:
        """The request's path after ``marker`` (still percent-encoded, as it came), with its query."""
        path = self.request.path
        rest = path[path.index(marker) + len(marker):] if marker in path else ""
        return rest + (f"?{self.request.query}" if self.request.query else "")

    async def forward(self, upstream: str, path: str, mount: str,
                      extra_headers: dict[str, str] | None = None,
                      request_headers: tuple[str, ...] = REQUEST_HEADERS) -> None:
        """Forward the request to ``http://upstream/path``; ``mount`` is where that upstream's root is here."""
        headers = {k: v for k in request_headers if (v := self.request.headers.get(k))}
        headers.update(extra_headers or {})
        method = self.request.method or "GET"
        body = (self.request.body or b"") if method in ("POST", "PUT", "PATCH") else None
        request = HTTPRequest(f"http://{upstream}/{path.lstrip('/')}", method=method, headers=headers,
                              body=body, follow_redirects=False, connect_timeout=10, request_timeout=120,
                              allow_nonstandard_methods=True)
        try:  # raise_error=False still raises for timeouts and refused connections
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as e:
            raise web.HTTPError(502, f"the {self.upstream_name} does not answer: {e}") from None
        if response.code == 599:
            raise web.HTTPError(502, f"the {self.upstream_name} does not answer: {response.error}")
        self.set_status(response.code, response.reason)
        for name in RESPONSE_HEADERS:
            if name in response.headers:
                self.set_header(name, response.headers[name])
        if "Location" in response.headers:
            self.set_header("Location", self._location(response.headers["Location"], upstream, mount))
        if response.body and method != "HEAD" and response.code not in (204, 304):
            self.write(response.body)
        self.finish()

    @staticmethod
    def _location(location: str, upstream: str, mount: str) -> str:
        """A redirect to the upstream itself becomes a path under ``mount`` on this server.

        Spark's own redirects carry the reverse-proxy prefix already; the master's
        proxy rewrites its applications' redirects to ``/proxy/<app-id>/...`` on
        itself, without it.
        """
        parts = urlsplit(location)
        if parts.netloc and parts.netloc != upstream:
            return location
        if not parts.netloc and not parts.path.startswith("/"):
            return location  # relative: the browser resolves it against this server's URL already
        path = parts.path if parts.path.startswith(mount + "/") or parts.path == mount else mount + parts.path
        return path + (f"?{parts.query}" if parts.query else "")


class ApiProxyBase(ProxyBase):
    """For routes programs call (Livy clients, the panel's polling): no login page without a login.

    As jupyter_server's APIHandler does: ``@web.authenticated`` would redirect a
    GET to the HTML login page; an API client must get a JSON 403 instead.
    """

    def get_login_url(self) -> str:
        if not self.current_user:
            raise web.HTTPError(403, "a Jupyter login (token or cookie) is required")
        return super().get_login_url()


class SparkUIHandler(ProxyBase):
    upstream_name = "Spark master UI"

    def upstream(self, app_id: str) -> str:
        master = endpoint(self.record_or_404(app_id), "spark-master", 8080)
        if master is None:
            raise web.HTTPError(503, f"appliance {app_id!r} has no running Spark master")
        return master

    @web.authenticated
    @authorized
    async def get(self, app_id: str, path: str = "") -> None:
        await self._forward(app_id)

    @web.authenticated
    @authorized
    async def head(self, app_id: str, path: str = "") -> None:
        await self._forward(app_id)

    async def _forward(self, app_id: str) -> None:
        await self.forward(self.upstream(app_id), self.rest_of_path(f"/appliance/{app_id}/sparkui/"),
                           ui.spark_ui_prefix(app_id))


class SparkUIRootHandler(ProxyBase):
    """``.../sparkui`` without its slash: Spark's pages are relative to ``sparkui/``."""

    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        self.record_or_404(app_id)
        self.redirect(ui.appliance_path(app_id) + "sparkui/")


class WorkerUIHandler(ProxyBase):
    @web.authenticated
    @authorized
    async def get(self, app_id: str, index: str) -> None:
        record = self.record_or_404(app_id)
        n = int(index)
        master = endpoint(record, "spark-master", 8080)
        if master is None:
            raise web.HTTPError(503, f"appliance {app_id!r} has no running Spark master")
        worker_ui = endpoint(record, "spark-worker", 8081, n)
        if worker_ui is None:
            raise web.HTTPError(404, f"appliance {app_id!r} has no running worker instance {n}")
        data = await get_json(f"http://{master}/json/")
        port = worker_ui.rsplit(":", 1)[1]
        for w in (data or {}).get("workers", []):
            if w.get("state") == "ALIVE" and str(w.get("webuiaddress", "")).rstrip("/").endswith(f":{port}"):
                self.redirect(ui.appliance_path(app_id) + f"sparkui/proxy/{w['id']}/")
                return
        raise web.HTTPError(404, f"the master of {app_id!r} lists no live worker with its UI on port {port} "
                                 "(it may still be registering)")


class LivyProxyHandler(ApiProxyBase):
    upstream_name = "Livy gateway"

    async def _forward(self, app_id: str) -> None:
        record = self.record_or_404(app_id)
        livy = endpoint(record, "livy", 8998)
        if livy is None:
            raise web.HTTPError(503, f"appliance {app_id!r} has no running Livy")
        headers = {}
        creds = record.credentials
        if creds is not None:
            login = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            headers["Authorization"] = f"Basic {login}"
        await self.forward(livy, self.rest_of_path(f"/appliance/{app_id}/livy/"), ui.appliance_path(app_id) + "livy",
                           headers)

    @web.authenticated
    @authorized
    async def get(self, app_id: str, path: str = "") -> None:
        await self._forward(app_id)

    @web.authenticated
    @authorized
    async def head(self, app_id: str, path: str = "") -> None:
        await self._forward(app_id)

    @web.authenticated
    @authorized
    async def post(self, app_id: str, path: str = "") -> None:
        await self._forward(app_id)

    @web.authenticated
    @authorized
    async def delete(self, app_id: str, path: str = "") -> None:
        await self._forward(app_id)


async def get_json(url: str, timeout: float = 5.0) -> Any:
    """JSON from ``url``, or None if it does not answer 200 with JSON in time."""
    try:
        response = await AsyncHTTPClient().fetch(url, connect_timeout=timeout, request_timeout=timeout,
                                                 raise_error=False)
    except (HTTPClientError, OSError):
        return None
    if response.code != 200:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def _progress(total: int, done: int, active: int, failed: int) -> dict[str, Any]:
    return {"tasks": total, "done": done, "active": active, "failed": failed,
            "progress": min(1.0, done / total) if total > 0 else 0.0}


async def application_model(master: str, app: dict[str, Any], app_ui: str | None) -> dict[str, Any]:
    """One running application with its jobs (Spark's REST API through the master's reverse proxy)."""
    app_id = str(app.get("id", ""))
    out: dict[str, Any] = {"id": app_id, "name": str(app.get("name", "")), "state": str(app.get("state", "")),
                           "cores": int(app.get("cores") or 0), "ui": app_ui, "jobs": [], "error": None}
    api = f"http://{master}/proxy/{app_id}/api/v1/applications/{app_id}"
    jobs, stages = await asyncio.gather(get_json(f"{api}/jobs"), get_json(f"{api}/stages?status=active"))
    if not isinstance(jobs, list):
        out["error"] = "its UI does not answer (yet) through the master"
        return out
    active_stages: dict[int, dict[str, Any]] = {}
    for st in stages if isinstance(stages, list) else []:
        active_stages[int(st.get("stageId", -1))] = st
    running = [j for j in jobs if j.get("status") == "RUNNING"]
    finished = sorted((j for j in jobs if j.get("status") != "RUNNING"), key=lambda j: -int(j.get("jobId", 0)))
    for j in sorted(running, key=lambda j: int(j.get("jobId", 0))) + finished[:RECENT_JOBS]:
        total = int(j.get("numTasks") or 0)
        skipped = int(j.get("numSkippedTasks") or 0)
        done = int(j.get("numCompletedTasks") or 0) + skipped
        job = {"id": int(j.get("jobId", 0)), "name": str(j.get("name", "")), "status": str(j.get("status", "")),
               "progress": _progress(total, done, int(j.get("numActiveTasks") or 0), int(j.get("numFailedTasks") or 0)),
               "stages": []}
        for sid in j.get("stageIds") or []:
            st = active_stages.get(int(sid))
            if st is None:
                continue
            job["stages"].append({
                "id": int(sid), "attempt": int(st.get("attemptId") or 0), "name": str(st.get("name", "")),
                "status": str(st.get("status", "")),
                "progress": _progress(int(st.get("numTasks") or 0), int(st.get("numCompleteTasks") or 0),
                                      int(st.get("numActiveTasks") or 0), int(st.get("numFailedTasks") or 0))})
        out["jobs"].append(job)
    return out


class ApplicationsHandler(ApiProxyBase):
    """``GET appliance/{id}/applications``: the Applications wire shape (wire.py)."""

    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        record = self.record_or_404(app_id)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        body: dict[str, Any] = {"appliance": app_id, "applications": [], "error": None}
        master = endpoint(record, "spark-master", 8080)
        if master is None:
            body["error"] = "no running Spark master"
            self.finish(json.dumps(body))
            return
        data = await get_json(f"http://{master}/json/")
        if not isinstance(data, dict):
            body["error"] = "the Spark master does not answer"
            self.finish(json.dumps(body))
            return
        root = ui.appliance_path(app_id) + "sparkui/proxy/"
        apps = [a for a in data.get("activeapps", []) if isinstance(a, dict) and a.get("id")]
        body["applications"] = list(await asyncio.gather(
            *(application_model(master, a, f"{root}{a['id']}/") for a in apps)))
        self.finish(json.dumps(body))


#: What a notebook server's pages and its REST API need besides REQUEST_HEADERS (never Cookie or Authorization).
NOTEBOOK_REQUEST_HEADERS = (*REQUEST_HEADERS, "Range", "If-Match", "X-Requested-With")
WS_HOP_HEADERS = ("Sec-WebSocket-Protocol",)


def without_token(query: str) -> str:
    """The query without ``token=`` (the user's Jupyter token, when a browser logs in by URL)."""
    return urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"])


class NotebookProxyHandler(WebSocketMixin, WebSocketHandler, ProxyBase):
    """``notebook/PATH``: the appliance's sparkmagic notebook server, HTTP and websockets.

    As jupyter_server's own kernel websocket handler is (WebSocketMixin,
    WebSocketHandler, JupyterHandler), so Jupyter's authentication and origin
    check apply to both; a request without ``Upgrade: websocket`` is forwarded
    as plain HTTP. Only a logged-in user gets through: a websocket is refused
    with a 403, never redirected to a login page.
    """

    upstream_name = "notebook server"
    upstream_ws: WebSocketClientConnection | None = None
    _pump: asyncio.Task[None] | None = None

    def _websocket(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - WebSocketMixin's keyword
        # Jupyter's own checks (host, login, XSRF): a browser's page without a login goes to
        # the login page, a websocket without one gets a 403.
        ui.configure(self.base_url)
        await JupyterHandler.prepare(self, _redirect_to_login=not self._websocket())
        if self._websocket() and not self.current_user:  # allow_unauthenticated_access lets it through
            raise web.HTTPError(403, "a Jupyter login (token or cookie) is required")
        await self.manager.ensure_started()

    def _target(self, app_id: str) -> tuple[str, dict[str, str]]:
        record = self.record_or_404(app_id)
        notebook = endpoint(record, "sparkmagic", NOTEBOOK_PORT)
        if notebook is None:
            raise web.HTTPError(503, f"appliance {app_id!r} has no running notebook server")
        if record.credentials is None:
            raise web.HTTPError(503, f"appliance {app_id!r} has no credentials for its notebook server")
        return notebook, {"Authorization": f"token {record.credentials.notebook_token()}"}

    def _upstream_path(self) -> str:
        query = without_token(self.request.query)
        return self.request.path + (f"?{query}" if query else "")

    async def _http(self, app_id: str) -> None:
        upstream, headers = self._target(app_id)
        await self.forward(upstream, self._upstream_path(), ui.appliance_path(app_id) + NOTEBOOK_ROUTE.rstrip("/"),
                           headers, NOTEBOOK_REQUEST_HEADERS)

    @web.authenticated
    @authorized
    async def get(self, app_id: str, path: str = "") -> None:
        if not self._websocket():
            await self._http(app_id)
            return
        upstream, headers = self._target(app_id)
        protocols = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                     if p.strip()]
        request = HTTPRequest(f"ws://{upstream}{self._upstream_path()}", headers=headers, connect_timeout=10,
                              request_timeout=30)
        try:
            self.upstream_ws = await websocket_connect(request, subprotocols=protocols or None,
                                                       max_message_size=self.max_message_size)
        except (HTTPClientError, OSError) as e:
            raise web.HTTPError(502, f"the {self.upstream_name} refused the websocket: {e}") from None
        await WebSocketHandler.get(self, app_id, path)
        if self.ws_connection is None:  # the handshake with the browser failed: drop the upstream
            self.upstream_ws.close()

    @property
    def max_message_size(self) -> int:
        return int(self.settings.get("websocket_max_message_size", 100 * 1024 * 1024))

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self.upstream_ws.selected_subprotocol if self.upstream_ws else None
        return chosen if chosen in subprotocols else None

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._pump = asyncio.ensure_future(self._from_upstream())

    async def _from_upstream(self) -> None:
        ws = self.upstream_ws
        assert ws is not None
        try:
            while True:
                message = await ws.read_message()
                if message is None:
                    break
                await self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            pass
        finally:
            self.close(ws.close_code, ws.close_reason)

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream_ws is None:
            return
        try:
            await self.upstream_ws.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            self.close()

    def on_close(self) -> None:
        if self.upstream_ws is not None:
            self.upstream_ws.close()

    @web.authenticated
    @authorized
    async def head(self, app_id: str, path: str = "") -> None:
        await self._http(app_id)

    @web.authenticated
    @authorized
    async def post(self, app_id: str, path: str = "") -> None:
        await self._http(app_id)

    @web.authenticated
    @authorized
    async def put(self, app_id: str, path: str = "") -> None:
        await self._http(app_id)

    @web.authenticated
    @authorized
    async def patch(self, app_id: str, path: str = "") -> None:
        await self._http(app_id)

    @web.authenticated
    @authorized
    async def delete(self, app_id: str, path: str = "") -> None:
        await self._http(app_id)


def proxy_handlers(prefix: str, app: str) -> list[tuple[str, type]]:
    return [
        (rf"{prefix}/appliance/{app}/sparkui", SparkUIRootHandler),
        (rf"{prefix}/appliance/{app}/sparkui/(?P<path>.*)", SparkUIHandler),
        (rf"{prefix}/appliance/{app}/workerui/(?P<index>[0-9]+)/?", WorkerUIHandler),
        (rf"{prefix}/appliance/{app}/livy/(?P<path>.*)", LivyProxyHandler),
        (rf"{prefix}/appliance/{app}/applications/?", ApplicationsHandler),
        (rf"{prefix}/appliance/{app}/notebook/(?P<path>.*)", NotebookProxyHandler),
    ]
