"""Prometheus metrics of the model server, on TF Serving's ``--monitoring_config_file`` path.

One ``ServerMetrics`` per server owns its own registry (never the process-global one, so tests and
embedded servers do not collide). Components report through small observers the core defines
(``batching.batcher.BatchObserver``), so the core never imports prometheus_client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from modelserve.core.version_state import VersionStatus

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

    def watch_versions(self, statuses: Callable[[], list[VersionStatus]], budget_bytes: int | None) -> None:
        """Export every version's state and memory, read from the manager at scrape time."""
        self.registry.register(_VersionCollector(statuses, budget_bytes))

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


class _VersionCollector:
    """Scrape-time view of the manager: no bookkeeping on load/unload paths, nothing stale."""

    def __init__(self, statuses: Callable[[], list[VersionStatus]], budget_bytes: int | None) -> None:
        self._statuses = statuses
        self._budget = budget_bytes

    def collect(self) -> Iterator[Metric]:
        statuses = self._statuses()
        state = GaugeMetricFamily(
            "modelserve_model_version_state",
            "1 for the state each known model version is in (START, LOADING, AVAILABLE, UNLOADING, END).",
            labels=("model", "version", "state"),
        )
        failed = GaugeMetricFamily(
            "modelserve_model_version_failed",
            "1 when the version's last load failed (its error is in the model status).",
            labels=("model", "version"),
        )
        memory = GaugeMetricFamily(
            "modelserve_model_memory_bytes",
            "Host memory a loaded model version holds, as its runtime reports it.",
            labels=("model", "version"),
        )
        for status in statuses:
            labels = [status.model, str(status.version)]
            state.add_metric([*labels, status.state.value], 1)
            failed.add_metric(labels, 1 if status.error_message else 0)
            if status.memory_bytes:
                memory.add_metric(labels, status.memory_bytes)
        used = GaugeMetricFamily(
            "modelserve_model_memory_used_bytes", "Host memory held by every loaded model version."
        )
        used.add_metric([], sum(s.memory_bytes for s in statuses))
        yield from (state, failed, memory, used)
        if self._budget is not None:
            budget = GaugeMetricFamily("modelserve_memory_budget_bytes", "--memory_budget, in bytes.")
            budget.add_metric([], self._budget)
            yield budget
