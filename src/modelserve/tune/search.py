"""The search: a handful of short trials where a grid would measure every point, then longer ones to confirm.

Pure: driven by an ``evaluate(config, duration_s) -> TrialResult`` callable and a clock, so tests run it on
fake landscapes with a fake clock. The phases (docs/tune.md explains why this beats a grid):

1. **screen** every worker class (and the coupled architecture) at one moderate worker count, short trials;
2. **climb** the worker count of the most promising classes: double while requests/s improve by more than
   the noise (``min_gain``) and the limits hold, else halve; then bisect between the best count and its
   measured neighbours. A count whose memory, extrapolated linearly from the counts already measured, would
   exceed the budget is never started;
3. **vary** the model server's batching and the gateway's upstream on the best configuration, and climb
   again if a variant wins;
4. **confirm** with successive halving: the best few are measured again with long trials, the better half
   once more, and the best *feasible* one by its long measurements is chosen.

Each trial's cost is estimated before it starts (its measured window plus the start/warm-up/stop overhead
seen so far); a trial that would overrun the time budget is not started, and a share of the budget is kept
for phase 4. A configuration that breaks a limit is never chosen while one that respects them was measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from modelserve.tune.results import Limits, TrialResult
from modelserve.tune.space import SearchSpace, TrialConfig

Evaluate = Callable[[TrialConfig, float], TrialResult]


@dataclass(frozen=True, slots=True)
class SearchSettings:
    """How long trials are and how the time budget is shared."""

    time_budget_s: float
    short_s: float = 4.0  # measured window of a screening / climbing trial
    long_s: float = 8.0  # measured window of a confirmation trial
    overhead_s: float = 6.0  # first guess of a trial's start + warm-up + stop time (then measured)
    min_gain: float = 0.03  # a change must beat the best by this fraction to count as better
    classes_to_climb: int = 2  # stack worker classes whose worker count is searched
    finalists: int = 3  # configurations re-measured in the confirmation phase
    confirm_share: float = 0.3  # share of the budget kept for the confirmation phase
    refine_steps: int = 2  # bisection steps after doubling/halving


@dataclass
class SearchOutcome:
    """The chosen configuration (None when nothing respected the limits) and every trial."""

    best: TrialResult | None
    trials: list[TrialResult]
    elapsed_s: float
    log: list[str] = field(default_factory=list)
    out_of_time: bool = False


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A configuration's standing: its longest measurements combined (mean rps, worst p99 and memory)."""

    config: TrialConfig
    rps: float
    fits: bool
    peak_pss_bytes: int
    trials: int
    measured_s: float


class OutOfTime(Exception):
    """The next trial would overrun the budget of the current phase."""


class Search:
    """One tuning run over ``space``; `run` returns the outcome."""

    def __init__(
        self,
        space: SearchSpace,
        limits: Limits,
        settings: SearchSettings,
        evaluate: Evaluate,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.space = space
        self.limits = limits
        self.settings = settings
        self._evaluate = evaluate
        self._clock = clock
        self._print = log
        self.trials: list[TrialResult] = []
        self._by_config: dict[TrialConfig, list[TrialResult]] = {}
        self._log: list[str] = []
        self._start = 0.0
        self._deadline = 0.0

    # -- the phases ----------------------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        self._start = self._clock()
        settings = self.settings
        explore_end = self._start + settings.time_budget_s * (1.0 - settings.confirm_share)
        out_of_time = False
        try:
            self._deadline = explore_end
            screened = self._screen()
            for config in self._promising(screened):
                self._climb(config, "climb")
            self._vary()
        except OutOfTime:
            out_of_time = True
            self._note("exploration stopped: its share of the time budget is spent")
        try:
            self._deadline = self._start + settings.time_budget_s
            self._confirm()
        except OutOfTime:
            out_of_time = True
            self._note("confirmation stopped: the time budget is spent")
        best = self._choose()
        return SearchOutcome(
            best, list(self.trials), self._clock() - self._start, list(self._log), out_of_time
        )

    def _screen(self) -> list[TrialConfig]:
        space = self.space
        first = space.batching[0]
        upstream = space.upstreams[0]
        configs: list[TrialConfig] = []
        if "stack" in space.architectures:
            workers = space.clamp(space.start_workers)
            configs += [TrialConfig("stack", c, workers, upstream, first) for c in space.worker_classes]
        if "coupled" in space.architectures:
            workers = space.clamp(min(space.start_workers, 2))
            configs += [TrialConfig("coupled", c, workers) for c in space.coupled_worker_classes]
        for config in configs:
            self._measure(config, self.settings.short_s, "screen")
        return configs

    def _promising(self, screened: list[TrialConfig]) -> list[TrialConfig]:
        """The best screened stack classes and the best coupled one, best first."""
        ranked = sorted(screened, key=lambda c: self._rank(self._aggregate(c)), reverse=True)
        stacks = [c for c in ranked if c.architecture == "stack"][: self.settings.classes_to_climb]
        coupled = [c for c in ranked if c.architecture == "coupled"][:1]
        return stacks + coupled

    def _climb(self, start: TrialConfig, phase: str) -> None:
        """Search the worker count of ``start``'s family: double or halve, then bisect."""
        best = self._aggregate(start)
        if best is None:
            return
        if not best.fits:  # too much memory or latency: fewer workers
            best = self._walk(start, best, lambda n: n // 2, phase, until_fits=True)
            if best is None or not best.fits:
                return
        else:
            before = best.config.workers
            best = self._walk(start, best, lambda n: n * 2, phase) or best
            if best.config.workers == before:
                best = self._walk(start, best, lambda n: n // 2, phase) or best
        for _ in range(self.settings.refine_steps):
            improved = False
            for workers in self._midpoints(best.config):
                result = self._aggregate(
                    self._measure(replace(best.config, workers=workers), None, phase).config
                )
                if result is not None and self._better(result, best):
                    best, improved = result, True
            if not improved:
                break

    def _walk(
        self,
        start: TrialConfig,
        best: Aggregate,
        step: Callable[[int], int],
        phase: str,
        until_fits: bool = False,
    ) -> Aggregate | None:
        """Step the worker count from ``best`` while it improves (or, ``until_fits``, until it fits)."""
        workers = start.workers
        while True:
            following = self.space.clamp(step(workers))
            if following == workers:
                return best
            config = replace(start, workers=following)
            if self._predicted_over_budget(config):
                self._note(f"{config.label}: skipped, its memory would exceed the budget")
                return best
            result = self._aggregate(self._measure(config, None, phase).config)
            assert result is not None
            if until_fits:
                if result.fits:
                    return result
            elif self._better(result, best):
                best = result
            else:
                return best
            workers = following

    def _midpoints(self, config: TrialConfig) -> list[int]:
        """Unmeasured worker counts halfway to the nearest measured (or over-budget) neighbours."""
        counts = {c.workers for c in self._by_config if c.family == config.family}
        above = [n for n in counts if n > config.workers]
        below = [n for n in counts if n < config.workers]
        middles = []
        if above and min(above) - config.workers > 1:
            middles.append((config.workers + min(above)) // 2)
        if below and config.workers - max(below) > 1:
            middles.append((config.workers + max(below) + 1) // 2)
        return [n for n in middles if not self._predicted_over_budget(replace(config, workers=n))]

    def _vary(self) -> None:
        """Batching variants and the other upstream on the best stack configuration."""
        best = self._best_of("stack")
        if best is None:
            return
        base = best.config
        variants = [replace(base, batching=b) for b in self.space.batching if b != base.batching]
        variants += [replace(base, upstream=u) for u in self.space.upstreams if u != base.upstream]
        winner = best
        for config in variants:
            result = self._aggregate(self._measure(config, self.settings.short_s, "vary").config)
            if result is not None and self._better(result, winner):
                winner = result
        if winner.config != base:
            self._climb(winner.config, "climb")

    def _confirm(self) -> None:
        """Successive halving: the best few measured again with long trials, then the better half again."""
        ranked = sorted((a for a in self._aggregates() if a.fits), key=lambda a: a.rps, reverse=True)
        finalists = [a.config for a in ranked[: self.settings.finalists]]
        for architecture in ("stack", "coupled"):  # the report compares both architectures on long trials
            leader = self._best_of(architecture)
            if leader is not None and leader.config not in finalists:
                finalists.append(leader.config)
        while finalists:
            for config in finalists:
                self._measure(config, self.settings.long_s, "confirm", reuse=False)
            if len(finalists) == 1:
                return
            standing = sorted(
                (a for c in finalists if (a := self._aggregate(c)) is not None and a.fits),
                key=lambda a: a.rps,
                reverse=True,
            )
            finalists = [a.config for a in standing[: math.ceil(len(finalists) / 2)]]
            if len(finalists) == 1:
                return

    def _choose(self) -> TrialResult | None:
        """The best feasible configuration by its longest measurements, as a representative trial."""
        feasible = [a for a in self._aggregates() if a.fits]
        if feasible:
            best = max(feasible, key=lambda a: a.rps)
            trials = [t for t in self._by_config[best.config] if t.measured_s == best.measured_s]
            chosen = max(trials, key=lambda t: t.rps) if best.trials == 1 else _mean_trial(trials)
            return replace(chosen, phase="chosen")
        fitting = [t for t in self.trials if t.fits]  # fit once, but not in every longest measurement
        return replace(max(fitting, key=lambda t: t.rps), phase="chosen") if fitting else None

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def _measure(
        self, config: TrialConfig, duration_s: float | None, phase: str, reuse: bool = True
    ) -> TrialResult:
        """Measure ``config`` (``duration_s`` None: short), or reuse a measurement at least that long."""
        duration = self.settings.short_s if duration_s is None else duration_s
        if reuse:
            for earlier in self._by_config.get(config, []):
                if earlier.measured_s >= duration * 0.9:
                    return earlier
        if self._clock() + duration + self._overhead() > self._deadline:
            raise OutOfTime
        result = replace(self._evaluate(config, duration), phase=phase)
        self.trials.append(result)
        self._by_config.setdefault(config, []).append(result)
        verdict = (
            "fits" if result.fits else ("FAILED: " + result.failure if result.failure else "over a limit")
        )
        self._note(
            f"[{phase}] {config.label}: {result.rps:.1f} req/s, p99 {result.p99_ms:.1f} ms, "
            f"{result.peak_pss_bytes / 2**20:.0f} MiB, {verdict}"
        )
        return result

    def _overhead(self) -> float:
        """A trial's cost beyond its measured window: the mean seen so far, the first guess before any."""
        spent = [t.duration_s - t.measured_s for t in self.trials]
        return sum(spent) / len(spent) if spent else self.settings.overhead_s

    def _aggregate(self, config: TrialConfig) -> Aggregate | None:
        results = self._by_config.get(config)
        if not results:
            return None
        longest = max(t.measured_s for t in results)
        kept = [t for t in results if t.measured_s >= longest * 0.9]
        return Aggregate(
            config=config,
            rps=sum(t.rps for t in kept) / len(kept),
            fits=all(t.fits for t in kept),
            peak_pss_bytes=max(t.peak_pss_bytes for t in kept),
            trials=len(kept),
            measured_s=longest,
        )

    def _aggregates(self) -> list[Aggregate]:
        return [a for c in self._by_config if (a := self._aggregate(c)) is not None]

    def _best_of(self, architecture: str) -> Aggregate | None:
        feasible = [a for a in self._aggregates() if a.config.architecture == architecture and a.fits]
        return max(feasible, key=lambda a: a.rps, default=None)

    def _better(self, candidate: Aggregate, best: Aggregate) -> bool:
        return candidate.fits and (not best.fits or candidate.rps > best.rps * (1 + self.settings.min_gain))

    @staticmethod
    def _rank(aggregate: Aggregate | None) -> tuple[bool, float]:
        return (False, 0.0) if aggregate is None else (aggregate.fits, aggregate.rps)

    def _predicted_over_budget(self, config: TrialConfig) -> bool:
        """Whether memory, linear in the worker count over this class's measurements, exceeds the budget."""
        budget = self.limits.memory_budget_bytes
        if budget is None:
            return False
        points = {
            t.config.workers: t.peak_pss_bytes
            for t in self.trials
            if (t.config.architecture, t.config.worker_class) == (config.architecture, config.worker_class)
            and not t.failure
        }
        if len(points) < 2:
            return False
        xs, ys = list(points), list(points.values())
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        return mean_y + slope * (config.workers - mean_x) > budget * 1.05  # 5%: room for the fit's error

    def _note(self, line: str) -> None:
        self._log.append(line)
        if self._print is not None:
            self._print(line)


def _mean_trial(trials: list[TrialResult]) -> TrialResult:
    """Several measurements of one configuration as one: mean rate, worst latency and memory."""
    first = trials[0]
    return replace(
        first,
        rps=sum(t.rps for t in trials) / len(trials),
        p50_ms=max(t.p50_ms for t in trials),
        p99_ms=max(t.p99_ms for t in trials),
        requests=sum(t.requests for t in trials),
        errors=sum(t.errors for t in trials),
        peak_pss_bytes=max(t.peak_pss_bytes for t in trials),
        fits_memory=all(t.fits_memory for t in trials),
        fits_slo=all(t.fits_slo for t in trials),
    )
