"""Reply coalescing (``frontends.outbox``): replies leave together at the end of the loop's pass, in order
per connection, never later than ``--reply_coalescing_us``; with 0 each is written at once."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from grpc_transport_support import serve  # type: ignore[import-not-found]
from test_http_server import post, read_response  # type: ignore[import-not-found]

from modelserve.cli import parse_serve_options
from modelserve.errors import InvalidArgument
from modelserve.frontends.outbox import Outbox

ROW = json.dumps({"instances": [[0.25] * 64]}).encode()


class Recorder:
    """A connection stand-in that records when the outbox makes it write."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def write_held(self) -> None:
        self.log.append(f"write {self.name}")


def test_held_replies_leave_after_every_callback_of_the_pass() -> None:
    async def scenario() -> list[str]:
        outbox, log = Outbox(max_hold=10.0), []
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def ready_connection(name: str) -> None:  # what a data_received callback does
            log.append(f"read {name}")
            outbox.hold(Recorder(name, log))

        for name in "abc":
            loop.call_soon(ready_connection, name)
        loop.call_soon(lambda: loop.call_soon(done.set_result, None))
        await done
        return log

    assert asyncio.run(scenario()) == ["read a", "read b", "read c", "write a", "write b", "write c"]


def test_a_hold_past_max_hold_writes_everything_held() -> None:
    async def scenario() -> list[str]:
        outbox, log = Outbox(max_hold=0.01), []
        outbox.hold(Recorder("a", log))
        time.sleep(0.02)  # the loop is busy past the bound (a long pass)
        outbox.hold(Recorder("b", log))
        written_early = list(log)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert log == written_early  # the end of the pass finds nothing left
        return written_early

    assert asyncio.run(scenario()) == ["write a", "write b"]


class Failing:
    def write_held(self) -> None:
        raise OSError("the socket went away")


def test_one_failing_connection_does_not_strand_the_others(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[str]:
        outbox, log = Outbox(max_hold=10.0), []
        outbox.hold(Recorder("a", log))
        outbox.hold(Failing())
        outbox.hold(Recorder("b", log))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return log

    assert asyncio.run(scenario()) == ["write a", "write b"]
    assert "writing the held replies of a connection failed" in caplog.text


def test_a_hold_after_an_early_flush_is_written_at_the_end_of_the_same_pass() -> None:
    async def scenario() -> list[str]:
        outbox, log = Outbox(max_hold=0.01), []
        outbox.hold(Recorder("a", log))
        time.sleep(0.02)
        outbox.hold(Recorder("b", log))  # past the bound: a and b written now
        outbox.hold(Recorder("c", log))  # held again, in the same pass
        assert log == ["write a", "write b"]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return log

    assert asyncio.run(scenario()) == ["write a", "write b", "write c"]


def test_a_read_after_max_hold_writes_what_the_pass_held() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        outbox, log = Outbox(max_hold=0.01), []
        outbox.hold(Recorder("a", log))
        outbox.flush_if_overdue(time.monotonic())  # within the bound: still held
        held = list(log)
        time.sleep(0.02)  # another connection's request ran long
        outbox.flush_if_overdue(time.monotonic())
        return held, list(log)

    assert asyncio.run(scenario()) == ([], ["write a"])


def test_max_hold_zero_writes_at_once() -> None:
    async def scenario() -> list[str]:
        outbox, log = Outbox(max_hold=0), []
        outbox.hold(Recorder("a", log))
        return list(log)

    assert asyncio.run(scenario()) == ["write a"]


def test_negative_reply_coalescing_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="--reply_coalescing_us must be >= 0"):
        parse_serve_options(["--model_base_path=/m", "--reply_coalescing_us=-1"])


# -- REST, over raw sockets --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["coalesced", "immediate"])
def rest_server(request: pytest.FixtureRequest, start_module_server: Any, tiny_repo: Path) -> Any:
    flags = ["--model_name=tiny", f"--model_base_path={tiny_repo}", "--port=0"]
    if request.param == "immediate":
        flags.append("--reply_coalescing_us=0")
    return start_module_server(*flags)


def test_100_continue_follows_the_reply_held_before_it(rest_server: Any) -> None:
    """A complete request and, in the same packet, the head of one that expects 100-continue: the
    interim response must not overtake the first request's reply, which is still held. (The first is
    answered synchronously, so no reply is pending when the second head is read: the 100 is sent.)"""
    second_head = (
        "POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(ROW)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", rest_server.rest_port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models/missing HTTP/1.1\r\nHost: x\r\n\r\n" + second_head)
        buffer = bytearray()
        status, _, body = read_response(sock, buffer)
        assert status == 404 and "missing" in json.loads(body)["error"]
        status, _, _ = read_response(sock, buffer)
        assert status == 100
        sock.sendall(ROW)
        status, _, body = read_response(sock, buffer)
        assert status == 200 and len(json.loads(body)["predictions"][0]) == 10


def test_many_connections_ready_at_once_each_get_their_own_replies_in_order(rest_server: Any) -> None:
    """48 connections, each with three pipelined requests sent at the same moment: every reply reaches the
    connection that asked, in request order (the status, then an error naming the model asked for)."""
    count = 48
    sockets = [
        socket.create_connection(("127.0.0.1", rest_server.rest_port), timeout=10) for _ in range(count)
    ]
    try:
        for index, sock in enumerate(sockets):
            sock.sendall(
                post("/v1/models/tiny:predict", ROW)
                + f"GET /v1/models/missing{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                + post("/v1/models/tiny:predict", b'{"instances": [[1, 2]]}')
            )
        for index, sock in enumerate(sockets):
            buffer = bytearray()
            status, _, body = read_response(sock, buffer)
            assert status == 200 and len(json.loads(body)["predictions"][0]) == 10
            status, _, body = read_response(sock, buffer)
            assert status == 404 and f"missing{index}" in json.loads(body)["error"]
            status, _, body = read_response(sock, buffer)
            assert status == 400 and "shape" in json.loads(body)["error"]
    finally:
        for sock in sockets:
            sock.close()


def test_a_closing_reply_is_written_before_the_connection_closes(rest_server: Any) -> None:
    with socket.create_connection(("127.0.0.1", rest_server.rest_port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/models/tiny:predict HTTP/1.0\r\nContent-Length: {len(ROW)}\r\n\r\n".encode() + ROW
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head
    assert len(json.loads(body)["predictions"][0]) == 10


def test_a_client_that_half_closes_after_its_request_gets_the_reply(rest_server: Any) -> None:
    with socket.create_connection(("127.0.0.1", rest_server.rest_port), timeout=10) as sock:
        sock.sendall(post("/v1/models/tiny:predict", ROW) + post("/v1/models/tiny:predict", ROW))
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    buffer = bytearray(received)
    replies = []
    while buffer:
        status, _, body = read_response(sock, buffer)
        replies.append((status, len(json.loads(body)["predictions"][0])))
    assert replies == [(200, 10), (200, 10)]


def test_nothing_is_answered_after_a_connection_close_reply(start_server: Any, tiny_repo: Path) -> None:
    """A request runs on the inference threads (threshold 0), so the next two wait in the pipeline behind it:
    the second asks to close, and the third must get no reply (RFC 9112 9.6)."""
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--port=0", "--inline_inference_threshold_us=0"
    )
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(
            post("/v1/models/tiny:predict", ROW)
            + b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            + b"GET /v1/models/missing HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    buffer = bytearray(received)
    status, _, body = read_response(sock, buffer)
    assert status == 200 and len(json.loads(body)["predictions"][0]) == 10
    status, headers, body = read_response(sock, buffer)
    assert status == 200 and headers["connection"] == "close" and b"model_version_status" in body
    assert bytes(buffer) == b""


# -- gRPC transport ----------------------------------------------------------------------------------------


def _echo(request: bytes, context: Any) -> bytes:
    return request[::-1]


HANDLERS = grpc.method_handlers_generic_handler(
    "test.Svc", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
)


@pytest.mark.parametrize("seconds", [0.001, 0.0])
def test_grpc_calls_on_many_channels_at_once_each_get_their_reply(seconds: float) -> None:
    with serve(HANDLERS, reply_coalescing_seconds=seconds) as served:
        channels = [grpc.insecure_channel(served.target) for _ in range(16)]
        try:
            echo = [channel.unary_unary("/test.Svc/Echo") for channel in channels]

            def call(index: int) -> bytes:
                return bytes(echo[index % len(echo)](f"call-{index}".encode(), timeout=10))

            with ThreadPoolExecutor(32) as pool:
                replies = list(pool.map(call, range(320)))
        finally:
            for channel in channels:
                channel.close()
    assert replies == [f"call-{index}".encode()[::-1] for index in range(320)]
