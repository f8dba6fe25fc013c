"""REST handlers under ``{base_url}spark-appliance/`` (architecture.md's table).

Each handler is a few lines: parse, call the manager, write the model. Every
method is ``@web.authenticated`` and ``@authorized`` so jupyter_server's
identity and authorizer decide who may launch processes on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib.resources import files
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from . import ui
from .backends.base import BackendUnavailable
from .graph_view import render_graph_page
from .manager import ApplianceManager, Conflict, StorageError, TooMany
from .model import unreadable_model
from .proxy import proxy_handlers
from .spec import SpecError, decode_document

AUTH_RESOURCE = "spark-appliance"
ID = r"(?P<app_id>[a-zA-Z0-9-]+)"
CID = r"(?P<container_id>[a-zA-Z0-9-]+)"


class BaseHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    async def prepare(self) -> None:
        ui.configure(self.base_url)  # templates and models name UI paths under this server's URL (ui.py)
        await super().prepare()
        await self.manager.ensure_started()

    @property
    def manager(self) -> ApplianceManager:
        return self.settings["spark_appliance_manager"]

    def reply(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))

    def bad_request(self, error: SpecError) -> None:
        self.reply(400, error.to_json())

    def record_or_404(self, app_id: str):
        record = self.manager.get(app_id)
        if record is None:
            raise web.HTTPError(404, f"no appliance with id {app_id!r}")
        return record

    def json_body(self) -> Any:
        """The body as JSON; a syntax error is a SpecError with line and column."""
        return decode_document(self.request.body or b"{}")


class AppliancesHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps({"appliances": self.manager.list()}))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            record = await self.manager.create(self.json_body())
        except SpecError as e:
            return self.bad_request(e)
        except Conflict as e:
            raise web.HTTPError(409, str(e)) from None
        except BackendUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        except StorageError as e:
            raise web.HTTPError(507, str(e)) from None
        except TooMany as e:
            raise web.HTTPError(429, str(e)) from None
        self.set_header("Location", self.request.path.rstrip("/") + f"/{record.id}")
        self.reply(201, self.manager.model(record))


class ApplianceHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        if app_id in self.manager.unreadable:
            self.finish(json.dumps(unreadable_model(self.manager.unreadable[app_id])))
            return
        self.finish(json.dumps(self.manager.model(self.record_or_404(app_id))))

    @web.authenticated
    @authorized
    async def delete(self, app_id: str) -> None:
        if app_id not in self.manager.unreadable:
            self.record_or_404(app_id)
        try:
            await self.manager.delete(app_id)
        except Conflict as e:
            raise web.HTTPError(409, str(e)) from None
        except BackendUnavailable as e:  # its engine went away: nothing could be stopped, the record stays
            raise web.HTTPError(503, str(e)) from None
        self.set_status(204)
        self.finish()


class ContainerHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def patch(self, app_id: str, container_id: str) -> None:
        record = self.record_or_404(app_id)
        if record.appliance.container(container_id) is None:
            raise web.HTTPError(404, f"appliance {app_id!r} has no container {container_id!r}")
        try:
            body = self.json_body()
            if not isinstance(body, dict) or "instances" not in body:
                raise SpecError.single("instances", "is required, e.g. {\"instances\": 2}")
            self.manager.scale(app_id, container_id, body["instances"])
        except SpecError as e:
            return self.bad_request(e)
        except Conflict as e:
            raise web.HTTPError(409, str(e)) from None
        except BackendUnavailable as e:  # its engine went away: nothing could be started or stopped
            raise web.HTTPError(503, str(e)) from None
        self.reply(202, self.manager.model(record))


class CredentialsHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        self.finish(json.dumps(self.manager.credentials_model(self.record_or_404(app_id))))


class LogsHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, app_id: str, container_id: str) -> None:
        self.record_or_404(app_id)
        try:
            tail = int(self.get_argument("tail", "200"))
            instance_arg = self.get_argument("instance", None)
            instance = int(instance_arg) if instance_arg is not None else None
        except ValueError:
            return self.bad_request(SpecError.single("tail", "tail and instance must be integers"))
        logs = await self.manager.logs(app_id, container_id, instance, max(0, min(tail, 10000)))
        if logs is None:
            raise web.HTTPError(404, f"appliance {app_id!r} has no container {container_id!r}")
        self.finish(json.dumps({"appliance": app_id, "container": container_id, "instances": logs}))


class EventsHandler(BaseHandler):
    """Server-sent events: a snapshot first, then every state change.

    SSE rather than a WebSocket because browsers' EventSource reconnects by
    itself and sends the Jupyter cookie, and kernels can read it with requests.
    """

    keepalive = 15.0

    @web.authenticated
    @authorized
    async def get(self, app_id: str | None = None) -> None:
        if app_id is not None:
            self.record_or_404(app_id)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        queue = self.manager.subscribe()
        try:
            # A comment (clients know they are subscribed) and a 1 s reconnection delay.
            self.write(": connected\nretry: 1000\n\n")
            for record in list(self.manager.records.values()):
                if app_id is None or record.id == app_id:
                    self._send({"type": "snapshot", "id": record.id, "state": record.state,
                                "appliance": self.manager.model(record)})
            await self.flush()
            limit = self.settings.get("spark_appliance_event_stream_seconds") or 0
            deadline = time.monotonic() + limit if limit > 0 else None
            while deadline is None or time.monotonic() < deadline:
                left = None if deadline is None else deadline - time.monotonic()
                wait = self.keepalive if left is None else max(0.0, min(self.keepalive, left))
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    self.write(": keepalive\n\n")
                    await self.flush()
                    continue
                if app_id is None or event["id"] == app_id:
                    self._send(event)
                    await self.flush()
            # Ending long streams on purpose keeps proxies from cutting them at random;
            # EventSource reconnects and gets a fresh snapshot.
            self.finish()
        except StreamClosedError:
            pass
        finally:
            self.manager.unsubscribe(queue)

    def _send(self, event: dict[str, Any]) -> None:
        self.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n")


class GraphHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, app_id: str) -> None:
        record = self.record_or_404(app_id)
        self.finish(render_graph_page(self.manager.model(record)), set_content_type="text/html; charset=utf-8")


class TemplatesHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps(await self.manager.templates_model()))


class OpenAPIHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(files("jupyter_spark_appliance").joinpath("openapi.json").read_text())


class NoRouteHandler(BaseHandler):
    """A path under the API that names no route (an id Jupyter's router cannot match, a typo).

    Without it Jupyter answers with its HTML 404 page, which no API client can read.
    """

    @web.authenticated
    @authorized
    async def get(self) -> None:
        raise web.HTTPError(404, f"no route {self.request.path!r} (see {self.base_url}spark-appliance/openapi.json)")

    post = patch = delete = put = get


def default_handlers(prefix: str = "spark-appliance") -> list[tuple[str, type]]:
    return [
        (rf"{prefix}/appliance/?", AppliancesHandler),
        (rf"{prefix}/appliance/{ID}/?", ApplianceHandler),
        (rf"{prefix}/appliance/{ID}/container/{CID}/?", ContainerHandler),
        (rf"{prefix}/appliance/{ID}/container/{CID}/logs/?", LogsHandler),
        (rf"{prefix}/appliance/{ID}/credentials/?", CredentialsHandler),
        (rf"{prefix}/appliance/{ID}/events/?", EventsHandler),
        (rf"{prefix}/events/?", EventsHandler),
        (rf"{prefix}/appliance/{ID}/ui/?", GraphHandler),
        (rf"{prefix}/templates/?", TemplatesHandler),
        (rf"{prefix}/openapi.json", OpenAPIHandler),
        *proxy_handlers(prefix, ID),
        (rf"{prefix}/.*", NoRouteHandler),  # last: anything else under the prefix is a JSON 404
    ]
