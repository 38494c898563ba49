"""The REST clients (sync and asyncio) against the connection behaviours of other HTTP servers than ours (nginx or a
load balancer in between): idle connections the server closes without saying so, ``Connection: close``,
keep-alive expiry on the client's side, and TLS.

The server here is the standard library's ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive), answering model
status requests with a fixed, valid TF Serving reply, and counting the connections it accepts.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.client import ModelServerError
from modelserve.client.errors import ClosedBeforeReply, ConnectFailed
from modelserve.errors import Code

MakeClient = Callable[..., Any]

STATUS = json.dumps(
    {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}
).encode()
PREDICTION = json.dumps(  # a V2 reply, which names its output: no metadata call needed
    {
        "model_name": "tiny",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 10], "data": [0.5] * 10}],
    }
).encode()
ROW = np.ones((1, 64), np.float32)


class StatusServer:
    """A keep-alive HTTP/1.1 server. ``close_after_reply`` hangs up after each reply without a
    ``Connection: close`` header (as a server's idle timeout does); ``say_close`` sends one;
    ``hang_up`` closes each connection on its first request without replying."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.requests = 0
        self.closed = threading.Semaphore(0)  # released as each connection is closed by the server
        self.close_after_reply = False
        self.say_close = False
        self.hang_up = False
        self.user_agents: list[str] = []
        self.authorizations: list[str | None] = []
        self.encodings: list[str | None] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                owner.connections += 1

            def do_GET(self) -> None:
                self.answer(STATUS)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.answer(PREDICTION)

            def answer(self, body: bytes) -> None:
                owner.requests += 1
                owner.user_agents.append(self.headers.get("user-agent", ""))
                owner.authorizations.append(self.headers.get("authorization"))
                owner.encodings.append(self.headers.get("accept-encoding"))
                if owner.hang_up:
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                if owner.say_close:
                    self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if owner.close_after_reply:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                owner.closed.release()

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_closed(self) -> None:
        """Until the server has closed one more connection (its FIN is on the way)."""
        assert self.closed.acquire(timeout=10), "the server closed no connection"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def status_server() -> Iterator[StatusServer]:
    server = StatusServer()
    yield server
    server.stop()


def call_status(client: Any) -> None:
    assert client.model_status("tiny").available


def call_predict(client: Any) -> None:
    """A POST, which no HTTP client sends twice by itself: a reused dead connection would fail it."""
    assert client.predict("tiny", {"x": ROW})["y"].shape == (1, 10)


def stay_idle(client: Any, seconds: float) -> None:
    """Let ``seconds`` pass with the client idle; an AsyncClient's event loop runs meanwhile, as a
    serving worker's does."""
    if hasattr(client, "loop"):
        client.loop.run_until_complete(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def test_idle_connections_are_reused(status_server: StatusServer, make_client: MakeClient) -> None:
    client = make_client(status_server.url, protocol="v2")
    for _ in range(5):
        call_predict(client)
    assert status_server.requests == 5
    assert status_server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(
    status_server: StatusServer, make_client: MakeClient
) -> None:
    status_server.close_after_reply = True
    client = make_client(status_server.url, protocol="v2")
    for _ in range(5):
        call_predict(client)
        status_server.wait_closed()  # the server's FIN reaches the connection idle in the pool
        stay_idle(client, 0.05)
    assert status_server.requests == 5
    assert status_server.connections == 5


def test_connection_close_from_the_server_is_honoured(
    status_server: StatusServer, make_client: MakeClient
) -> None:
    status_server.say_close = True
    client = make_client(status_server.url, protocol="v2")
    for _ in range(3):
        call_predict(client)  # no pause: the client itself must not reuse the connection
    assert status_server.connections == 3


def test_keepalive_expiry_retires_idle_connections(
    status_server: StatusServer, make_client: MakeClient
) -> None:
    client = make_client(status_server.url, protocol="v2", keepalive_expiry=1.0)
    call_predict(client)
    call_predict(client)
    assert status_server.connections == 1
    stay_idle(client, 1.5)
    call_predict(client)
    assert status_server.connections == 2


def test_every_call_carries_the_client_user_agent_unless_the_caller_sets_one(
    status_server: StatusServer, make_client: MakeClient
) -> None:
    url = status_server.url
    call_status(make_client(url))
    call_status(make_client(url, headers={"User-Agent": "my-gateway/2"}))
    assert status_server.user_agents[0].startswith("modelserve-client/")
    assert status_server.user_agents[1] == "my-gateway/2"


def test_replies_are_asked_for_uncompressed(status_server: StatusServer, make_client: MakeClient) -> None:
    """The codecs read the body as sent: a server that compresses when asked must not be asked."""
    call_predict(make_client(status_server.url, protocol="v2"))
    assert status_server.encodings == ["identity"]


def test_credentials_in_the_url_are_sent_as_basic_auth(
    status_server: StatusServer, make_client: MakeClient
) -> None:
    call_status(make_client(f"http://gateway:p%40ss@127.0.0.1:{status_server.port}/"))
    call_status(make_client(status_server.url))
    assert status_server.authorizations == ["Basic " + base64.b64encode(b"gateway:p@ss").decode(), None]


def test_a_connection_closed_before_any_reply_is_unavailable_and_says_so(
    status_server: StatusServer, make_client: MakeClient
) -> None:
    status_server.hang_up = True
    with pytest.raises(ModelServerError) as caught:
        call_status(make_client(status_server.url))
    assert caught.value.code == Code.UNAVAILABLE
    assert isinstance(caught.value.__cause__, ClosedBeforeReply)  # what the gateway's stale retry keys on


def test_a_body_over_the_server_limit_gets_its_413_not_a_lost_connection(
    start_server: Any, tiny_repo: Path, make_client: MakeClient
) -> None:
    """The model server answers 413 before reading an oversized body and closes: the client's send fails
    midway, and the reply waiting in its socket is still what the caller gets."""
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--max_request_body_bytes=65536"
    )
    client = make_client(server.url)
    rows = np.ones((20_000, 64), np.float32)  # ~25 MB of JSON: more than the socket buffers hold
    for _ in range(2):
        with pytest.raises(ModelServerError) as caught:
            client.predict("tiny", {"x": rows})
        assert caught.value.code == Code.RESOURCE_EXHAUSTED
        assert caught.value.http_status == 413
    assert client.predict("tiny", {"x": rows[:2]})["y"].shape == (2, 10)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[StatusServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = StatusServer(tls=context)
    yield server
    server.stop()


def test_https_verifies_the_server_against_the_trusted_roots(
    tls_server: StatusServer,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    make_client: MakeClient,
) -> None:
    url = f"https://127.0.0.1:{tls_server.port}"
    with pytest.raises(ModelServerError) as caught:
        call_status(make_client(url))  # self-signed: not among the system's roots
    assert caught.value.code == Code.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)

    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # OpenSSL's default roots: now this one
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    client = make_client(url)
    call_status(client)
    call_status(client)
    assert tls_server.requests == 2


def test_a_refused_connection_is_unavailable_and_says_nothing_was_sent(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ModelServerError) as caught:
            call_status(make_client(f"http://127.0.0.1:{port}"))
    assert caught.value.code == Code.UNAVAILABLE
    assert isinstance(caught.value.__cause__, ConnectFailed)
    assert "refused" in str(caught.value).lower() or "connect call failed" in str(caught.value).lower()
