"""Runs ``GrpcHttp2Server`` on its own event-loop thread for the transport tests; real grpcio clients call it.

Handlers use bytes in and out (no serializers) unless a test registers a real servicer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]

from modelserve.frontends.grpc.transport import GrpcHttp2Server

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


@contextlib.contextmanager
def serve(
    *handlers: Any,
    options: list[tuple[str, Any]] | None = None,
    address: str = "127.0.0.1:0",
    setup: Callable[[GrpcHttp2Server], None] | None = None,
) -> Iterator[Served]:
    """A started server with ``handlers``; stopped (grace 0) and its loop closed afterwards."""
    loop = asyncio.new_event_loop()
    server = GrpcHttp2Server(options=options or [])
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


def raw_connection(port: int, timeout: float = 5.0) -> socket.socket:
    """A plain TCP socket to the server, for protocol-level tests."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_frames(
    sock: socket.socket, until: Callable[[list[tuple[int, int, int, bytes]]], bool]
) -> list[tuple[int, int, int, bytes]]:
    """Read (type, flags, stream id, payload) frames until ``until(frames)`` or the connection closes."""
    frames: list[tuple[int, int, int, bytes]] = []
    buffer = b""
    while not until(frames):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            frames.append(
                (
                    buffer[3],
                    buffer[4],
                    int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF,
                    buffer[9 : 9 + length],
                )
            )
            buffer = buffer[9 + length :]
    return frames
