"""One client connection: an asyncio Protocol that parses HTTP/2 frames and runs gRPC calls.

Fast path: a unary call whose handler returns its response synchronously is decoded, run and answered
inside the ``data_received`` call that completed its request. What a connection has to send is queued in
``_out`` and written in one ``transport.write`` when the event loop's pass over the ready connections ends
(the server's ``Outbox``, see ``frontends.outbox``), together with what the pass produced for every other
connection. Handlers that return an awaitable (and every streaming call) run as tasks; their output leaves
the same way.

Flow control: we advertise large receive windows and return credit as DATA arrives (for streaming
requests, as the handler reads, so a slow reader holds the client back). We respect the peer's windows and
maximum frame size, queue what does not fit, and stop reading from a client that does not read its replies.

Bounds, so one client cannot take the server's memory: streams per connection (SETTINGS_MAX_CONCURRENT_
STREAMS), header blocks (size and CONTINUATION count), unread request bytes per stream, and replies queued
for a client that grants no window (above ``_BACKLOG_LIMIT`` new streams are refused and streaming writers
wait; we keep reading, since the WINDOW_UPDATEs that drain the backlog arrive on the same socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import grpc  # type: ignore[import-untyped]

from modelserve.frontends.grpc.transport import calls, frames, wire
from modelserve.frontends.grpc.transport.context import ServicerContext
from modelserve.frontends.grpc.transport.stream import Stream, StreamError

if TYPE_CHECKING:
    from modelserve.frontends.grpc.transport.server import GrpcHttp2Server

log = logging.getLogger("modelserve.grpc.transport")

STREAM_WINDOW = 4 * 1024 * 1024  # our SETTINGS_INITIAL_WINDOW_SIZE
# Our connection receive window. Large enough that a channel carrying many big requests at once is not
# throttled at the connection: with 16 MiB, 64 concurrent 1 MiB calls from grpcio queued behind the window
# and the slowest waited 1.2-1.5 s (p99) while the median took 18 ms; with 64 MiB the p99 is ~120 ms.
CONNECTION_WINDOW = 64 * 1024 * 1024
MAX_HEADER_LIST = 64 * 1024
_HIGH_WATER = 1024 * 1024  # a stream's unsent output above which write() waits
_UNREAD_LIMIT = 4 * 1024 * 1024  # received but unread request bytes above which we stop granting credit
_BACKLOG_LIMIT = 32 * 1024 * 1024  # replies queued for window above which new streams are refused
_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}
_MAX_CONTINUATIONS = 64  # CONTINUATION frames in one header block (empty ones would otherwise be free)
_HEADER_CACHE_SIZE = 512
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 41\r\n"
    b"connection: close\r\n\r\nThis port speaks gRPC over HTTP/2 only.\r\n"
)


def initial_frames(max_concurrent_streams: int) -> bytes:
    """Our SETTINGS (and the connection window raised), the first thing the server sends."""
    settings = {
        frames.SETTINGS_ENABLE_PUSH: 0,
        frames.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        frames.SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        frames.SETTINGS_MAX_CONCURRENT_STREAMS: max_concurrent_streams,
    }
    return frames.settings(settings) + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW)


_END_HEADERS_AND_STREAM = frames.END_HEADERS | frames.END_STREAM
OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14


class _ConnectionError(Exception):
    """A connection-level protocol error: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _HeaderBlock:
    """A request header block still arriving in CONTINUATION frames."""

    __slots__ = ("flags", "fragments", "size", "stream_id")

    def __init__(self, stream_id: int, flags: int, first: bytes) -> None:
        self.stream_id = stream_id
        self.flags = flags
        self.fragments = [first]
        self.size = len(first)


class _RequestHead:
    """What routing needs from a request's header block; cached for fully indexed blocks."""

    __slots__ = ("content_type", "encoding", "headers", "method", "path", "timeout")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.path = b""
        self.method = b""
        self.content_type = b""
        self.timeout: bytes | None = None
        self.encoding: bytes | None = None
        for name, value in headers:
            if name == b":path":
                self.path = value
            elif name == b":method":
                self.method = value
            elif name == b"content-type":
                self.content_type = value
            elif name == b"grpc-timeout":
                self.timeout = value
            elif name == b"grpc-encoding":
                self.encoding = value


def _table_state(table: Any) -> tuple[int, int, int, int]:
    """What changes when a header block adds or evicts an HPACK dynamic table entry or resizes it (the
    newest entry's identity: an entry added always becomes the first)."""
    entries = table.dynamic_entries
    return len(entries), id(entries[0]) if entries else 0, table.maxsize, table._current_size


class Http2Connection(asyncio.Protocol):
    """The HTTP/2 server side of one connection."""

    def __init__(self, server: GrpcHttp2Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.max_receive = server.max_receive_message_length
        self.max_send = server.max_send_message_length
        self._max_streams = server.max_concurrent_streams
        self._route = server.route
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._preface_seen = False
        self._decoder = wire.new_decoder(MAX_HEADER_LIST)
        self._head_cache: dict[bytes, _RequestHead] = {}
        self._streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._continuation: _HeaderBlock | None = None
        self._out: list[bytes | memoryview] = []
        self._receiving = False
        self._flush_scheduled = False
        self._send_window = frames.DEFAULT_WINDOW
        self._peer_initial_window = frames.DEFAULT_WINDOW
        self._max_frame = frames.DEFAULT_MAX_FRAME
        self._recv_credit = 0
        self._blocked: dict[int, Stream] = {}  # streams waiting for connection-level window
        self._backlog = 0  # bytes of DATA queued on all streams, waiting for flow-control window
        self._backlogged = False  # above _BACKLOG_LIMIT until drained below half of it
        self._unarmed: list[Stream] = []  # streams with a deadline whose timer is armed after this read
        self._table_size_update = False  # the next header block must start with "dynamic table size 0"
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._going_away = False  # we sent GOAWAY (server shutdown)
        self._goaway_last = frames.MAX_WINDOW
        self._peer_gone = False  # the client sent GOAWAY
        self._closing = False  # close once what is queued is written
        self._closed = False
        self._peer: str | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._handshake_timer = self.loop.call_later(self.server.handshake_timeout, self._handshake_expired)
        if self.server.shutting_down:
            self.begin_shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._transport = None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        for stream in list(self._streams.values()):
            self._cancel_stream(stream)
        self._streams.clear()
        self._blocked.clear()
        self._wake_writers()
        self.server.connection_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()
        self._wake_writers()

    def data_received(self, data: bytes) -> None:
        if self._closed or self._closing:
            return
        outbox = self.server.outbox
        if outbox.coalescing:
            outbox.flush_if_overdue(time.monotonic())
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self._preface_seen:
            if len(data) < 24:
                if not frames.PREFACE.startswith(data):
                    self._reject_preface()
                else:
                    self._buffer = data
                return
            if data[:24] != frames.PREFACE:
                self._reject_preface()
                return
            self._preface_seen = True
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None
            # Our SETTINGS only once the preface is valid, so an HTTP/1.1 client reads a plain 400.
            self._out.append(self.server.initial_frames)
            data = data[24:]
        self._receiving = True
        try:
            self._receive(data)
        except _ConnectionError as exc:
            self._fail_connection(exc.code, str(exc))
        except Exception as exc:
            log.exception("HTTP/2 connection failed")
            self._fail_connection(frames.INTERNAL_ERROR, f"internal error: {exc}")
        finally:
            self._receiving = False
            if self._unarmed:
                self._arm_deadlines()
            if not outbox.coalescing:
                self._flush()
            elif self._out or self._closing:
                self.flush_soon()

    def eof_received(self) -> bool | None:
        return None

    # -- receiving -------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        max_frame = frames.DEFAULT_MAX_FRAME
        while size - pos >= 9:
            length = int.from_bytes(data[pos : pos + 3], "big")
            if length > max_frame:
                raise _ConnectionError(frames.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            end = pos + 9 + length
            if end > size:
                break
            frame_type = data[pos + 3]
            flags = data[pos + 4]
            stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = data[pos + 9 : end]
            pos = end
            if self._continuation is not None:
                self._on_continuation(frame_type, flags, stream_id, payload)
            elif frame_type == frames.DATA:
                self._on_data(flags, stream_id, payload)
            elif frame_type == frames.HEADERS:
                self._on_headers(flags, stream_id, payload)
            else:
                self._on_control(frame_type, flags, stream_id, payload)
            if self._closed or self._closing:
                return
        if pos < size:
            self._buffer = data[pos:]

    def _on_control(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        if frame_type == frames.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif frame_type == frames.SETTINGS:
            if stream_id:
                raise _ConnectionError(frames.PROTOCOL_ERROR, "SETTINGS on a stream")
            if flags & frames.ACK:
                if payload:
                    raise _ConnectionError(frames.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
                return
            if len(payload) % 6:
                raise _ConnectionError(frames.FRAME_SIZE_ERROR, "SETTINGS length")
            self._apply_settings(payload)
        elif frame_type == frames.PING:
            if len(payload) != 8:
                raise _ConnectionError(frames.FRAME_SIZE_ERROR, "PING length")
            if stream_id:
                raise _ConnectionError(frames.PROTOCOL_ERROR, "PING on a stream")
            if not flags & frames.ACK:
                self._out.append(frames.frame(frames.PING, frames.ACK, 0, payload))
        elif frame_type == frames.RST_STREAM:
            if len(payload) != 4:
                raise _ConnectionError(frames.FRAME_SIZE_ERROR, "RST_STREAM length")
            if stream_id == 0:
                raise _ConnectionError(frames.PROTOCOL_ERROR, "RST_STREAM on stream 0")
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._cancel_stream(stream)
                self._stream_done()
            elif stream_id > self._last_stream_id:
                raise _ConnectionError(frames.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        elif frame_type == frames.GOAWAY:
            self._peer_gone = True
            if not self._streams:
                self._close_soon()
        elif frame_type == frames.PUSH_PROMISE:
            raise _ConnectionError(frames.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        elif frame_type == frames.CONTINUATION:
            raise _ConnectionError(frames.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        # PRIORITY and unknown frame types are ignored.

    def _apply_settings(self, payload: bytes) -> None:
        grown = False
        for key, value in frames.parse_settings(payload):
            if key == frames.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise _ConnectionError(frames.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > frames.MAX_WINDOW:
                        raise _ConnectionError(
                            frames.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE overflows a window"
                        )
                grown = grown or delta > 0
            elif key == frames.SETTINGS_HEADER_TABLE_SIZE and value < 4096:
                # We never index response headers, but HPACK still requires us to acknowledge a smaller
                # table with a size update at the start of our next header block (nghttp2 enforces it).
                self._table_size_update = True
            elif key == frames.SETTINGS_MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= frames.MAX_FRAME_LIMIT:
                    raise _ConnectionError(frames.PROTOCOL_ERROR, "invalid MAX_FRAME_SIZE")
                self._max_frame = value
            elif key == frames.SETTINGS_ENABLE_PUSH and value > 1:
                raise _ConnectionError(frames.PROTOCOL_ERROR, "invalid ENABLE_PUSH")
        # The ACK goes before any DATA that uses the new window: grpc applies its own (receive-side)
        # settings only once we acknowledge them.
        self._out.append(frames.SETTINGS_ACK)
        if grown:
            for stream in list(self._streams.values()):
                if stream.outq or stream.trailers is not None:
                    self._flush_stream(stream)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(frames.FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(frames.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > frames.MAX_WINDOW:
                raise _ConnectionError(frames.FLOW_CONTROL_ERROR, "connection window overflow")
            if self._blocked:
                blocked, self._blocked = self._blocked, {}
                for waiting in blocked.values():
                    if not waiting.closed:
                        self._flush_stream(waiting)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise _ConnectionError(frames.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a stream we already answered or reset
        if increment == 0:
            self._reset_stream(stream, frames.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > frames.MAX_WINDOW:
            self._reset_stream(stream, frames.FLOW_CONTROL_ERROR)
            return
        if stream.outq or stream.trailers is not None:
            self._flush_stream(stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or not stream_id & 1:
            raise _ConnectionError(frames.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        if flags & frames.PADDED:
            payload = _unpad(payload)
        if flags & frames.PRIORITY_FLAG:
            payload = payload[5:]
        if not flags & frames.END_HEADERS:
            self._continuation = _HeaderBlock(stream_id, flags, payload)
            return
        self._headers_complete(flags, stream_id, payload)

    def _on_continuation(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._continuation
        assert block is not None
        if frame_type != frames.CONTINUATION or stream_id != block.stream_id:
            raise _ConnectionError(frames.PROTOCOL_ERROR, "expected CONTINUATION")
        block.fragments.append(payload)
        block.size += len(payload)
        if block.size > MAX_HEADER_LIST * 2:
            raise _ConnectionError(frames.PROTOCOL_ERROR, "header block too large")
        if len(block.fragments) > _MAX_CONTINUATIONS:
            raise _ConnectionError(frames.ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        if flags & frames.END_HEADERS:
            self._continuation = None
            self._headers_complete(block.flags, stream_id, b"".join(block.fragments))

    def _decode(self, block: bytes) -> _RequestHead:
        """The request head of a header block, from the cache when the same bytes came before.

        A cached block is replayed only while the HPACK dynamic table is what it was when the block was
        decoded: any decode that changes the table (an entry added or evicted, a size update) empties the
        cache, and only blocks that changed nothing are cached. Clients repeat the same block for the
        same call (all fields indexed, or literals without indexing such as h2load's content-length).
        """
        head = self._head_cache.get(block)
        if head is not None:
            return head
        table = self._decoder.header_table
        before = _table_state(table)
        try:
            headers = self._decoder.decode(block, raw=True)
        except Exception as exc:
            raise _ConnectionError(frames.COMPRESSION_ERROR, f"header block: {exc}") from None
        head = _RequestHead(headers)
        if _table_state(table) != before:
            self._head_cache.clear()  # the table changed: cached blocks may now decode differently
        else:
            if len(self._head_cache) >= _HEADER_CACHE_SIZE:
                self._head_cache.clear()  # one-off blocks (e.g. per-call grpc-timeout) must not crowd it
            self._head_cache[block] = head
        return head

    def _headers_complete(self, flags: int, stream_id: int, block: bytes) -> None:
        head = self._decode(block)  # always, to keep the HPACK dynamic table in step with the client
        end_stream = bool(flags & frames.END_STREAM)
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client end the request
            if stream.remote_closed:
                self._reset_stream(stream, frames.STREAM_CLOSED)
            elif not end_stream:
                raise _ConnectionError(frames.PROTOCOL_ERROR, "trailers without END_STREAM")
            else:
                self._end_of_request(stream)
            return
        if stream_id <= self._last_stream_id:
            raise _ConnectionError(frames.PROTOCOL_ERROR, f"stream id {stream_id} is not increasing")
        self._last_stream_id = stream_id
        if (
            len(self._streams) >= self._max_streams
            or self._backlog > _BACKLOG_LIMIT
            or (self._going_away and stream_id > self._goaway_last)
        ):
            self._out.append(frames.rst_stream(stream_id, frames.REFUSED_STREAM))
            return
        self._start_call(stream_id, head, end_stream)

    def _start_call(self, stream_id: int, head: _RequestHead, end_stream: bool) -> None:
        if head.method != b"POST":
            self._refuse(stream_id, end_stream, 405, UNIMPLEMENTED, "gRPC requires POST")
            return
        if not head.content_type.startswith(b"application/grpc"):
            details = "Content-Type must start with application/grpc"
            self._refuse(stream_id, end_stream, 415, INTERNAL, details)
            return
        handler = self._route(head.path)
        if handler is None:
            self._refuse(stream_id, end_stream, 200, UNIMPLEMENTED, "Method not found!")
            return
        encoding = head.encoding
        if encoding is not None and encoding not in wire.SUPPORTED_ENCODINGS:
            name = encoding.decode("ascii", "replace")
            self._refuse(stream_id, end_stream, 200, UNIMPLEMENTED, f"Unsupported grpc-encoding {name!r}")
            return
        stream = Stream(stream_id, self._peer_initial_window, head.headers, handler)
        stream.encoding = encoding
        if head.timeout is not None:
            seconds = wire.parse_timeout(head.timeout)
            if seconds is not None:
                stream.deadline = self.loop.time() + seconds
                self._unarmed.append(stream)  # a call answered within this read never needs its timer
        self._streams[stream_id] = stream
        if handler.request_streaming:
            calls.start_streaming_request(self, stream)
        if end_stream:
            self._end_of_request(stream)

    def _refuse(self, stream_id: int, end_stream: bool, http_status: int, code: int, details: str) -> None:
        block = (
            wire.RESPONSE_HEADERS if http_status == 200 else wire.http_status(http_status)
        ) + wire.status_block(code, details)
        self._out += self._header_frames(stream_id, block, True)
        if not end_stream:
            self._out.append(frames.rst_stream(stream_id, frames.NO_ERROR))

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ConnectionError(frames.PROTOCOL_ERROR, "DATA on stream 0")
        flow_size = len(payload)
        if flags & frames.PADDED:
            payload = _unpad(payload)
        self._recv_credit += flow_size
        if self._recv_credit >= CONNECTION_WINDOW // 2:
            self._out.append(frames.window_update(0, self._recv_credit))
            self._recv_credit = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise _ConnectionError(frames.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream we already answered or reset
        if stream.remote_closed:
            self._reset_stream(stream, frames.STREAM_CLOSED)
            return
        if payload:
            try:
                stream.feed(payload, self.max_receive)
            except StreamError as exc:
                self.finish_with_status(stream, exc.code, exc.details)
                self._cancel_task(stream)
                return
        end_stream = flags & frames.END_STREAM
        if not end_stream:
            stream.recv_credit += flow_size
            self._grant_stream_credit(stream)
        if stream.reader is not None and stream.messages:
            _wake(stream.reader)
            stream.reader = None
        if end_stream:
            self._end_of_request(stream)

    def _grant_stream_credit(self, stream: Stream) -> None:
        """Return received DATA's credit unless much of it waits unread (a partial message counts,
        but never holds back the message a handler is waiting for)."""
        if stream.recv_credit < STREAM_WINDOW // 2:
            return
        unread = stream.queued_bytes + (len(stream.inbuf) if stream.inbuf is not None else 0)
        if unread < _UNREAD_LIMIT or not stream.messages:
            self._out.append(frames.window_update(stream.id, stream.recv_credit))
            stream.recv_credit = 0
            self.flush_soon()

    def _end_of_request(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.handler.request_streaming:
            if stream.inbuf is not None:
                self.finish_with_status(stream, INTERNAL, "Incomplete message at end of stream")
                self._cancel_task(stream)
            elif stream.reader is not None:
                _wake(stream.reader)
                stream.reader = None
            return
        messages = stream.messages
        if len(messages) != 1 or stream.inbuf is not None:
            if stream.inbuf is not None:
                self.finish_with_status(stream, INTERNAL, "Incomplete message at end of stream")
            elif not messages:
                self.finish_with_status(stream, UNIMPLEMENTED, "Request ended before a message arrived")
            else:
                self.finish_with_status(stream, INTERNAL, "More than one request message for a unary call")
            return
        calls.run_unary_request(self, stream, messages.popleft())

    def consumed(self, stream: Stream, size: int) -> None:
        """A streaming handler read a message of ``size`` bytes: the client may send more."""
        stream.queued_bytes -= size
        if stream.recv_credit and not stream.remote_closed:
            self._grant_stream_credit(stream)

    # -- sending ---------------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Write what is queued when this pass of the event loop ends (after data_received, if inside it)."""
        if not self._receiving and not self._flush_scheduled:
            self._flush_scheduled = True
            if self.server.outbox.coalescing:
                self.server.outbox.hold(self)
            else:  # still one write per loop iteration for what tasks produce
                self.loop.call_soon(self._flush)

    def write_held(self) -> None:
        """The ``Outbox`` writes what this connection queued."""
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        transport = self._transport
        if out:
            try:
                if transport is not None and not self._closed:
                    transport.write(out[0] if len(out) == 1 else b"".join(out))
            finally:
                out.clear()
        if self._closing and transport is not None and not self._closed:
            transport.close()

    def send_headers(self, stream: Stream, metadata: wire.Metadata = ()) -> None:
        """The response headers (and initial metadata), once per stream."""
        stream.headers_sent = True
        block = wire.RESPONSE_HEADERS + wire.metadata_block(metadata) if metadata else wire.RESPONSE_HEADERS
        self._out += self._header_frames(stream.id, block, False)
        self.flush_soon()

    def _header_frames(self, stream_id: int, block: bytes, end_stream: bool) -> list[bytes]:
        """A header block's frames, led by the HPACK table size update the peer's SETTINGS asked for."""
        if self._table_size_update:
            self._table_size_update = False
            block = b"\x20" + block  # dynamic table size update to 0 (RFC 7541 §6.3)
        return frames.header_frames(stream_id, block, end_stream, self._max_frame)

    def send_reply(self, stream: Stream, data: bytes) -> None:
        """A unary response and OK status; one set of frames when it fits the windows."""
        size = len(data) + 5
        if (
            not stream.headers_sent
            and size <= stream.send_window
            and size <= self._send_window
            and size <= self._max_frame
            and not self._table_size_update
        ):
            stream.headers_sent = True
            stream_id = stream.id
            stream.send_window -= size
            self._send_window -= size
            header = frames.frame_header
            self._out += (
                header(len(wire.RESPONSE_HEADERS), frames.HEADERS, frames.END_HEADERS, stream_id),
                wire.RESPONSE_HEADERS,
                header(size, frames.DATA, 0, stream_id),
                _prefix(len(data)) + data,
                header(len(wire.OK_TRAILERS), frames.HEADERS, _END_HEADERS_AND_STREAM, stream_id),
                wire.OK_TRAILERS,
            )
            self._close_stream(stream)
            return
        self.queue_message(stream, data)
        self.queue_trailers(stream, wire.OK_TRAILERS)

    def queue_message(self, stream: Stream, data: bytes) -> None:
        """One response message onto the stream's flow-controlled output."""
        if not stream.headers_sent:
            self.send_headers(stream)
        queue = stream.outq
        if queue is None:
            queue = stream.outq = deque()
        if len(data) < 65536:
            queue.append(_prefix(len(data)) + data)
        else:
            queue.append(_prefix(len(data)))
            queue.append(memoryview(data))
        stream.out_bytes += len(data) + 5
        self._backlog += len(data) + 5
        if self._backlog > _BACKLOG_LIMIT:
            self._backlogged = True
        self._flush_stream(stream)

    def queue_trailers(self, stream: Stream, block: bytes) -> None:
        """The status trailers, sent after the queued messages."""
        stream.trailers = block
        self._flush_stream(stream)

    def finish_with_status(
        self, stream: Stream, code: int, details: str | None, trailing: wire.Metadata = ()
    ) -> None:
        """End the call with a status: trailers-only before any message, trailers after the messages."""
        if stream.closed or stream.trailers is not None:
            return
        block = wire.status_block(code, details, trailing)
        if stream.headers_sent:
            self.queue_trailers(stream, block)
            return
        stream.headers_sent = True
        self._out += self._header_frames(stream.id, wire.RESPONSE_HEADERS + block, True)
        self._close_stream(stream)

    def _flush_stream(self, stream: Stream) -> None:
        queue = stream.outq
        out = self._out
        stream_id = stream.id
        sent = 0
        while queue:
            window = min(stream.send_window, self._send_window, self._max_frame)
            if window <= 0:
                if self._send_window <= 0:
                    self._blocked[stream_id] = stream
                break
            chunk = queue[0]
            size = len(chunk)
            if size > window:
                view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                queue[0] = view[window:]
                chunk = view[:window]
                size = window
            else:
                queue.popleft()
            out.append(frames.frame_header(size, frames.DATA, 0, stream_id))
            out.append(chunk)
            stream.send_window -= size
            self._send_window -= size
            stream.out_bytes -= size
            sent += size
        if sent:
            self._drained(sent)
        self.flush_soon()
        if not queue and stream.trailers is not None and not stream.closed:
            out += self._header_frames(stream_id, stream.trailers, True)
            self._close_stream(stream)
        elif stream.drain_waiter is not None and not self._own_output_blocks(stream):
            _wake(stream.drain_waiter)
            stream.drain_waiter = None

    def _drained(self, size: int) -> None:
        """``size`` queued bytes left (or were dropped): below half the limit, accept streams again."""
        self._backlog -= size
        if self._backlogged and self._backlog < _BACKLOG_LIMIT // 2:
            self._backlogged = False
            self._wake_writers()

    async def wait_writable(self, stream: Stream) -> None:
        """Wait while the stream's unsent output is large or the transport or connection is backed up."""
        while not stream.closed and self.must_wait(stream):
            waiter = self.loop.create_future()
            if self._own_output_blocks(stream):  # woken when this stream's own output drains
                stream.drain_waiter = waiter
            else:
                self._writable = waiter if self._writable is None else self._writable
                waiter = self._writable
            await waiter

    def _wake_writers(self) -> None:
        if self._writable is not None:
            _wake(self._writable)
            self._writable = None

    # -- stream lifecycle ------------------------------------------------------------------------

    def _close_stream(self, stream: Stream) -> None:
        """The call ended normally (trailers queued): forget the stream, run its done callbacks."""
        stream.closed = True
        self._streams.pop(stream.id, None)
        if not stream.remote_closed:
            self._out.append(frames.rst_stream(stream.id, frames.NO_ERROR))
        self._release(stream)
        self.flush_soon()
        self._stream_done()

    def _cancel_stream(self, stream: Stream) -> None:
        """The client reset the stream, or the connection is gone: drop its output, cancel the handler."""
        stream.cancelled = True
        stream.closed = True
        self._streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if stream.outq:
            stream.outq = None
            self._drained(stream.out_bytes)
            stream.out_bytes = 0
        self._cancel_task(stream)
        self._release(stream)

    def _reset_stream(self, stream: Stream, error_code: int) -> None:
        """A stream error (RFC 9113 §5.4.2): RST_STREAM, cancel the call; the connection goes on."""
        self._out.append(frames.rst_stream(stream.id, error_code))
        self._cancel_stream(stream)
        self._stream_done()

    def _cancel_task(self, stream: Stream) -> None:
        """Cancel the call's task (every cancellation goes through here).

        A task whose coroutine has not started yet is cancelled after its first step: cancelling it now
        would throw CancelledError into a coroutine that never ran, so none of the handler's try/finally
        blocks would run, and model handles and in-flight gauges the handler took before returning the
        coroutine would leak. If the call completes in that step, ``finish_unary`` drops the reply.
        """
        task = stream.task
        if task is None or task.done():
            return
        coroutine = cast("Coroutine[Any, Any, Any] | None", task.get_coro())
        if coroutine is not None and inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
            self.loop.call_soon(task.cancel)
        else:
            task.cancel()

    def _release(self, stream: Stream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        for waiter in (stream.reader, stream.drain_waiter):
            if waiter is not None:
                _wake(waiter)
        stream.reader = stream.drain_waiter = None
        if stream.context is not None:
            stream.context.run_done_callbacks()

    def _stream_done(self) -> None:
        if not self._streams and (self._going_away or self._peer_gone):
            self._close_soon()

    def _close_soon(self) -> None:
        self._closing = True
        self.flush_soon()

    def _reject_preface(self) -> None:
        if self._transport is not None:
            self._transport.write(_BAD_REQUEST)
            self._transport.close()
        self._closed = True

    def _handshake_expired(self) -> None:
        """No HTTP/2 preface within the handshake timeout: not a client worth a socket."""
        self._handshake_timer = None
        if not self._preface_seen and self._transport is not None and not self._closed:
            self._transport.close()
            self._closed = True

    def _fail_connection(self, code: int, message: str) -> None:
        log.info("closing HTTP/2 connection from %s: %s", self.peer(), message)
        self._out.append(frames.goaway(self._last_stream_id, code, message.encode()[:200]))
        for stream in list(self._streams.values()):
            self._cancel_stream(stream)
        self._closing = True

    # -- shutdown --------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """GOAWAY(NO_ERROR): no new streams; close once the calls in flight end."""
        if self._going_away or self._closed:
            return
        self._going_away = True
        self._goaway_last = self._last_stream_id
        if not self._preface_seen:
            self._close_soon()  # not an HTTP/2 client yet: nothing to say goodbye to
            return
        self._out.append(frames.goaway(self._last_stream_id, frames.NO_ERROR))
        self.flush_soon()
        self._stream_done()

    def cancel_calls(self, code: int, details: str) -> None:
        """Shutdown grace is over: end what is left with ``code`` and close."""
        status = _STATUS_BY_NUMBER.get(code)
        for stream in list(self._streams.values()):
            context = stream.context
            if context is not None and status is not None:  # what the servicer's metrics record
                context.set_code(status)
                context.set_details(details)
            self.finish_with_status(stream, code, details)
            self._cancel_stream(stream)
        self._close_soon()

    def abort(self) -> None:
        """Drop the connection without waiting for queued output."""
        if self._transport is not None:
            self._transport.abort()

    # -- helpers for the calls -------------------------------------------------------------------

    def peer(self) -> str:
        """grpc's peer string for this connection."""
        if self._peer is None:
            self._peer = _peer_name(self._transport)
        return self._peer

    def new_context(self, stream: Stream) -> ServicerContext:
        context = ServicerContext(self, stream)
        stream.context = context
        return context

    def _arm_deadlines(self) -> None:
        """After a read: a timer for each call with a deadline that is still open (receiving its request,
        or running as a task), so a call that ends within the read never creates one."""
        for stream in self._unarmed:
            if not stream.closed and stream.timer is None:
                assert stream.deadline is not None
                stream.timer = self.loop.call_at(stream.deadline, self._deadline_passed, stream)
        self._unarmed.clear()

    def _deadline_passed(self, stream: Stream) -> None:
        """Answer DEADLINE_EXCEEDED and cancel the call's task."""
        stream.timer = None
        if stream.closed:
            return
        stream.cancelled = True
        context = stream.context
        if context is not None:  # what the servicer's metrics record as the call's status
            context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
            context.set_details("Deadline Exceeded")
        self.finish_with_status(stream, DEADLINE_EXCEEDED, "Deadline Exceeded")
        self._cancel_task(stream)

    def send_initial_metadata(self, stream: Stream, metadata: wire.Metadata) -> None:
        """``context.send_initial_metadata``: the response headers, now."""
        if stream.headers_sent:
            raise RuntimeError("initial metadata was already sent")
        if not stream.closed:
            self.send_headers(stream, metadata)

    def must_wait(self, stream: Stream) -> bool:
        """Whether a writer should wait before queueing more on this stream."""
        return self._own_output_blocks(stream) or self._write_paused

    def _own_output_blocks(self, stream: Stream) -> bool:
        """The stream's own unsent output is large, or any is left while the connection is backlogged: a
        writer whose stream drained never stalls behind other streams whose clients do not read."""
        return stream.out_bytes >= _HIGH_WATER or (self._backlogged and stream.out_bytes > 0)

    async def read_message(self, stream: Stream) -> Any:
        """``context.read()``."""
        return await calls.read_message(self, stream)

    async def write_message(self, stream: Stream, message: Any) -> None:
        """``context.write()``."""
        await calls.write_message(self, stream, message)


def _prefix(length: int) -> bytes:
    return b"\x00" + length.to_bytes(4, "big")


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise _ConnectionError(frames.PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise _ConnectionError(frames.PROTOCOL_ERROR, "padding exceeds the frame")
    return payload[1 : len(payload) - pad]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _peer_name(transport: asyncio.Transport | None) -> str:
    if transport is None:
        return "unknown"
    address = transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    sockname = transport.get_extra_info("sockname")
    return f"unix:{address or sockname or ''}"
