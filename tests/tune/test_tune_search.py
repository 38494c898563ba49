"""The search on fake landscapes with a fake clock: it finds the optimum, respects limits and the budget."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from modelserve.tune.results import Limits, TrialResult, judge
from modelserve.tune.search import Search, SearchSettings
from modelserve.tune.space import BATCHING_ADAPTIVE, BATCHING_OFF, SearchSpace, TrialConfig, static_batching

MIB = 2**20
CLASS_SPEED = {"sync": 1.0, "gthread": 1.3, "gevent": 1.2, "asyncio": 1.1}
BATCHING_SPEED = {"adaptive": 1.0, "off": 0.7, "static-32-2ms": 1.08}
OVERHEAD_S = 3.0


@dataclass
class Landscape:
    """A known performance landscape: rps peaks at ``peak_workers``; memory grows with workers."""

    limits: Limits
    peak_workers: int = 6
    now: float = 0.0
    calls: list[tuple[TrialConfig, float]] = field(default_factory=list)

    def rps(self, config: TrialConfig) -> float:
        if config.architecture == "coupled":
            return 20.0 * min(config.workers, 2)
        shape = 1.0 - 0.02 * (config.workers - self.peak_workers) ** 2
        upstream = 1.02 if config.upstream == "grpc" else 1.0
        return (
            100.0 * CLASS_SPEED[config.worker_class] * BATCHING_SPEED[config.batching.name] * shape * upstream
        )

    def memory(self, config: TrialConfig) -> int:
        per_worker = 400 if config.architecture == "coupled" else 60
        return (300 + per_worker * config.workers) * MIB

    def p99(self, config: TrialConfig) -> float:
        return 5.0 * config.workers + 1000.0 / max(self.rps(config), 1.0)

    def evaluate(self, config: TrialConfig, duration_s: float) -> TrialResult:
        self.calls.append((config, duration_s))
        self.now += duration_s + OVERHEAD_S
        rps, p99, pss = max(self.rps(config), 0.1), self.p99(config), self.memory(config)
        requests = int(rps * duration_s)
        fits_memory, fits_slo = judge(self.limits, p99, requests, 0, pss, None)
        return TrialResult(config, rps, p99 / 2, p99, requests, 0, pss, None, fits_memory, fits_slo,
                           duration_s + OVERHEAD_S, duration_s)  # fmt: skip

    def clock(self) -> float:
        return self.now


SPACE = SearchSpace(
    worker_classes=("sync", "gthread", "gevent", "asyncio"),
    upstreams=("rest",),
    batching=(BATCHING_ADAPTIVE, BATCHING_OFF, static_batching(32, 2000)),
    max_workers=16,
    start_workers=4,
    grid_workers=(1, 2, 4, 6, 8, 12, 16),
)


def grid_best(landscape: Landscape, space: SearchSpace) -> tuple[TrialConfig, float]:
    feasible = [c for c in space.grid() if landscape.evaluate(c, 1.0).fits]
    best = max(feasible, key=landscape.rps)
    return best, landscape.rps(best)


def run(landscape: Landscape, space: SearchSpace = SPACE, budget: float = 400.0) -> Search:
    settings = SearchSettings(time_budget_s=budget, short_s=2.0, long_s=4.0, overhead_s=OVERHEAD_S)
    search = Search(space, landscape.limits, settings, landscape.evaluate, clock=landscape.clock)
    search.outcome = search.run()  # type: ignore[attr-defined]
    return search


def test_finds_the_optimum_of_a_known_landscape_with_far_fewer_trials_than_the_grid() -> None:
    landscape = Landscape(Limits(memory_budget_bytes=4096 * MIB, p99_slo_ms=200.0))
    outcome = run(landscape).outcome  # type: ignore[attr-defined]
    _, best_rps = grid_best(Landscape(landscape.limits), SPACE)
    assert outcome.best is not None
    assert outcome.best.config.worker_class == "gthread"
    assert outcome.best.config.batching.name == "static-32-2ms"
    assert landscape.rps(outcome.best.config) >= 0.95 * best_rps
    distinct = {config for config, _ in landscape.calls}
    assert len(distinct) <= len(SPACE.grid()) / 3, [c.label for c in distinct]


def test_never_chooses_a_configuration_over_the_memory_budget_or_the_slo() -> None:
    # The fastest counts (6) need 660 MiB; the budget allows 4 workers, the SLO allows 5.
    limits = Limits(memory_budget_bytes=560 * MIB, p99_slo_ms=27.0)
    landscape = Landscape(limits)
    outcome = run(landscape).outcome  # type: ignore[attr-defined]
    assert outcome.best is not None and outcome.best.fits
    assert outcome.best.peak_pss_bytes <= limits.memory_budget_bytes
    assert outcome.best.p99_ms <= 27.0
    assert all(t.fits or t.config != outcome.best.config for t in outcome.trials)
    _, best_rps = grid_best(Landscape(limits), SPACE)
    assert outcome.best.rps >= 0.95 * best_rps


def test_an_infeasible_start_shrinks_until_it_fits() -> None:
    # Only 1 or 2 workers fit: the screening point (4) is over the budget for every class.
    limits = Limits(memory_budget_bytes=430 * MIB)
    outcome = run(Landscape(limits)).outcome  # type: ignore[attr-defined]
    assert outcome.best is not None and outcome.best.fits
    assert outcome.best.config.workers <= 2


def test_returns_nothing_when_nothing_fits() -> None:
    outcome = run(Landscape(Limits(memory_budget_bytes=100 * MIB))).outcome  # type: ignore[attr-defined]
    assert outcome.best is None
    assert outcome.trials and not any(t.fits for t in outcome.trials)


@pytest.mark.parametrize("budget", [30.0, 60.0, 120.0])
def test_stays_within_the_time_budget(budget: float) -> None:
    landscape = Landscape(Limits(p99_slo_ms=200.0))
    outcome = run(landscape, budget=budget).outcome  # type: ignore[attr-defined]
    assert landscape.now <= budget
    assert outcome.best is not None  # even a tight budget screens something


def test_compares_the_coupled_architecture_and_confirms_it_on_long_trials() -> None:
    space = SearchSpace(
        architectures=("stack", "coupled"), upstreams=("rest",), batching=(BATCHING_ADAPTIVE,)
    )
    landscape = Landscape(Limits(memory_budget_bytes=2048 * MIB))
    outcome = run(landscape, space).outcome  # type: ignore[attr-defined]
    coupled = [t for t in outcome.trials if t.config.architecture == "coupled"]
    assert coupled and any(t.phase == "confirm" for t in coupled)
    assert all(t.peak_pss_bytes <= 2048 * MIB for t in coupled if t.fits)
    assert outcome.best is not None and outcome.best.config.architecture == "stack"


def test_skips_worker_counts_whose_extrapolated_memory_exceeds_the_budget() -> None:
    limits = Limits(memory_budget_bytes=900 * MIB)  # stack: up to 10 workers
    landscape = Landscape(limits, peak_workers=16)
    run(landscape)
    over = [c for c, _ in landscape.calls if landscape.memory(c) > 900 * MIB * 1.3]
    assert not over, [c.label for c in over]
