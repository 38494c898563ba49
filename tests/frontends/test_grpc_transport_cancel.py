"""How GrpcHttp2Server ends calls early: client resets, protocol errors, deadlines and stop(), and what a
sync-first servicer (which takes a model handle and counts itself in flight before returning its
coroutine) sees in each case."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc  # type: ignore[import-untyped]
import hpack
import pytest
from grpc_transport_support import Hang, RawClient, handler, has, serve  # type: ignore[import-not-found]

from modelserve.frontends.grpc.status import counted_at_edge
from modelserve.frontends.grpc.transport import frames
from modelserve.metrics import RequestMetrics


class _Servicer:
    """Shaped like our TF Serving and V2 servicers: the handle is taken before the coroutine is returned,
    and released in the coroutine's ``finally``."""

    def __init__(self) -> None:
        self.requests = RequestMetrics()
        self.handles = 0
        self.released = threading.Event()
        self.running = threading.Event()

    @counted_at_edge("Predict", lambda request: "model", lambda reply: "1")
    def Predict(self, request: bytes, context: Any) -> Any:
        self.handles += 1
        return self._run()

    async def _run(self) -> bytes:
        try:
            self.running.set()
            await asyncio.sleep(60)
            return b"too late"
        finally:
            self.handles -= 1
            self.released.set()

    def codes(self) -> dict[str, float]:
        """Requests counted per status code."""
        return {
            sample.labels["code"]: sample.value
            for family in self.requests.collect()
            if family.name == "modelserve_requests"
            for sample in family.samples
        }


def _serve_servicer(servicer: _Servicer) -> Any:
    return serve(handler(Predict=grpc.unary_unary_rpc_method_handler(servicer.Predict)))


async def _settled(servicer: _Servicer) -> tuple[int, int]:
    """Handles and in-flight calls, read on the server's loop."""
    return servicer.handles, servicer.requests.in_flight["grpc"]


@pytest.mark.parametrize(
    "tail",
    [
        frames.rst_stream(1, frames.CANCEL),  # the client gives up at once
        frames.frame(frames.DATA, 0, 0, b"x"),  # a connection error later in the same read
    ],
    ids=["rst_stream", "protocol_error"],
)
def test_a_call_cancelled_before_its_task_started_still_releases_what_it_took(tail: bytes) -> None:
    """The request and its cancellation arrive in one segment: the handler's coroutine has not run a step
    when it is cancelled, and must still run its finally blocks (no leaked handle or in-flight count)."""
    servicer = _Servicer()
    with _serve_servicer(servicer) as served:
        client = RawClient(served.port)
        client.send(client.request(1, b"x", path="/test.Svc/Predict"), tail)
        assert servicer.released.wait(5), "the handler's finally never ran"
        assert served.run(_settled(servicer)) == (0, 0)
        assert servicer.codes() == {"CANCELLED": 1}
        client.close()


def test_a_deadline_is_counted_as_deadline_exceeded_not_cancelled() -> None:
    servicer = _Servicer()
    with _serve_servicer(servicer) as served:
        served.expect_status("Predict", grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.3)
        assert servicer.released.wait(5)
        assert served.run(_settled(servicer)) == (0, 0)
        assert servicer.codes() == {"DEADLINE_EXCEEDED": 1}


def test_a_deadline_passing_while_the_request_is_still_arriving_ends_the_call() -> None:
    """HEADERS with grpc-timeout and no DATA yet: the call still expires (its stream is freed)."""
    with serve(handler(Echo=grpc.unary_unary_rpc_method_handler(lambda request, context: request))) as served:
        client = RawClient(served.port)
        client.send(client.headers(1, grpc_timeout="100m"))
        client.read_until(has(frames.HEADERS, 1, frames.END_STREAM), timeout=5)
        trailers = [p for t, _, s, p in client.received if t == frames.HEADERS and s == 1][-1]
        assert ("grpc-status", "4") in list(hpack.Decoder().decode(trailers))  # DEADLINE_EXCEEDED
        assert client.reset_code(1) == frames.NO_ERROR  # the request half is closed for us too
        client.close()


def test_a_cancellation_the_transport_did_not_cause_answers_cancelled() -> None:
    """A handler whose awaited future was cancelled (an executor at shutdown, say) still gets a status."""

    async def orphaned(request: bytes, context: object) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.cancel()
        return await future

    with serve(handler(Orphaned=grpc.unary_unary_rpc_method_handler(orphaned))) as served:
        served.expect_status("Orphaned", grpc.StatusCode.CANCELLED)


def test_stop_none_cancels_every_call_at_once() -> None:
    """As grpc.aio's stop(None): no grace period at all."""
    hang = Hang()
    with serve(handler(Hang=grpc.unary_unary_rpc_method_handler(hang))) as served:
        future = served.channel.unary_unary("/test.Svc/Hang").future(b"", timeout=30)
        assert hang.started.wait(10)
        served.run(served.server.stop(None), timeout=5)
        assert hang.cancelled.is_set()
        with pytest.raises(grpc.RpcError) as raised:
            future.result(timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_second_stop_with_a_shorter_grace_ends_the_first_ones_wait() -> None:
    hang = Hang()
    with serve(handler(Hang=grpc.unary_unary_rpc_method_handler(hang))) as served:
        future = served.channel.unary_unary("/test.Svc/Hang").future(b"", timeout=30)
        assert hang.started.wait(10)
        patient = asyncio.run_coroutine_threadsafe(served.server.stop(60), served.loop)
        served.run(served.server.stop(None), timeout=5)
        patient.result(timeout=5)
        assert hang.cancelled.is_set()
        with pytest.raises(grpc.RpcError):
            future.result(timeout=10)
