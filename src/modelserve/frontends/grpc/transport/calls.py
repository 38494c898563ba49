"""Running a call's handler: the four RPC shapes, their results, and how errors become statuses.

A unary handler is called synchronously; a plain return value is the response and goes out at once. An
awaitable result (an ``async def`` handler, or a sync-first one that must wait) and every streaming call
run as a task, cancelled when the deadline passes, the client resets the stream or the server stops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import CoroutineType, GeneratorType
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]

from modelserve.frontends.grpc.transport import wire
from modelserve.frontends.grpc.transport.context import AbortError, RequestIterator, ServicerContext
from modelserve.frontends.grpc.transport.stream import Stream, StreamError

if TYPE_CHECKING:
    from modelserve.frontends.grpc.transport.connection import Http2Connection

log = logging.getLogger("modelserve.grpc.transport")

CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
_OK = grpc.StatusCode.OK


def run_unary_request(connection: Http2Connection, stream: Stream, raw: bytes) -> None:
    """A unary-request call whose message has arrived: deserialize, call, answer (or spawn a task)."""
    if stream.deadline is not None and _expired(connection, stream):
        return
    deserializer = stream.handler.request_deserializer
    if deserializer is not None:
        try:
            request = deserializer(raw)
        except Exception as exc:
            connection.finish_with_status(stream, INTERNAL, f"Failed to parse request: {exc}")
            return
    else:
        request = raw
    _call(connection, stream, request)


def start_streaming_request(connection: Http2Connection, stream: Stream) -> None:
    """A client- or bidi-streaming call starts at its HEADERS; requests reach it through an iterator."""
    if stream.deadline is not None and _expired(connection, stream):
        return
    _call(connection, stream, None)


def _expired(connection: Http2Connection, stream: Stream) -> bool:
    """Answer DEADLINE_EXCEEDED when the deadline passed before the handler could be called."""
    assert stream.deadline is not None
    if stream.deadline > connection.loop.time():
        return False
    connection.finish_with_status(stream, DEADLINE_EXCEEDED, "Deadline Exceeded")
    return True


# Reply types seen not to be awaitable: a set lookup instead of ``inspect.isawaitable`` (an ABC
# check, ~130 ns) or ``hasattr(reply, "__await__")`` (~560 ns on a protobuf message) on every call.
_PLAIN_TYPES: set[type] = set()
_PLAIN_TYPES_LIMIT = 1024


def _call(connection: Http2Connection, stream: Stream, request: Any) -> None:
    """Call the handler (a streaming request is read through an iterator instead), then answer at once
    or run what it returned as a task."""
    handler = stream.handler
    context = connection.new_context(stream)
    streaming = handler.response_streaming
    try:
        if handler.request_streaming:
            function = handler.stream_stream if streaming else handler.stream_unary
            result = function(RequestIterator(context), context)
        else:
            function = handler.unary_stream if streaming else handler.unary_unary
            result = function(request, context)
    except Exception as exc:
        fail(connection, stream, context, exc)
        return
    if streaming or pending(result):
        # The deadline timer is armed by the connection after this read.
        stream.task = connection.loop.create_task(_run(connection, stream, context, result, streaming))
    else:
        finish_unary(connection, stream, context, result)


def pending(result: object) -> bool:
    """Whether a sync-first handler returned something to await (else it is the reply itself)."""
    kind = type(result)
    if kind is CoroutineType:
        return True
    if kind in _PLAIN_TYPES:
        return False
    if inspect.isawaitable(result):
        return True
    # A generator may be a generator-based coroutine (decided per object); every other type is decided
    # by its class.
    if kind is not GeneratorType and len(_PLAIN_TYPES) < _PLAIN_TYPES_LIMIT:
        _PLAIN_TYPES.add(kind)
    return False


def finish_unary(
    connection: Http2Connection, stream: Stream, context: ServicerContext, response: Any
) -> None:
    """Send a unary response, or the status the handler set instead."""
    if stream.closed:
        return
    code = context.code()
    if code is not None and code is not _OK:
        connection.finish_with_status(stream, code.value[0], context.details(), context.trailing_metadata())
        return
    try:
        data = _serialize(connection, stream, response)
    except StreamError as exc:
        connection.finish_with_status(stream, exc.code, exc.details)
        return
    details = context.details()
    trailing = context.trailing_metadata()
    if details or trailing:
        connection.queue_message(stream, data)
        connection.queue_trailers(stream, wire.status_block(0, details, trailing))
    else:
        connection.send_reply(stream, data)


def _finish_ok(connection: Http2Connection, stream: Stream, context: ServicerContext) -> None:
    code = context.code()
    number = 0 if code is None else code.value[0]
    connection.finish_with_status(stream, number, context.details(), context.trailing_metadata())


def fail(connection: Http2Connection, stream: Stream, context: ServicerContext, exc: Exception) -> None:
    """Map a handler's exception to the call's status."""
    if isinstance(exc, AbortError):
        code = context.code()
        number = UNKNOWN if code is None else code.value[0]
        connection.finish_with_status(stream, number, context.details(), context.trailing_metadata())
    elif isinstance(exc, StreamError):
        connection.finish_with_status(stream, exc.code, exc.details)
    else:
        log.error("gRPC handler for %s failed", _method(stream), exc_info=exc)
        connection.finish_with_status(stream, UNKNOWN, f"Unexpected {type(exc)}: {exc}")


def _serialize(connection: Http2Connection, stream: Stream, message: Any) -> bytes:
    serializer = stream.handler.response_serializer
    if serializer is not None:
        try:
            message = serializer(message)
        except Exception as exc:
            log.error("gRPC response of %s failed to serialize", _method(stream), exc_info=exc)
            raise StreamError(INTERNAL, f"Failed to serialize response: {exc}") from None
    if len(message) > connection.max_send:
        raise StreamError(
            RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(message)} vs. {connection.max_send})"
        )
    return bytes(message) if not isinstance(message, bytes) else message


def _method(stream: Stream) -> str:
    for name, value in stream.headers:
        if name == b":path":
            return str(value.decode("utf-8", "replace"))
    return "?"


async def _run(
    connection: Http2Connection, stream: Stream, context: ServicerContext, result: Any, streaming: bool
) -> None:
    """A call's task: await a unary handler's result, or send a streaming one's messages; then answer."""
    try:
        if streaming:
            await _write_all(connection, stream, result)
        else:
            response = await result
    except asyncio.CancelledError:
        _cancelled(connection, stream)
        return
    except Exception as exc:
        fail(connection, stream, context, exc)
        return
    if not streaming:
        finish_unary(connection, stream, context, response)
    elif not stream.closed:
        _finish_ok(connection, stream, context)


async def _write_all(connection: Http2Connection, stream: Stream, result: Any) -> None:
    """The messages of a response-streaming handler's result (async or plain iterable, or a coroutine
    that writes with ``context.write()``)."""
    if hasattr(result, "__aiter__"):
        async for message in result:
            await write_message(connection, stream, message)
    elif hasattr(result, "__await__"):
        await result
    elif result is not None:
        for message in result:
            await write_message(connection, stream, message)


def _cancelled(connection: Http2Connection, stream: Stream) -> None:
    """The handler raised CancelledError. When the transport cancelled it (deadline, client reset,
    shutdown) the stream is closed and its status was sent; otherwise something inside the handler was
    cancelled (an executor future at shutdown, say) and the client still needs an answer."""
    if not stream.closed:
        connection.finish_with_status(stream, CANCELLED, "Cancelled")


async def write_message(connection: Http2Connection, stream: Stream, message: Any) -> None:
    """One response message of a streaming call; waits while much of the output is unsent."""
    if stream.closed or stream.trailers is not None:
        raise asyncio.CancelledError()
    connection.queue_message(stream, _serialize(connection, stream, message))
    if connection.must_wait(stream):
        await connection.wait_writable(stream)


async def read_message(connection: Http2Connection, stream: Stream) -> Any:
    """The next request message of a streaming call, or ``grpc.aio.EOF``."""
    while not stream.messages:
        if stream.remote_closed or stream.closed:
            return grpc.aio.EOF
        waiter: asyncio.Future[None] = connection.loop.create_future()
        stream.reader = waiter
        await waiter
    raw = stream.messages.popleft()
    connection.consumed(stream, len(raw))
    deserializer = stream.handler.request_deserializer
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except Exception as exc:
        raise StreamError(INTERNAL, f"Failed to parse request: {exc}") from None
