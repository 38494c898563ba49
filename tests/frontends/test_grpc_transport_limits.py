"""What one client may make GrpcHttp2Server hold: streams, header blocks, unsent replies, idle sockets."""

from __future__ import annotations

import time

import grpc  # type: ignore[import-untyped]
from grpc_transport_support import (  # type: ignore[import-not-found]
    RawClient,
    handler,
    has,
    message,
    raw_connection,
    serve,
)

from modelserve.frontends.grpc.transport import GrpcHttp2Server, frames
from modelserve.frontends.grpc.transport.connection import _BACKLOG_LIMIT

MEBIBYTE = b"m" * (1 << 20)
BIG_REPLIES = handler(
    Echo=grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    Big=grpc.unary_unary_rpc_method_handler(lambda request, context: MEBIBYTE),
)


def _settings(client: RawClient) -> dict[int, int]:
    client.read_until(has(frames.SETTINGS))
    [payload] = [p for t, f, _, p in client.received if t == frames.SETTINGS and not f & frames.ACK]
    return dict(frames.parse_settings(payload))


def test_streams_per_connection_are_limited_by_default() -> None:
    with serve(BIG_REPLIES) as served:
        client = RawClient(served.port)
        assert _settings(client)[frames.SETTINGS_MAX_CONCURRENT_STREAMS] == 1000
        client.close()


def test_a_flood_of_empty_continuation_frames_closes_the_connection() -> None:
    with serve(BIG_REPLIES) as served:
        client = RawClient(served.port)
        block = client.headers(1)[9:]  # the header block of a HEADERS frame, sent without END_HEADERS
        flood = b"".join(frames.frame(frames.CONTINUATION, 0, 1) for _ in range(1000))
        client.send(frames.frame(frames.HEADERS, 0, 1, block), flood)
        client.read_until(has(frames.GOAWAY), timeout=5)
        assert client.goaway_code() == frames.ENHANCE_YOUR_CALM
        client.close()
        assert served.unary("Echo", b"still serving", timeout=10) == b"still serving"


def test_replies_a_client_never_reads_are_bounded_and_flow_again_once_it_does() -> None:
    """A client that grants no window: past the backlog limit new streams are refused (REFUSED_STREAM,
    which clients retry); WINDOW_UPDATEs are still read, drain the replies, and streams are accepted."""
    count = _BACKLOG_LIMIT // len(MEBIBYTE) + 8
    stream_ids = range(1, 2 * count, 2)
    with serve(BIG_REPLIES) as served:
        client = RawClient(served.port, {frames.SETTINGS_INITIAL_WINDOW_SIZE: 0})
        client.send(*(client.request(stream_id, path="/test.Svc/Big") for stream_id in stream_ids))
        last = stream_ids[-1]
        client.read_until(lambda got: client.reset_code(last) is not None, timeout=10)
        refused = [s for s in stream_ids if client.reset_code(s) == frames.REFUSED_STREAM]
        assert 0 < len(refused) <= 8, "every stream past the backlog limit is refused, no earlier one"
        # Open every window: the queued replies leave, and the connection takes new calls again.
        client.send(
            frames.settings({frames.SETTINGS_INITIAL_WINDOW_SIZE: frames.MAX_WINDOW}),
            frames.window_update(0, frames.MAX_WINDOW - frames.DEFAULT_WINDOW),
        )
        answered = [s for s in stream_ids if s not in refused]
        client.read_until(lambda got: all(has(frames.HEADERS, s, frames.END_STREAM)(got) for s in answered))
        for stream_id in answered[:3]:
            data = b"".join(p for t, _, s, p in client.received if t == frames.DATA and s == stream_id)
            assert data == message(MEBIBYTE)
        fresh = stream_ids[-1] + 2
        client.send(client.request(fresh, b"again"))
        client.read_until(has(frames.HEADERS, fresh, frames.END_STREAM))
        data = b"".join(p for t, _, s, p in client.received if t == frames.DATA and s == fresh)
        assert data == message(b"again")
        client.close()


def test_new_streams_are_accepted_again_as_soon_as_the_backlog_is_under_its_limit() -> None:
    """Refusal follows the backlog itself: with part of the replies drained (the backlog under the limit,
    still over half of it) and the rest held by streams the client does not read, a new call is taken."""
    count = _BACKLOG_LIMIT // len(MEBIBYTE) + 8
    stream_ids = range(1, 2 * count, 2)
    with serve(BIG_REPLIES) as served:
        client = RawClient(served.port, {frames.SETTINGS_INITIAL_WINDOW_SIZE: 0})
        client.send(*(client.request(stream_id, path="/test.Svc/Big") for stream_id in stream_ids))
        client.read_until(lambda got: client.reset_code(stream_ids[-1]) is not None, timeout=10)
        refused = {s for s in stream_ids if client.reset_code(s) == frames.REFUSED_STREAM}
        assert refused, "the backlog went over its limit"
        answered = [s for s in stream_ids if s not in refused]
        drained = answered[:12]  # 12 MiB leave: the backlog drops under the limit, stays over half of it
        window = len(message(MEBIBYTE)) + 1024
        client.send(
            frames.window_update(0, frames.MAX_WINDOW - frames.DEFAULT_WINDOW),
            *(frames.window_update(s, window) for s in drained),
        )
        client.read_until(lambda got: all(has(frames.HEADERS, s, frames.END_STREAM)(got) for s in drained))
        fresh = stream_ids[-1] + 2
        client.send(client.request(fresh, b"again"), frames.window_update(fresh, 1024))
        client.read_until(has(frames.HEADERS, fresh, frames.END_STREAM))
        assert client.reset_code(fresh) is None
        data = b"".join(p for t, _, s, p in client.received if t == frames.DATA and s == fresh)
        assert data == message(b"again")
        client.close()


def test_a_connection_that_never_sends_the_preface_is_closed() -> None:
    def quick_handshake(server: GrpcHttp2Server) -> None:
        server.handshake_timeout = 0.2

    with serve(BIG_REPLIES, setup=quick_handshake) as served, raw_connection(served.port) as silent:
        begin = time.monotonic()
        assert silent.recv(100) == b""  # closed by the server
        assert time.monotonic() - begin < 4
        # A client that sent its preface keeps its connection past the handshake timeout.
        assert served.unary("Echo", b"ok", timeout=10) == b"ok"
        time.sleep(0.3)  # past the timeout; nothing may happen to the channel's connection
        assert served.unary("Echo", b"ok", timeout=10) == b"ok"
        assert len(served.server.connections) == 1
