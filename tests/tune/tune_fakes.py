"""Trial results and search outcomes for tests of the outputs and the report (no server needed)."""

from __future__ import annotations

from dataclasses import replace

from modelserve.tune.results import Limits, TrialResult, judge
from modelserve.tune.search import SearchOutcome
from modelserve.tune.space import BATCHING_ADAPTIVE, BATCHING_OFF, TrialConfig, static_batching

MIB = 2**20
LIMITS = Limits(memory_budget_bytes=900 * MIB, p99_slo_ms=40.0)


def trial(config: TrialConfig, rps: float, p99: float, pss_mib: float, phase: str = "screen") -> TrialResult:
    fits_memory, fits_slo = judge(LIMITS, p99, int(rps * 4), 0, int(pss_mib * MIB), None)
    return TrialResult(config, rps, p99 / 2, p99, int(rps * 4), 0, int(pss_mib * MIB), None, fits_memory,
                       fits_slo, 9.0, 4.0, phase, concurrency=16)  # fmt: skip


def sample_trials() -> list[TrialResult]:
    """A stack run with every kind of point: fitting, over the SLO, over memory, coupled, saturated."""
    return [
        trial(TrialConfig("stack", "sync", 4, "rest", BATCHING_ADAPTIVE), 310.0, 22.0, 420),
        trial(TrialConfig("stack", "gthread", 4, "rest", BATCHING_ADAPTIVE), 380.0, 25.0, 430),
        trial(TrialConfig("stack", "gthread", 8, "rest", BATCHING_ADAPTIVE), 395.0, 48.0, 610, "climb"),
        trial(
            TrialConfig("stack", "gthread", 4, "grpc", static_batching(32, 2000)), 402.0, 24.0, 440, "vary"
        ),
        replace(
            trial(TrialConfig("stack", "asyncio", 4, "rest", BATCHING_OFF), 250.0, 30.0, 400), saturated=True
        ),
        trial(TrialConfig("coupled", "sync", 2), 90.0, 35.0, 700),
        trial(TrialConfig("coupled", "sync", 4), 120.0, 38.0, 1300, "climb"),
    ]


def sample_outcome() -> SearchOutcome:
    """The outcome `Search` would give for `sample_trials`: the grpc stack chosen, the 2-worker coupled best.

    The luckiest single point of each architecture is deliberately *not* its best: the chosen stack's
    confirmed mean (398) is below its screening trial, and plan must price the 398.
    """
    trials = sample_trials()
    chosen = replace(trials[3], rps=398.0, phase="chosen")
    return SearchOutcome(
        best=chosen,
        trials=trials,
        elapsed_s=60.0,
        best_by_architecture={"stack": replace(chosen, phase="confirm"), "coupled": trials[5]},
    )
