"""Graceful shutdown under load: SIGTERM while 16 clients keep a server busy loses no accepted request.

The model server answers every request after a known wait (a long batch timeout), so requests are in
flight when SIGTERM arrives. Every request whose connection was established must get a 200; the rest
are refused cleanly (connection refused or 503; with keep-alive clients, connection refused only); the
process exits 0 well within the drain timeout. At the drain deadline a request still running is
answered 503, not reset; the gateway's whole stop fits in its ``--graceful-timeout``.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from gateway_harness import DIGITS_HANDLER, GatewayProcess, write_handler
from load_clients import LoadClients, wait_until_in_flight

TINY_BODY = json.dumps({"instances": np.zeros((1, 64)).tolist()}).encode()
DIGITS_BODY = json.dumps({"pixels": np.ones((1, 64)).tolist()}).encode()


def stop_under_load(process: Any, load: LoadClients, exit_within: float) -> None:
    load.start()
    load.wait_for_successes(48)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(exit_within)
    load.join()
    assert code == 0
    assert time.monotonic() - stopped_at < exit_within
    load.check_nothing_lost(stopped_at)


def test_model_server_drains_in_flight_requests_on_sigterm(
    start_server: Any, slow_server_flags: list[str]
) -> None:
    server = start_server(*slow_server_flags, "--log_format=json", "--drain_timeout_seconds=20")
    load = LoadClients(f"{server.url}/v1/models/tiny:predict", TINY_BODY)
    stop_under_load(server.process, load, exit_within=20)
    events = [json.loads(line).get("event") for line in server.log().splitlines() if line.startswith("{")]
    order = ["shutdown_start", "shutdown_drained", "version_unloading", "version_unloaded", "shutdown_done"]
    assert [e for e in events if e in order] == order


def test_gateway_drains_in_flight_requests_on_sigterm(
    start_server: Any, slow_server_flags: list[str], digits_repo: Path, tmp_path: Path
) -> None:
    flags = [f for f in slow_server_flags if not f.startswith("--model_")]
    server = start_server("--model_name=digits", f"--model_base_path={digits_repo}", *flags)
    handler = write_handler(tmp_path, DIGITS_HANDLER, "ops_digits_handler.py")
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess(
        [str(handler), "--model-server", server.url, "--workers", "2", "--graceful-timeout", "20"], workdir
    ).start()
    try:
        load = LoadClients(f"{gateway.url}/predict", DIGITS_BODY)
        assert gateway.process is not None
        stop_under_load(gateway.process, load, exit_within=25)
    finally:
        gateway.kill()


def test_model_server_drains_keep_alive_clients_on_sigterm(
    start_server: Any, slow_server_flags: list[str]
) -> None:
    """Pooled clients: a request on a connection the server had accepted is answered (200, then
    ``connection: close``), never met with a reset or a 503."""
    server = start_server(*slow_server_flags, "--drain_timeout_seconds=20")
    load = LoadClients(f"{server.url}/v1/models/tiny:predict", TINY_BODY, keep_alive=True)
    stop_under_load(server.process, load, exit_within=20)


def test_a_request_still_running_at_the_drain_deadline_is_answered_503(
    start_server: Any, tiny_repo: Path, tmp_path: Path, monitoring_flag: str
) -> None:
    parameters = tmp_path / "slow-batching.config"  # one request waits 30 s for its batch: past the drain
    parameters.write_text("max_batch_size { value: 256 } batch_timeout_micros { value: 30000000 }")
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--enable_batching",
        f"--batching_parameters_file={parameters}", monitoring_flag, "--drain_timeout_seconds=1",
    )  # fmt: skip
    answers: list[tuple[int, bytes] | str] = []

    def send() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        try:
            connection.request("POST", "/v1/models/tiny:predict", TINY_BODY)
            reply = connection.getresponse()
            answers.append((reply.status, reply.read()))
        except (OSError, http.client.HTTPException) as error:
            answers.append(f"lost: {error!r}")
        finally:
            connection.close()

    client = threading.Thread(target=send)
    client.start()
    wait_until_in_flight(server.url, 1)
    stopped_at = time.monotonic()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) == 0
    client.join(10)
    assert len(answers) == 1
    assert answers[0][0] == 503, answers  # not a reset: the reply was flushed before the connection closed
    assert b"shutting down" in answers[0][1]  # type: ignore[operator]
    assert time.monotonic() - stopped_at < 15


SLEEPY_HANDLER = """
import time

MODEL = "unused"


def preprocess(request):
    time.sleep(600)  # the worker stays busy past any graceful timeout


def postprocess(request, outputs):
    return outputs
"""


def test_the_gateway_stop_fits_in_its_graceful_timeout(tmp_path: Path) -> None:
    """A busy worker and a connection the kernel queued: the drain and Gunicorn's own wait for the worker
    share one deadline (it used to be two graceful timeouts in a row)."""
    handler = write_handler(tmp_path, SLEEPY_HANDLER, "ops_sleepy_handler.py")
    grace = 3
    gateway = GatewayProcess(
        [str(handler), "--model-server", "http://127.0.0.1:9", "--workers", "1", "--worker-class", "sync",
         "--graceful-timeout", str(grace)],
        tmp_path,
    ).start()  # fmt: skip
    busy = socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])))
    queued = socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])))
    try:
        # The one worker takes this request (now or during the drain) and sleeps; `queued` stays queued.
        busy.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert gateway.process is not None
        stopped_at = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(4 * grace)
        elapsed = time.monotonic() - stopped_at
    finally:
        busy.close()
        queued.close()
        gateway.kill()
    assert elapsed < grace + 1.5, f"stopped after {elapsed:.1f} s, --graceful-timeout {grace}"


def test_stack_drains_every_tier_on_sigterm(slow_server_flags: list[str], tmp_path: Path) -> None:
    """SIGTERM to ``modelserve stack`` under load: the gateway drains first, then the model server; every
    request the gateway accepted is answered 200, and the stack exits 0."""
    from stack.stack_support import TINY_HANDLER, StackRun

    handler = write_handler(tmp_path, TINY_HANDLER, "ops_stack_handler.py")
    serve_args = [f"--serve-arg={flag}" for flag in slow_server_flags if not flag.startswith("--model_")]
    models = [flag for flag in slow_server_flags if flag.startswith("--model_")]
    run = StackRun(
        [str(handler), *models, *serve_args, "--rest_api_port=0", "--grpc_port=0", "--port=0",
         "--workers=2", "--worker-class=gthread", "--graceful-timeout=20"],
        tmp_path / "stack",
    )  # fmt: skip
    run.workdir.mkdir()
    run.start()
    try:
        load = LoadClients(f"{run.url}/predict", json.dumps({"x": [0.5] * 64}).encode())
        assert run.process is not None
        stop_under_load(run.process, load, exit_within=40)
    finally:
        run.kill()
