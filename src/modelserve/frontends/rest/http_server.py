"""The HTTP/1.1 server under the REST front-end: asyncio protocols over the httptools parser.

Why not an ASGI server: for a 10 µs model call, the per-request machinery of a general server (a task,
scope and message dicts, two awaited sends) costs more than the model. Here a request whose reply is ready
synchronously (the handler ran the model inline) is parsed, answered and written inside one
``data_received`` call; only replies that wait on the inference threads become tasks.

Replies are not written one by one: each connection holds what it has to send until the event loop has
served every connection that was ready, then an ``Outbox`` writes them all (see ``frontends.outbox``: a
client multiplexing many connections is woken once per pass instead of once per reply).

Supported: keep-alive, pipelining (replies in request order), chunked request bodies, ``Expect:
100-continue``, a body size limit enforced while reading (413, then the connection closes), idle keep-alive
timeout, back-pressure (reading pauses while the client is not reading replies), graceful shutdown
(connections already in the kernel's accept queue are served, not reset: see ``modelserve.draining``; a
request that arrives on a keep-alive connection during the drain is answered, with ``connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import time
from collections import deque
from email.utils import formatdate
from typing import cast
from urllib.parse import unquote

import httptools

from modelserve.codecs.tfserving_json import encode_error
from modelserve.draining import drain_listener
from modelserve.frontends.outbox import MAX_HOLD_SECONDS, Outbox
from modelserve.frontends.rest.handler import (
    NO_HEADERS,
    PendingReply,
    Reply,
    RestHandler,
    body_too_large_reply,
    failed_reply,
)

log = logging.getLogger("modelserve.http")

_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in http.HTTPStatus
}
_STATUS_LINES[499] = b"HTTP/1.1 499 Client Closed Request\r\n"
_CORS = (
    b"access-control-allow-origin: *\r\n"
    b"access-control-allow-methods: POST, GET\r\n"
    b"access-control-allow-headers: Content-Type\r\n"
)
_MAX_PIPELINED = 16  # replies queued on one connection before we stop reading from it
_MAX_HEAD_BYTES = 64 * 1024  # request line + headers; more gets 431
_JSON_HEAD = b"content-type: application/json\r\ncontent-length: "
# On shutdown an idle keep-alive connection stays open this long (within the drain timeout): a request a
# client (a pooled gateway connection) sent just as the drain began is answered, with connection: close,
# instead of meeting a closed socket.
_IDLE_GRACE_SECONDS = 1.0
# At the drain deadline, after the cancelled requests' 503 replies are queued: time for them to be sent
# before the connections that are still open are aborted.
FLUSH_SECONDS = 1.0


class _Clock:
    """The ``date`` header, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._header = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._header


class _Slot:
    """One reply in a connection's pipeline, in request order."""

    __slots__ = ("extra", "head_only", "keep_alive", "reply")

    def __init__(
        self, reply: Reply | None, keep_alive: bool, head_only: bool = False, extra: bytes = b""
    ) -> None:
        self.reply = reply
        self.keep_alive = keep_alive
        self.head_only = head_only  # a HEAD request: headers without the body
        self.extra = extra  # e.g. "connection: keep-alive" for HTTP/1.0 clients that asked for it


class HttpConnection(asyncio.Protocol):
    """One client connection; httptools calls the ``on_*`` methods while ``data_received`` runs.

    Replies leave in request order through ``_pipeline``. Once a reply that closes the connection is
    queued (an error, HTTP/1.0 without keep-alive, a body over the limit), nothing more is parsed.
    """

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._handler = server.handler
        self._wanted = server.handler.wanted_headers
        self._headers: dict[bytes, bytes] | None = None  # the wanted headers, when a request sends one
        self._limit = server.handler.settings.max_body_bytes
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pipeline: deque[_Slot] = deque()
        self._url = b""
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._in_message = False
        self._closing = False  # shutdown or idle timeout: the last reply says connection: close, then close
        self._stopped = False  # a closing reply is queued: ignore whatever the client sends next
        self._write_paused = False
        self._reading_paused = False
        self._expect_continue = False
        self._held: list[bytes] = []  # replies written at the end of this pass of the loop (Outbox)
        self._close_when_written = False
        self.last_activity = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_activity = time.monotonic()
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        self.last_activity = now = time.monotonic()
        self._server.outbox.flush_if_overdue(now)  # may close this connection (idle close in this pass)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_with((400, encode_error("Protocol upgrades are not supported")))
        except httptools.HttpParserError as exc:
            if not self._stopped:
                self._stop_with((400, encode_error(f"Malformed HTTP request: {exc}")))

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it asked (replies pending or held), then close."""
        if self._pipeline or self._held:
            self._in_message = False  # half a request is all it will ever send
            self.close_when_idle()
            return True  # keep the transport open for the replies; closed after the last one
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = None
        self._head_bytes = 0
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        lowered = name.lower()
        if lowered == b"content-length":
            if value.isdigit() and int(value) > self._limit:
                self._too_large = True
        elif lowered == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif lowered in self._wanted:
            # Allocated only for requests that send one (V2 binary tensors); others pass NO_HEADERS.
            if self._headers is None:
                self._headers = {}
            self._headers[lowered] = value

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > _MAX_HEAD_BYTES and not self._stopped:
            self._stop_with((431, encode_error(f"Request line and headers exceed {_MAX_HEAD_BYTES} bytes")))
            raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        if self._stopped:
            return
        if self._too_large:
            # Content-Length is over the limit: answer without reading the body, then close.
            self._stop_with(body_too_large_reply(self._limit))
            return
        if self._expect_continue:
            self._expect_continue = False
            # Only when no earlier reply is pending, so the interim reply cannot overtake one.
            if not self._pipeline and self._parser.get_http_version() == "1.1":
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._stopped:
            return
        self._size += len(body)
        if self._size > self._limit:
            self._body = []
            self._stop_with(body_too_large_reply(self._limit))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._stopped:
            return
        keep_alive = self._parser.should_keep_alive() and not self._closing
        extra = b""
        if keep_alive and self._parser.get_http_version() == "1.0":
            extra = b"connection: keep-alive\r\n"
        method = self._parser.get_method().decode("ascii", "replace")
        head_only = method == "HEAD"
        raw_path = self._url.split(b"?", 1)[0]
        path = raw_path.decode("utf-8", "replace")
        if "%" in path:
            path = unquote(path)
        if not keep_alive:
            self._stopped = True  # its reply closes the connection: requests after it are not run (RFC 9112)
        if method == "OPTIONS" and self._handler.settings.cors:
            self._enqueue((204, b""), keep_alive, False, extra)
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        reply = self._handler.handle("GET" if head_only else method, path, body, self._headers or NO_HEADERS)
        self._enqueue(reply, keep_alive, head_only, extra)

    # -- replies ---------------------------------------------------------------------------------

    def _enqueue(self, reply: Reply | PendingReply, keep_alive: bool, head_only: bool, extra: bytes) -> None:
        if isinstance(reply, tuple):
            if not self._pipeline:
                self._write(reply, keep_alive, head_only, extra)
                return
            self._pipeline.append(_Slot(reply, keep_alive, head_only, extra))
            return
        slot = _Slot(None, keep_alive, head_only, extra)
        self._pipeline.append(slot)
        task = asyncio.get_running_loop().create_task(reply)
        self._server.tasks.add(task)
        task.add_done_callback(lambda done: self._complete(slot, done))
        self._update_reading()

    def _complete(self, slot: _Slot, task: asyncio.Task[Reply]) -> None:
        self._server.tasks.discard(task)
        if task.cancelled():
            slot.reply = failed_reply(None)  # cancelled at the drain deadline: 503
        elif task.exception() is not None:
            log.error("reply failed", exc_info=task.exception())
            slot.reply = failed_reply(task.exception())
        else:
            slot.reply = task.result()
        self._flush()
        self._update_reading()

    def _flush(self) -> None:
        while self._pipeline and self._pipeline[0].reply is not None:
            ready = self._pipeline.popleft()
            assert ready.reply is not None
            self._write(ready.reply, ready.keep_alive, ready.head_only, ready.extra)

    def _write(self, reply: Reply, keep_alive: bool, head_only: bool = False, extra: bytes = b"") -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if len(reply) == 2:
            status, body = reply
            fields = _JSON_HEAD
        else:
            status, body, extra_fields = reply
            fields = extra_fields + b"content-length: "
        # Shutting down: the last reply owed on this connection closes it, and says so.
        if self._closing and not self._pipeline and not self._in_message:
            keep_alive = False
        head = (
            _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode(),
            fields,
            str(len(body)).encode(),
            b"\r\n",
            self._server.clock.header(),
            _CORS if self._handler.settings.cors else b"",
            extra if keep_alive else b"connection: close\r\n",
            b"\r\n",
        )
        self._send(b"".join(head) if head_only else b"".join(head) + body, close=not keep_alive)
        if not keep_alive:
            self._stopped = True

    def _send(self, data: bytes, close: bool = False) -> None:
        """Hold ``data`` until the loop's pass ends (``Outbox``); ``close``: close the connection after."""
        first = not self._held
        self._held.append(data)
        if close:
            self._close_when_written = True
        if first:
            self._server.outbox.hold(self)

    def write_held(self) -> None:
        held, self._held = self._held, []
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(held[0] if len(held) == 1 else b"".join(held))
        if self._close_when_written:
            transport.close()  # after the buffered replies are sent

    def _stop_with(self, reply: Reply) -> None:
        """Queue a final reply behind the pending ones, then close; nothing more is parsed."""
        self._stopped = True
        self._in_message = False
        if not self._pipeline:
            self._write(reply, keep_alive=False)
        else:
            self._pipeline.append(_Slot(reply, keep_alive=False))
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while the client reads our replies and the pipeline has room."""
        transport = self._transport
        if transport is None:
            return
        pause = self._write_paused or len(self._pipeline) >= _MAX_PIPELINED
        if pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._pipeline and not self._in_message

    @property
    def stalled(self) -> bool:
        """In the middle of a request, with no reply pending (a client that stopped sending)."""
        return self._in_message and not self._pipeline

    def close_after_replies(self) -> None:
        """Shutdown: the replies owed (and any request that arrives meanwhile) are answered with
        ``connection: close``, then the connection closes; an idle one stays open until closed."""
        self._closing = True

    def close_when_idle(self) -> None:
        """Graceful close: now if idle, else after the replies in flight are written."""
        self._closing = True
        if self.idle and self._transport is not None:
            if self._held:
                self._close_when_written = True
            else:
                self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """Accepts connections on one listening socket and serves them with ``handler``."""

    def __init__(
        self,
        handler: RestHandler,
        keepalive_timeout: float = 75.0,
        reply_coalescing_seconds: float = MAX_HOLD_SECONDS,
    ) -> None:
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[Reply]] = set()
        self.clock = _Clock()
        self.outbox = Outbox(reply_coalescing_seconds)
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._sock = sock
        self._server = await loop.create_server(lambda: HttpConnection(self), sock=sock, backlog=2048)
        self._sweeper = loop.create_task(self._close_idle_connections())

    async def _close_idle_connections(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.keepalive_timeout))
            deadline = time.monotonic() - self.keepalive_timeout
            for connection in list(self.connections):
                if connection.last_activity >= deadline:
                    continue
                if connection.idle:
                    connection.close_when_idle()
                elif connection.stalled:  # half a request, then silence: do not hold it forever
                    connection.abort()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish the requests in flight (up to ``timeout``), close every connection.

        1. New connections are refused; the ones the kernel already queued are accepted (by this loop,
           while another thread watches the queue) and served; then the listener closes.
        2. Busy connections close after their replies, sent with ``connection: close``. Idle keep-alive
           connections stay open for ``_IDLE_GRACE_SECONDS``: a request arriving on one is answered, with
           ``connection: close``; then the idle ones close.
        3. At the deadline, the requests still running are cancelled and answered 503; once those replies
           are sent (or ``FLUSH_SECONDS`` passed), whatever is still open is aborted.
        """
        deadline = time.monotonic() + timeout
        if self._server is not None:
            if self._sock is not None:
                await asyncio.to_thread(drain_listener, self._sock, timeout)
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.close_after_replies()
        idle_until, idle_closed = time.monotonic() + _IDLE_GRACE_SECONDS, False
        while (self.connections or self.tasks) and time.monotonic() < deadline:
            if not idle_closed and time.monotonic() >= idle_until:
                idle_closed = True
                for connection in list(self.connections):
                    connection.close_when_idle()
            await asyncio.sleep(0.02)
        if self.tasks:
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            # Their done callbacks queue the 503 replies before gather returns.
            await asyncio.gather(*tasks, return_exceptions=True)
        flushed = time.monotonic() + FLUSH_SECONDS
        for connection in list(self.connections):
            connection.close_when_idle()
        while self.connections and time.monotonic() < flushed:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
