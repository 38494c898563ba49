"""Trial results for tests of the outputs and the report (no server needed)."""

from __future__ import annotations

from modelserve.tune.results import Limits, TrialResult, judge
from modelserve.tune.space import BATCHING_ADAPTIVE, BATCHING_OFF, TrialConfig, static_batching

MIB = 2**20
LIMITS = Limits(memory_budget_bytes=900 * MIB, p99_slo_ms=40.0)


def trial(config: TrialConfig, rps: float, p99: float, pss_mib: float, phase: str = "screen") -> TrialResult:
    fits_memory, fits_slo = judge(LIMITS, p99, int(rps * 4), 0, int(pss_mib * MIB), None)
    return TrialResult(config, rps, p99 / 2, p99, int(rps * 4), 0, int(pss_mib * MIB), None, fits_memory,
                       fits_slo, 9.0, 4.0, phase)  # fmt: skip


def sample_trials() -> list[TrialResult]:
    """A stack run with every kind of point: fitting, over the SLO, over memory, coupled."""
    return [
        trial(TrialConfig("stack", "sync", 4, "rest", BATCHING_ADAPTIVE), 310.0, 22.0, 420),
        trial(TrialConfig("stack", "gthread", 4, "rest", BATCHING_ADAPTIVE), 380.0, 25.0, 430),
        trial(TrialConfig("stack", "gthread", 8, "rest", BATCHING_ADAPTIVE), 395.0, 48.0, 610, "climb"),
        trial(
            TrialConfig("stack", "gthread", 4, "grpc", static_batching(32, 2000)), 402.0, 24.0, 440, "vary"
        ),
        trial(TrialConfig("stack", "asyncio", 4, "rest", BATCHING_OFF), 250.0, 30.0, 400),
        trial(TrialConfig("coupled", "sync", 2), 90.0, 35.0, 700),
        trial(TrialConfig("coupled", "sync", 4), 120.0, 38.0, 1300, "climb"),
    ]
