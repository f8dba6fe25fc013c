"""The Livy REST API over tornado: the routes Sparkmagic and Livy's clients use.

Errors are Livy's ``{"msg": ...}`` bodies. Optional HTTP Basic auth and
Livy's X-Requested-By CSRF check; loopback-only unless told otherwise.
One route is not Livy's: ``GET /appliance/resources`` (sessions waiting for
cluster resources, and the cluster's cores) for the Jupyter server.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

from tornado import web

from .. import __version__
from .sessions import LivyError, SessionManager

LIVY_VERSION = "0.9.0-incubating"


class LivyHandler(web.RequestHandler):
    def initialize(self, manager: SessionManager, auth: tuple[str, str] | None, csrf: bool) -> None:
        self.manager, self.auth, self.csrf = manager, auth, csrf

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def prepare(self) -> None:
        if self.auth is not None and not self._authorized():
            self.set_header("WWW-Authenticate", 'Basic realm="livy"')
            self._fail(401, "Authentication required")
            return
        if self.csrf and self.request.method not in ("GET", "HEAD", "OPTIONS") \
                and not self.request.headers.get("X-Requested-By"):
            self._fail(400, "Missing Required Header for CSRF protection.")

    def _authorized(self) -> bool:
        header = self.request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        assert self.auth is not None
        return hmac.compare_digest(user, self.auth[0]) and hmac.compare_digest(password, self.auth[1])

    @property
    def user(self) -> str | None:
        return self.auth[0] if self.auth else None

    def _fail(self, status: int, msg: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"msg": msg}))

    def body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise LivyError(400, f"the request body is not JSON: {e}") from None

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def int_arg(self, name: str, default: int) -> int:
        try:
            return int(self.get_argument(name, str(default)))
        except ValueError:
            raise LivyError(400, f"{name}: must be an integer") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        msg = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.finish(json.dumps({"msg": msg}))

    def handle(self, fn, *args: Any) -> Any:  # noqa: ANN001
        try:
            return fn(*args)
        except LivyError as e:
            self._fail(e.status, e.msg)
            return None


class SessionsHandler(LivyHandler):
    def get(self) -> None:
        def run() -> None:
            start, size = self.int_arg("from", 0), self.int_arg("size", 100)
            sessions = sorted(self.manager.sessions.values(), key=lambda s: s.id)
            self.reply({"from": start, "total": len(sessions),
                        "sessions": [s.to_json() for s in sessions[start:start + size]]})
        self.handle(run)

    def post(self) -> None:
        def run() -> None:
            session = self.manager.create(self.body(), self.user)
            self.set_header("Location", f"/sessions/{session.id}")
            self.reply(session.to_json(), 201)
        self.handle(run)


class SessionHandler(LivyHandler):
    def get(self, ident: str) -> None:
        self.handle(lambda: self.reply(self.manager.get(ident).to_json()))

    async def delete(self, ident: str) -> None:
        try:
            session = self.manager.get(ident)
        except LivyError as e:
            return self._fail(e.status, e.msg)
        await self.manager.delete(session)
        self.reply({"msg": "deleted"})


class SessionStateHandler(LivyHandler):
    def get(self, ident: str) -> None:
        def run() -> None:
            s = self.manager.get(ident)
            self.reply({"id": s.id, "state": s.state})
        self.handle(run)


class SessionLogHandler(LivyHandler):
    def get(self, ident: str) -> None:
        def run() -> None:
            s = self.manager.get(ident)
            lines = s.all_log()
            size = self.int_arg("size", 100)
            if self.get_argument("from", None) is None:
                start = max(0, len(lines) - size)
            else:
                start = self.int_arg("from", 0)
            self.reply({"id": s.id, "from": start, "total": len(lines), "log": lines[start:start + size]})
        self.handle(run)


class StatementsHandler(LivyHandler):
    def get(self, ident: str) -> None:
        def run() -> None:
            s = self.manager.get(ident)
            start, size = self.int_arg("from", 0), self.int_arg("size", len(s.statements) or 1)
            stmts = s.statements[start:start + size]
            self.reply({"total_statements": len(s.statements), "statements": [st.to_json() for st in stmts]})
        self.handle(run)

    def post(self, ident: str) -> None:
        def run() -> None:
            s = self.manager.get(ident)
            stmt = self.manager.submit(s, self.body())
            self.set_header("Location", f"/sessions/{s.id}/statements/{stmt.id}")
            self.reply(stmt.to_json(), 201)
        self.handle(run)


class StatementHandler(LivyHandler):
    def get(self, ident: str, stmt_id: str) -> None:
        def run() -> None:
            stmt = self.manager.get(ident).statement(int(stmt_id))
            if stmt is None:
                raise LivyError(404, f"Statement {stmt_id} not found.")
            self.reply(stmt.to_json())
        self.handle(run)


class CancelHandler(LivyHandler):
    def post(self, ident: str, stmt_id: str) -> None:
        def run() -> None:
            s = self.manager.get(ident)
            stmt = s.statement(int(stmt_id))
            if stmt is None:
                raise LivyError(404, f"Statement {stmt_id} not found.")
            self.manager.cancel(s, stmt)
            self.reply({"msg": "canceled"})
        self.handle(run)


class CompletionHandler(LivyHandler):
    def post(self, ident: str) -> None:
        def run() -> None:
            self.manager.get(ident)
            self.reply({"candidates": []})
        self.handle(run)


class VersionHandler(LivyHandler):
    def get(self) -> None:
        self.reply({"version": LIVY_VERSION, "gateway": f"jupyter-spark-appliance {__version__}",
                    "branch": None, "revision": None, "user": None, "date": None, "url": None})


class ResourcesHandler(LivyHandler):
    """Not Livy's: whether sessions wait for cluster resources, for the Jupyter server's panel."""

    async def get(self) -> None:
        status = self.manager.cluster
        if status is None or time.time() - status.checked > 1.0:
            await self.manager.refresh_cluster()
        self.reply(self.manager.resources())


class NotFoundHandler(LivyHandler):
    def prepare(self) -> None:
        super().prepare()
        if not self._finished:
            self._fail(404, f"no route {self.request.method} {self.request.path}")


def make_app(manager: SessionManager, auth: tuple[str, str] | None = None, csrf: bool = False) -> web.Application:
    kw = {"manager": manager, "auth": auth, "csrf": csrf}
    sid, st = r"(?P<ident>[^/]+)", r"(?P<stmt_id>\d+)"
    return web.Application([
        (r"/sessions/?", SessionsHandler, kw),
        (rf"/sessions/{sid}/?", SessionHandler, kw),
        (rf"/sessions/{sid}/state/?", SessionStateHandler, kw),
        (rf"/sessions/{sid}/log/?", SessionLogHandler, kw),
        (rf"/sessions/{sid}/statements/?", StatementsHandler, kw),
        (rf"/sessions/{sid}/statements/{st}/?", StatementHandler, kw),
        (rf"/sessions/{sid}/statements/{st}/cancel/?", CancelHandler, kw),
        (rf"/sessions/{sid}/completion/?", CompletionHandler, kw),
        (r"/version/?", VersionHandler, kw),
        (r"/appliance/resources/?", ResourcesHandler, kw),
        (r"/.*", NotFoundHandler, kw),
    ])
