"""The search: a handful of short trials where a grid would measure every point, then longer ones to confirm.

Pure: driven by an ``evaluate(config, TrialRun) -> TrialResult`` callable and a clock, so tests run it on
fake landscapes with a fake clock. The phases (docs/tune.md explains why this beats a grid):

1. **screen** every worker class (and the coupled architecture) at one moderate worker count, short trials;
2. **climb** the worker count of the most promising classes: double while requests/s improve by more than
   the noise (``min_gain``) and the limits hold, else halve; then bisect between the best count and its
   measured neighbours. A count whose memory, extrapolated from the counts already measured (from one
   count: its total plus the largest worker's PSS per added worker), would exceed the budget is never started;
3. **vary** the model server's batching and the gateway's upstream on the best configuration, and climb
   again if a variant wins;
4. **relieve**: a configuration faster than every fitting one that breaks only the p99 SLO at the full
   ``concurrency`` is measured again at half (then a quarter of) it, for the rate it sustains within the SLO;
5. **confirm** with successive halving: the best few are measured again with long trials, the better half
   once more.

**The one definition of "best"** (`Search.best`, used for the choice, for each architecture's best, by the
report and by ``modelserve plan --from``): the highest mean requests/s of a configuration's longest
measurements at one concurrency, every one of them within the limits. Nothing fits: nothing is chosen.

**The time budget is a hard limit.** Each trial is given the wall time left (`TrialRun.budget_s`) and must
end within it; a trial is only started when its window plus the largest overhead seen so far (start, warm-up,
stop; a first guess before any) and a margin fits; a share of the budget is kept for phases 4-5.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from modelserve.tune.results import Limits, TrialResult, TrialRun, errors_ok, mean_trial
from modelserve.tune.space import SearchSpace, TrialConfig

Evaluate = Callable[[TrialConfig, TrialRun], TrialResult]
Point = tuple[TrialConfig, int]  # a configuration at one concurrency


@dataclass(frozen=True, slots=True)
class SearchSettings:
    """How long trials are, the load they carry and how the time budget is shared."""

    time_budget_s: float
    short_s: float = 4.0  # measured window of a screening / climbing trial
    long_s: float = 8.0  # measured window of a confirmation trial
    overhead_s: float = 6.0  # first guess of a trial's start + warm-up + stop time (then the largest seen)
    overhead_margin: float = 0.15  # the estimate's margin over the largest overhead seen
    concurrency: int = 16  # the most requests in flight the service must carry (closed loop)
    concurrency_steps: int = 2  # halvings of the concurrency tried on a configuration that misses the SLO
    relieve: int = 2  # configurations measured at a lower concurrency (phase 4)
    min_gain: float = 0.03  # a change must beat the best by this fraction to count as better
    classes_to_climb: int = 2  # stack worker classes whose worker count is searched
    finalists: int = 3  # configurations re-measured in the confirmation phase
    confirm_share: float = 0.3  # share of the budget kept for phases 4 and 5
    refine_steps: int = 2  # bisection steps after doubling/halving


@dataclass
class SearchOutcome:
    """The choice (None when nothing respected the limits), each architecture's best, and every trial."""

    best: TrialResult | None
    trials: list[TrialResult]
    elapsed_s: float
    log: list[str] = field(default_factory=list)
    out_of_time: bool = False
    best_by_architecture: dict[str, TrialResult] = field(default_factory=dict)
    nearest_misses: list[TrialResult] = field(default_factory=list)  # when nothing fits, closest first
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A configuration's standing at one concurrency: its longest measurements combined."""

    config: TrialConfig
    concurrency: int
    results: tuple[TrialResult, ...]  # the measurements within 10% of the longest window

    @property
    def rps(self) -> float:
        """The mean rate."""
        return sum(t.rps for t in self.results) / len(self.results)

    @property
    def fits(self) -> bool:
        """Every one of the measurements within the limits."""
        return all(t.fits for t in self.results)

    @property
    def peak_pss_bytes(self) -> int:
        """The worst peak memory."""
        return max(t.peak_pss_bytes for t in self.results)

    @property
    def measured_s(self) -> float:
        """The longest measured window."""
        return max(t.measured_s for t in self.results)

    def as_trial(self) -> TrialResult:
        """One trial standing for the measurements: mean rate, worst latency and memory."""
        return mean_trial(self.results)


class OutOfTime(Exception):
    """The next trial would overrun the budget of the current phase."""


class Interrupted(BaseException):
    """Raised (by a signal handler, or ``evaluate``) to end the search at once; `Search.run` still returns
    what was measured. A BaseException, so no ``except Exception`` on the way swallows it."""


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
        self._by_point: dict[Point, list[TrialResult]] = {}
        self._log: list[str] = []
        self._start = 0.0
        self._deadline = 0.0

    # -- the phases ----------------------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        """Every phase within the budget; an `Interrupted` ends it early with what was measured."""
        self._start = self._clock()
        settings = self.settings
        out_of_time = interrupted = False
        try:
            try:
                self._deadline = self._start + settings.time_budget_s * (1.0 - settings.confirm_share)
                screened = self._screen()
                for config in self._promising(screened):
                    self._climb(config, "climb")
                self._vary()
            except OutOfTime:
                out_of_time = True
                self._note("exploration stopped: its share of the time budget is spent")
            try:
                self._deadline = self._start + settings.time_budget_s
                self._relieve()
                self._confirm()
            except OutOfTime:
                out_of_time = True
                self._note("confirmation stopped: the time budget is spent")
        except Interrupted:
            interrupted = True
            self._note("interrupted: the choice is made from what was measured so far")
        best = self.best()
        return SearchOutcome(
            best=None if best is None else replace(best.as_trial(), phase="chosen"),
            trials=list(self.trials),
            elapsed_s=self._clock() - self._start,
            log=list(self._log),
            out_of_time=out_of_time,
            best_by_architecture={
                name: aggregate.as_trial()
                for name in self.space.architectures
                if (aggregate := self.best(name)) is not None
            },
            nearest_misses=[] if best is not None else [a.as_trial() for a in self.nearest_misses()],
            interrupted=interrupted,
        )

    def _screen(self) -> list[TrialConfig]:
        space = self.space
        first = space.batching[0]
        upstream = space.upstreams[0]
        configs: list[TrialConfig] = []
        if "stack" in space.architectures:
            workers = space.clamp(space.start_workers)
            configs += [
                TrialConfig("stack", c, workers, upstream, first, space.threads) for c in space.worker_classes
            ]
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
        counts = {c.workers for c, _ in self._by_point if c.family == config.family}
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
        best = self.best("stack")
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

    def _relieve(self) -> None:
        """Configurations faster than every fitting one that miss only the p99 SLO at the full concurrency:
        halve the requests in flight (``concurrency_steps`` times at most) for the rate within the SLO."""
        settings = self.settings
        floor = max((a.rps for a in self._aggregates() if a.fits), default=0.0)
        candidates = sorted(
            (
                a
                for a in self._aggregates()
                if a.concurrency == settings.concurrency
                and self._misses_only_latency(a)
                and a.rps > floor * (1 + settings.min_gain)
            ),
            key=lambda a: a.rps,
            reverse=True,
        )
        for aggregate in candidates[: settings.relieve]:
            level = settings.concurrency
            for _ in range(settings.concurrency_steps):
                level //= 2
                if level < 1:
                    break
                self._measure(aggregate.config, settings.short_s, "relieve", concurrency=level)
                result = self._aggregate(aggregate.config, level)
                assert result is not None
                if result.fits:
                    floor = max(floor, result.rps)
                    break
                if not self._misses_only_latency(result) or result.rps <= floor:
                    break  # over memory or failing, or slower than a fitting one already: it cannot win

    def _confirm(self) -> None:
        """Successive halving: the best few measured again with long trials, then the better half again.
        When every finalist misses a limit in its long trial, the next best fitting ones take their place
        (an unconfirmed configuration is only chosen when the time ran out before its turn)."""
        finalists = self._finalists()
        for architecture in ("stack", "coupled"):  # the report compares both architectures on long trials
            leader = self.best(architecture)
            if leader is not None and (leader.config, leader.concurrency) not in finalists:
                finalists.append((leader.config, leader.concurrency))
        while finalists:
            for config, concurrency in finalists:
                self._measure(config, self.settings.long_s, "confirm", reuse=False, concurrency=concurrency)
            standing = sorted(
                (a for c, n in finalists if (a := self._aggregate(c, n)) is not None and a.fits),
                key=lambda a: a.rps,
                reverse=True,
            )
            if not standing:
                finalists = self._finalists(unconfirmed_only=True)
                continue
            if len(finalists) == 1:
                return
            finalists = [(a.config, a.concurrency) for a in standing[: math.ceil(len(finalists) / 2)]]
            if len(finalists) == 1:
                return

    def _finalists(self, unconfirmed_only: bool = False) -> list[Point]:
        """The fastest fitting points (without a long measurement yet, with ``unconfirmed_only``)."""
        ranked = sorted(
            (
                a
                for a in self._aggregates()
                if a.fits and not (unconfirmed_only and a.measured_s >= self.settings.long_s * 0.9)
            ),
            key=lambda a: a.rps,
            reverse=True,
        )
        return [(a.config, a.concurrency) for a in ranked[: self.settings.finalists]]

    # -- the one definition of "best" ----------------------------------------------------------------------

    def best(self, architecture: str | None = None) -> Aggregate | None:
        """The fitting configuration (of ``architecture``, or of any) with the highest mean requests/s over
        its longest measurements, every one of them within the limits; None when none fits."""
        feasible = [
            a
            for a in self._aggregates()
            if a.fits and (architecture is None or a.config.architecture == architecture)
        ]
        return max(feasible, key=lambda a: a.rps, default=None)

    def nearest_misses(self, count: int = 3) -> list[Aggregate]:
        """The configurations that ran but broke a limit, closest to the limits first."""
        missed = [a for a in self._aggregates() if not a.fits and not any(t.failure for t in a.results)]
        return sorted(missed, key=self._excess)[:count]

    def _excess(self, aggregate: Aggregate) -> float:
        """How far over its worst limit: 1.3 is 30% over (memory, device memory, p99 or errors)."""
        limits, trial = self.limits, aggregate.as_trial()
        ratios = [1.0]
        if limits.memory_budget_bytes:
            ratios.append(trial.peak_pss_bytes / limits.memory_budget_bytes)
        if limits.device_memory_budget_bytes:
            ratios.append((trial.peak_device_bytes or 0) / limits.device_memory_budget_bytes)
        if limits.p99_slo_ms:
            ratios.append(trial.p99_ms / limits.p99_slo_ms)
        if not errors_ok(limits, trial.requests, trial.errors):
            ratios.append(1.0 + trial.errors / max(trial.requests, 1) / max(limits.max_error_ratio, 1e-9))
        return max(ratios)

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def _measure(
        self,
        config: TrialConfig,
        duration_s: float | None,
        phase: str,
        reuse: bool = True,
        concurrency: int | None = None,
    ) -> TrialResult:
        """Measure ``config`` (``duration_s`` None: short; ``concurrency`` None: the full one), or reuse a
        measurement at least that long. The trial gets the whole budget left as its hard limit."""
        duration = self.settings.short_s if duration_s is None else duration_s
        level = self.settings.concurrency if concurrency is None else concurrency
        if reuse:
            for earlier in self._by_point.get((config, level), []):
                if earlier.measured_s >= duration * 0.9:
                    return earlier
        now = self._clock()
        if now + duration + self._overhead() > self._deadline:
            raise OutOfTime
        budget_left = self._start + self.settings.time_budget_s - now
        result = self._evaluate(config, TrialRun(duration, level, budget_left))
        result = replace(result, phase=phase, concurrency=level)
        self.trials.append(result)
        if result.cut_by_budget:  # not a measurement of the configuration: it must not count against it
            self._note(f"[{phase}] {config.label}: cut short, the time budget is spent")
            raise OutOfTime
        self._by_point.setdefault((config, level), []).append(result)
        verdict = (
            "fits" if result.fits else ("FAILED: " + result.failure if result.failure else "over a limit")
        )
        at = "" if level == self.settings.concurrency else f" at concurrency {level}"
        self._note(
            f"[{phase}] {config.label}{at}: {result.rps:.1f} req/s, p99 {result.p99_ms:.1f} ms, "
            f"{result.peak_pss_bytes / 2**20:.0f} MiB, {verdict}"
            + (", load generator SATURATED (req/s is a lower bound)" if result.saturated else "")
        )
        return result

    def _overhead(self) -> float:
        """A trial's cost beyond its measured window: the largest seen so far plus a margin (the first
        guess before any), so one slow start is enough to make the next estimates honest."""
        spent = [t.duration_s - t.measured_s for t in self.trials]
        largest = max(spent, default=self.settings.overhead_s)
        return largest * (1 + self.settings.overhead_margin)

    def _aggregate(self, config: TrialConfig, concurrency: int | None = None) -> Aggregate | None:
        level = self.settings.concurrency if concurrency is None else concurrency
        results = self._by_point.get((config, level))
        if not results:
            return None
        longest = max(t.measured_s for t in results)
        kept = tuple(t for t in results if t.measured_s >= longest * 0.9)
        return Aggregate(config, level, kept)

    def _aggregates(self) -> list[Aggregate]:
        return [a for c, n in self._by_point if (a := self._aggregate(c, n)) is not None]

    def _misses_only_latency(self, aggregate: Aggregate) -> bool:
        """Within memory, running, (almost) no errors, but over the p99 SLO."""
        trial = aggregate.as_trial()
        return (
            trial.fits_memory
            and not trial.fits_slo
            and not trial.failure
            and errors_ok(self.limits, trial.requests, trial.errors)
        )

    def _better(self, candidate: Aggregate, best: Aggregate) -> bool:
        return candidate.fits and (not best.fits or candidate.rps > best.rps * (1 + self.settings.min_gain))

    @staticmethod
    def _rank(aggregate: Aggregate | None) -> tuple[bool, float]:
        return (False, 0.0) if aggregate is None else (aggregate.fits, aggregate.rps)

    def _predicted_over_budget(self, config: TrialConfig) -> bool:
        """Whether memory over this class's measurements exceeds the budget at ``config.workers``: a line
        through two or more measured counts; from one count, its total plus, per added worker, the largest
        worker's PSS (or the total's share per worker when workers were not told apart: conservative)."""
        budget = self.limits.memory_budget_bytes
        if budget is None:
            return False
        points: dict[int, TrialResult] = {
            t.config.workers: t
            for t in self.trials
            if (t.config.architecture, t.config.worker_class) == (config.architecture, config.worker_class)
            and not t.failure
            and t.peak_pss_bytes > 0
        }
        if not points:
            return False
        if len(points) == 1:
            ((measured, trial),) = points.items()
            per_worker = trial.peak_worker_pss_bytes or trial.peak_pss_bytes / measured
            predicted = trial.peak_pss_bytes + per_worker * (config.workers - measured)
            return predicted > budget
        xs, ys = list(points), [t.peak_pss_bytes for t in points.values()]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        return mean_y + slope * (config.workers - mean_x) > budget * 1.05  # 5%: room for the fit's error

    def _note(self, line: str) -> None:
        self._log.append(line)
        if self._print is not None:
            self._print(line)
