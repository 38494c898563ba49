"""The gateway's upstream sends a predict again, once, when its pooled keep-alive connection was closed by
the model server before any byte of a reply: the race every keep-alive client meets when a server closes
an idle connection (its keep-alive timeout, its shutdown) just as a request leaves.

The race cannot be timed against the model server itself, so a small proxy in front of a real one plays
that side exactly: once armed, it reads the next request that arrives on the first connection and closes
(or resets) that connection without replying; every other request is forwarded and answered.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.client import ModelServerError
from modelserve.gateway.handler import ModelCall
from modelserve.gateway.options import GatewayOptions
from modelserve.gateway.upstream import Upstream


@dataclass
class ClosingProxy:
    """``ending``: how the armed request ends: ``close`` (EOF), ``reset`` (RST), or ``partial`` (a reply's
    head and part of its body, then EOF: the request ran, so sending it again is not safe)."""

    upstream_port: int
    ending: str
    armed: bool = False
    requests: int = 0
    connections: int = 0
    _sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(
                target=self._serve, args=(connection, self.connections == 1), daemon=True
            ).start()

    def _serve(self, connection: socket.socket, first: bool) -> None:
        with connection:
            while (request := _read_request(connection)) is not None:
                self.requests += 1
                if first and self.armed:
                    self.armed = False
                    self._end(connection)
                    return
                connection.sendall(self._forward(*request))

    def _forward(self, method: str, path: str, body: bytes) -> bytes:
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=10)
        try:
            upstream.request(method, path, body or None, {"Content-Type": "application/json"})
            reply = upstream.getresponse()
            content = reply.read()
        finally:
            upstream.close()
        version = reply.getheader("x-model-version")
        extra = f"x-model-version: {version}\r\n".encode() if version else b""
        return (
            f"HTTP/1.1 {reply.status} X\r\ncontent-type: application/json\r\n".encode()
            + extra
            + f"content-length: {len(content)}\r\n\r\n".encode()
            + content
        )

    def _end(self, connection: socket.socket) -> None:
        if self.ending == "reset":  # SO_LINGER 0: close sends RST
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.ending == "partial":
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")

    def close(self) -> None:
        self._sock.close()


def _read_request(connection: socket.socket) -> tuple[str, str, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = next((int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length")), 0)
    while len(body) < length:
        body += connection.recv(65536)
    return method, path, body


@pytest.fixture(params=["close", "reset", "partial"])
def proxy(request: pytest.FixtureRequest, start_server: Any, tiny_repo: Path) -> Iterator[ClosingProxy]:
    server = start_server("--model_name=tiny", f"--model_base_path={tiny_repo}")
    proxy = ClosingProxy(server.rest_port, request.param)
    threading.Thread(target=proxy.serve, daemon=True).start()
    yield proxy
    proxy.close()


def test_a_request_on_a_connection_closed_before_any_reply_is_sent_again_once(proxy: ClosingProxy) -> None:
    upstream = Upstream(GatewayOptions(handler="unused", model_server=proxy.url, retries=1))
    call = ModelCall({"x": np.zeros((1, 64), np.float32)}, model="tiny")
    try:
        assert upstream.predict(call)["y"].shape == (1, 10)  # the pooled connection is now idle
        sent = proxy.requests
        proxy.armed = True
        if proxy.ending == "partial":  # part of a reply came back: final, never sent again
            with pytest.raises(ModelServerError):
                upstream.predict(call)
            assert (proxy.requests - sent, proxy.connections) == (1, 1)
        else:  # the pooled connection fails before any reply; a fresh one answers
            assert upstream.predict(call)["y"].shape == (1, 10)
            assert (proxy.requests - sent, proxy.connections) == (2, 2)
    finally:
        upstream.close()


def test_with_no_retries_a_closed_connection_is_final(proxy: ClosingProxy) -> None:
    """The same error is what a model server that died mid-request gives: --retries 0 never replays it."""
    upstream = Upstream(GatewayOptions(handler="unused", model_server=proxy.url, retries=0))
    call = ModelCall({"x": np.zeros((1, 64), np.float32)}, model="tiny")
    try:
        assert upstream.predict(call)["y"].shape == (1, 10)
        sent = proxy.requests
        proxy.armed = True
        with pytest.raises(ModelServerError):
            upstream.predict(call)
        assert proxy.requests - sent == 1
    finally:
        upstream.close()
