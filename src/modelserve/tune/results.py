"""What the search asks of a trial (`TrialRun`), what a trial measured (`TrialResult`), and the limits it is
judged against (`Limits`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from modelserve.tune.space import TrialConfig


@dataclass(frozen=True, slots=True)
class Limits:
    """What a configuration must respect to be chosen."""

    memory_budget_bytes: int | None = None  # host memory: peak PSS of every process of the configuration
    device_memory_budget_bytes: int | None = None  # GPU memory used while it ran (NVML)
    p99_slo_ms: float | None = None
    max_error_ratio: float = 0.001  # failed requests / requests


@dataclass(frozen=True, slots=True)
class TrialRun:
    """One trial as the search asks for it.

    ``budget_s`` is a hard limit, not an estimate: the wall time left to the whole search. A trial must end
    (stopped, on errors too) within it, cutting its start-up wait and request timeouts to fit.
    """

    duration_s: float  # the measured window
    concurrency: int  # requests in flight (closed loop)
    budget_s: float = float("inf")


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One measured configuration (the search reads ``rps``, ``fits`` and ``duration_s``)."""

    config: TrialConfig
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    peak_pss_bytes: int
    peak_device_bytes: int | None
    fits_memory: bool
    fits_slo: bool
    duration_s: float  # wall time of the whole trial: start, warm-up, measurement, stop (measured)
    measured_s: float  # the measured window
    phase: str = ""
    failure: str = ""  # why the configuration could not run (it then never fits)
    notes: tuple[str, ...] = field(default_factory=tuple)
    concurrency: int = 0  # requests in flight during the measurement (0: not recorded)
    saturated: bool = False  # the load generator itself was the limit: rps is a lower bound
    peak_worker_pss_bytes: int = 0  # the largest single web worker's peak PSS (0: unknown)
    # The search's time budget ran out before the trial could finish: it says nothing of the configuration.
    cut_by_budget: bool = False

    @property
    def fits(self) -> bool:
        """Within the memory budget and the SLO, with (almost) no errors."""
        return self.fits_memory and self.fits_slo and not self.failure


def judge(
    limits: Limits, p99_ms: float, requests: int, errors: int, pss: int, device: int | None
) -> tuple[bool, bool]:
    """(fits memory, fits SLO) of a measurement against the limits; errors count against the SLO."""
    fits_memory = limits.memory_budget_bytes is None or pss <= limits.memory_budget_bytes
    if limits.device_memory_budget_bytes is not None:
        fits_memory = fits_memory and device is not None and device <= limits.device_memory_budget_bytes
    fits_slo = errors_ok(limits, requests, errors) and (
        limits.p99_slo_ms is None or p99_ms <= limits.p99_slo_ms
    )
    return fits_memory, fits_slo


def errors_ok(limits: Limits, requests: int, errors: int) -> bool:
    """Whether the failed requests are within ``max_error_ratio`` (a latency miss is then the only miss)."""
    return requests > 0 and errors <= limits.max_error_ratio * requests


def mean_trial(trials: Sequence[TrialResult]) -> TrialResult:
    """Several measurements of one configuration as one: mean rate, worst latency and memory."""
    first = trials[0]
    if len(trials) == 1:
        return first
    device = [t.peak_device_bytes for t in trials if t.peak_device_bytes is not None]
    return replace(
        first,
        rps=sum(t.rps for t in trials) / len(trials),
        p50_ms=max(t.p50_ms for t in trials),
        p99_ms=max(t.p99_ms for t in trials),
        requests=sum(t.requests for t in trials),
        errors=sum(t.errors for t in trials),
        peak_pss_bytes=max(t.peak_pss_bytes for t in trials),
        peak_device_bytes=max(device) if device else None,
        peak_worker_pss_bytes=max(t.peak_worker_pss_bytes for t in trials),
        fits_memory=all(t.fits_memory for t in trials),
        fits_slo=all(t.fits_slo for t in trials),
        saturated=any(t.saturated for t in trials),
        measured_s=max(t.measured_s for t in trials),
        notes=tuple(dict.fromkeys(note for t in trials for note in t.notes)),
        failure=next((t.failure for t in trials if t.failure), ""),
    )
