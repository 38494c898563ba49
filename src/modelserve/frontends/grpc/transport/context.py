"""The servicer context handed to each call: the subset of ``grpc.aio.ServicerContext`` our servicers use.

``abort`` raises synchronously, so both ``context.abort(...)`` in a plain function and
``await context.abort(...)`` in a coroutine work. Metadata and the peer address are computed on demand:
the unary fast path only allocates this object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc  # type: ignore[import-untyped]

from modelserve.frontends.grpc.transport import wire

if TYPE_CHECKING:
    from modelserve.frontends.grpc.transport.connection import Http2Connection
    from modelserve.frontends.grpc.transport.stream import Stream

log = logging.getLogger("modelserve.grpc.transport")


class AbortError(grpc.aio.AbortError):
    """Raised by ``ServicerContext.abort``; the call ends with the code and details abort recorded."""


class ServicerContext:
    """Per-call context: status, metadata, deadline, streaming reads and writes."""

    __slots__ = ("_callbacks", "_code", "_connection", "_details", "_stream", "_trailing")

    def __init__(self, connection: Http2Connection, stream: Stream) -> None:
        self._connection = connection
        self._stream = stream
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: wire.Metadata = ()
        self._callbacks: list[Callable[[Any], None]] | None = None

    # -- status ----------------------------------------------------------------------------------

    def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: wire.Metadata = ()
    ) -> NoReturn:
        """Record the status and raise AbortError (gRPC forbids aborting with OK)."""
        if code == grpc.StatusCode.OK:
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code = grpc.StatusCode.UNKNOWN
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = trailing_metadata
        raise AbortError(details)

    def set_code(self, code: grpc.StatusCode) -> None:
        """The status the call ends with when the handler returns."""
        self._code = code

    def set_details(self, details: str) -> None:
        """The status message the call ends with."""
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        """The status set so far, or None."""
        return self._code

    def details(self) -> str | None:
        """The status message set so far, or None."""
        return self._details

    def set_trailing_metadata(self, trailing_metadata: wire.Metadata) -> None:
        """Metadata sent with the status."""
        self._trailing = trailing_metadata

    def trailing_metadata(self) -> wire.Metadata:
        """The trailing metadata set so far."""
        return self._trailing

    # -- request ---------------------------------------------------------------------------------

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The caller's custom metadata (no pseudo-headers or gRPC protocol headers)."""
        return wire.decode_metadata(self._stream.headers)

    def time_remaining(self) -> float | None:
        """Seconds left before the grpc-timeout deadline, or None without one."""
        deadline = self._stream.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - self._connection.loop.time())

    def peer(self) -> str:
        """The client's address in grpc's form: ``ipv4:127.0.0.1:54321``, ``ipv6:[::1]:p``, ``unix:path``."""
        return self._connection.peer()

    def auth_context(self) -> dict[str, Any]:
        """No authentication on an insecure port."""
        return {}

    # -- streaming -------------------------------------------------------------------------------

    async def read(self) -> Any:
        """The next request message, or ``grpc.aio.EOF`` once the client half-closed."""
        return await self._connection.read_message(self._stream)

    async def write(self, message: Any) -> None:
        """Send one response message; waits while the stream's unsent output is large."""
        await self._connection.write_message(self._stream, message)

    async def send_initial_metadata(self, initial_metadata: wire.Metadata) -> None:
        """Send the response headers now, with this metadata."""
        self._connection.send_initial_metadata(self._stream, initial_metadata)

    # -- lifecycle -------------------------------------------------------------------------------

    def cancelled(self) -> bool:
        """True once the client cancelled, the deadline passed or the server shut the call down."""
        return self._stream.cancelled

    def done(self) -> bool:
        """True once the call ended."""
        return self._stream.closed

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(context)`` when the call ends (at once when it already has)."""
        if self._stream.closed:
            callback(self)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def run_done_callbacks(self) -> None:
        """Called by the connection once, when the stream closes."""
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                log.exception("gRPC done callback failed")

    def set_compression(self, compression: Any) -> None:
        """Responses are sent uncompressed; accepted for compatibility."""

    def disable_next_message_compression(self) -> None:
        """Responses are sent uncompressed; accepted for compatibility."""


class RequestIterator:
    """The request stream of a client- or bidi-streaming call, as an async iterator."""

    __slots__ = ("_context",)

    def __init__(self, context: ServicerContext) -> None:
        self._context = context

    def __aiter__(self) -> RequestIterator:
        return self

    async def __anext__(self) -> Any:
        message = await self._context.read()
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message


def cancelled_error() -> asyncio.CancelledError:
    """What a write or read on a finished call raises: the handler's task is being ended."""
    return asyncio.CancelledError()
