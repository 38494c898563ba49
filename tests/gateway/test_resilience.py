"""The gateway when the model server is away, slow, or not ready yet, and when the handler is broken."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import GatewayProcess, Reference, pixels, write_handler

from modelserve.demo.models import write_digits_classifier

TIMEOUT = 5.0


def predict(gateway: GatewayProcess, seed: int = 0) -> httpx.Response:
    return httpx.post(f"{gateway.url}/predict", json={"pixels": pixels(seed).tolist()}, timeout=30)


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_model_server_down_is_503_and_recovery_is_automatic(
    start_server: Any, start_gateway: Any, digits_repo: Path, digits_handler: Path, reference: Reference
) -> None:
    server = start_server("--model_name=digits", f"--model_base_path={digits_repo}")
    rest, grpc_target = server.url, f"grpc://{server.grpc_target}"
    timeout = ["--timeout", str(TIMEOUT), "--retries", "2"]
    gateways = {
        "sync-rest": start_gateway(str(digits_handler), "--model-server", rest, *timeout),
        "asyncio-grpc": start_gateway(
            str(digits_handler), "--worker-class", "asyncio", "--model-server", grpc_target, *timeout
        ),
        "gevent-grpc": start_gateway(
            str(digits_handler), "--worker-class", "gevent", "--model-server", grpc_target, *timeout
        ),
    }
    for gateway in gateways.values():
        assert predict(gateway).status_code == 200
    rest_port, grpc_port = server.rest_port, server.grpc_port
    assert server.stop() == 0

    for name, gateway in gateways.items():
        started = time.monotonic()
        reply = predict(gateway)
        elapsed = time.monotonic() - started
        assert reply.status_code == 503, (name, reply.text)
        assert reply.json()["error"], name
        assert elapsed < TIMEOUT, (name, elapsed)  # refused at once, retried twice, answered
        ready = httpx.get(f"{gateway.url}/readyz")
        assert ready.status_code == 503 and ready.json()["error"].startswith("model server: UNAVAILABLE")
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # the gateway itself is fine

    # The model server comes back on the same ports: every gateway recovers without a restart.
    start_server(
        "--model_name=digits", f"--model_base_path={digits_repo}",
        "--ephemeral_ports=false", f"--rest_api_port={rest_port}", f"--port={grpc_port}",
    )  # fmt: skip
    for name, gateway in gateways.items():
        # Each worker has its own connection; a gRPC channel retries on its own schedule (at most 1 s).
        wait_for(lambda gateway=gateway: predict(gateway).status_code == 200, timeout=15)
        wait_for(lambda gateway=gateway: httpx.get(f"{gateway.url}/readyz").status_code == 200, timeout=15)
        for seed in range(8):  # both workers answer again
            reply = predict(gateway, seed=seed)
            assert reply.json()["classes"] == reference(pixels(seed))["classes"].tolist(), name


@pytest.fixture
def slow_server(start_server: Any, digits_repo: Path, tmp_path: Path) -> Any:
    """A model server that holds a lone request 2 s (its batch waits for more): slower than the gateway's
    0.5 s timeout. One per test: a request a test gave up on would fill the next test's batch."""
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 2000000 }")
    return start_server(
        "--model_name=digits", f"--model_base_path={digits_repo}",
        "--enable_batching", f"--batching_parameters_file={batching}",
    )  # fmt: skip


@pytest.mark.parametrize(("worker_class", "transport"), [("sync", "rest"), ("asyncio", "grpc")])
def test_a_model_server_past_the_timeout_is_504(
    start_gateway: Any, digits_handler: Path, slow_server: Any, worker_class: str, transport: str
) -> None:
    upstream = slow_server.url if transport == "rest" else f"grpc://{slow_server.grpc_target}"
    gateway = start_gateway(
        str(digits_handler), "--worker-class", worker_class, "--timeout", "0.5",
        "--model-server", upstream, "--workers", "1",
    )  # fmt: skip
    started = time.monotonic()
    reply = predict(gateway)
    assert reply.status_code == 504, reply.text
    assert time.monotonic() - started < 1.9  # the gateway gave up; the batch was still waiting
    assert reply.json()["error"]


def test_readyz_is_503_until_the_model_has_a_version(
    start_server: Any, start_gateway: Any, digits_repo: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later"
    later.mkdir()
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' }}\n"
        f"  config {{ name: 'later' base_path: '{later}' }}\n"
        "}\n"
    )
    server = start_server(
        f"--model_config_file={config}", "--file_system_poll_wait_seconds=1", "--version_settle_seconds=0.1"
    )
    handler = write_handler(
        tmp_path,
        """
        import numpy as np
        MODEL = "later"
        def preprocess(request):
            return {"images": np.asarray(request.json()["pixels"], np.float32)}
        def postprocess(request, outputs):
            return {"classes": outputs["classes"]}
        """,
        "later_handler.py",
    )
    gateway = start_gateway(str(handler), "--model-server", server.url, "--workers", "1")
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 503, ready.text
    assert "later" in ready.json()["error"]

    write_digits_classifier(later, version=1)
    wait_for(lambda: httpx.get(f"{gateway.url}/readyz").status_code == 200, timeout=20)
    assert predict(gateway).status_code == 200


def run_gateway_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "gateway", *args, "--bind", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_handler_fails_at_startup_with_a_clear_error(tmp_path: Path) -> None:
    done = run_gateway_command(str(tmp_path / "missing.py"))
    assert done.returncode == 2
    assert "modelserve gateway: error: handler file" in done.stderr and "does not exist" in done.stderr

    no_model = write_handler(tmp_path, "def preprocess(r): ...\ndef postprocess(r, o): ...\n", "no_model.py")
    done = run_gateway_command(str(no_model))
    assert done.returncode == 2 and "set MODEL = " in done.stderr

    broken = write_handler(tmp_path, "import not_a_module_anywhere\n", "broken.py")
    done = run_gateway_command(str(broken))
    assert done.returncode == 2 and "ModuleNotFoundError" in done.stderr

    # setup() runs in each worker: when it fails, Gunicorn stops rather than serve without it.
    failing = write_handler(
        tmp_path,
        """
        MODEL = "digits"
        def setup():
            raise RuntimeError("no tokenizer here")
        def preprocess(request): ...
        def postprocess(request, outputs): ...
        """,
        "failing_setup.py",
    )
    ready = tmp_path / "ready.json"
    done = run_gateway_command(str(failing), "--workers", "1", "--ready-file", str(ready))
    assert done.returncode == 3, done.stderr  # Gunicorn's "worker failed to boot"
    assert "no tokenizer here" in done.stderr and not ready.exists()
