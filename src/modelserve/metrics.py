"""Prometheus metrics of the model server, on TF Serving's ``--monitoring_config_file`` path.

One ``ServerMetrics`` per server owns its own registry (never the process-global one, so tests and
embedded servers do not collide). Components report through small observers the core defines
(``batching.batcher.BatchObserver``), so the core never imports prometheus_client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_SECONDS_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServerMetrics:
    """Every metric the server exports; ``render`` is the scrape body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "version")
        self.batch_size = Histogram(
            "modelserve_batch_size",
            "Rows per batch run (before padding), per model version.",
            labels,
            buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.padded_batch_size = Histogram(
            "modelserve_padded_batch_size",
            "Rows per batch run after padding to allowed_batch_sizes.",
            labels,
            buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_delay = Histogram(
            "modelserve_batch_queue_delay_seconds",
            "Time a request waited in the batch queue before its batch ran.",
            labels,
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.batch_run = Histogram(
            "modelserve_batch_run_seconds",
            "Time one batch took in the model runtime, merging and splitting included.",
            labels,
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelserve_batch_queue_rows",
            "Rows waiting in the batch queues of a model version.",
            labels,
            registry=self.registry,
        )
        self.rejected = Counter(
            "modelserve_batch_rejected",
            "Requests refused because the batch queue was full (RESOURCE_EXHAUSTED / HTTP 429).",
            labels,
            registry=self.registry,
        )

    def batch_observer(self, model: str, version: int) -> VersionBatchMetrics:
        return VersionBatchMetrics(self, model, str(version))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class VersionBatchMetrics:
    """The ``BatchObserver`` of one model version: label children bound once, removed on unload."""

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._labels = (model, version)
        self._size = metrics.batch_size.labels(*self._labels)
        self._padded = metrics.padded_batch_size.labels(*self._labels)
        self._delay = metrics.queue_delay.labels(*self._labels)
        self._run = metrics.batch_run.labels(*self._labels)
        self._rejected = metrics.rejected.labels(*self._labels)

    def batch_ran(
        self, rows: int, padded_rows: int, run_seconds: float, queue_delays: Sequence[float]
    ) -> None:
        self._size.observe(rows)
        self._padded.observe(padded_rows)
        self._run.observe(run_seconds)
        for delay in queue_delays:
            self._delay.observe(delay)

    def task_rejected(self) -> None:
        self._rejected.inc()

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self._metrics.queue_depth.labels(*self._labels).set_function(depth)

    def close(self) -> None:
        """The version is unloaded: its series disappear from the scrape."""
        m = self._metrics
        for metric in (m.batch_size, m.padded_batch_size, m.queue_delay, m.batch_run, m.queue_depth):
            with contextlib.suppress(KeyError):
                metric.remove(*self._labels)
        with contextlib.suppress(KeyError):
            m.rejected.remove(*self._labels)
