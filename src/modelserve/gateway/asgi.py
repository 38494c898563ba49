"""The ASGI app of the asyncio worker (uvicorn's, under Gunicorn): ``scope`` -> `Request` -> plan -> `Reply`.

The upstream call is awaited on the worker's event loop with `AsyncClient`; ``preprocess`` and
``postprocess`` run inline on the loop, as the handler contract promises plain synchronous functions (keep
them short: while one runs, the worker's other requests wait). Lifespan events are answered, and shutdown
closes the upstream connections.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from modelserve.gateway.handler import Handler, Request
from modelserve.gateway.metrics import GatewayMetrics, timed_async
from modelserve.gateway.options import GatewayOptions
from modelserve.gateway.pipeline import (
    DRAIN_BYTES,
    Gateway,
    Reply,
    drive_async,
    error_reply,
    too_large,
)
from modelserve.gateway.upstream import AsyncUpstream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiApp:
    """The ASGI 3 callable the asyncio worker serves; `start` makes it ready in each worker, after fork."""

    def __init__(self, options: GatewayOptions) -> None:
        self._options = options
        self._gateway: Gateway | None = None
        self._upstream: AsyncUpstream | None = None
        self._metrics: GatewayMetrics | None = None

    def start(self, handler: Handler) -> None:
        """Bind the worker's loaded handler and make its upstream client (connecting on first use)."""
        self._upstream = AsyncUpstream(self._options)
        self._metrics = GatewayMetrics()
        self._gateway = Gateway(handler, self._options.worker_class, self._metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: refuse
            await send({"type": "websocket.close", "code": 1003})
            return
        metrics = self._metrics
        if metrics is None:
            reply = await self._reply(scope, receive)
        else:
            started = time.perf_counter()
            metrics.in_flight.inc()
            try:
                reply = await self._reply(scope, receive)
            finally:
                metrics.in_flight.dec()
            metrics.request_done(scope["path"], scope["method"], reply.status, time.perf_counter() - started)
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.header_list()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _reply(self, scope: Scope, receive: Receive) -> Reply:
        if self._gateway is None or self._upstream is None:
            return error_reply(503, "the worker is starting")
        request = await read_request(scope, receive, self._options.max_body_bytes)
        if isinstance(request, Reply):
            return request
        execute: Callable[[Any], Awaitable[Any]] = self._upstream.execute
        if self._metrics is not None:
            execute = timed_async(execute, self._metrics)
        return await drive_async(self._gateway.respond(request), execute)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._upstream is not None:
                    await self._upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def read_request(scope: Scope, receive: Receive, max_body_bytes: int) -> Request | Reply:
    """The request of an HTTP ``scope``, its body read from ``receive``; 413 past ``max_body_bytes``."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    length_text = headers.get("content-length", "")
    try:
        length = int(length_text) if length_text else None
    except ValueError:
        return error_reply(400, f"bad Content-Length {length_text!r}")
    if length is not None and length > DRAIN_BYTES:
        return too_large(max_body_bytes, drained=False)
    # A body over the limit is read to its end (up to DRAIN_BYTES) and dropped; see DRAIN_BYTES.
    over = length is not None and length > max_body_bytes
    chunks: list[bytes] = []
    size = 0
    complete = False
    while size <= DRAIN_BYTES:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        over = over or size > max_body_bytes
        if not over:
            chunks.append(chunk)
        if not message.get("more_body", False):
            complete = True
            break
    if over:
        return too_large(max_body_bytes, drained=complete)
    if not complete:  # the client went away mid-body: never run the handler on half a request
        return error_reply(400, "the client disconnected before sending the whole body")
    query = scope.get("query_string", b"").decode("utf-8", "replace")
    return Request(
        method=scope["method"].upper(),
        path=scope["path"] or "/",
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers=headers,
        body=b"".join(chunks),
    )
