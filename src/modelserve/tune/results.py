"""What a trial measured (`TrialResult`) and the limits it is judged against (`Limits`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelserve.tune.space import TrialConfig


@dataclass(frozen=True, slots=True)
class Limits:
    """What a configuration must respect to be chosen."""

    memory_budget_bytes: int | None = None  # host memory: peak PSS of every process of the configuration
    device_memory_budget_bytes: int | None = None  # GPU memory used while it ran (NVML)
    p99_slo_ms: float | None = None
    max_error_ratio: float = 0.001  # failed requests / requests


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
    duration_s: float  # wall time of the whole trial: start, warm-up, measurement, stop
    measured_s: float  # the measured window
    phase: str = ""
    failure: str = ""  # why the configuration could not run (it then never fits)
    notes: tuple[str, ...] = field(default_factory=tuple)

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
    error_ok = requests > 0 and errors <= limits.max_error_ratio * requests
    fits_slo = error_ok and (limits.p99_slo_ms is None or p99_ms <= limits.p99_slo_ms)
    return fits_memory, fits_slo
