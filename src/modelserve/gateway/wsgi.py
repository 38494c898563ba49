"""The WSGI app of the sync, gthread and gevent workers: ``environ`` -> `Request` -> plan -> `Reply`.

The upstream call blocks the calling thread (sync: the worker; gthread: one of its threads) or, under
gevent, only the calling greenlet: gevent's monkey-patching makes httpx's sockets cooperative, and
``grpc.experimental.gevent`` does the same for gRPC (see `gunicorn_app`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from modelserve.gateway.handler import Handler, Request
from modelserve.gateway.metrics import GatewayMetrics, timed
from modelserve.gateway.options import GatewayOptions
from modelserve.gateway.pipeline import DRAIN_BYTES, Gateway, Reply, drive, error_reply, too_large
from modelserve.gateway.upstream import Upstream

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class WsgiApp:
    """The WSGI callable Gunicorn serves; `start` makes it ready in each worker, after the fork."""

    def __init__(self, options: GatewayOptions) -> None:
        self._options = options
        self._gateway: Gateway | None = None
        self._upstream: Upstream | None = None
        self._metrics: GatewayMetrics | None = None

    def start(self, handler: Handler) -> None:
        """Bind the worker's loaded handler and make its upstream client (connecting lazily)."""
        self._upstream = Upstream(self._options)
        self._metrics = GatewayMetrics()
        self._gateway = Gateway(handler, self._options.worker_class, self._metrics)

    def stop(self) -> None:
        """Close the upstream connections (the worker is exiting)."""
        if self._upstream is not None:
            self._upstream.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        metrics = self._metrics
        if metrics is None:
            reply = self._reply(environ)
        else:
            started = time.perf_counter()
            metrics.in_flight.inc()
            try:
                reply = self._reply(environ)
            finally:
                metrics.in_flight.dec()
            path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
            metrics.request_done(path, method, reply.status, time.perf_counter() - started)
        start_response(reply.status_line, reply.header_list())
        return [reply.body]

    def _reply(self, environ: dict[str, Any]) -> Reply:
        if self._gateway is None or self._upstream is None:
            return error_reply(503, "the worker is starting")
        request = read_request(environ, self._options.max_body_bytes)
        if isinstance(request, Reply):
            return request
        execute: Callable[[Any], Any] = self._upstream.execute
        if self._metrics is not None:
            execute = timed(execute, self._metrics)
        return drive(self._gateway.respond(request), execute)


def read_request(environ: dict[str, Any], max_body_bytes: int) -> Request | Reply:
    """The request ``environ`` describes, or the error reply when its body is too large or unreadable."""
    length_text = environ.get("CONTENT_LENGTH") or ""
    try:
        length = int(length_text) if length_text else None
    except ValueError:
        return error_reply(400, f"bad Content-Length {length_text!r}")
    stream = environ["wsgi.input"]
    if length is not None and length > max_body_bytes:
        return too_large(max_body_bytes, drained=_discard(stream, length))
    # Without a length (chunked), read one byte past the limit to tell "at the limit" from "over it".
    body = stream.read(length if length is not None else max_body_bytes + 1)
    if len(body) > max_body_bytes:
        return too_large(max_body_bytes, drained=_discard(stream, None))
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers[key.replace("_", "-").lower()] = value
    query = _text(environ.get("QUERY_STRING", ""))
    return Request(
        method=environ["REQUEST_METHOD"].upper(),
        path=_text(environ.get("PATH_INFO", "")) or "/",
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers=headers,
        body=body,
    )


def _discard(stream: Any, length: int | None) -> bool:
    """Read and drop the rest of a body, at most DRAIN_BYTES; whether its end was reached."""
    if length is not None and length > DRAIN_BYTES:
        return False
    read = 0
    while read <= DRAIN_BYTES:
        chunk = stream.read(65536)
        if not chunk:
            return True
        read += len(chunk)
    return False


def _text(native: str) -> str:
    # PEP 3333: environ strings are the raw bytes decoded as latin-1; URLs are UTF-8.
    return native.encode("latin-1").decode("utf-8", "replace")
