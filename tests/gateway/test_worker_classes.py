"""Every worker class over REST and gRPC, end to end: real model server, real Gunicorn, real HTTP.

One gateway per (worker class, transport) serves every test of this module; its answers are checked
against ONNX Runtime run in-process on the same model file.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gateway_harness import GatewayProcess, Reference, pixels

COMBINATIONS = [
    ("sync", "rest"),
    ("gthread", "rest"),
    ("gevent", "rest"),
    ("asyncio", "rest"),
    ("sync", "grpc"),
    ("gthread", "grpc"),
    ("gevent", "grpc"),
    ("asyncio", "grpc"),
]
MAX_BODY = 65536
MiB = 1024 * 1024


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda combination: "-".join(combination))
def gateway(
    request: pytest.FixtureRequest,
    digits_server: Any,
    digits_handler: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    worker_class, transport = request.param
    if transport == "rest":
        upstream = [digits_server.url]
    else:
        upstream = [f"grpc://{digits_server.grpc_target}", "--model-server-rest", digits_server.url]
    gateway = GatewayProcess(
        [
            str(digits_handler),
            "--worker-class", worker_class, "--workers", "2", "--threads", "4",
            "--model-server", *upstream, "--max-body-bytes", str(MAX_BODY), "--timeout", "10",
        ],
        tmp_path_factory.mktemp(f"gateway-{worker_class}-{transport}"),
    ).start()  # fmt: skip
    yield gateway
    code = gateway.stop()
    assert code == 0, f"gateway exited with {code}:\n{gateway.log()}"


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def test_concurrent_clients_get_their_own_answers(gateway: GatewayProcess, reference: Reference) -> None:
    def client(thread: int) -> list[tuple[np.ndarray, int, Any]]:
        answers = []
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            for index in range(20):
                inputs = pixels(1000 * thread + index, rows=1 + index % 3)
                reply = http.post("/predict", json={"pixels": inputs.tolist()})
                answers.append((inputs, reply.status_code, reply.json()))
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [answer for batch in pool.map(client, range(16)) for answer in batch]
    assert len(answers) == 320
    for inputs, status, body in answers:
        assert status == 200, body
        expected = reference(inputs)
        assert body["classes"] == expected["classes"].tolist()
        np.testing.assert_allclose(body["probabilities"], expected["probabilities"], rtol=1e-6, atol=1e-9)
        assert body["setup_pid"] == body["pid"]  # setup() ran in the worker that answered, after fork
    assert len({body["classes"][0] for _, _, body in answers}) > 3  # distinct inputs, distinct answers


def test_handler_and_model_errors(http: httpx.Client, digits_server: Any) -> None:
    # The model server's own messages, asked directly over REST, are what the gateway must pass on.
    zeros = [[0.0] * 64]
    direct = f"{digits_server.url}/v1/models"
    shape_message = httpx.post(f"{direct}/digits:predict", json={"inputs": [[1.0, 2.0]]}).json()["error"]
    missing_message = httpx.post(f"{direct}/nope:predict", json={"inputs": zeros}).json()["error"]
    cases = [
        ("/predict", {"nope": 1}, 400, "send {'pixels': [[64 numbers]]}"),
        ("/boom", {}, 500, "handler error: RuntimeError: handler bug"),
        ("/predict", {"pixels": [[1, 2]]}, 400, shape_message),  # the model rejects the shape
        ("/predict", {"pixels": zeros, "model": "nope"}, 404, missing_message),
    ]
    for path, body, status, message in cases:
        reply = http.post(path, json=body)
        assert (reply.status_code, reply.json()) == (status, {"error": message}), path
        assert reply.headers["content-type"] == "application/json"
        # The worker keeps serving after every failure, a handler bug included.
        assert http.post("/predict", json={"pixels": pixels(7).tolist()}).status_code == 200
    malformed = http.post("/predict", content=b"{bad", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("request body is not valid JSON")


def test_methods_body_limit_and_raw_responses(http: httpx.Client) -> None:
    reply = http.get("/predict")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert "error" in reply.json()
    reply = http.post("/healthz", content=b"{}")
    assert reply.status_code == 405 and reply.headers["allow"] == "GET"

    # Bodies over the limit are read and dropped, so the client gets the 413, not a reset connection.
    too_big = b'{"pixels": "' + b"x" * (16 * MAX_BODY) + b'"}'
    reply = http.post("/predict", content=too_big)
    assert reply.status_code == 413 and str(MAX_BODY) in reply.json()["error"]
    chunked = http.post("/predict", content=iter([too_big[:1000], too_big[1000:]]))  # no Content-Length
    assert chunked.status_code == 413
    assert http.post("/predict", json={"pixels": pixels(3).tolist()}).status_code == 200

    text = http.post("/text", json={"pixels": pixels(4).tolist()})
    assert (text.status_code, text.text, text.headers["content-type"]) == (200, "ok", "text/plain")
    assert text.headers["x-handler"] == "text"


def test_health_readiness_and_memory(http: httpx.Client, gateway: GatewayProcess, digits_server: Any) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "model": "digits"}

    stats = http.get("/stats").json()
    tier = stats["gateway"]
    assert tier["master"]["pid"] == gateway.pid
    workers = tier["workers"]
    assert len(workers) == 2 and tier["served_by"] in {worker["pid"] for worker in workers}
    server = stats["model_server"]
    assert server["url"] == digits_server.url
    assert server["process"]["pid"] == digits_server.process.pid
    server_rss = server["process"]["rss_bytes"]
    for worker in workers:
        # No model in a web worker: its fair share of memory is far below the model server's.
        assert 0 < worker["pss_bytes"] < 100 * MiB, worker
        assert worker["pss_bytes"] < server_rss, (worker, server)
        assert worker["rss_bytes"] >= worker["pss_bytes"]
    expected_total = tier["pss_bytes"] + server["process"]["pss_bytes"]
    assert stats["total_pss_bytes"] == expected_total
