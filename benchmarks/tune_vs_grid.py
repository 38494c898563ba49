"""``modelserve tune`` against the exhaustive grid over the same space, on the embeddings example (issue 7).

The grid measures every configuration of the space (worker classes x worker counts x batching variants, the
gateway calling the model server over REST) with one trial each; tune then searches the same space with the
same trial settings (its long trials as long as the grid's, its short ones half as long) within a time
budget of ``--tune-share`` (default 25%) of the time the grid took **in this run**. Both choices are then
measured again, interleaved, ``--remeasure`` times each: the best of 48 noisy single trials is biased
upwards, so the ratio that counts is the one of the re-measured means.

    python benchmarks/tune_vs_grid.py [--trial-seconds 8] [--concurrency 32] [--memory-budget 2GiB]
                                      [--p99-slo-ms 1000] [--json out.json]
    python benchmarks/tune_vs_grid.py --quick        # 2 classes x 2 counts x 2 batching, 2 s trials;
                                                     # tune gets the grid's time: a check, not the figure

Targets: tune's choice >= 95% of the grid's best requests/s, in <= 25% of the grid's time. The MiniLM model
is built once into ``~/.cache/modelserve-bench/examples`` (examples/embeddings/prepare.py, ~20 s).
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import exit_on_sigterm, warn_if_busy

from modelserve.core.memory_guard import parse_memory_size
from modelserve.tune.outputs import point
from modelserve.tune.results import Limits, TrialResult, TrialRun
from modelserve.tune.search import Search, SearchSettings
from modelserve.tune.space import (
    BATCHING_ADAPTIVE,
    BATCHING_OFF,
    WORKER_CLASSES,
    SearchSpace,
    TrialConfig,
    static_batching,
)
from modelserve.tune.trial import TrialRunner, Workload

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "modelserve-bench"
TEXT = "A decoupled model server batches requests from many light web workers that hold no model."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trial-seconds", type=float, default=8.0, help="measured window of a grid trial")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight (closed loop; tune may try less)"
    )
    parser.add_argument("--memory-budget", default="2GiB", help="peak PSS of every process")
    parser.add_argument("--p99-slo-ms", type=float, default=1000.0)
    parser.add_argument("--tune-share", type=float, default=0.25, help="tune's budget / the grid's time")
    parser.add_argument("--remeasure", type=int, default=2, help="final measurements of each choice")
    parser.add_argument("--quick", action="store_true", help="a small space and 2 s trials (a check)")
    parser.add_argument("--json", type=Path, help="write both searches and the verdict here")
    return parser.parse_args()


def workload(args: argparse.Namespace) -> Workload:
    example = ROOT / "examples" / "embeddings"
    sys.path.insert(0, str(example))
    import prepare  # examples/embeddings/prepare.py

    base = prepare.prepare(CACHE / "examples")
    return Workload(
        handler=str(example / "handler.py"),
        model_name=prepare.MODEL,
        model_base_path=str(base),
        body=json.dumps({"texts": [TEXT]}).encode(),
        concurrency=args.concurrency,
        warmup_s=args.warmup_seconds,
    )


def space(quick: bool) -> SearchSpace:
    if quick:
        return SearchSpace(worker_classes=("sync", "gthread"), upstreams=("rest",),
                           batching=(BATCHING_ADAPTIVE, BATCHING_OFF), max_workers=2, start_workers=2,
                           grid_workers=(1, 2))  # fmt: skip
    return SearchSpace(
        worker_classes=WORKER_CLASSES,
        upstreams=("rest",),
        batching=(BATCHING_ADAPTIVE, BATCHING_OFF, static_batching(32, 2000)),
        max_workers=8,
        start_workers=4,
        grid_workers=(1, 2, 4, 8),
    )


def best_fitting(results: list[TrialResult]) -> TrialResult | None:
    return max((r for r in results if r.fits), key=lambda r: r.rps, default=None)


def remeasure(
    runner: TrialRunner, configs: dict[str, tuple[TrialConfig, int]], rounds: int, seconds: float
) -> dict[str, float]:
    """Mean requests/s of each configuration, at the concurrency it was chosen at, over ``rounds``
    interleaved trials."""
    totals = {name: 0.0 for name in configs}
    for _ in range(rounds):
        for name, (config, concurrency) in configs.items():
            result = runner.evaluate(config, TrialRun(seconds, concurrency))
            print(f"  [remeasure] {name}: {config.label} at {concurrency} in flight: {result.rps:.1f} req/s",
                  flush=True)  # fmt: skip
            totals[name] += result.rps
    return {name: total / rounds for name, total in totals.items()}


def main() -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    if args.quick:
        args.trial_seconds, args.warmup_seconds, args.remeasure = 2.0, 1.0, 1
        args.tune_share = max(args.tune_share, 1.0)  # 8 points: a quarter of that is one trial
    busy = warn_if_busy()
    work = workload(args)
    grid_space = space(args.quick)
    limits = Limits(memory_budget_bytes=parse_memory_size(args.memory_budget), p99_slo_ms=args.p99_slo_ms)
    with tempfile.TemporaryDirectory(prefix="modelserve-tune-vs-grid-") as temp:
        runner = TrialRunner(work, limits, Path(temp))
        configs = grid_space.grid()
        print(f"grid: {len(configs)} configurations x {args.trial_seconds:g} s", flush=True)
        started = time.monotonic()
        grid: list[TrialResult] = []
        for config in configs:
            result = replace(runner.evaluate(config, args.trial_seconds), phase="grid")
            grid.append(result)
            verdict = "fits" if result.fits else (result.failure or "over a limit")
            print(f"  {config.label:40} {result.rps:8.1f} req/s  p99 {result.p99_ms:7.1f} ms  "
                  f"{result.peak_pss_bytes / 2**20:6.0f} MiB  {verdict}", flush=True)  # fmt: skip
        grid_s = time.monotonic() - started
        budget = args.tune_share * grid_s
        print(f"\ntune: budget {budget:.0f} s ({args.tune_share:g} x the grid's {grid_s:.0f} s)", flush=True)
        settings = SearchSettings(
            time_budget_s=budget,
            short_s=args.trial_seconds / 2,
            long_s=args.trial_seconds,
            overhead_s=args.warmup_seconds + 4.0,
            concurrency=args.concurrency,
        )
        started = time.monotonic()
        outcome = Search(
            grid_space, limits, settings, runner.evaluate, log=lambda line: print("  " + line)
        ).run()
        tune_s = time.monotonic() - started
        grid_best, tune_best = best_fitting(grid), outcome.best
        if grid_best is None or tune_best is None:
            print("no configuration fits the limits: raise --memory-budget or --p99-slo-ms")
            return 1
        print("\nre-measuring both choices, interleaved:", flush=True)
        chosen = {"grid": (grid_best.config, args.concurrency),
                  "tune": (tune_best.config, tune_best.concurrency or args.concurrency)}  # fmt: skip
        means = remeasure(runner, chosen, args.remeasure, args.trial_seconds)
    rps_ratio = means["tune"] / means["grid"]
    time_ratio = tune_s / grid_s
    verdict = "PASS" if rps_ratio >= 0.95 and time_ratio <= 0.25 else "FAIL"
    print(
        f"\ngrid best: {grid_best.config.label}: {grid_best.rps:.1f} req/s in its trial, "
        f"{means['grid']:.1f} re-measured ({len(grid)} trials, {grid_s:.0f} s)\n"
        f"tune best: {tune_best.config.label}: {tune_best.rps:.1f} req/s in its trials, "
        f"{means['tune']:.1f} re-measured ({len(outcome.trials)} trials, {tune_s:.0f} s)\n"
        f"{verdict}  tune / grid: {rps_ratio:.3f} of the requests/s (target >= 0.95), "
        f"{time_ratio:.3f} of the time (target <= 0.25)"
        + ("  [--quick: a check, not the figure]" if args.quick else "")
    )
    if args.json:
        record: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "busy_percent_before": busy,
            "args": {k: str(v) for k, v in vars(args).items() if k != "json"},
            "grid": {"seconds": grid_s, "best": point(grid_best), "points": [point(r) for r in grid]},
            "tune": {
                "seconds": tune_s,
                "best": point(tune_best),
                "points": [point(r) for r in outcome.trials],
                "log": outcome.log,
            },
            "remeasured_rps": means,
            "rps_ratio": rps_ratio,
            "time_ratio": time_ratio,
            "verdict": verdict,
        }
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
