"""Runs ``GrpcHttp2Server`` on its own event-loop thread for the transport tests; real grpcio clients call it.

Handlers use bytes in and out (no serializers) unless a test registers a real servicer. ``RawClient`` speaks
HTTP/2 frame by frame, for what a well-behaved client never sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]
import hpack

from modelserve.frontends.grpc.transport import GrpcHttp2Server, frames

BIG = 64 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]


@dataclass
class Served:
    """A running server: its loop, port and a sync channel to it."""

    server: GrpcHttp2Server
    loop: asyncio.AbstractEventLoop
    port: int
    channel: grpc.Channel

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def unary(self, method: str, request: bytes = b"", **kwargs: Any) -> Any:
        return self.channel.unary_unary(f"/test.Svc/{method}")(request, **kwargs)

    def expect_status(
        self, method: str, code: grpc.StatusCode, timeout: float = 10.0, within: float = 5.0
    ) -> Any:
        """Call ``method`` and check that it fails with ``code``, sooner than ``within`` seconds."""
        begin = time.monotonic()
        try:
            self.unary(method, timeout=timeout)
        except grpc.RpcError as error:
            assert error.code() == code, error
            assert time.monotonic() - begin < within
            return error
        raise AssertionError(f"{method} succeeded; expected {code}")


@contextlib.contextmanager
def serve(
    *handlers: Any,
    options: list[tuple[str, Any]] | None = None,
    address: str = "127.0.0.1:0",
    setup: Callable[[GrpcHttp2Server], None] | None = None,
    reply_coalescing_seconds: float = 0.001,
) -> Iterator[Served]:
    """A started server with ``handlers``; stopped (grace 0) and its loop closed afterwards."""
    loop = asyncio.new_event_loop()
    server = GrpcHttp2Server(options=options or [], reply_coalescing_seconds=reply_coalescing_seconds)
    server.add_generic_rpc_handlers(handlers)
    if setup is not None:
        setup(server)
    port = server.add_insecure_port(address)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    target = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    try:
        yield Served(server, loop, port, channel)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def handler(service: str = "test.Svc", **methods: Any) -> grpc.GenericRpcHandler:
    """A generic handler of bytes methods: ``name=grpc.unary_unary_rpc_method_handler(fn)`` etc."""
    return grpc.method_handlers_generic_handler(service, methods)


class Hang:
    """An async handler that waits until it is cancelled, recording its context and the cancellation."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.contexts: list[Any] = []

    async def __call__(self, request: bytes, context: Any) -> bytes:
        self.contexts.append(context)
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"too late"


def raw_connection(port: int, timeout: float = 5.0) -> socket.socket:
    """A plain TCP socket to the server, for protocol-level tests."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def read_frames(sock: socket.socket, until: Callable[[list[Frame]], bool]) -> list[Frame]:
    """Read (type, flags, stream id, payload) frames until ``until(frames)`` or the connection closes."""
    received: list[Frame] = []
    buffer = b""
    while not until(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer = split_frames(buffer + chunk, received)
    return received


def split_frames(buffer: bytes, into: list[Frame]) -> bytes:
    """Append the complete frames at the start of ``buffer`` to ``into``; returns the rest."""
    pos = 0
    while len(buffer) - pos >= 9:
        end = pos + 9 + int.from_bytes(buffer[pos : pos + 3], "big")
        if len(buffer) < end:
            break
        stream_id = int.from_bytes(buffer[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        into.append((buffer[pos + 3], buffer[pos + 4], stream_id, buffer[pos + 9 : end]))
        pos = end
    return buffer[pos:]


def request_headers(
    encoder: hpack.Encoder,
    path: str = "/test.Svc/Echo",
    content_type: str = "application/grpc",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """An HPACK block of a gRPC request's headers."""
    return encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
         ("content-type", content_type), ("te", "trailers"), *extra]
    )  # fmt: skip


def message(payload: bytes) -> bytes:
    """A gRPC length-prefixed, uncompressed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def has(frame_type: int, stream_id: int | None = None, flags: int = 0) -> Callable[[list[Frame]], bool]:
    """A ``read_frames`` condition: a frame of this type (on this stream, with these flags) arrived."""

    def check(received: list[Frame]) -> bool:
        return any(
            t == frame_type and (stream_id is None or s == stream_id) and f & flags == flags
            for t, f, s, _ in received
        )

    return check


class RawClient:
    """An HTTP/2 client that sends exactly the frames a test gives it and keeps everything it reads."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = raw_connection(port)
        self.encoder = hpack.Encoder()
        self.received: list[Frame] = []
        self._buffer = b""
        self.sock.sendall(frames.PREFACE + frames.settings(settings or {}))

    def close(self) -> None:
        self.sock.close()

    def headers(
        self, stream_id: int, path: str = "/test.Svc/Echo", end_stream: bool = False, **headers: str
    ) -> bytes:
        """A HEADERS frame opening a call (``grpc_timeout="100m"`` adds ``grpc-timeout: 100m``)."""
        extra = tuple((name.replace("_", "-"), value) for name, value in headers.items())
        flags = frames.END_HEADERS | (frames.END_STREAM if end_stream else 0)
        return frames.frame(
            frames.HEADERS, flags, stream_id, request_headers(self.encoder, path, extra=extra)
        )

    def request(self, stream_id: int, payload: bytes = b"", path: str = "/test.Svc/Echo") -> bytes:
        """HEADERS and one message with END_STREAM: a whole unary request."""
        return self.headers(stream_id, path) + frames.frame(
            frames.DATA, frames.END_STREAM, stream_id, message(payload)
        )

    def send(self, *chunks: bytes) -> None:
        """Everything in one ``sendall``: the server reads it in one segment."""
        self.sock.sendall(b"".join(chunks))

    def read_until(self, until: Callable[[list[Frame]], bool], timeout: float = 10.0) -> list[Frame]:
        """Read until ``until(all frames so far)``; raises TimeoutError, or AssertionError on EOF."""
        self.sock.settimeout(timeout)
        while not until(self.received):
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            self._buffer = split_frames(self._buffer + chunk, self.received)
        return self.received

    def read_to_eof(self, timeout: float = 10.0) -> list[Frame]:
        """Read until the server closes the connection."""
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(1 << 20):
            self._buffer = split_frames(self._buffer + chunk, self.received)
        return self.received

    def goaway_code(self) -> int | None:
        """The error code of the GOAWAY received, if any."""
        codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in self.received if t == frames.GOAWAY]
        return codes[-1] if codes else None

    def reset_code(self, stream_id: int) -> int | None:
        """The error code of the RST_STREAM received on ``stream_id``, if any."""
        codes = [
            int.from_bytes(p, "big")
            for t, _, s, p in self.received
            if t == frames.RST_STREAM and s == stream_id
        ]
        return codes[-1] if codes else None
