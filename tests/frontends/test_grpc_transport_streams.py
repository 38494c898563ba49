"""Streaming calls, health checking and reflection through GrpcHttp2Server with real grpcio clients."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase  # type: ignore[import-untyped]
from grpc_transport_support import handler, serve  # type: ignore[import-not-found]


async def _count_generator(request: bytes, context: object) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield b"item-%d" % i


async def _count_writes(request: bytes, context: grpc.aio.ServicerContext) -> None:
    for i in range(int(request)):
        await context.write(b"write-%d" % i)


async def _sum_lengths(requests: AsyncIterator[bytes], context: object) -> bytes:
    total = 0
    async for request in requests:
        total += len(request)
    return str(total).encode()


async def _upper(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request.upper()


async def _read_and_write(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
    while True:
        request = await context.read()
        if request is grpc.aio.EOF:
            break
        await context.write(b"got:" + request)


STREAMS = handler(
    Generate=grpc.unary_stream_rpc_method_handler(_count_generator),
    Write=grpc.unary_stream_rpc_method_handler(_count_writes),
    Sum=grpc.stream_unary_rpc_method_handler(_sum_lengths),
    Upper=grpc.stream_stream_rpc_method_handler(_upper),
    ReadWrite=grpc.stream_stream_rpc_method_handler(_read_and_write),
)


def test_server_streaming_with_an_async_generator_and_with_context_write() -> None:
    with serve(STREAMS) as served:
        generated = list(served.channel.unary_stream("/test.Svc/Generate")(b"5", timeout=10))
        assert generated == [b"item-%d" % i for i in range(5)]
        written = list(served.channel.unary_stream("/test.Svc/Write")(b"3", timeout=10))
        assert written == [b"write-0", b"write-1", b"write-2"]
        assert list(served.channel.unary_stream("/test.Svc/Generate")(b"0", timeout=10)) == []


def test_long_server_stream_respects_flow_control() -> None:
    with serve(STREAMS) as served:
        # 2000 x ~100 KiB = 200 MB would be slow; 400 messages of 100 KiB exceed every default window.
        async def big(request: bytes, context: grpc.aio.ServicerContext) -> None:
            for i in range(400):
                await context.write(bytes([i % 256]) * 100_000)

        with serve(handler(Big=grpc.unary_stream_rpc_method_handler(big))) as big_served:
            replies = list(big_served.channel.unary_stream("/test.Svc/Big")(b"", timeout=60))
        assert len(replies) == 400
        assert all(reply == bytes([i % 256]) * 100_000 for i, reply in enumerate(replies))
        assert list(served.channel.unary_stream("/test.Svc/Generate")(b"1", timeout=10)) == [b"item-0"]


def test_client_streaming() -> None:
    with serve(STREAMS) as served:
        requests = iter([b"a" * 10, b"b" * 20, b"c" * 3_000_000])
        assert served.channel.stream_unary("/test.Svc/Sum")(requests, timeout=30) == b"3000030"
        assert served.channel.stream_unary("/test.Svc/Sum")(iter([]), timeout=10) == b"0"


def test_bidi_streaming_interleaves_requests_and_replies() -> None:
    with serve(STREAMS) as served:
        for method, prefix in (("Upper", b""), ("ReadWrite", b"got:")):
            outbox: queue.Queue[bytes | None] = queue.Queue()

            def requests(outbox: queue.Queue[bytes | None] = outbox) -> Iterator[bytes]:
                while (item := outbox.get()) is not None:
                    yield item

            replies = served.channel.stream_stream(f"/test.Svc/{method}")(requests(), timeout=20)
            for word in (b"one", b"two", b"three"):
                outbox.put(word)  # the next request is only sent after the previous reply arrived
                expected = prefix + (word.upper() if method == "Upper" else word)
                assert next(replies) == expected
            outbox.put(None)
            assert list(replies) == []


def test_health_check_and_watch() -> None:
    servicer = health.aio.HealthServicer()
    with serve(setup=lambda server: health_pb2_grpc.add_HealthServicer_to_server(servicer, server)) as served:
        stub = health_pb2_grpc.HealthStub(served.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="missing"), timeout=10)
            raise AssertionError("expected NOT_FOUND")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND

        served.run(servicer.set("svc", health_pb2.HealthCheckResponse.SERVING))
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="svc"), timeout=20)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        served.run(servicer.set("svc", health_pb2.HealthCheckResponse.NOT_SERVING))
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()

        async def watchers_gone() -> None:
            while "svc" in servicer._server_watchers:  # the cancelled Watch handler ran its finally
                await asyncio.sleep(0.01)

        served.run(asyncio.wait_for(watchers_gone(), 10))


def test_reflection_lists_services_to_a_reflection_client() -> None:
    names = (health.SERVICE_NAME, reflection.SERVICE_NAME)

    def setup(server: object) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(names), server
        )

    with serve(setup=setup) as served:
        database = ProtoReflectionDescriptorDatabase(served.channel)
        assert set(database.get_services()) == set(names)
        described = database.FindFileContainingSymbol("grpc.health.v1.Health")
        assert described.package == "grpc.health.v1"


def test_grpc_aio_client_streams() -> None:
    with serve(STREAMS) as served:

        async def run() -> tuple[list[bytes], bytes]:
            async with grpc.aio.insecure_channel(served.target) as channel:
                generated = [reply async for reply in channel.unary_stream("/test.Svc/Generate")(b"3")]
                total = await channel.stream_unary("/test.Svc/Sum")(iter([b"ab", b"cde"]))
                return generated, total

        generated, total = asyncio.run(run())
        assert generated == [b"item-0", b"item-1", b"item-2"]
        assert total == b"5"
