"""The gRPC server object: options, method routing, listening sockets and graceful shutdown.

Mirrors the part of ``grpc.aio.Server`` that generated ``add_*Servicer_to_server`` functions and our
front-end use, so the servicers do not know which server runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Iterable, Sequence
from typing import Any

from modelserve.frontends.grpc.transport.connection import Http2Connection, initial_frames
from modelserve.frontends.outbox import MAX_HOLD_SECONDS, Outbox

log = logging.getLogger("modelserve.grpc.transport")

_DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024  # grpc's default
_UNLIMITED = 2**31 - 1
_ROUTE_CACHE_SIZE = 4096
_FLUSH_SECONDS = 1.0  # after cancelling calls at the end of the grace period: time to send their statuses
_UNAVAILABLE = 14
_DEFAULT_MAX_STREAMS = 1000  # per connection: bounds a client's memory (grpc's own default is unlimited)
_HANDSHAKE_SECONDS = 120.0  # a connection that sends no HTTP/2 preface by then is closed


class _CallDetails:
    """What a generic handler's ``service()`` looks at (``grpc.HandlerCallDetails``)."""

    __slots__ = ("invocation_metadata", "method")

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


SUPPORTED_OPTIONS = frozenset(
    {"grpc.max_receive_message_length", "grpc.max_send_message_length", "grpc.max_concurrent_streams"}
)
"""The grpc channel arguments this transport honours; others are accepted and ignored."""


class GrpcHttp2Server:
    """A gRPC server on the running asyncio event loop (uvloop or asyncio)."""

    def __init__(
        self, options: Sequence[tuple[str, Any]] = (), reply_coalescing_seconds: float = MAX_HOLD_SECONDS
    ) -> None:
        self.max_receive_message_length = _DEFAULT_MAX_RECEIVE
        self.max_send_message_length = _UNLIMITED
        self.max_concurrent_streams = _DEFAULT_MAX_STREAMS
        self.handshake_timeout = _HANDSHAKE_SECONDS
        for key, value in options:
            if key == "grpc.max_receive_message_length":
                self.max_receive_message_length = _limit(value)
            elif key == "grpc.max_send_message_length":
                self.max_send_message_length = _limit(value)
            elif key == "grpc.max_concurrent_streams":
                self.max_concurrent_streams = max(1, int(value))
            else:
                log.debug("gRPC server option %s is not used by this transport", key)
        self.initial_frames = initial_frames(self.max_concurrent_streams)
        self.outbox = Outbox(reply_coalescing_seconds)  # what every connection writes, once per loop pass
        self._registered: dict[str, Any] = {}
        self._generic: list[Any] = []
        self._routes: dict[bytes, Any] = {}
        self._sockets: list[socket.socket] = []
        self._unix_paths: list[str] = []
        self._listeners: list[asyncio.AbstractServer] = []
        self.connections: set[Http2Connection] = set()
        self.shutting_down = False
        self._all_closed: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._grace_over: asyncio.Future[None] | None = None  # set by a stop() with a shorter grace

    # -- services --------------------------------------------------------------------------------

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        """``grpc.GenericRpcHandler`` objects, asked in order for methods not registered directly."""
        self._generic.extend(handlers)
        self._routes.clear()

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """``{method name: grpc.RpcMethodHandler}`` of one service, looked up first."""
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler
        self._routes.clear()

    def route(self, path: bytes) -> Any:
        """The handler for a ``:path`` (None: unknown); resolved once per path."""
        try:
            return self._routes[path]
        except KeyError:
            pass
        method = path.decode("utf-8", "replace")
        handler = self._registered.get(method)
        if handler is None:
            details = _CallDetails(method)
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    break
        if len(self._routes) < _ROUTE_CACHE_SIZE:
            self._routes[path] = handler
        return handler

    # -- lifecycle -------------------------------------------------------------------------------

    def add_insecure_port(self, address: str) -> int:
        """Bind ``host:port``, ``[v6]:port`` or ``unix:/path`` now; returns the port (0 for unix)."""
        try:
            if address.startswith("unix:"):
                return self._bind_unix(address.removeprefix("unix:").removeprefix("//"))
            return self._bind_tcp(address)
        except OSError as exc:
            raise RuntimeError(f"Failed to bind to address {address}: {exc}") from exc

    def _bind_tcp(self, address: str) -> int:
        host, _, port_text = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        port = int(port_text)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if host == "localhost":
            host, family = "127.0.0.1", socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self._listen(sock, (host, port))
        return int(sock.getsockname()[1])

    def _bind_unix(self, path: str) -> int:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run, as grpc does
        self._listen(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path)
        self._unix_paths.append(path)
        return 0

    def _listen(self, sock: socket.socket, address: Any) -> None:
        """Bind and listen (closing the socket on failure); served once ``start()`` runs."""
        try:
            sock.bind(address)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sockets.append(sock)

    async def start(self) -> None:
        """Serve the bound sockets on the running loop."""
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            if sock.family == socket.AF_UNIX:
                listener = await loop.create_unix_server(self._new_connection, sock=sock)
            else:
                listener = await loop.create_server(self._new_connection, sock=sock)
            self._listeners.append(listener)
        self._sockets = []

    def _new_connection(self) -> Http2Connection:
        return Http2Connection(self)

    def connection_closed(self, connection: Http2Connection) -> None:
        """Called by a connection once its transport is gone."""
        self.connections.discard(connection)
        if not self.connections and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, GOAWAY every connection, let calls finish for ``grace`` seconds, cancel the rest.

        ``grace=None`` cancels every call at once, as ``grpc.aio.Server.stop(None)`` does. Returns once
        every connection is closed; a second call waits for the first, ending its grace period sooner when
        its own is shorter (the most restrictive grace wins, as in grpc.aio).
        """
        loop = asyncio.get_running_loop()
        if self._stopped is not None:
            if not grace:
                _wake(self._grace_over)
            else:
                loop.call_later(grace, _wake, self._grace_over)
            await asyncio.shield(self._stopped)
            return
        self._stopped = loop.create_future()
        self._grace_over = loop.create_future()
        try:
            await self._shutdown(loop, grace)
        finally:
            self._stopped.set_result(None)

    async def _shutdown(self, loop: asyncio.AbstractEventLoop, grace: float | None) -> None:
        # 1. Stop accepting: close the listeners (and sockets never started).
        self.shutting_down = True
        for listener in self._listeners:
            listener.close()
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        # 2. GOAWAY on every connection; idle ones close at once, busy ones when their calls end.
        self._all_closed = loop.create_future()
        if not self.connections:
            self._all_closed.set_result(None)
        for connection in list(self.connections):
            connection.begin_shutdown()
        # 3. Drain for up to `grace` seconds (None: none at all), or until a later stop() cuts it short.
        if grace:
            assert self._grace_over is not None
            await asyncio.wait(
                (self._all_closed, self._grace_over), timeout=grace, return_when=asyncio.FIRST_COMPLETED
            )
        # 4. Cancel what is left, give the statuses a moment to leave, then drop the connections.
        if self.connections:
            for connection in list(self.connections):
                connection.cancel_calls(_UNAVAILABLE, "Server shutting down")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._all_closed), _FLUSH_SECONDS)
            for connection in list(self.connections):
                connection.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._all_closed), _FLUSH_SECONDS)
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), _FLUSH_SECONDS)
        self._listeners = []
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._unix_paths = []

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Wait until ``stop()`` finished; False when ``timeout`` passed first."""
        while self._stopped is None:
            await asyncio.sleep(0.05)  # stop() not called yet; rare path, used by scripts
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout)
        except TimeoutError:
            return False
        return True


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _limit(value: Any) -> int:
    number = int(value)
    return _UNLIMITED if number < 0 else number
