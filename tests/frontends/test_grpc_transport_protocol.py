"""HTTP/2 and HPACK rules GrpcHttp2Server enforces or follows (RFC 9113, RFC 7541), frame by frame, and the
gRPC message compression it accepts."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib

import grpc  # type: ignore[import-untyped]
import pytest
from grpc_transport_support import Hang, RawClient, handler, has, message, serve  # type: ignore[import-not-found]

from modelserve.frontends.grpc.transport import frames, wire

MAX_WINDOW = frames.MAX_WINDOW


def _echo(request: bytes, context: object) -> bytes:
    return request


def _methods(hang: Hang) -> grpc.GenericRpcHandler:
    return handler(
        Echo=grpc.unary_unary_rpc_method_handler(_echo), Hang=grpc.unary_unary_rpc_method_handler(hang)
    )


def _open_call(client: RawClient, hang: Hang, stream_id: int = 1) -> None:
    """A call whose request is complete (END_STREAM) and whose handler is still running."""
    hang.started.clear()
    client.send(client.request(stream_id, path="/test.Svc/Hang"))
    assert hang.started.wait(5)


@pytest.mark.parametrize(
    ("frame", "error_code"),
    [
        (frames.frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, 1), frames.STREAM_CLOSED),
        (frames.frame(frames.DATA, frames.END_STREAM, 1, b"\x00\x00\x00\x00\x00"), frames.STREAM_CLOSED),
        (frames.window_update(1, 0), frames.PROTOCOL_ERROR),
        (frames.window_update(1, MAX_WINDOW), frames.FLOW_CONTROL_ERROR),  # past 2^31-1
    ],
    ids=["headers_after_end_stream", "data_after_end_stream", "window_update_0", "window_overflow"],
)
def test_stream_errors_reset_the_stream_cancel_its_call_and_spare_the_connection(
    frame: bytes, error_code: int
) -> None:
    hang = Hang()
    with serve(_methods(hang)) as served:
        client = RawClient(served.port)
        _open_call(client, hang)
        client.send(frame)
        client.read_until(lambda got: client.reset_code(1) is not None)
        assert client.reset_code(1) == error_code
        assert hang.cancelled.wait(5)
        client.send(client.request(3, b"next"))
        client.read_until(has(frames.HEADERS, 3, frames.END_STREAM))
        assert client.goaway_code() is None
        client.close()


@pytest.mark.parametrize(
    ("frame", "error_code"),
    [
        (frames.rst_stream(99, frames.CANCEL), frames.PROTOCOL_ERROR),
        (frames.window_update(99, 10), frames.PROTOCOL_ERROR),
        (frames.settings({frames.SETTINGS_INITIAL_WINDOW_SIZE: MAX_WINDOW}), frames.FLOW_CONTROL_ERROR),
    ],
    ids=["rst_stream_on_idle_stream", "window_update_on_idle_stream", "initial_window_overflows_a_stream"],
)
def test_connection_errors_send_goaway_and_close(frame: bytes, error_code: int) -> None:
    hang = Hang()
    with serve(_methods(hang)) as served:
        client = RawClient(served.port)
        _open_call(client, hang)
        client.send(frames.window_update(1, MAX_WINDOW - frames.DEFAULT_WINDOW), frame)
        client.read_to_eof()
        assert client.goaway_code() == error_code
        assert hang.cancelled.wait(5)


def test_data_after_end_stream_lets_a_draining_connection_close() -> None:
    """The last stream of a connection that got GOAWAY ends by a stream error: the connection closes and
    stop() returns without waiting out its grace period."""
    hang = Hang()
    with serve(_methods(hang)) as served:
        client = RawClient(served.port)
        _open_call(client, hang)
        stopping = asyncio.run_coroutine_threadsafe(served.server.stop(30), served.loop)
        client.read_until(has(frames.GOAWAY))
        begin = time.monotonic()
        client.send(frames.frame(frames.DATA, frames.END_STREAM, 1, b"\x00\x00\x00\x00\x00"))
        client.read_to_eof()
        stopping.result(timeout=5)
        assert time.monotonic() - begin < 5


def test_a_smaller_hpack_table_is_acknowledged_in_our_next_header_block() -> None:
    """RFC 7541 §4.2: after SETTINGS_HEADER_TABLE_SIZE < 4096 our next block starts with a size update
    (nghttp2 rejects the block otherwise); the blocks after it do not repeat it."""
    with serve(_methods(Hang())) as served:
        client = RawClient(served.port, {frames.SETTINGS_HEADER_TABLE_SIZE: 0})
        client.send(client.request(1, b"a"), client.request(3, b"b"))
        client.read_until(
            lambda got: (
                has(frames.HEADERS, 1, frames.END_STREAM)(got)
                and has(frames.HEADERS, 3, frames.END_STREAM)(got)
            )
        )
        blocks = [p for t, _, _, p in client.received if t == frames.HEADERS]
        assert blocks[0].startswith(b"\x20")
        assert not any(block.startswith(b"\x20") for block in blocks[1:])
        client.close()
    with serve(_methods(Hang())) as served:  # the default table size: no update, the fast path
        client = RawClient(served.port)
        client.send(client.request(1, b"a"))
        client.read_until(has(frames.HEADERS, 1, frames.END_STREAM))
        assert not any(p.startswith(b"\x20") for t, _, _, p in client.received if t == frames.HEADERS)
        client.close()


PAYLOAD = b"gRPC " * 1000


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
def test_decompress_inflates_and_rejects_truncated_or_oversized_messages(encoding: bytes) -> None:
    packed = gzip.compress(PAYLOAD) if encoding == b"gzip" else zlib.compress(PAYLOAD)
    assert wire.decompress(packed, encoding, len(PAYLOAD)) == PAYLOAD
    with pytest.raises(zlib.error):
        wire.decompress(packed[:-3], encoding, len(PAYLOAD))  # the stream's end (checksum) is missing
    with pytest.raises(wire.MessageTooLarge):
        wire.decompress(packed, encoding, len(PAYLOAD) - 1)


def test_decompress_stops_inflating_at_the_limit() -> None:
    """A 250 kB message that inflates to 256 MiB is rejected after inflating just past the limit."""
    bomb = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    packed = b"".join(bomb.compress(bytes(1 << 20)) for _ in range(256)) + bomb.flush()
    begin = time.perf_counter()
    with pytest.raises(wire.MessageTooLarge) as raised:
        wire.decompress(packed, b"gzip", 1 << 20)
    assert raised.value.args[0] == (1 << 20) + 1
    assert time.perf_counter() - begin < 1.0


def _literal(value: bytes) -> bytes:
    """An HPACK string literal without Huffman coding (lengths under 127)."""
    return bytes([len(value)]) + value


# :method POST (static 3), :scheme http (static 6), then content-type and te as literals without indexing:
# none of these touch the dynamic table, so only the :path representation decides what a block changes.
_FIXED_FIELDS = (
    b"\x83\x86"
    + b"\x0f\x10"  # content-type (static 31), literal without indexing
    + _literal(b"application/grpc")
    + b"\x00"
    + _literal(b"te")
    + _literal(b"trailers")
)


def _path_indexed_by_newest_entry() -> bytes:
    """:path as "indexed field 62": whatever the newest dynamic table entry is at decode time."""
    return _FIXED_FIELDS + b"\xbe"


def _path_added(path: bytes) -> bytes:
    """:path as a literal with incremental indexing (name: static 4): it becomes dynamic entry 62."""
    return _FIXED_FIELDS + b"\x44" + _literal(path)


def test_a_repeated_header_block_follows_the_dynamic_table_it_refers_to() -> None:
    """The same header-block bytes mean another :path once the table changed: the decode cache must not
    replay the old meaning."""
    methods = handler(
        Echo=grpc.unary_unary_rpc_method_handler(lambda request, context: b"echo:" + request),
        Other=grpc.unary_unary_rpc_method_handler(lambda request, context: b"other:" + request),
    )
    blocks = [
        _path_added(b"/test.Svc/Echo"),
        _path_indexed_by_newest_entry(),  # -> Echo
        _path_indexed_by_newest_entry(),  # the same bytes, from the cache -> Echo
        _path_added(b"/test.Svc/Other"),
        _path_indexed_by_newest_entry(),  # the same bytes as before, now -> Other
    ]
    with serve(methods) as served:
        client = RawClient(served.port)
        for index, block in enumerate(blocks):
            stream_id = 2 * index + 1
            client.send(
                frames.frame(frames.HEADERS, frames.END_HEADERS, stream_id, block),
                frames.frame(frames.DATA, frames.END_STREAM, stream_id, message(b"%d" % index)),
            )
            client.read_until(has(frames.HEADERS, stream_id, frames.END_STREAM))
        replies = [
            b"".join(p for t, _, s, p in client.received if t == frames.DATA and s == 2 * index + 1)
            for index in range(len(blocks))
        ]
        assert replies == [
            message(b"echo:0"),
            message(b"echo:1"),
            message(b"echo:2"),
            message(b"other:3"),
            message(b"other:4"),
        ]
        client.close()
