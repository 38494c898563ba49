"""GrpcHttp2Server against bad clients, raw HTTP/2 frames, shutdown, and other listening addresses."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import hpack
import pytest
from grpc_transport_support import (  # type: ignore[import-not-found]
    Hang,
    handler,
    has,
    message,
    raw_connection,
    read_frames,
    request_headers,
    serve,
)

from modelserve.frontends.grpc.transport import GrpcHttp2Server, frames


def _echo(request: bytes, context: object) -> bytes:
    return b"echo:" + request


ECHO = handler(Echo=grpc.unary_unary_rpc_method_handler(_echo))
PREFACE_AND_SETTINGS = frames.PREFACE + frames.settings({})


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x01garbage that is not HTTP/2 at all" * 10,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        frames.PREFACE[:10],
        frames.PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x00",  # a frame over the maximum size
        frames.PREFACE + frames.frame(frames.DATA, 0, 0, b"x"),  # DATA on stream 0
    ],
)
def test_bad_bytes_do_not_hurt_the_server(junk: bytes) -> None:
    with serve(ECHO) as served:
        with raw_connection(served.port) as sock:
            sock.sendall(junk)
            if junk.startswith(b"GET"):
                assert sock.recv(100).startswith(b"HTTP/1.1 400")
        assert served.unary("Echo", b"after", timeout=10) == b"echo:after"


def test_http1_request_gets_a_400_and_the_connection_closes() -> None:
    with serve(ECHO) as served, raw_connection(served.port) as sock:
        sock.sendall(b"POST /test.Svc/Echo HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_raw_http2_ping_settings_padding_continuation_and_errors() -> None:
    with serve(ECHO) as served, raw_connection(served.port) as sock:
        encoder = hpack.Encoder()
        decoder = hpack.Decoder()
        sock.sendall(PREFACE_AND_SETTINGS + frames.frame(frames.PING, 0, 0, b"12345678"))
        received = read_frames(sock, has(frames.PING, 0, frames.ACK))
        assert any(t == frames.SETTINGS and not f & frames.ACK for t, f, _, _ in received)  # ours, first
        assert (frames.PING, frames.ACK, 0, b"12345678") in received
        # HEADERS split over CONTINUATION, padded DATA with END_STREAM, a PRIORITY and an unknown frame.
        block = request_headers(encoder)
        padded = bytes([3]) + message(b"padded") + b"\x00\x00\x00"
        sock.sendall(
            frames.frame(frames.HEADERS, 0, 1, block[:5])
            + frames.frame(frames.CONTINUATION, frames.END_HEADERS, 1, block[5:])
            + frames.frame(frames.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10")
            + frames.frame(0xFA, 0, 0, b"unknown frame type")
            + frames.frame(frames.DATA, frames.PADDED | frames.END_STREAM, 1, padded)
        )
        received = read_frames(sock, has(frames.HEADERS, 1, frames.END_STREAM))
        data = b"".join(p for t, _, s, p in received if t == frames.DATA and s == 1)
        assert data == message(b"echo:padded")
        headers = [list(decoder.decode(p)) for t, _, s, p in received if t == frames.HEADERS and s == 1]
        assert (":status", "200") in headers[0]
        assert ("grpc-status", "0") in headers[-1]
        # Wrong content type: HTTP 415, trailers-only.
        sock.sendall(frames.frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, 3,
                                  request_headers(encoder, content_type="text/plain")))  # fmt: skip
        received = read_frames(sock, has(frames.HEADERS, 3, frames.END_STREAM))
        [reply] = [list(decoder.decode(p)) for t, _, s, p in received if t == frames.HEADERS and s == 3]
        assert (":status", "415") in reply
        # A stream id that does not increase is a connection error.
        sock.sendall(frames.frame(frames.HEADERS, frames.END_HEADERS, 1, request_headers(encoder)))
        received = read_frames(sock, has(frames.GOAWAY))
        [goaway] = [p for t, _, _, p in received if t == frames.GOAWAY]
        assert int.from_bytes(goaway[4:8], "big") == frames.PROTOCOL_ERROR
        assert sock.recv(100) == b""  # closed


def test_small_peer_window_and_frame_size_are_respected() -> None:
    """The reply waits for WINDOW_UPDATE and is split into frames no larger than the window allows."""
    payload = b"y" * 40_000
    with serve(ECHO) as served, raw_connection(served.port) as sock:
        encoder = hpack.Encoder()
        sock.sendall(frames.PREFACE + frames.settings({frames.SETTINGS_INITIAL_WINDOW_SIZE: 1000}))
        sock.sendall(frames.frame(frames.HEADERS, frames.END_HEADERS, 1, request_headers(encoder)))
        body = message(payload)
        for offset in range(0, len(body), frames.DEFAULT_MAX_FRAME):
            last = offset + frames.DEFAULT_MAX_FRAME >= len(body)
            piece = body[offset : offset + frames.DEFAULT_MAX_FRAME]
            sock.sendall(frames.frame(frames.DATA, frames.END_STREAM if last else 0, 1, piece))
        received = read_frames(
            sock, lambda got: sum(len(p) for t, _, s, p in got if t == frames.DATA) >= 1000
        )
        time.sleep(0.2)  # nothing more may come until the window grows; give it a chance to misbehave
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            received += read_frames(sock, lambda got: False)
        assert sum(len(p) for t, _, s, p in received if t == frames.DATA) == 1000
        sock.settimeout(5)
        sock.sendall(frames.window_update(1, 100_000))
        received += read_frames(sock, has(frames.HEADERS, 1, frames.END_STREAM))
        data = [p for t, _, s, p in received if t == frames.DATA]
        assert max(map(len, data)) <= frames.DEFAULT_MAX_FRAME
        assert b"".join(data) == message(b"echo:" + payload)


def test_stop_lets_an_in_flight_call_finish_and_refuses_new_ones() -> None:
    started = threading.Event()
    release = asyncio.Event()

    async def slow(request: bytes, context: object) -> bytes:
        started.set()
        await release.wait()
        return b"finished"

    methods = handler(
        Slow=grpc.unary_unary_rpc_method_handler(slow), Echo=grpc.unary_unary_rpc_method_handler(_echo)
    )
    with serve(methods) as served:
        future = served.channel.unary_unary("/test.Svc/Slow").future(b"", timeout=20)
        assert started.wait(10)
        stopping = asyncio.run_coroutine_threadsafe(served.server.stop(10), served.loop)
        deadline = time.monotonic() + 10
        while not served.server.shutting_down and time.monotonic() < deadline:
            time.sleep(0.01)
        # A new connection is refused while the old call drains.
        fresh = grpc.insecure_channel(served.target)
        with pytest.raises(grpc.RpcError) as raised:
            fresh.unary_unary("/test.Svc/Echo")(b"", timeout=2)
        assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        fresh.close()
        assert not stopping.done()
        served.loop.call_soon_threadsafe(release.set)
        assert future.result(timeout=10) == b"finished"
        stopping.result(timeout=10)
        assert not served.server.connections


def test_stop_cancels_calls_still_running_after_the_grace_period() -> None:
    hang = Hang()
    with serve(handler(Hang=grpc.unary_unary_rpc_method_handler(hang))) as served:
        future = served.channel.unary_unary("/test.Svc/Hang").future(b"", timeout=30)
        assert hang.started.wait(10)
        begin = time.monotonic()
        served.run(served.server.stop(0.2))
        served.run(served.server.stop(0.2))  # a second stop is harmless
        assert time.monotonic() - begin < 5
        assert hang.cancelled.wait(5)
        with pytest.raises(grpc.RpcError) as raised:
            future.result(timeout=10)
        assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_unix_socket_address_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "grpc.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with serve(ECHO, address=f"unix:{path}") as served:
        assert served.port == 0
        assert served.unary("Echo", b"unix", timeout=10) == b"echo:unix"

        def peer(request: bytes, context: grpc.ServicerContext) -> bytes:
            return context.peer().encode()

    with serve(handler(Peer=grpc.unary_unary_rpc_method_handler(peer))) as served:
        assert served.unary("Peer", timeout=10).startswith(b"ipv4:127.0.0.1:")


def test_ipv6_wildcard_and_busy_port() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = GrpcHttp2Server()
    try:
        port = server.add_insecure_port("[::]:0")
    except RuntimeError:
        pytest.skip("cannot bind [::]")
    assert port > 0
    other = GrpcHttp2Server()
    with pytest.raises(RuntimeError):
        other.add_insecure_port(f"[::]:{port}")
    asyncio.run(server.stop(0))
