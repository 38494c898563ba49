"""The gateway's ``GET /metrics``: counts summed over every Gunicorn worker, upstream call times, and a
per-run multiprocess folder that is removed when the gateway stops."""

from __future__ import annotations

import tempfile
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
        while len(pids) < 2 or sent < 20:  # new connections: the kernel spreads them over the workers
            reply = requests.post(
                f"{gateway.url}/predict", json=body, headers={"Connection": "close"}, timeout=10
            )
            assert reply.status_code == 200
            pids.add(reply.json()["pid"])
            sent += 1
            assert sent < 500, "one worker took every request"
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
