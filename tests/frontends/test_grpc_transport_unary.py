"""Unary calls through GrpcHttp2Server from real grpcio clients (sync and aio channels)."""

from __future__ import annotations

import asyncio
import threading

import grpc  # type: ignore[import-untyped]
import pytest
from grpc_transport_support import BIG, Hang, handler, serve  # type: ignore[import-not-found]

from modelserve.frontends.grpc.transport import AbortError


def _echo(request: bytes, context: object) -> bytes:
    return b"echo:" + request


async def _async_echo(request: bytes, context: object) -> bytes:
    await asyncio.sleep(0.001)
    return b"async:" + request


def _sync_first(request: bytes, context: object) -> object:
    """Answers inline when it can, returns a coroutine when it must wait (the lead's servicer style)."""
    if request == b"now":
        return b"inline"

    async def later() -> bytes:
        await asyncio.sleep(0.001)
        return b"later"

    return later()


UNARY = handler(
    Echo=grpc.unary_unary_rpc_method_handler(_echo),
    AsyncEcho=grpc.unary_unary_rpc_method_handler(_async_echo),
    SyncFirst=grpc.unary_unary_rpc_method_handler(_sync_first),
)


def test_sync_async_and_sync_first_handlers() -> None:
    with serve(UNARY) as served:
        assert served.unary("Echo", b"a") == b"echo:a"
        assert served.unary("AsyncEcho", b"b") == b"async:b"
        assert served.unary("SyncFirst", b"now") == b"inline"
        assert served.unary("SyncFirst", b"wait") == b"later"
        assert served.unary("Echo", b"") == b"echo:"


def test_200_concurrent_calls_on_one_channel_each_get_their_reply() -> None:
    with serve(UNARY) as served:
        echo = served.channel.unary_unary("/test.Svc/Echo")
        slow = served.channel.unary_unary("/test.Svc/AsyncEcho")
        futures = [(i, (echo if i % 2 else slow).future(str(i).encode())) for i in range(200)]
        for i, future in futures:
            prefix = b"echo:" if i % 2 else b"async:"
            assert future.result(timeout=30) == prefix + str(i).encode()


def test_20_megabyte_request_and_response() -> None:
    big = bytes(range(256)) * (20 * 1024 * 1024 // 256)

    def double(request: bytes, context: object) -> bytes:
        return request + request[::-1]

    options = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]
    with serve(handler(Double=grpc.unary_unary_rpc_method_handler(double)), options=options) as served:
        reply = served.unary("Double", big, timeout=60)
        assert len(reply) == 2 * len(big)
        assert reply == big + big[::-1]
        assert served.unary("Double", b"ab") == b"abba"


def test_metadata_in_and_initial_and_trailing_metadata_out() -> None:
    seen: list[tuple[tuple[str, str | bytes], ...]] = []

    async def with_metadata(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append(context.invocation_metadata())
        await context.send_initial_metadata((("initial-key", "initial value"),))
        context.set_trailing_metadata((("trailing-key", "t"), ("trailing-bin", b"\x00\xff\x01")))
        return b"ok"

    methods = handler(Meta=grpc.unary_unary_rpc_method_handler(with_metadata))
    with serve(methods) as served:
        reply, call = served.channel.unary_unary("/test.Svc/Meta").with_call(
            b"", metadata=(("x-request-id", "abc"), ("payload-bin", b"\x00\x01\xfe")), timeout=10
        )
        assert reply == b"ok"
        assert ("initial-key", "initial value") in call.initial_metadata()
        trailing = dict(call.trailing_metadata())
        assert trailing["trailing-key"] == "t"
        assert trailing["trailing-bin"] == b"\x00\xff\x01"
        metadata = dict(seen[0])
        assert metadata["x-request-id"] == "abc"
        assert metadata["payload-bin"] == b"\x00\x01\xfe"
        assert not any(key.startswith(":") or key in ("content-type", "te") for key in metadata)


DETAILS = "naïve — 失败 100% done\n"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
    ],
)
def test_abort_sends_exact_code_and_non_ascii_details(code: grpc.StatusCode) -> None:
    def sync_abort(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(code, DETAILS)
        raise AssertionError("abort returned")

    async def async_abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(code, DETAILS)
        raise AssertionError("abort returned")

    methods = handler(
        Sync=grpc.unary_unary_rpc_method_handler(sync_abort),
        Async=grpc.unary_unary_rpc_method_handler(async_abort),
    )
    with serve(methods) as served:
        for method in ("Sync", "Async"):
            with pytest.raises(grpc.RpcError) as raised:
                served.unary(method, timeout=10)
            assert raised.value.code() == code
            assert raised.value.details() == DETAILS


def test_abort_error_is_grpc_aio_abort_error() -> None:
    assert issubclass(AbortError, grpc.aio.AbortError)


def test_set_code_and_return_sends_that_status() -> None:
    def not_found(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("no such model")
        return b"ignored"

    with serve(handler(Missing=grpc.unary_unary_rpc_method_handler(not_found))) as served:
        with pytest.raises(grpc.RpcError) as raised:
            served.unary("Missing", timeout=10)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert raised.value.details() == "no such model"


def test_unexpected_exception_is_unknown_and_the_next_call_works() -> None:
    def broken(request: bytes, context: object) -> bytes:
        raise ValueError("model exploded")

    async def broken_async(request: bytes, context: object) -> bytes:
        raise KeyError("gone")

    methods = handler(
        Broken=grpc.unary_unary_rpc_method_handler(broken),
        BrokenAsync=grpc.unary_unary_rpc_method_handler(broken_async),
        Echo=grpc.unary_unary_rpc_method_handler(_echo),
    )
    with serve(methods) as served:
        with pytest.raises(grpc.RpcError) as raised:
            served.unary("Broken", timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNKNOWN
        assert raised.value.details() == "Unexpected <class 'ValueError'>: model exploded"
        with pytest.raises(grpc.RpcError) as raised:
            served.unary("BrokenAsync", timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNKNOWN
        assert served.unary("Echo", b"x", timeout=10) == b"echo:x"


def test_unknown_method_is_unimplemented() -> None:
    with serve(UNARY) as served:
        with pytest.raises(grpc.RpcError) as raised:
            served.channel.unary_unary("/nope.Svc/Missing")(b"", timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert raised.value.details() == "Method not found!"
        assert served.unary("Echo", b"y") == b"echo:y"


def test_deadline_exceeded_answers_quickly_and_cancels_the_handler() -> None:
    hang = Hang()
    with serve(handler(Slow=grpc.unary_unary_rpc_method_handler(hang))) as served:
        served.expect_status("Slow", grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.5)
        assert hang.started.is_set()
        assert hang.cancelled.wait(5)
        remaining = hang.contexts[0].time_remaining()
        assert remaining is not None and remaining == 0  # the deadline passed
        assert hang.contexts[0].cancelled()


def test_time_remaining_follows_the_callers_timeout() -> None:
    def remaining(request: bytes, context: grpc.ServicerContext) -> bytes:
        return str(context.time_remaining()).encode()

    with serve(handler(Remaining=grpc.unary_unary_rpc_method_handler(remaining))) as served:
        seconds = float(served.unary("Remaining", timeout=0.5))
        assert 0 < seconds <= 0.6  # grpc rounds the timeout it sends up
        assert served.unary("Remaining", timeout=None) == b"None"


def test_client_cancel_cancels_the_handler() -> None:
    hang = Hang()
    done_callback = threading.Event()
    with serve(handler(Hang=grpc.unary_unary_rpc_method_handler(hang))) as served:
        future = served.channel.unary_unary("/test.Svc/Hang").future(b"")
        assert hang.started.wait(10)
        hang.contexts[0].add_done_callback(lambda _: done_callback.set())
        future.cancel()
        assert hang.cancelled.wait(10)
        assert hang.contexts[0].cancelled()
        assert done_callback.wait(10)


def test_message_over_the_receive_limit_is_resource_exhausted_and_the_connection_keeps_working() -> None:
    options = [("grpc.max_receive_message_length", 1000)]
    with serve(UNARY, options=options) as served:
        with pytest.raises(grpc.RpcError) as raised:
            served.unary("Echo", b"x" * 5000, timeout=10)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "5000" in (raised.value.details() or "")
        assert "1000" in (raised.value.details() or "")
        assert served.unary("Echo", b"x" * 900, timeout=10) == b"echo:" + b"x" * 900


def test_response_over_the_send_limit_is_resource_exhausted() -> None:
    options = [("grpc.max_send_message_length", 100), ("grpc.some_unknown_option", 1)]
    with serve(UNARY, options=options) as served:
        with pytest.raises(grpc.RpcError) as raised:
            served.unary("Echo", b"x" * 200, timeout=10)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert served.unary("Echo", b"x", timeout=10) == b"echo:x"


def test_compressed_requests_are_inflated() -> None:
    with serve(UNARY) as served:
        for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            reply = served.unary("Echo", b"z" * 10000, compression=compression, timeout=10)
            assert reply == b"echo:" + b"z" * 10000


def test_grpc_aio_client() -> None:
    with serve(UNARY) as served:

        async def calls() -> list[bytes]:
            async with grpc.aio.insecure_channel(served.target) as channel:
                echo = channel.unary_unary("/test.Svc/Echo")
                slow = channel.unary_unary("/test.Svc/AsyncEcho")
                return list(await asyncio.gather(*(echo(b"1"), slow(b"2"), echo(b"3"))))

        assert asyncio.run(calls()) == [b"echo:1", b"async:2", b"echo:3"]


def test_max_concurrent_streams_bounds_the_calls_running_at_once() -> None:
    """grpc.max_concurrent_streams is advertised in SETTINGS: a grpcio client queues calls beyond it."""
    running = 0
    most = 0

    async def slow(request: bytes, context: object) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return request

    methods = handler(Slow=grpc.unary_unary_rpc_method_handler(slow))
    with serve(methods, options=[("grpc.max_concurrent_streams", 2)]) as served:
        call = served.channel.unary_unary("/test.Svc/Slow")
        futures = [call.future(str(i).encode()) for i in range(8)]
        assert [f.result(timeout=30) for f in futures] == [str(i).encode() for i in range(8)]
    assert most == 2
