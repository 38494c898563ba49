"""The gateway's Prometheus metrics, summed over every Gunicorn worker: ``GET /metrics`` on its port.

Each worker is its own process, so a scrape that reaches one worker must still report all of them. The
gateway uses prometheus_client's multiprocess mode: the Gunicorn master makes a fresh folder per run and
puts it in ``PROMETHEUS_MULTIPROC_DIR`` before forking (the workers inherit it); every worker writes its
samples to memory-mapped files there, a scrape merges the files of all workers (`MultiProcessCollector`),
a worker that exits is marked dead (its in-flight gauge leaves the sum, its counters stay), and the
folder is removed when the gateway stops. Without that variable (an app embedded elsewhere, tests) the
metrics are the process's own.

Exported: ``modelserve_gateway_requests_total{route,method,code}``,
``modelserve_gateway_request_duration_seconds{route}``, ``modelserve_gateway_requests_in_flight``,
``modelserve_gateway_upstream_seconds{operation,outcome}`` (calls to the model server, retries included).
``route`` is the gateway's own path (``/healthz``, ``/readyz``, ``/stats``, ``/metrics``) or ``handler``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OWN_ROUTES = frozenset({"/healthz", "/readyz", "/stats", "/metrics"})
T = TypeVar("T")
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def make_multiprocess_dir() -> Path:
    """A fresh folder for this run's worker files, exported in ``PROMETHEUS_MULTIPROC_DIR`` (call in the
    master, before the workers are forked)."""
    folder = Path(tempfile.mkdtemp(prefix="modelserve-gateway-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus_client picks its value class when imported: pick again, now that the folder is set.
    values.ValueClass = values.get_value_class()
    return folder


def remove_multiprocess_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """Gunicorn's child_exit hook: the worker's live gauges leave the sums."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def route_of(path: str) -> str:
    """The ``route`` label: a bounded set, whatever paths clients send."""
    return path if path in OWN_ROUTES else "handler"


class GatewayMetrics:
    """The metrics of one worker; `render` answers for every worker of the gateway."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Multiprocess values live in files, not in a registry; otherwise this process's own registry.
        self._registry = None if self.multiprocess else CollectorRegistry()
        self.requests = Counter(
            "modelserve_gateway_requests",
            "Requests the gateway answered, by route, method and HTTP status.",
            ("route", "method", "code"),
            registry=self._registry,
        )
        self.duration = Histogram(
            "modelserve_gateway_request_duration_seconds",
            "Time from a request's arrival in the app to its reply, by route.",
            ("route",),
            buckets=_SECONDS,
            registry=self._registry,
        )
        self.in_flight = Gauge(
            "modelserve_gateway_requests_in_flight",
            "Requests being handled now, summed over the live workers.",
            registry=self._registry,
            multiprocess_mode="livesum",
        )
        self.upstream = Histogram(
            "modelserve_gateway_upstream_seconds",
            "Time of each call to the model server (retries included), by operation and outcome.",
            ("operation", "outcome"),
            buckets=_SECONDS,
            registry=self._registry,
        )

    def request_done(self, path: str, method: str, status: int, seconds: float) -> None:
        route = route_of(path)
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


def _operation(op: Any) -> str:
    return {"Predict": "predict", "CheckReady": "ready"}.get(type(op).__name__, "memory")


def timed(execute: Callable[[Any], T], metrics: GatewayMetrics) -> Callable[[Any], T]:
    """``execute`` (a blocking upstream's) that records each call's time on ``metrics.upstream``."""

    def run(op: Any) -> T:
        started, outcome = time.perf_counter(), "error"
        try:
            result = execute(op)
            outcome = "ok"
            return result
        finally:
            metrics.upstream.labels(_operation(op), outcome).observe(time.perf_counter() - started)

    return run


def timed_async(
    execute: Callable[[Any], Awaitable[T]], metrics: GatewayMetrics
) -> Callable[[Any], Awaitable[T]]:
    """The asyncio upstream's ``execute``, timed like `timed`."""

    async def run(op: Any) -> T:
        started, outcome = time.perf_counter(), "error"
        try:
            result = await execute(op)
            outcome = "ok"
            return result
        finally:
            metrics.upstream.labels(_operation(op), outcome).observe(time.perf_counter() - started)

    return run
