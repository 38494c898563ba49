"""The gateway's ``GET /metrics``: counts summed over every Gunicorn worker, upstream call times, and a
per-run multiprocess folder that is removed when the gateway stops."""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from gateway_harness import DIGITS_HANDLER, GatewayProcess, write_handler
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = requests.get(f"{url}/metrics", timeout=10)
    assert reply.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def test_gateway_metrics_sum_every_worker(start_server: Any, digits_repo: Path, tmp_path: Path) -> None:
    server = start_server("--model_name=digits", f"--model_base_path={digits_repo}")
    handler = write_handler(tmp_path, DIGITS_HANDLER, "ops_metrics_handler.py")
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess([str(handler), "--model-server", server.url, "--workers", "2"], workdir).start()
    try:
        assert gateway.process is not None
        workers = [child.pid for child in psutil.Process(gateway.process.pid).children()]
        (gauges,) = Path(tempfile.gettempdir()).glob(
            f"modelserve-gateway-metrics-*/gauge_livesum_{workers[0]}.db"
        )
        folder = gauges.parent
        assert folder.is_dir()
        body = {"pixels": np.ones((1, 64)).tolist()}
        pids = set()
        sent = 0

        def send(_: int) -> int:
            reply = requests.post(
                f"{gateway.url}/predict", json=body, headers={"Connection": "close"}, timeout=10
            )
            assert reply.status_code == 200
            pid: int = reply.json()["pid"]
            return pid

        # Concurrent requests on new connections: while one sync worker is busy, the other accepts.
        with ThreadPoolExecutor(8) as pool:
            while len(pids) < 2 or sent < 20:
                pids.update(pool.map(send, range(16)))
                sent += 16
                assert sent < 1000, "one worker took every request"
        bad = requests.post(f"{gateway.url}/predict", json={"nothing": 1}, timeout=10)
        assert bad.status_code == 400
        samples = scrape(gateway.url)
        total = "modelserve_gateway_requests_total"
        assert samples[(total, (("code", "200"), ("method", "POST"), ("route", "handler")))] == sent
        assert samples[(total, (("code", "400"), ("method", "POST"), ("route", "handler")))] == 1
        upstream = (
            "modelserve_gateway_upstream_seconds_count",
            (("operation", "predict"), ("outcome", "ok")),
        )
        assert samples[upstream] == sent
        duration = ("modelserve_gateway_request_duration_seconds_count", (("route", "handler"),))
        assert samples[duration] == sent + 1
        # the scrape being answered counts itself as in flight, in whichever worker it reached
        assert samples[("modelserve_gateway_requests_in_flight", ())] == 1
        assert len(list(folder.glob("*.db"))) >= 2  # one file set per worker
    finally:
        assert gateway.stop() == 0
    assert not folder.exists()


def test_a_dead_workers_counts_stay_and_its_files_go(
    start_server: Any, digits_repo: Path, tmp_path: Path
) -> None:
    """Worker restarts must not pile files up in the (memory-backed) temp folder, nor lose counts; a
    made-up method is counted as ``other``."""
    server = start_server("--model_name=digits", f"--model_base_path={digits_repo}")
    handler = write_handler(tmp_path, DIGITS_HANDLER, "ops_restart_handler.py")
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess([str(handler), "--model-server", server.url, "--workers", "1"], workdir).start()
    try:
        assert gateway.process is not None
        master = psutil.Process(gateway.process.pid)
        (first,) = [child.pid for child in master.children()]
        (gauges,) = Path(tempfile.gettempdir()).glob(f"modelserve-gateway-metrics-*/gauge_livesum_{first}.db")
        folder = gauges.parent
        body = {"pixels": np.ones((1, 64)).tolist()}
        for _ in range(3):
            assert requests.post(f"{gateway.url}/predict", json=body, timeout=10).status_code == 200
        assert requests.request("BREW", f"{gateway.url}/predict", timeout=10).status_code in (400, 405)
        psutil.Process(first).kill()
        deadline = time.monotonic() + 30
        while not (set(child.pid for child in master.children()) - {first}):
            assert time.monotonic() < deadline, "Gunicorn did not restart the worker"
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while True:  # the new worker boots
            try:
                if requests.get(f"{gateway.url}/healthz", timeout=10).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the new worker never answered"
            time.sleep(0.05)
        assert not list(folder.glob(f"*_{first}.db")), sorted(p.name for p in folder.iterdir())
        samples = scrape(gateway.url)
        total = "modelserve_gateway_requests_total"
        assert samples[(total, (("code", "200"), ("method", "POST"), ("route", "handler")))] == 3
        methods = {dict(labels)["method"] for name, labels in samples if name == total}
        assert "BREW" not in methods and "other" in methods
    finally:
        assert gateway.stop() == 0


def test_constructing_the_gateway_application_changes_nothing_in_the_process(tmp_path: Path) -> None:
    """Multiprocess mode is set up around the master's run only: an embedder's process is left alone."""
    from prometheus_client import values

    from modelserve.gateway.gunicorn_app import GatewayApplication
    from modelserve.gateway.options import GatewayOptions

    handler = write_handler(tmp_path, DIGITS_HANDLER, "ops_embedded_handler.py")
    environment, value_class = dict(os.environ), values.ValueClass
    GatewayApplication(GatewayOptions(handler=str(handler)))
    assert dict(os.environ) == environment
    assert values.ValueClass is value_class
