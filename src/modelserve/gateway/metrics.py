"""The gateway's Prometheus metrics, summed over every Gunicorn worker: ``GET /metrics`` on its port.

Each worker is its own process, so a scrape that reaches one worker must still report all of them. The
gateway uses prometheus_client's multiprocess mode, set up only in the process that runs the gateway
(`multiprocess_folder`, around the Gunicorn master's run: constructing the application changes nothing):
a fresh folder per run goes in ``PROMETHEUS_MULTIPROC_DIR`` before the workers are forked (they inherit
it); every worker writes its samples to memory-mapped files there, and a scrape merges the files of all
workers (`MultiProcessCollector`). When a worker exits (`worker_exited`, from Gunicorn's ``child_exit``)
its in-flight gauge leaves the sum and its counts are merged into one archive file per type, so worker
restarts do not pile files up in the (memory-backed) temp folder. The folder is removed and the
environment restored when the gateway stops. Without that variable (an app embedded elsewhere, tests)
the metrics are the process's own.

Exported: ``modelserve_gateway_requests_total{route,method,code}``,
``modelserve_gateway_request_duration_seconds{route}``, ``modelserve_gateway_requests_in_flight``,
``modelserve_gateway_upstream_seconds{operation,outcome}`` (calls to the model server, retries included).
``route`` is the gateway's own path (``/healthz``, ``/readyz``, ``/stats``, ``/metrics``) or ``handler``;
``method`` an HTTP method or ``other``: clients cannot create series.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OWN_ROUTES = frozenset({"/healthz", "/readyz", "/stats", "/metrics"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_ARCHIVED_TYPES = ("counter", "histogram")  # additive: a dead worker's values can be summed into one file
T = TypeVar("T")
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@contextlib.contextmanager
def multiprocess_folder() -> Iterator[Path]:
    """Multiprocess mode for the workers forked inside: a fresh folder in ``PROMETHEUS_MULTIPROC_DIR``.

    On exit (in the process that entered; forked workers leave through it too and change nothing) the
    folder is removed and the environment and prometheus_client's value class are restored."""
    owner, previous, value_class = os.getpid(), os.environ.get(MULTIPROC_ENV), values.ValueClass
    folder = Path(tempfile.mkdtemp(prefix="modelserve-gateway-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus_client picks its value class when imported: pick again, now that the folder is set.
    values.ValueClass = values.get_value_class()
    try:
        yield folder
    finally:
        if os.getpid() == owner:
            shutil.rmtree(folder, ignore_errors=True)
            values.ValueClass = value_class
            if previous is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous


def worker_exited(pid: int) -> None:
    """Gunicorn's child_exit hook (in the master): the worker's live gauges leave the sums, and its counts
    move into the archive files, so the folder holds the files of the live workers plus one per type."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, folder)
    # Exclusive: a scrape (shared lock) never sees a worker's file both merged and still there (counted
    # twice) or listed and then gone (an error).
    with _folder_lock(folder, fcntl.LOCK_EX):
        for kind in _ARCHIVED_TYPES:
            dead = Path(folder) / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = MmapedDict(str(Path(folder) / f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                    archive.write_value(key, archive.read_value(key)[0] + value, timestamp)
            finally:
                archive.close()
            dead.unlink()


@contextlib.contextmanager
def _folder_lock(folder: str, mode: int) -> Iterator[None]:
    """An flock on ``<folder>/.merge.lock``: exclusive while a dead worker's files are merged, shared
    while a scrape reads the folder."""
    with open(os.path.join(folder, ".merge.lock"), "a+b") as lock:
        fcntl.flock(lock, mode)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def route_of(path: str) -> str:
    """The ``route`` label: a bounded set, whatever paths clients send."""
    return path if path in OWN_ROUTES else "handler"


def method_of(method: str) -> str:
    """The ``method`` label: an HTTP method, or ``other`` for whatever else a client sends."""
    return method if method in METHODS else "other"


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
        self.requests.labels(route, method_of(method), str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        from prometheus_client import multiprocess

        folder = os.environ[MULTIPROC_ENV]
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, folder)
        with _folder_lock(folder, fcntl.LOCK_SH):
            return generate_latest(registry)


def _operation(op: Any) -> str:
    return {"Predict": "predict", "CheckReady": "ready"}.get(type(op).__name__, "memory")


class _UpstreamTimer:
    """One upstream call's time, recorded on ``metrics.upstream`` when the ``with`` block ends."""

    __slots__ = ("_metrics", "_op", "_started", "ok")

    def __init__(self, metrics: GatewayMetrics, op: Any) -> None:
        self._metrics, self._op, self.ok = metrics, op, False

    def __enter__(self) -> _UpstreamTimer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        outcome = "ok" if self.ok else "error"
        self._metrics.upstream.labels(_operation(self._op), outcome).observe(
            time.perf_counter() - self._started
        )


def timed(execute: Callable[[Any], T], metrics: GatewayMetrics) -> Callable[[Any], T]:
    """``execute`` (a blocking upstream's) that records each call's time on ``metrics.upstream``."""

    def run(op: Any) -> T:
        with _UpstreamTimer(metrics, op) as timer:
            result = execute(op)
            timer.ok = True
            return result

    return run


def timed_async(
    execute: Callable[[Any], Awaitable[T]], metrics: GatewayMetrics
) -> Callable[[Any], Awaitable[T]]:
    """The asyncio upstream's ``execute``, timed like `timed`."""

    async def run(op: Any) -> T:
        with _UpstreamTimer(metrics, op) as timer:
            result = await execute(op)
            timer.ok = True
            return result

    return run
