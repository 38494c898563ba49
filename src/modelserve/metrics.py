"""Prometheus metrics of the model server, on TF Serving's ``--monitoring_config_file`` path.

One ``ServerMetrics`` per server owns its own registry (never the process-global one, so tests and
embedded servers do not collide). Components report through small observers the core defines
(``batching.batcher.BatchObserver``), so the core never imports prometheus_client.

Requests are counted by `RequestMetrics`, on the hot path of every front-end: an observation is a dict
lookup and two integer additions, no lock (front-ends call it on the event loop only), and every exported
family (ours and TF Serving's names) is computed from those counts at scrape time. Clients choose the
model names they send, so the label sets are bounded: a model the server does not serve is counted as
``model="<unknown>"``, and past ``MAX_REQUEST_SERIES`` label sets new ones go to ``model="(other)"``.
TF Serving's families keep its exact series names (``:tensorflow:serving:request_count``...); its
counters are exported untyped, as prometheus_client would otherwise append ``_total`` to a counter's name.
See docs/operations.md.
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from modelserve.core.version_state import VersionStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_SECONDS_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# TF Serving's request latency buckets (util/prometheus_exporter: Exponential(10 µs, 1.8)), up to ~24 min.
_LATENCY_BOUNDS_US = tuple(10.0 * 1.8**i for i in range(32))
_LATENCY_BOUNDS_S = tuple(bound / 1e6 for bound in _LATENCY_BOUNDS_US)
# TF Serving's batching queue delay buckets (batching_session.cc: Exponential(100 µs, 1.2)), up to ~1 s.
_QUEUING_BOUNDS_US = tuple(100.0 * 1.2**i for i in range(51))
# Request label sets kept (each holds a latency histogram): past this, new ones count as model="(other)".
MAX_REQUEST_SERIES = 1_000
UNKNOWN_MODEL = "<unknown>"  # the model label of requests for a model the server does not serve
OTHER_SERIES = "(other)"

# The canonical code of a REST reply's HTTP status, for TF Serving's ``status`` label (the inverse of
# errors.HTTP_STATUS; where several codes share a status, the usual one).
_CODE_OF_HTTP = {
    "200": "OK", "400": "INVALID_ARGUMENT", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED",
    "404": "NOT_FOUND", "409": "ABORTED", "413": "RESOURCE_EXHAUSTED", "429": "RESOURCE_EXHAUSTED",
    "499": "CANCELLED", "500": "INTERNAL", "501": "UNIMPLEMENTED", "503": "UNAVAILABLE",
    "504": "DEADLINE_EXCEEDED",
}  # fmt: skip


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
        self.requests = RequestMetrics()
        self.loads = LoadMetrics()
        self.registry.register(self.requests)
        self.registry.register(self.loads)

    def watch_versions(
        self,
        statuses: Callable[[], list[VersionStatus]],
        budget_bytes: int | None,
        model_names: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """Export every version's state and memory, read from the manager at scrape time; requests for
        a model not among ``model_names()`` are counted as ``model="<unknown>"``."""
        self.registry.register(_VersionCollector(statuses, budget_bytes))
        self.requests.known_models = model_names

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
        self._tf = metrics.loads.batching(model)

    def batch_ran(
        self, rows: int, padded_rows: int, run_seconds: float, queue_delays: Sequence[float]
    ) -> None:
        self._size.observe(rows)
        self._padded.observe(padded_rows)
        self._run.observe(run_seconds)
        for delay in queue_delays:
            self._delay.observe(delay)
        self._tf.batch_ran(rows, padded_rows, queue_delays)

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


class _Series:
    """Counts of one request label set: a histogram of latencies, non-cumulative, last bucket +Inf."""

    __slots__ = ("buckets", "seconds")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_LATENCY_BOUNDS_S) + 1)
        self.seconds = 0.0


class RequestMetrics:
    """Every request a front-end answered, by model, version, API, protocol and status code.

    ``api`` is TF Serving's name of the call (Predict, Classify, Regress, MultiInference; V2's ModelInfer),
    ``protocol`` ``rest`` or ``grpc``, ``code`` the protocol's own status (HTTP status, gRPC code name).
    Not thread-safe by design: ``observe`` and the in-flight counts are touched on the event loop only,
    where scrapes are rendered too.
    """

    def __init__(self, known_models: Callable[[], Collection[str]] | None = None) -> None:
        self._series: dict[tuple[str, str, str, str, str], _Series] = {}
        self.in_flight: dict[str, int] = {"rest": 0, "grpc": 0}
        # The models served now (asked only when a label set is new); None: every name is counted as sent.
        self.known_models = known_models

    def observe(self, model: str, version: str, api: str, protocol: str, code: str, seconds: float) -> None:
        key = (model, version, api, protocol, code)
        series = self._series.get(key)
        if series is None:
            series = self._add(key)
        series.buckets[bisect_left(_LATENCY_BOUNDS_S, seconds)] += 1
        series.seconds += seconds

    def _add(self, key: tuple[str, str, str, str, str]) -> _Series:
        """The series of a label set seen for the first time, or the bounded one it is counted under."""
        if self.known_models is not None and key[0] not in self.known_models():
            key = (UNKNOWN_MODEL, "", *key[2:])
        elif len(self._series) >= MAX_REQUEST_SERIES:
            key = (OTHER_SERIES, "", *key[2:])
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Series()
        return found

    def collect(self) -> Iterator[Metric]:
        """Our families and TF Serving's, aggregated from the same counts."""
        items = list(self._series.items())
        requests = CounterMetricFamily(
            "modelserve_requests",
            "Requests answered, by model, version, API, protocol and status (HTTP status or gRPC code).",
            labels=("model", "version", "api", "protocol", "code"),
        )
        latency: dict[tuple[str, ...], list[float]] = {}
        tf_count: dict[tuple[str, ...], int] = {}
        tf_latency: dict[tuple[str, ...], list[float]] = {}
        for (model, version, api, protocol, code), series in items:
            count = sum(series.buckets)
            requests.add_metric([model, version, api, protocol, code], count)
            _merge(latency, (model, version, api, protocol), series)
            status = code if protocol == "grpc" else _CODE_OF_HTTP.get(code, "UNKNOWN")
            tf_count[(model, status)] = tf_count.get((model, status), 0) + count
            _merge(tf_latency, (model, api, protocol.upper()), series)
        yield requests
        seconds = HistogramMetricFamily(
            "modelserve_request_duration_seconds",
            "Time from a request's last byte to its reply, by model, version, API and protocol.",
            labels=("model", "version", "api", "protocol"),
        )
        for labels, merged in latency.items():
            seconds.add_metric(list(labels), _cumulative(merged, _LATENCY_BOUNDS_S), merged[-1])
        yield seconds
        in_flight = GaugeMetricFamily(
            "modelserve_requests_in_flight",
            "Requests received and not answered yet (waiting for a model call or a batch).",
            labels=("protocol",),
        )
        for protocol, value in self.in_flight.items():
            in_flight.add_metric([protocol], value)
        yield in_flight
        tf_requests = UnknownMetricFamily(
            ":tensorflow:serving:request_count",
            "The total number of requests (TF Serving's counter, exported untyped to keep its name).",
            labels=("model_name", "status"),
        )
        for (model, status), count in tf_count.items():
            tf_requests.add_metric([model, status], count)
        yield tf_requests
        tf_seconds = HistogramMetricFamily(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            labels=("model_name", "API", "entrypoint"),
        )
        for labels, merged in tf_latency.items():
            tf_seconds.add_metric(list(labels), _cumulative(merged, _LATENCY_BOUNDS_US), merged[-1] * 1e6)
        yield tf_seconds


def _merge(into: dict[tuple[str, ...], list[float]], labels: tuple[str, ...], series: _Series) -> None:
    """Add a series' buckets (and, last, its sum of seconds) to the aggregate of ``labels``."""
    merged = into.get(labels)
    if merged is None:
        merged = into[labels] = [0.0] * (len(series.buckets) + 1)
    for i, count in enumerate(series.buckets):
        merged[i] += count
    merged[-1] += series.seconds


def _cumulative(merged: list[float], bounds: Sequence[float]) -> list[tuple[str, float]]:
    buckets, running = [], 0.0
    for bound, count in zip((*(f"{b:.6g}" for b in bounds), "+Inf"), merged[:-1], strict=True):
        running += count
        buckets.append((bound, running))
    return buckets


class _BatchingSeries:
    """TF Serving's batching histograms of one model: queue delay (µs) and batch sizes.

    Its own lock: the batch threads of one model's versions share it, other models' never wait on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queuing = [0] * (len(_QUEUING_BOUNDS_US) + 1)
        self.queuing_us = 0.0
        self.input_sizes = [0] * (len(_BATCH_SIZE_BUCKETS) + 1)
        self.input_rows = 0
        self.processed_sizes = [0] * (len(_BATCH_SIZE_BUCKETS) + 1)
        self.processed_rows = 0

    def batch_ran(self, rows: int, padded_rows: int, queue_delays: Sequence[float]) -> None:
        with self.lock:  # batch threads of several versions report at once
            self.input_sizes[bisect_left(_BATCH_SIZE_BUCKETS, rows)] += 1
            self.input_rows += rows
            self.processed_sizes[bisect_left(_BATCH_SIZE_BUCKETS, padded_rows)] += 1
            self.processed_rows += padded_rows
            for delay in queue_delays:
                micros = delay * 1e6
                self.queuing[bisect_left(_QUEUING_BOUNDS_US, micros)] += 1
                self.queuing_us += micros


class LoadMetrics:
    """Model loads (TF Serving's ``:tensorflow:cc:saved_model:*``, ours per version) and TF Serving's
    batching families; reported from loader and batch threads, so every update takes a lock: ``_lock``
    for loads and the table of models, each model's own for its batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._load_us: dict[str, float] = {}  # model path -> µs spent in successful loads
        self._attempts: dict[tuple[str, str], int] = {}  # (model path, success|fail) -> loads
        self._last: dict[tuple[str, str], float] = {}  # (model, version) -> seconds of its last load
        self._batching: dict[str, _BatchingSeries] = {}

    def version_loaded(self, model: str, version: int, path: str, seconds: float, ok: bool) -> None:
        """A load of ``path`` (model version) ended after ``seconds``; ``ok``: it succeeded."""
        with self._lock:
            status = "success" if ok else "fail"
            self._attempts[(path, status)] = self._attempts.get((path, status), 0) + 1
            if ok:
                self._load_us[path] = self._load_us.get(path, 0.0) + seconds * 1e6
                self._last[(model, str(version))] = seconds

    def batching(self, model: str) -> _BatchingSeries:
        with self._lock:
            series = self._batching.get(model)
            if series is None:
                series = self._batching[model] = _BatchingSeries()
            return series

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            load_us, attempts, last = dict(self._load_us), dict(self._attempts), dict(self._last)
            models = list(self._batching.items())
        batching = {}
        for model, s in models:
            with s.lock:
                batching[model] = (
                    list(s.queuing), s.queuing_us, list(s.input_sizes), s.input_rows,
                    list(s.processed_sizes), s.processed_rows,
                )  # fmt: skip
        latency = UnknownMetricFamily(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded (TF Serving's counter).",
            labels=("model_path",),
        )
        for path, micros in load_us.items():
            latency.add_metric([path], micros)
        yield latency
        tries = UnknownMetricFamily(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was loaded, by status (TF Serving's counter).",
            labels=("model_path", "status"),
        )
        for (path, status), count in attempts.items():
            tries.add_metric([path, status], count)
        yield tries
        seconds = GaugeMetricFamily(
            "modelserve_model_load_seconds",
            "How long the last successful load of each model version took, warm-up included.",
            labels=("model", "version"),
        )
        for (model, version), value in last.items():
            seconds.add_metric([model, version], value)
        yield seconds
        queuing = HistogramMetricFamily(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing.",
            labels=("thread_pool_name",),
        )
        inputs = HistogramMetricFamily(
            ":tensorflow:serving:batching_session:input_batch_size",
            "Rows per batch before padding (TF Serving's percentile sampler, as a histogram).",
            labels=("model_name",),
        )
        processed = HistogramMetricFamily(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Rows per batch after padding (TF Serving's percentile sampler, as a histogram).",
            labels=("model_name",),
        )
        for model, (queue, queue_us, sizes, rows, padded, padded_rows) in batching.items():
            queuing.add_metric([model], _cumulative([*queue, queue_us], _QUEUING_BOUNDS_US), queue_us)
            inputs.add_metric([model], _cumulative([*sizes, rows], _BATCH_SIZE_BUCKETS), rows)
            processed.add_metric(
                [model], _cumulative([*padded, padded_rows], _BATCH_SIZE_BUCKETS), padded_rows
            )
        yield from (queuing, inputs, processed)
