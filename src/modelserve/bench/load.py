"""The load engine: a `LoadSpec` in, a `LoadResult` out, over one or more worker processes.

Closed loop (``rate`` None): ``concurrency`` clients each send the next request as soon as the previous
answer arrives. Open loop (``rate`` set): requests are sent on a constant or Poisson schedule and latency is
measured from each intended send time; ``concurrency`` caps the requests in flight, and a send that must wait
for a free slot keeps its intended time, so queueing shows in the latencies (see `arrivals`). Either way
``rps`` is the successes that arrived inside the measured window per second: what the server achieved,
which an overloaded server keeps below the rate offered (the excess shows as timeouts and latency).

Each worker process (`worker`) runs one asyncio loop; their HDR histograms are merged here. The run is
*saturated* (a warning, and ``saturated=True``) when a worker's loop wanted a whole core for nearly the whole
window (CPU used plus time spent waiting for a CPU, from the scheduler's statistics),
or when an open loop's sends ran late against their schedule although a connection was free: then the
figures describe the load generator, not the server.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any
from urllib.parse import urlsplit

from modelserve.bench.arrivals import ARRIVALS
from modelserve.bench.histogram import LatencyHistogram
from modelserve.bench.http1 import http_target
from modelserve.bench.spawn import start_child, stop_child
from modelserve.bench.worker import WorkerJob

READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0  # beyond the workers' own bound, before they are killed
SATURATED_CPU = 0.9  # a worker loop wanting a core more than this share of the window is the bottleneck
LATE_FRACTION = 0.05  # open loop: more sends than this later than the tolerance is the generator's fault
OVERLOADED = 0.9  # open loop: successes/s below this share of the rate offered get a note


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """One request to send, repeated: HTTP (url + method + body + headers) or gRPC (target + method + body).

    ``bodies``, when given, is a pool sent in turn instead of ``body`` (templates, generated bodies).
    """

    url: str  # "http://127.0.0.1:8000/predict" or "grpc://127.0.0.1:8500"
    method: str = "POST"  # HTTP verb, or the gRPC method path "/tensorflow.serving.PredictionService/Predict"
    body: bytes = b""  # HTTP body, or the serialized gRPC request message
    headers: tuple[tuple[str, str], ...] = ()
    bodies: tuple[bytes, ...] = ()

    @property
    def is_grpc(self) -> bool:
        return self.url.startswith("grpc://")

    def pool(self) -> tuple[bytes, ...]:
        """The bodies sent in turn."""
        return self.bodies or (self.body,)


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send, how (closed or open loop), for how long, from how many processes."""

    request: RequestTemplate
    concurrency: int = 8  # closed loop: requests in flight; open loop: the cap on in-flight requests
    rate: float | None = None  # None: closed loop; else open loop at this many requests/s
    arrival: str = "constant"  # open loop: "constant" or "poisson"
    duration_s: float = 10.0
    warmup_s: float = 1.0
    requests: int | None = None  # stop after this many measured requests, or at duration_s if sooner
    processes: int = 1  # load-generating worker processes
    timeout_s: float = 10.0  # a request unanswered this long is an error
    seed: int | None = None  # Poisson arrivals: reproducible schedules

    def __post_init__(self) -> None:
        checks = (
            ("concurrency", self.concurrency >= 1),
            ("rate", self.rate is None or self.rate > 0),
            ("arrival", self.arrival in ARRIVALS),
            ("duration_s", self.duration_s > 0),
            ("warmup_s", self.warmup_s >= 0),
            ("requests", self.requests is None or self.requests >= 1),
            ("processes", self.processes >= 1),
            ("timeout_s", self.timeout_s > 0),
        )
        for name, ok in checks:
            if not ok:
                raise ValueError(f"LoadSpec.{name}: invalid value {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (bodies summarized by size, not copied)."""
        document = asdict(self)
        request = document.pop("request")
        pool = self.request.pool()
        document["request"] = {
            "url": request["url"],
            "method": request["method"],
            "headers": [list(pair) for pair in request["headers"]],
            "bodies": len(pool),
            "body_bytes": len(pool[0]),
        }
        document["mode"] = "closed" if self.rate is None else "open"
        return document


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The run so far, for a live display: sent about every half second."""

    elapsed_s: float
    phase: str  # "warmup", "measuring" or "draining"
    answered: int  # answers so far, warm-up included
    failed: int
    rps: float  # answers per second since the previous snapshot
    measured: int  # answers inside the measured window so far
    p99_ms: float  # over the measured window so far (NaN before it)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The measured window, every worker merged."""

    requests: int  # measured (after warm-up) requests, errors included (open loop: every one scheduled)
    errors: dict[str, int]  # by status: {"500": 3, "timeout": 1, "UNAVAILABLE": 2}
    duration_s: float  # the measured window
    rps: float  # successful requests that arrived inside the window, per second of it
    latency_ms: dict[str, float]  # keys "p50","p90","p99","p99.9","mean","max" (from the HDR histogram)
    saturated: bool  # the load generator itself was the limit (warned)
    notes: tuple[str, ...] = ()  # human-readable warnings
    generator_cpu: tuple[float, ...] = ()  # share of a core each worker used during the window
    histogram: bytes = field(default=b"", repr=False)  # the merged HDR histogram, encoded

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (no encoded histogram; latencies are null when nothing succeeded: no NaN)."""
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "duration_s": self.duration_s,
            "rps": self.rps,
            "latency_ms": {key: None if math.isnan(ms) else ms for key, ms in self.latency_ms.items()},
            "saturated": self.saturated,
            "notes": list(self.notes),
            "generator_cpu": list(self.generator_cpu),
        }


def split(total: int, parts: int) -> list[int]:
    """``total`` as evenly as possible over ``parts`` (the first ones get the remainder)."""
    return [total // parts + (index < total % parts) for index in range(parts)]


def _jobs(spec: LoadSpec) -> list[WorkerJob]:
    """One job per worker process: never more workers than connections, nor than requests (``-n``)."""
    workers = max(1, min(spec.processes, spec.concurrency, spec.requests or spec.processes))
    request = spec.request
    if request.is_grpc:
        target = urlsplit(request.url).netloc
        http: tuple[Any, ...] = ()
        grpc_bodies = request.pool()
    else:
        pool = request.pool()
        http = tuple(http_target(request.url, request.method, body, request.headers) for body in pool)
        target, grpc_bodies = "", ()
    shares = split(spec.requests, workers) if spec.requests is not None else [None] * workers
    return [
        WorkerJob(
            kind="grpc" if request.is_grpc else "http",
            http=http,
            grpc_target=target,
            grpc_method=request.method,
            grpc_bodies=grpc_bodies,
            connections=connections,
            rate=spec.rate,
            arrival=spec.arrival,
            seed=spec.seed,
            part=index,
            parts=workers,
            warmup_s=spec.warmup_s,
            duration_s=spec.duration_s,
            requests=shares[index],
            timeout_s=spec.timeout_s,
        )
        for index, connections in enumerate(split(spec.concurrency, workers))
    ]


class _Workers:
    """The worker processes and their pipes; always stopped on the way out."""

    def __init__(self, jobs: list[WorkerJob]) -> None:
        self.children: list[tuple[subprocess.Popen[bytes], Connection]] = []
        try:
            for job in jobs:
                self.children.append(start_child("modelserve.bench.worker", job))
        except BaseException:
            self.stop()
            raise
        self.connections = [connection for _, connection in self.children]

    def receive(self, deadline: float, done: Container[int] = ()) -> list[tuple[int, tuple[Any, ...]]]:
        """Messages ready before ``deadline`` as ``(worker index, message)``; RuntimeError if one failed.

        Workers in ``done`` have sent their result and are closing their pipe: they are not listened to.
        """
        listening = [c for index, c in enumerate(self.connections) if index not in done]
        ready = wait(listening, timeout=max(0.0, deadline - time.monotonic()))
        messages = []
        for connection in ready:
            assert isinstance(connection, Connection)
            index = self.connections.index(connection)
            try:
                message = connection.recv()
            except EOFError:
                raise RuntimeError(f"load generator worker {index} exited unexpectedly") from None
            if message[0] == "failed":
                raise RuntimeError(f"load generator worker {index} failed:\n{message[1]}")
            messages.append((index, message))
        return messages

    def send_all(self, message: tuple[Any, ...]) -> None:
        for connection in self.connections:
            connection.send(message)

    def stop(self) -> None:
        for process, connection in self.children:
            stop_child(process, connection)


class _Progress:
    """Merges the workers' progress messages into snapshots for the callback."""

    def __init__(self, spec: LoadSpec, workers: int, callback: Callable[[ProgressSnapshot], None]) -> None:
        self.spec, self.callback = spec, callback
        self.latest: list[dict[str, Any]] = [{} for _ in range(workers)]
        self.start = time.monotonic()
        self.last_time, self.last_answered = self.start, 0

    def update(self, index: int, state: dict[str, Any]) -> None:
        self.latest[index] = state
        if index != len(self.latest) - 1:  # one snapshot per round of messages
            return
        now = time.monotonic()
        answered = sum(s.get("answered", 0) for s in self.latest)
        elapsed = now - self.start
        window_end = self.spec.warmup_s + self.spec.duration_s
        phase = "measuring" if elapsed < window_end else "draining"
        phase = "warmup" if elapsed < self.spec.warmup_s else phase
        histogram = LatencyHistogram.merged([s["histogram"] for s in self.latest if s.get("histogram")])
        self.callback(
            ProgressSnapshot(
                elapsed_s=elapsed,
                phase=phase,
                answered=answered,
                failed=sum(s.get("failed", 0) for s in self.latest),
                rps=(answered - self.last_answered) / max(now - self.last_time, 1e-9),
                measured=sum(s.get("measured", 0) for s in self.latest),
                p99_ms=histogram.percentile_ms(99.0) if histogram.count else float("nan"),
            )
        )
        self.last_time, self.last_answered = now, answered


def run_load(spec: LoadSpec, progress: Callable[[ProgressSnapshot], None] | None = None) -> LoadResult:
    """Blocking; always ends within warmup_s + duration_s + timeout_s + a few seconds; kills its workers."""
    jobs = _jobs(spec)
    workers = _Workers(jobs)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready: set[int] = set()
        while len(ready) < len(jobs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"load generator workers not ready after {READY_TIMEOUT_S:.0f} s")
            ready.update(index for index, message in workers.receive(deadline) if message[0] == "ready")
        workers.send_all(("go",))
        tracker = _Progress(spec, len(jobs), progress) if progress is not None else None
        deadline = time.monotonic() + spec.warmup_s + spec.duration_s + spec.timeout_s + STOP_GRACE_S
        results: dict[int, dict[str, Any]] = {}
        while len(results) < len(jobs):
            if time.monotonic() > deadline:
                raise RuntimeError("load generator workers did not finish in time")
            for index, message in workers.receive(deadline, results):
                if message[0] == "result":
                    results[index] = message[1]
                elif message[0] == "progress" and tracker is not None:
                    tracker.update(index, message[1])
    finally:
        workers.stop()
    return merge(spec, [results[index] for index in range(len(jobs))])


def merge(spec: LoadSpec, results: list[dict[str, Any]]) -> LoadResult:
    """One `LoadResult` from the workers' results, with the saturation verdict and its notes."""
    histogram = LatencyHistogram.merged([r["histogram"] for r in results])
    errors: dict[str, int] = {}
    for result in results:
        for key, count in result["errors"].items():
            errors[key] = errors.get(key, 0) + count
    duration = max(r["measured_s"] for r in results)
    cpu = tuple(float(r["cpu_fraction"]) for r in results)
    notes: list[str] = []
    saturated = False
    busiest = max(float(r["demand_fraction"]) for r in results)
    if busiest > SATURATED_CPU:
        saturated = True
        notes.append(
            f"load generator saturated: a worker's event loop was busy or waiting for a CPU {busiest:.0%} of "
            f"the window (it used {max(cpu):.0%} of a core); the figures may describe bench, not the server "
            "(try --processes, fewer connections, or a machine of its own)"
        )
    if spec.rate is not None:
        issued = sum(r["issued"] for r in results)
        late = sum(r["late"] for r in results)
        timed = max(issued - sum(r["behind_cap"] for r in results), 1)
        if late / timed > LATE_FRACTION:
            saturated = True
            worst = max(r["max_lateness_s"] for r in results) * 1e3
            notes.append(
                f"load generator behind schedule: {late / timed:.0%} of sends left more than 5 ms late "
                f"(worst {worst:.1f} ms) with a connection free; latencies include that lateness"
            )
        behind_cap = sum(r["behind_cap"] for r in results)
        if behind_cap > 0.01 * max(issued, 1):
            notes.append(
                f"in-flight cap reached: {behind_cap / max(issued, 1):.0%} of sends waited for one of the "
                f"{spec.concurrency} connections (the server did not keep up with {spec.rate:g}/s); "
                "their latencies include that wait"
            )
    requests = sum(r["requests"] for r in results)
    rps = sum(r["completed"] for r in results) / duration if duration > 0 else 0.0
    if requests == 0:
        notes.append("no request was answered inside the measured window")
    offered = requests / duration if duration > 0 else 0.0  # what the schedule sent, Poisson noise included
    if spec.rate is not None and spec.requests is None and rps < OVERLOADED * offered:
        failed, timeouts = sum(errors.values()), errors.get("timeout", 0)
        notes.append(
            f"successes arrived at {rps:,.1f}/s, below the {offered:,.1f}/s offered: {failed:,} of "
            f"{requests:,} requests failed, {timeouts:,} of them timed out (--timeout {spec.timeout_s:g} s)"
        )
    return LoadResult(
        requests=requests,
        errors=dict(sorted(errors.items())),
        duration_s=duration,
        rps=rps,
        latency_ms=histogram.summary_ms(),
        saturated=saturated,
        notes=tuple(notes),
        generator_cpu=cpu,
        histogram=histogram.encode(),
    )
