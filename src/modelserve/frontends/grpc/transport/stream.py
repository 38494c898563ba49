"""One HTTP/2 stream carrying one gRPC call: its request messages, flow-control windows and queued output.

The connection owns streams and mutates them; the servicer context reads them. A stream is ``closed`` once
its trailers left (or it was reset, timed out or cancelled); nothing is sent on it afterwards.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from modelserve.frontends.grpc.transport import wire

if TYPE_CHECKING:
    from modelserve.frontends.grpc.transport.context import ServicerContext


class StreamError(Exception):
    """A request message the call cannot accept; ends the call with ``code`` (an int gRPC status)."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNIMPLEMENTED = 12


class Stream:
    """Per-call state; slotted because a unary call creates one per request."""

    __slots__ = (
        "cancelled",
        "closed",
        "context",
        "deadline",
        "drain_waiter",
        "encoding",
        "handler",
        "headers",
        "headers_sent",
        "id",
        "inbuf",
        "messages",
        "need",
        "out_bytes",
        "outq",
        "queued_bytes",
        "reader",
        "recv_credit",
        "remote_closed",
        "send_window",
        "task",
        "timer",
        "trailers",
    )

    def __init__(self, stream_id: int, send_window: int, headers: Any, handler: Any) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.headers = headers  # decoded (name, value) byte pairs; metadata is derived lazily
        self.handler = handler
        self.encoding: bytes | None = None
        self.deadline: float | None = None
        self.context: ServicerContext | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.messages: deque[bytes] = deque()
        self.inbuf: bytearray | None = None  # a partly received message
        self.need = 0  # bytes inbuf must hold before the next message can be complete
        self.queued_bytes = 0  # received messages the handler has not read yet
        self.recv_credit = 0  # received DATA not yet returned to the peer with WINDOW_UPDATE
        self.reader: asyncio.Future[None] | None = None  # a read() waiting for a message
        self.remote_closed = False  # the client half-closed (END_STREAM)
        # DATA payload waiting for flow-control window; created by the first message that must wait.
        self.outq: deque[bytes | memoryview] | None = None
        self.out_bytes = 0
        self.trailers: bytes | None = None  # sent once outq is empty
        self.drain_waiter: asyncio.Future[None] | None = None  # a write() waiting for outq to drain
        self.headers_sent = False
        self.closed = False
        self.cancelled = False

    def feed(self, data: bytes, limit: int) -> None:
        """Split received DATA into gRPC messages (5-byte prefix: compressed flag, big-endian length)."""
        inbuf = self.inbuf
        if inbuf is not None:
            inbuf += data
            if len(inbuf) < self.need:
                return
            buf: bytes | bytearray = inbuf
        else:
            buf = data
        pos = 0
        size = len(buf)
        while size - pos >= 5:
            length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if length > limit:
                raise StreamError(
                    RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {limit})"
                )
            end = pos + 5 + length
            if end > size:
                break
            message = bytes(buf[pos + 5 : end])
            if buf[pos]:
                message = self._decompress(message, limit)
            self.messages.append(message)
            self.queued_bytes += len(message)
            pos = end
        if pos == size:
            self.inbuf = None
            return
        rest = bytearray(buf[pos:])
        self.inbuf = rest
        self.need = 5 + int.from_bytes(rest[1:5], "big") if len(rest) >= 5 else 5

    def _decompress(self, message: bytes, limit: int) -> bytes:
        encoding = self.encoding
        if encoding is None or encoding == b"identity":
            raise StreamError(INTERNAL, "Compressed message received without grpc-encoding")
        try:
            return wire.decompress(message, encoding, limit)
        except wire.MessageTooLarge as exc:
            raise StreamError(
                RESOURCE_EXHAUSTED, f"Received message larger than max ({exc.args[0]} vs. {limit})"
            ) from None
        except Exception as exc:
            raise StreamError(INTERNAL, f"Failed to decompress message: {exc}") from None
