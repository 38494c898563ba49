"""Request headers reach the handler and handlers may set response headers: the plumbing V2's binary
tensor extension needs, checked over raw sockets next to TF Serving requests on the same connection."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.frontends.rest.handler import NO_HEADERS, RestHandler


@pytest.fixture(scope="module")
def server(start_module_server: Any, tiny_repo: Path) -> Any:
    return start_module_server("--model_name=tiny", f"--model_base_path={tiny_repo}")


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "closed before a full response"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a body"
        rest += chunk
    buffer[:] = rest[length:]
    return int(lines[0].split()[1]), headers, rest[:length]


def v2_binary_request(x: np.ndarray, header_name: str) -> bytes:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = header + x.tobytes()
    return (
        f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"{header_name}: {len(header)}\r\n\r\n"
    ).encode() + body


def test_headers_in_and_out_next_to_tf_serving_requests(server: Any) -> None:
    x = np.ones((1, 64), np.float32)
    row = json.dumps({"instances": x.tolist()}).encode()
    tf_request = (
        f"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(row)}\r\n\r\n".encode()
        + row
    )
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        # Pipelined: the header of one request must not leak into the next.
        sock.sendall(
            v2_binary_request(x, "Inference-Header-Content-Length")
            + tf_request
            + v2_binary_request(x, "inference-header-content-length")
        )
        buffer = bytearray()
        replies = [read_response(sock, buffer) for _ in range(3)]
    for status, headers, body in (replies[0], replies[2]):
        assert status == 200
        assert headers["content-type"] == "application/octet-stream"
        length = int(headers["inference-header-content-length"])
        (output,) = json.loads(body[:length])["outputs"]
        assert output["parameters"] == {"binary_data_size": 40}
        assert len(body) == length + 40
    status, headers, body = replies[1]
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in headers
    predictions = json.loads(body)["predictions"]
    np.testing.assert_allclose(
        predictions, np.frombuffer(replies[0][2][-40:], "<f4").reshape(1, 10), rtol=1e-6
    )


def test_handler_defaults_to_no_headers() -> None:
    assert RestHandler.wanted_headers == frozenset({b"inference-header-content-length", b"x-routing-key"})
    assert dict(NO_HEADERS) == {}
