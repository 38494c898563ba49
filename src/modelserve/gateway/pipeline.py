"""The gateway's core, free of any web framework: a `Request` in, a `Reply` out.

`Gateway.respond` routes a request and returns a *plan*: a generator that yields the operations it needs
from the model server (`Predict`, `CheckReady`, `FetchServerMemory`), is sent each result, and returns the
reply. A failed `Predict` is thrown into the plan as the client's `ModelServerError`. The WSGI app drives
plans with the blocking upstream (`drive`), the ASGI app with the asyncio one (`drive_async`), so routing,
the handler calls and the error mapping exist once, as in `modelserve.client.calls`::

    POST <any other path>  preprocess -> Predict -> postprocess -> 200 JSON (or the handler's Response)
    GET  /healthz          200 {"status": "ok"}: the worker answers
    GET  /readyz           CheckReady(MODEL) -> 200, or 503 {"error": why not}
    GET  /stats            memory of the gateway's processes + FetchServerMemory -> 200
    GET  /metrics          Prometheus metrics of every worker (see `gateway.metrics`)

Every failure answers ``{"error": message}``: HttpError -> its status; a model-server error -> the table
in `http_errors`; any other exception in the handler -> 500 (logged with its traceback).
"""

from __future__ import annotations

import http
import logging
import os
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelserve.client import ModelServerError
from modelserve.gateway import stats
from modelserve.gateway.handler import Handler, HttpError, ModelCall, Request, Response
from modelserve.gateway.http_errors import http_status

if TYPE_CHECKING:
    from modelserve.gateway.metrics import GatewayMetrics

# prometheus_client's text format (not imported here: see gateway.metrics for why the import is late).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger("modelserve.gateway")

HEALTH, READY, STATS, METRICS = "/healthz", "/readyz", "/stats", "/metrics"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class Reply:
    """What the web server sends back."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def header_list(self) -> list[tuple[str, str]]:
        """Every header, Content-Type and Content-Length first."""
        return [
            ("content-type", self.content_type),
            ("content-length", str(len(self.body))),
            *self.headers,
        ]

    @property
    def status_line(self) -> str:
        """``"404 Not Found"``, for WSGI's ``start_response``."""
        try:
            return f"{self.status} {http.HTTPStatus(self.status).phrase}"
        except ValueError:
            return f"{self.status} Unknown"


# -- the operations a plan asks of the model server ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Predict:
    """Run a model; the result is ``dict[str, np.ndarray]``, or a `ModelServerError` thrown in."""

    call: ModelCall


@dataclass(frozen=True, slots=True)
class CheckReady:
    """Whether the model (version or label) can serve; the result is a `Readiness`, never an error."""

    model: str
    version: int | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class FetchServerMemory:
    """The model server's process memory; the result is a JSON-able dict (with ``error`` on failure)."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer to `CheckReady`: ``reason`` says why not."""

    ready: bool
    reason: str = ""


Op = Predict | CheckReady | FetchServerMemory
Plan = Generator[Op, Any, Reply]


# -- replies ---------------------------------------------------------------------------------------------


def json_reply(status: int, document: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON reply; numpy arrays and scalars are serialised as lists and numbers."""
    return Reply(status, orjson.dumps(document, default=_to_json, option=_JSON_OPTIONS), headers=headers)


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """``{"error": message}`` with ``status``."""
    return json_reply(status, {"error": message}, headers)


DRAIN_BYTES = 64 * 1024 * 1024
"""How much of a body over the limit is read and thrown away before answering 413. Closing a connection
with unread data makes the kernel reset it, and most clients then report the reset instead of the 413."""


def too_large(max_body_bytes: int, drained: bool) -> Reply:
    """413; when the body was not read to its end (``drained`` False), the connection is closed."""
    headers = () if drained else (("connection", "close"),)
    return error_reply(413, f"request body larger than {max_body_bytes} bytes", headers)


def _to_json(value: Any) -> Any:
    # orjson serialises C-contiguous arrays of plain dtypes itself; everything else numpy lands here.
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _handler_reply(result: Any) -> Reply:
    if isinstance(result, Response):
        body = result.body.encode() if isinstance(result.body, str) else bytes(result.body)
        extra = tuple((name.lower(), value) for name, value in result.headers.items())
        return Reply(result.status, body, result.content_type, extra)
    return json_reply(200, result)


# -- routing ---------------------------------------------------------------------------------------------


class Gateway:
    """One worker's request handling: the loaded handler and the routes around it. Stateless per call."""

    def __init__(self, handler: Handler, worker_class: str, metrics: GatewayMetrics | None = None) -> None:
        self.handler = handler
        self.worker_class = worker_class
        self.metrics = metrics

    def respond(self, request: Request) -> Plan:
        """The plan that answers ``request``."""
        routes = {HEALTH: self._health, READY: self._ready, STATS: self._stats, METRICS: self._metrics}
        route = routes.get(request.path)
        if route is not None:
            if request.method != "GET":
                return _at_once(error_reply(405, f"{request.path} takes GET", (("allow", "GET"),)))
            return route()
        if request.method != "POST":
            return _at_once(
                error_reply(405, f"{request.path} takes POST (the handler)", (("allow", "POST"),))
            )
        return self._exchange(request)

    def _exchange(self, request: Request) -> Plan:
        handler = self.handler
        try:
            call = handler.model_call(handler.preprocess(request))
            try:
                outputs = yield Predict(call)
            except ModelServerError as error:
                status = http_status(error)
                log_level = logging.WARNING if status >= 500 else logging.DEBUG
                log.log(log_level, "model %s: %s -> %d", call.model, error, status)
                return error_reply(status, error.message)
            return _handler_reply(handler.postprocess(request, outputs))
        except HttpError as error:
            if not 400 <= error.status <= 599:
                return self._failed(request, ValueError(f"HttpError status {error.status} is not 4xx/5xx"))
            return error_reply(error.status, error.message)
        except Exception as error:
            return self._failed(request, error)

    def _failed(self, request: Request, error: Exception) -> Reply:
        # A bug in the handler (or a result orjson cannot encode) fails this request only.
        name = self.handler.name
        log.error("handler %s failed on %s %s", name, request.method, request.path, exc_info=error)
        return error_reply(500, f"handler error: {type(error).__name__}: {error}")

    def _health(self) -> Plan:
        return _at_once(json_reply(200, {"status": "ok"}))

    def _ready(self) -> Plan:
        handler = self.handler
        readiness: Readiness = yield CheckReady(handler.model, handler.version, handler.label)
        if readiness.ready:
            return json_reply(200, {"status": "ready", "model": handler.model})
        return json_reply(503, {"status": "not ready", "model": handler.model, "error": readiness.reason})

    def _metrics(self) -> Plan:
        if self.metrics is None:
            return _at_once(error_reply(404, "metrics are off"))
        return _at_once(Reply(200, self.metrics.render(), METRICS_CONTENT_TYPE))

    def _stats(self) -> Plan:
        model_server: dict[str, Any] = yield FetchServerMemory()
        gateway = stats.gateway_memory(master_pid=os.getppid(), worker_class=self.worker_class)
        return json_reply(200, stats.stack_memory(gateway, model_server))


def _at_once(reply: Reply) -> Plan:
    """A plan that needs nothing from the model server."""
    return reply
    yield  # makes this a generator


# -- drivers ---------------------------------------------------------------------------------------------


def drive(plan: Plan, execute: Callable[[Op], Any]) -> Reply:
    """Run a plan with a blocking ``execute`` (the WSGI workers)."""
    try:
        op = next(plan)
        while True:
            try:
                result = execute(op)
            except Exception as error:  # ModelServerError, or a bug reported as a handler error
                op = plan.throw(error)
            else:
                op = plan.send(result)
    except StopIteration as stop:
        reply: Reply = stop.value
        return reply


async def drive_async(plan: Plan, execute: Callable[[Op], Awaitable[Any]]) -> Reply:
    """Run a plan with an awaitable ``execute`` (the asyncio worker)."""
    try:
        op = next(plan)
        while True:
            try:
                result = await execute(op)
            except Exception as error:  # ModelServerError, or a bug reported as a handler error
                op = plan.throw(error)
            else:
                op = plan.send(result)
    except StopIteration as stop:
        reply: Reply = stop.value
        return reply
