"""The hand-written HTTP/1.1 layer, spoken to over raw sockets: keep-alive, pipelining, chunked bodies,
``Expect: 100-continue``, malformed requests, and a graceful shutdown that loses no accepted request."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

ROW = json.dumps({"instances": [[0.25] * 64]}).encode()


@pytest.fixture(scope="module")
def server(start_module_server: Any, tiny_repo: Path) -> Any:
    return start_module_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--max_request_body_bytes=100000"
    )


def connect(server: Any) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    return sock


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (Content-Length framed) from ``sock``, keeping leftovers in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a full response")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_keep_alive_serves_many_requests_on_one_connection(server: Any) -> None:
    with connect(server) as sock:
        buffer = bytearray()
        for _ in range(20):
            sock.sendall(post("/v1/models/tiny:predict", ROW))
            status, headers, body = read_response(sock, buffer)
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert "date" in headers
            assert len(json.loads(body)["predictions"][0]) == 10


def test_pipelined_requests_are_answered_in_order(server: Any) -> None:
    requests_in_order = [
        post("/v1/models/tiny:predict", ROW),
        b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n",
        post("/v1/models/nope:predict", ROW),
        b"GET /v1/models/tiny/metadata HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    with connect(server) as sock:
        sock.sendall(b"".join(requests_in_order))  # all at once, before reading anything
        buffer = bytearray()
        replies = [read_response(sock, buffer) for _ in requests_in_order]
    assert [status for status, _, _ in replies] == [200, 200, 404, 200]
    assert b"predictions" in replies[0][2]
    assert b"model_version_status" in replies[1][2]
    assert b"Latest(nope)" in replies[2][2]
    assert b"signature_def" in replies[3][2]


def test_chunked_body_and_expect_continue(server: Any) -> None:
    with connect(server) as sock:
        half = len(ROW) // 2
        chunks = f"{half:x}\r\n".encode() + ROW[:half] + b"\r\n" + f"{len(ROW) - half:x}\r\n".encode()
        chunks += ROW[half:] + b"\r\n0\r\n\r\n"
        sock.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        buffer = bytearray(interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :])
        sock.sendall(chunks)
        status, _, body = read_response(sock, buffer)
    assert status == 200, body
    assert len(json.loads(body)["predictions"][0]) == 10


def test_http_1_0_closes_after_the_reply(server: Any) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models/tiny HTTP/1.0\r\n\r\n")
        buffer = bytearray()
        status, headers, _ = read_response(sock, buffer)
        assert status == 200
        assert headers.get("connection") == "close"
        assert sock.recv(1024) == b""


def test_malformed_http_gets_400_and_the_server_stays_up(server: Any) -> None:
    with connect(server) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        buffer = bytearray()
        status, _, body = read_response(sock, buffer)
        assert status == 400
        assert "Malformed HTTP request" in json.loads(body)["error"]
    assert requests.get(f"{server.url}/v1/models/tiny").status_code == 200


def test_oversized_body_is_refused_without_reading_it(server: Any) -> None:
    with connect(server) as sock:
        sock.sendall(
            post("/v1/models/tiny:predict", b"", extra="").replace(
                b"Content-Length: 0", b"Content-Length: 900000"
            )
        )
        buffer = bytearray()
        status, headers, body = read_response(sock, buffer)
        assert status == 413
        assert "100000" in json.loads(body)["error"]
        assert headers.get("connection") == "close"
    assert requests.post(f"{server.url}/v1/models/tiny:predict", data=ROW).status_code == 200


def test_percent_encoded_model_name(server: Any) -> None:
    assert requests.get(f"{server.url}/v1/models/%74iny").status_code == 200


def test_sigterm_finishes_accepted_requests(start_server: Any, tiny_repo: Path) -> None:
    """Requests already accepted when SIGTERM arrives are all answered; the server then exits 0."""
    server = start_server("--model_name=tiny", f"--model_base_path={tiny_repo}")
    results: list[int] = []
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                results.append(
                    session.post(f"{server.url}/v1/models/tiny:predict", data=ROW, timeout=10).status_code
                )
            except requests.ConnectionError:
                return  # the server closed the connection between requests: refused, not lost

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    while len(results) < 200:
        threading.Event().wait(0.01)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(results) >= 200
    assert set(results) == {200}, "an accepted request got an error reply during shutdown"


def test_an_error_queued_behind_a_pending_reply_keeps_the_order(start_server: Any, tiny_repo: Path) -> None:
    # Threshold 0: every model call goes to the inference threads, so the first reply is still pending
    # when the garbage arrives in the same packet.
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--inline_inference_threshold_us=0"
    )
    with connect(server) as sock:
        sock.sendall(post("/v1/models/tiny:predict", ROW) + b"GARBAGE\r\n\r\n")
        buffer = bytearray()
        first = read_response(sock, buffer)
        second = read_response(sock, buffer)
    assert first[0] == 200 and b"predictions" in first[2]
    assert second[0] == 400 and second[1].get("connection") == "close"


def test_head_gets_headers_only(server: Any) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"HEAD /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, get = data.split(b"HTTP/1.1 200 OK", 2)[1:]
    assert head.endswith(b"\r\n\r\n")  # no body after the HEAD reply's headers
    assert b"model_version_status" in get


def test_http_1_0_keep_alive_is_acknowledged(server: Any) -> None:
    with connect(server) as sock:
        buffer = bytearray()
        for _ in range(2):
            sock.sendall(b"GET /v1/models/tiny HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(sock, buffer)
            assert status == 200
            assert headers.get("connection") == "keep-alive"


def test_oversized_request_head_gets_431(server: Any) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(sock, bytearray())
        assert status == 431
        assert headers.get("connection") == "close"


@pytest.mark.parametrize("body", [b"[" * 40000, b'{"instances": [' + b"9" * 5000 + b"]}"])
def test_json_beyond_python_limits_is_a_400(server: Any, body: bytes) -> None:
    reply = requests.post(f"{server.url}/v1/models/tiny:predict", data=body)
    assert reply.status_code == 400, reply.text
    assert requests.get(f"{server.url}/v1/models/tiny").status_code == 200
