"""The Livy REST API over tornado: the routes Sparkmagic and Livy's clients use.

Errors are Livy's ``{"msg": ...}`` bodies, and every answer is JSON, bad input
included (a 4xx naming the field, never a 5xx with a traceback). One route is
not Livy's: ``GET /appliance/resources`` (sessions waiting for cluster
resources, and the cluster's cores) for the Jupyter server.

Security, checked in this order on every route (see :class:`Security`):

1. Host: a request whose ``Host`` header (without its port) is not an allowed
   name gets 403, so a web page cannot reach the gateway by DNS rebinding.
2. HTTP Basic auth when a user is configured: 401 with
   ``WWW-Authenticate: Basic realm="livy"`` otherwise.
3. CSRF (on unless ``--no-csrf``): a POST needs ``X-Requested-By`` (Livy's
   header) or a JSON ``Content-Type``; either makes a browser ask first
   (a CORS preflight), and the gateway grants no cross-origin request (it
   never sends ``Access-Control-Allow-*``). Sparkmagic and pylivy send JSON,
   not ``X-Requested-By``. Livy's answer otherwise: 400. Other methods
   (DELETE, PUT) are always preflighted by browsers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from tornado import web

from .. import __version__
from .batches import BatchManager
from .sessions import MAX_INT, LivyError, SessionManager, parse_id

LIVY_VERSION = "0.9.0-incubating"
MAX_BODY_BYTES = 8 * 1024 * 1024


def default_allowed_hosts(bind_host: str) -> set[str]:
    """Loopback names, the address the gateway binds and this machine's name."""
    hosts = {"127.0.0.1", "localhost", "::1", bind_host, socket.gethostname()}
    return {normalize_host(h) for h in hosts if h}


#: In --allowed-hosts: any IP address literal (a container's gateway is reached by whatever
#: address its node has). DNS rebinding needs a name, so addresses are safe to accept.
IP_LITERALS = "ip"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_of(header: str) -> str:
    """The host of a Host header, without its port ('[::1]:8998' -> '::1')."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        return normalize_host(header[1:end] if end > 0 else header)
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return normalize_host(header)


@dataclass(frozen=True)
class Security:
    auth: tuple[str, str] | None = None  # (user, password): HTTP Basic on every route
    csrf: bool = True  # a POST needs X-Requested-By or a JSON Content-Type
    allowed_hosts: frozenset[str] | None = None  # Host header names; None: any (tests only)


def _check_strings(value: Any, path: str, depth: int = 0) -> None:
    """No NUL character anywhere in a body (nothing downstream takes one: argv, JVM conf, file names)."""
    if depth > 64:
        raise LivyError(400, f"{path or 'body'}: nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise LivyError(400, f"{path or 'body'}: contains a NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            key_path = f"{path}.{k}" if path else str(k)
            if "\x00" in k:
                raise LivyError(400, f"{path or 'body'}: a key contains a NUL character")
            _check_strings(v, key_path[:200], depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, f"{path}[{i}]", depth + 1)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class LivyHandler(web.RequestHandler):
    def initialize(self, manager: SessionManager, security: Security, batches: BatchManager | None = None) -> None:
        self.manager, self.security, self.batches = manager, security, batches
        self.auth = security.auth

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        allowed = self.security.allowed_hosts
        if allowed is not None:
            host = host_of(self.request.headers.get("Host", ""))
            if host not in allowed and not (IP_LITERALS in allowed and is_ip_literal(host)):
                shown = host if len(host) <= 100 else host[:100] + "..."
                self._fail(403, f"Host {shown!r} is not allowed (the gateway's --allowed-hosts)")
                return
        if self.auth is not None and not self._authorized():
            self.set_header("WWW-Authenticate", 'Basic realm="livy"')
            self._fail(401, "Authentication required")
            return
        if self.security.csrf and self.request.method == "POST" and not self._csrf_safe():
            self._fail(400, "Missing Required Header for CSRF protection.")

    def _csrf_safe(self) -> bool:
        if self.request.headers.get("X-Requested-By"):
            return True
        content_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return content_type == "application/json"

    def _authorized(self) -> bool:
        header = self.request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            return False
        assert self.auth is not None
        return hmac.compare_digest(user.encode(), self.auth[0].encode()) and \
            hmac.compare_digest(password.encode(), self.auth[1].encode())

    @property
    def user(self) -> str | None:
        return self.auth[0] if self.auth else None

    def _fail(self, status: int, msg: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"msg": msg}))

    def body(self) -> Any:
        try:
            data = json.loads(self.request.body or b"{}", parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise LivyError(400, f"the request body is not JSON: {str(e)[:200]}") from None
        _check_strings(data, "")
        return data

    def json_object(self) -> dict[str, Any]:
        data = self.body()
        if not isinstance(data, dict):
            raise LivyError(400, f"the request body must be a JSON object, not {type(data).__name__}")
        return data

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def int_arg(self, name: str, default: int) -> int:
        text = self.get_argument(name, None)
        if text is None or text.strip() == "":
            return default
        text = text.strip()
        if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 12:
            raise LivyError(400, f"{name}: must be an integer from 0 to {MAX_INT}")
        value = int(text)
        if not 0 <= value <= MAX_INT:
            raise LivyError(400, f"{name}: must be an integer from 0 to {MAX_INT}")
        return value

    def get_argument(self, name: str, default: Any = None, strip: bool = True) -> Any:  # type: ignore[override]
        try:
            return super().get_argument(name, default, strip)
        except web.MissingArgumentError:
            raise LivyError(400, f"{name}: missing") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, LivyError):
            self.set_status(exc.status)
            msg = exc.msg
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            msg = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            msg = f"internal error: {type(exc).__name__ if exc else self._reason} (see the gateway's log)"
        else:
            msg = self._reason
        self.finish(json.dumps({"msg": msg}))

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001
        if isinstance(value, LivyError):
            return  # an answer, not a failure
        super().log_exception(typ, value, tb)

    def handle(self, fn, *args: Any) -> Any:  # noqa: ANN001
        try:
            return fn(*args)
        except LivyError as e:
            self._fail(e.status, e.msg)
            return None

    def statement_of(self, ident: str, stmt_id: str) -> tuple[Any, Any]:
        session = self.manager.get(ident)
        number = parse_id(stmt_id)
        stmt = session.statement(number) if number is not None else None
        if stmt is None:
            shown = stmt_id if len(stmt_id) <= 40 else stmt_id[:40] + "..."
            raise LivyError(404, f"Statement {shown} not found.")
        return session, stmt


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
            session = self.manager.create(self.json_object(), self.user)
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
            total = s.log_total()
            size = self.int_arg("size", 100)
            if self.get_argument("from", None) is None:
                start = max(0, total - size)
            else:
                start = self.int_arg("from", 0)
            first, lines = s.log_slice(start, size)
            self.reply({"id": s.id, "from": first, "total": total, "log": lines})
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
            stmt = self.manager.submit(s, self.json_object())
            self.set_header("Location", f"/sessions/{s.id}/statements/{stmt.id}")
            self.reply(stmt.to_json(), 201)
        self.handle(run)


class StatementHandler(LivyHandler):
    def get(self, ident: str, stmt_id: str) -> None:
        def run() -> None:
            _, stmt = self.statement_of(ident, stmt_id)
            self.reply(stmt.to_json())
        self.handle(run)


class CancelHandler(LivyHandler):
    def post(self, ident: str, stmt_id: str) -> None:
        def run() -> None:
            s, stmt = self.statement_of(ident, stmt_id)
            self.manager.cancel(s, stmt)
            self.reply({"msg": "canceled"})
        self.handle(run)


class CompletionHandler(LivyHandler):
    """Livy's ``{code, kind, cursor}`` -> ``{"candidates": [...]}``, answered by the session's driver."""

    async def post(self, ident: str) -> None:
        try:
            session = self.manager.get(ident)
            candidates = await self.manager.complete(session, self.json_object())
        except LivyError as e:
            return self._fail(e.status, e.msg)
        self.reply({"candidates": candidates})


class BatchesHandler(LivyHandler):
    def get(self) -> None:
        def run() -> None:
            start, size = self.int_arg("from", 0), self.int_arg("size", 100)
            batches = sorted(self.batches.batches.values(), key=lambda b: b.id)
            self.reply({"from": start, "total": len(batches),
                        "sessions": [b.to_json() for b in batches[start:start + size]]})
        self.handle(run)

    def post(self) -> None:
        def run() -> None:
            batch = self.batches.create(self.json_object(), self.user)
            self.set_header("Location", f"/batches/{batch.id}")
            self.reply(batch.to_json(), 201)
        self.handle(run)


class BatchHandler(LivyHandler):
    def get(self, ident: str) -> None:
        self.handle(lambda: self.reply(self.batches.get(ident).to_json()))

    async def delete(self, ident: str) -> None:
        try:
            batch = self.batches.get(ident)
        except LivyError as e:
            return self._fail(e.status, e.msg)
        await self.batches.delete(batch)
        self.reply({"msg": "deleted"})


class BatchStateHandler(LivyHandler):
    def get(self, ident: str) -> None:
        def run() -> None:
            b = self.batches.get(ident)
            self.reply({"id": b.id, "state": b.state})
        self.handle(run)


class BatchLogHandler(LivyHandler):
    def get(self, ident: str) -> None:
        def run() -> None:
            b = self.batches.get(ident)
            total = b.log.total
            size = self.int_arg("size", 100)
            start = max(0, total - size) if self.get_argument("from", None) is None else self.int_arg("from", 0)
            first, lines = b.log.slice(start, size)
            self.reply({"id": b.id, "from": first, "total": total, "log": lines})
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


def make_app(manager: SessionManager, security: Security | None = None,
             batches: BatchManager | None = None) -> web.Application:
    if batches is None:
        batches = BatchManager(manager.config.master, manager.config.log_dir / "batches",
                               secret_file=manager.config.spark_secret_file,
                               default_conf=manager.config.default_conf)
    kw = {"manager": manager, "security": security or Security(), "batches": batches}
    sid, st = r"(?P<ident>[^/]+)", r"(?P<stmt_id>[0-9]+)"
    return web.Application([
        (r"/sessions/?", SessionsHandler, kw),
        (rf"/sessions/{sid}/?", SessionHandler, kw),
        (rf"/sessions/{sid}/state/?", SessionStateHandler, kw),
        (rf"/sessions/{sid}/log/?", SessionLogHandler, kw),
        (rf"/sessions/{sid}/statements/?", StatementsHandler, kw),
        (rf"/sessions/{sid}/statements/{st}/?", StatementHandler, kw),
        (rf"/sessions/{sid}/statements/{st}/cancel/?", CancelHandler, kw),
        (rf"/sessions/{sid}/completion/?", CompletionHandler, kw),
        (r"/batches/?", BatchesHandler, kw),
        (rf"/batches/{sid}/?", BatchHandler, kw),
        (rf"/batches/{sid}/state/?", BatchStateHandler, kw),
        (rf"/batches/{sid}/log/?", BatchLogHandler, kw),
        (r"/version/?", VersionHandler, kw),
        (r"/appliance/resources/?", ResourcesHandler, kw),
        (r"/.*", NotFoundHandler, kw),
    ])
