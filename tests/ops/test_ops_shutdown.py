"""Graceful shutdown under load: SIGTERM while 16 clients keep a server busy loses no accepted request.

The model server answers every request after a known wait (a long batch timeout), so requests are in
flight when SIGTERM arrives. Every request whose connection was established must get a 200; the rest
are refused cleanly (connection refused or 503); the process exits 0 well within the drain timeout.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from gateway_harness import DIGITS_HANDLER, GatewayProcess, write_handler
from load_clients import LoadClients

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
