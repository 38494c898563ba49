"""Liveness and readiness: ``/healthz`` and ``/readyz`` on the REST port next to V2's, reflecting the
manager's state (the startup config's models), and turning not-ready first when shutdown begins."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from load_clients import wait_until_in_flight


def test_ready_when_every_model_has_an_available_version(start_server: Any, tiny_repo: Path) -> None:
    server = start_server("--model_name=tiny", f"--model_base_path={tiny_repo}")
    live = requests.get(f"{server.url}/healthz", timeout=10)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_not_ready_names_the_model_without_a_version(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'later' base_path: '{empty}' }}\n"
        "}\n"
    )
    server = start_server(f"--model_config_file={config}")
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert set(ready.json()["not_ready"]) == {"later"}
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 400  # Triton's answer


def test_a_model_added_by_a_reload_does_not_turn_readiness_off(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    """Readiness waits for the startup config's models only: a model added later that never loads is
    reported in /readyz's body and the status page, and the replica keeps serving."""
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ config {{ name: 'tiny' base_path: '{tiny_repo}' }} }}\n")
    server = start_server(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1")
    assert requests.get(f"{server.url}/readyz", timeout=10).json() == {"status": "ready"}
    empty = tmp_path / "empty"
    empty.mkdir()
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'never' base_path: '{empty}' }}\n"
        "}\n"
    )
    deadline = time.monotonic() + 30
    while True:  # the watcher polls every second
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        if "never" in ready.json().get("unavailable", {}):
            break
        assert time.monotonic() < deadline, "the reload never happened"
        time.sleep(0.05)
    assert ready.json()["unavailable"] == {"never": "no version found yet"}
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    status = requests.get(f"{server.url}/modelserve/status", timeout=10)
    assert "never" in status.text


def test_readiness_turns_off_at_sigterm_while_a_request_in_flight_still_completes(
    start_server: Any, tiny_repo: Path, tmp_path: Path, monitoring_flag: str
) -> None:
    """A real SIGTERM: /readyz answers 503 while a slow request is still running, which then gets 200."""
    parameters = tmp_path / "slow-batching.config"  # a lone request waits 3 s for its batch
    parameters.write_text("max_batch_size { value: 256 } batch_timeout_micros { value: 3000000 }")
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--enable_batching",
        f"--batching_parameters_file={parameters}", monitoring_flag, "--drain_timeout_seconds=20",
    )  # fmt: skip
    probe = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)  # kept alive

    def readiness() -> tuple[int, bytes]:
        probe.request("GET", "/readyz")
        reply = probe.getresponse()
        return reply.status, reply.read()

    assert readiness()[0] == 200
    slow: list[int] = []

    def predict() -> None:
        body = {"instances": np.zeros((1, 64)).tolist()}
        slow.append(requests.post(f"{server.url}/v1/models/tiny:predict", json=body, timeout=30).status_code)

    client = threading.Thread(target=predict)
    client.start()
    wait_until_in_flight(server.url, 1)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (answer := readiness())[0] == 200:
        assert time.monotonic() < deadline, "readiness never turned off"
        time.sleep(0.01)
    assert answer == (503, b'{"status":"not ready","not_ready":{"server":"shutting down"}}')
    assert not slow, "the slow request finished before readiness turned off: the test proves nothing"
    client.join(30)
    assert slow == [200]
    probe.close()
    assert server.process.wait(20) == 0


class _Manager:
    """The two reads Health makes of the manager, over a fixed list of version statuses."""

    def __init__(self, statuses: list[Any]) -> None:
        self.statuses = statuses

    def model_names(self) -> list[str]:
        return sorted({s.model for s in self.statuses})

    def all_statuses(self) -> list[Any]:
        return self.statuses


def test_a_startup_model_removed_by_a_reload_is_not_waited_for_while_it_unloads() -> None:
    from modelserve.core.version_state import VersionState, VersionStatus
    from modelserve.frontends.health import Health

    manager = _Manager(
        [VersionStatus("a", 1, VersionState.AVAILABLE), VersionStatus("b", 1, VersionState.AVAILABLE)]
    )
    health = Health(manager, required=["a", "b"])  # type: ignore[arg-type]
    assert health.ready()
    manager.statuses[1] = VersionStatus("b", 1, VersionState.UNLOADING)  # b left the config, still unloading
    assert health.not_ready() == {"b": "version 1 UNLOADING"}
    health.configured(["a"])
    assert health.ready(), health.not_ready()
    health.configured(["a", "b"])  # configured again: waited for again, as a startup model
    assert not health.ready()
