"""The search on fake landscapes with a fake clock: it finds the optimum, respects limits and the budget."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest

from modelserve.tune.results import Limits, TrialResult, TrialRun, judge
from modelserve.tune.search import Interrupted, Search, SearchSettings
from modelserve.tune.space import BATCHING_ADAPTIVE, BATCHING_OFF, SearchSpace, TrialConfig, static_batching

MIB = 2**20
CLASS_SPEED = {"sync": 1.0, "gthread": 1.3, "gevent": 1.2, "asyncio": 1.1}
BATCHING_SPEED = {"adaptive": 1.0, "off": 0.7, "static-32-2ms": 1.08}
OVERHEAD_S = 3.0
CONCURRENCY = 16


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

    def per_worker_mib(self, config: TrialConfig) -> int:
        return 400 if config.architecture == "coupled" else 60

    def memory(self, config: TrialConfig) -> int:
        return (300 + self.per_worker_mib(config) * config.workers) * MIB

    def p99(self, config: TrialConfig, concurrency: int = CONCURRENCY) -> float:
        return 5.0 * config.workers + 1000.0 / max(self.rps(config), 1.0)

    def evaluate(self, config: TrialConfig, run: TrialRun) -> TrialResult:
        duration_s = run.duration_s
        self.calls.append((config, duration_s))
        self.now += duration_s + OVERHEAD_S
        rps, p99, pss = max(self.rps(config), 0.1), self.p99(config, run.concurrency), self.memory(config)
        requests = int(rps * duration_s)
        fits_memory, fits_slo = judge(self.limits, p99, requests, 0, pss, None)
        return TrialResult(config, rps, p99 / 2, p99, requests, 0, pss, None, fits_memory, fits_slo,
                           duration_s + OVERHEAD_S, duration_s,
                           peak_worker_pss_bytes=self.per_worker_mib(config) * MIB)  # fmt: skip

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
    feasible = [c for c in space.grid() if landscape.evaluate(c, TrialRun(1.0, CONCURRENCY)).fits]
    best = max(feasible, key=landscape.rps)
    return best, landscape.rps(best)


def run(landscape: Landscape, space: SearchSpace = SPACE, budget: float = 400.0) -> Search:
    settings = SearchSettings(
        time_budget_s=budget, short_s=2.0, long_s=4.0, overhead_s=OVERHEAD_S, concurrency=CONCURRENCY
    )
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


def test_one_definition_of_best_for_the_choice_and_each_architecture() -> None:
    space = SearchSpace(
        architectures=("stack", "coupled"), upstreams=("rest",), batching=(BATCHING_ADAPTIVE,)
    )
    outcome = run(Landscape(Limits(memory_budget_bytes=2048 * MIB)), space).outcome  # type: ignore[attr-defined]
    assert outcome.best is not None and set(outcome.best_by_architecture) == {"stack", "coupled"}
    chosen = outcome.best_by_architecture[outcome.best.config.architecture]
    assert replace(chosen, phase="chosen") == outcome.best
    # The chosen rate is the mean of the configuration's longest measurements, not its luckiest trial.
    longest = [t for t in outcome.trials if t.config == outcome.best.config and t.phase == "confirm"]
    assert longest and outcome.best.rps == pytest.approx(sum(t.rps for t in longest) / len(longest))


@dataclass
class LongTrialsMissTheSlo(Landscape):
    """Every configuration meets the SLO in a short trial and misses it in a long one (it heats up)."""

    def evaluate(self, config: TrialConfig, run: TrialRun) -> TrialResult:
        result = super().evaluate(config, run)
        if run.duration_s < 4.0:
            return result
        return replace(result, p99_ms=result.p99_ms + 100.0, fits_slo=False)


def test_nothing_is_chosen_when_no_configuration_fits_in_its_longest_measurements() -> None:
    landscape = LongTrialsMissTheSlo(Limits(p99_slo_ms=80.0))
    outcome = run(landscape).outcome  # type: ignore[attr-defined]
    assert any(t.fits for t in outcome.trials)  # short trials fitted ...
    assert outcome.best is None  # ... but none held in its long trials: nothing is "chosen"
    assert outcome.best_by_architecture == {}
    assert outcome.nearest_misses and all(not m.fits for m in outcome.nearest_misses)
    p99s = [m.p99_ms for m in outcome.nearest_misses]
    assert p99s == sorted(p99s)  # closest to the SLO first


@dataclass
class SlowAndStalling(Landscape):
    """Trials cost far more than the first guess, irregularly, and some starts stall for minutes; like the
    real runner, a trial honours the budget it is given (it is cut, and fails, when that runs out)."""

    rng: random.Random = field(default_factory=lambda: random.Random(3))
    overruns: int = 0

    def evaluate(self, config: TrialConfig, run: TrialRun) -> TrialResult:
        stalled = self.rng.random() < 0.2
        cost = run.duration_s + (200.0 if stalled else self.rng.uniform(2.0, 25.0))
        if cost > run.budget_s:
            self.now += run.budget_s
            return TrialResult(config, 0.0, 0.0, 0.0, 0, 0, 0, None, False, False, run.budget_s + run.duration_s,
                               run.duration_s, failure="the time budget is spent",
                               cut_by_budget=True)  # fmt: skip
        result = super().evaluate(config, run)
        self.now += cost - (run.duration_s + OVERHEAD_S)
        return replace(result, duration_s=cost)


@pytest.mark.parametrize("budget", [30.0, 60.0, 120.0, 300.0])
def test_the_budget_holds_when_trials_cost_more_than_estimated_and_starts_stall(budget: float) -> None:
    landscape = SlowAndStalling(Limits(p99_slo_ms=200.0))
    run(landscape, budget=budget)
    assert landscape.now <= budget


@dataclass
class Noisy(Landscape):
    """The known landscape with seeded measurement noise on requests/s and p99."""

    seed: int = 0
    sigma: float = 0.02
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def evaluate(self, config: TrialConfig, run: TrialRun) -> TrialResult:
        result = super().evaluate(config, run)
        noise = 1.0 + self.rng.gauss(0.0, self.sigma)
        return replace(result, rps=result.rps * noise, p99_ms=result.p99_ms / noise)


@pytest.mark.parametrize("seed", range(8))
def test_a_noisy_landscape_still_yields_a_configuration_within_5_percent_of_the_optimum(seed: int) -> None:
    limits = Limits(memory_budget_bytes=4096 * MIB, p99_slo_ms=200.0)
    landscape = Noisy(limits, seed=seed)
    outcome = run(landscape).outcome  # type: ignore[attr-defined]
    _, best_rps = grid_best(Landscape(limits), SPACE)
    assert outcome.best is not None
    assert landscape.rps(outcome.best.config) >= 0.95 * best_rps, outcome.best.config.label
    confirmed: dict[TrialConfig, int] = {}
    for trial in outcome.trials:
        if trial.phase == "confirm":
            confirmed[trial.config] = confirmed.get(trial.config, 0) + 1
    assert len(confirmed) >= 2 and max(confirmed.values()) >= 2  # successive halving ran two rounds


@dataclass
class LatencyGrowsWithLoad(Landscape):
    """gthread is the fastest but its p99 is over the SLO at 16 requests in flight; at 8 it meets it and
    still serves more than sync, the fastest class that meets the SLO at 16."""

    def rps(self, config: TrialConfig) -> float:
        return {"gthread": 200.0, "sync": 120.0}.get(config.worker_class, 50.0)

    def p99(self, config: TrialConfig, concurrency: int = CONCURRENCY) -> float:
        per_request = 0.35 if config.worker_class == "gthread" else 0.1
        return per_request * concurrency * 1000.0 / self.rps(config) * 10

    def evaluate(self, config: TrialConfig, run: TrialRun) -> TrialResult:
        result = super().evaluate(config, run)
        return replace(result, rps=result.rps * min(1.0, run.concurrency / 10))  # fewer in flight: slower


def test_a_configuration_that_misses_the_slo_only_at_full_concurrency_is_measured_at_less() -> None:
    space = SearchSpace(worker_classes=("sync", "gthread"), upstreams=("rest",), batching=(BATCHING_ADAPTIVE,),
                        max_workers=4, start_workers=4)  # fmt: skip
    limits = Limits(p99_slo_ms=250.0)  # gthread: 280 ms at 16, 140 ms at 8; sync: 133 ms at 16
    landscape = LatencyGrowsWithLoad(limits)
    outcome = run(landscape, space).outcome  # type: ignore[attr-defined]
    assert outcome.best is not None
    assert (outcome.best.config.worker_class, outcome.best.concurrency) == ("gthread", 8)
    assert outcome.best.rps == pytest.approx(160.0) and outcome.best.p99_ms <= 250.0
    assert any(t.phase == "relieve" and t.concurrency == 8 for t in outcome.trials)
    assert not [t for t in outcome.trials if t.config.worker_class == "sync" and t.concurrency != 16]


def test_memory_is_predicted_from_a_single_measured_worker_count() -> None:
    # coupled x2 takes 1100 MiB (400 MiB per worker): x4 would take 1900 MiB, over the 1300 MiB budget.
    space = SearchSpace(architectures=("coupled",), max_workers=8, start_workers=2)
    landscape = Landscape(Limits(memory_budget_bytes=1300 * MIB))
    outcome = run(landscape, space).outcome  # type: ignore[attr-defined]
    assert all(config.workers <= 3 for config, _ in landscape.calls), [c.label for c, _ in landscape.calls]
    assert any("skipped" in line for line in outcome.log)


def test_an_interrupt_ends_the_search_with_what_was_measured() -> None:
    landscape = Landscape(Limits(p99_slo_ms=200.0))

    def evaluate(config: TrialConfig, run: TrialRun) -> TrialResult:
        if len(landscape.calls) == 3:
            raise Interrupted("SIGTERM")
        return landscape.evaluate(config, run)

    settings = SearchSettings(time_budget_s=400.0, short_s=2.0, long_s=4.0, concurrency=CONCURRENCY)
    outcome = Search(SPACE, landscape.limits, settings, evaluate, clock=landscape.clock).run()
    assert outcome.interrupted and len(outcome.trials) == 3
    assert outcome.best is not None and outcome.best.config in {t.config for t in outcome.trials}


@dataclass
class CutInConfirmation(Landscape):
    """Every long (confirmation) trial after the first is cut short by the budget, like a real trial whose
    start-up used the last seconds: it measured nothing of its configuration."""

    long_trials: int = 0

    def evaluate(self, config: TrialConfig, run: TrialRun) -> TrialResult:
        if run.duration_s < 4.0:
            return super().evaluate(config, run)
        self.long_trials += 1
        if self.long_trials == 1:
            return super().evaluate(config, run)
        self.now += OVERHEAD_S
        return TrialResult(config, 0.0, 0.0, 0.0, 0, 0, 0, None, False, False, OVERHEAD_S + run.duration_s,
                           run.duration_s, failure="the time budget is spent", cut_by_budget=True)  # fmt: skip


def test_a_trial_cut_by_the_budget_does_not_count_against_its_configuration() -> None:
    landscape = CutInConfirmation(Limits(memory_budget_bytes=4096 * MIB, p99_slo_ms=200.0))
    search = run(landscape)
    outcome = search.outcome  # type: ignore[attr-defined]
    assert landscape.long_trials == 2, "the search stops at the first cut trial"
    assert outcome.out_of_time
    assert outcome.best is not None, "the configuration confirmed before the cut is still chosen"
    assert outcome.best.fits and not outcome.best.failure
