"""``modelserve tune``: search the web tier's worker class and count and the model server's batching for the
most requests/s within ``--memory-budget`` and ``--p99-slo-ms``, in ``--time-budget``; write the choice as
ready-to-use files and an HTML report. With ``--stack-ready-file``, tune a running ``modelserve stack``
instead: only its gateway's worker count, changed live. See docs/tune.md for the method.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelserve.core.memory_guard import format_bytes, parse_memory_size
from modelserve.errors import ServingError
from modelserve.tune.space import (
    BATCHING_ADAPTIVE,
    BATCHING_OFF,
    UPSTREAMS,
    WORKER_CLASSES,
    Batching,
    SearchSpace,
    static_batching,
)

DEFAULT_BODY = b'{"x": [' + b", ".join([b"0.5"] * 64) + b"]}"
DEFAULT_START_WORKERS = max(2, os.cpu_count() or 1) * 2


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``tune`` and its flags to ``modelserve``'s subparsers; returns the new parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tune",
        help="find the fastest workers + batching configuration within memory and latency limits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--handler", help="the gateway's handler module (file or dotted name)")
    parser.add_argument("--model_name", default="default", help="model name with --model_base_path")
    parser.add_argument("--model_base_path", default="", help="directory holding <version>/ of one model")
    parser.add_argument(
        "--model_config_file", default="", help="ModelServerConfig text file (several models)"
    )
    parser.add_argument(
        "--url",
        help="a running stack by URL alone: refused (give its --stack-ready-file, which names its pids)",
    )
    running = parser.add_argument_group("a running stack (instead of --handler and the model flags)")
    running.add_argument(
        "--stack-ready-file",
        help="tune the gateway worker count of the modelserve stack that wrote this --ready-file, live",
    )
    running.add_argument(
        "--restore",
        action="store_true",
        help="with --stack-ready-file: leave the original worker count at the end (default: the best)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument("--memory-budget", help="host memory (peak PSS of every process), e.g. 8GiB or 50%%")
    limits.add_argument("--device-memory-budget", help="GPU memory (NVML), e.g. 20GiB")
    limits.add_argument("--p99-slo-ms", type=float, help="p99 latency every chosen configuration must meet")
    limits.add_argument(
        "--time-budget", default="10m", help="wall time of the whole search: 90, 90s, 10m or 1h (default 10m)"
    )
    load = parser.add_argument_group("the load")
    body = load.add_mutually_exclusive_group()
    body.add_argument("--body", help="the request body sent to the gateway (default: the tiny model's JSON)")
    body.add_argument("--body-file", type=Path, help="read the request body from this file")
    load.add_argument("--path", default="/predict", help="the gateway path requests are sent to")
    load.add_argument("--content-type", default="application/json")
    load.add_argument(
        "--concurrency", type=int, default=16,
        help="the most requests in flight the service must carry (closed loop; a configuration that misses "
        "the SLO at it is measured again at half and a quarter of it)",
    )  # fmt: skip
    load.add_argument("--trial-seconds", type=float, default=4.0, help="measured window of a short trial")
    load.add_argument("--confirm-seconds", type=float, default=8.0, help="measured window of a long trial")
    load.add_argument("--warmup-seconds", type=float, default=2.0, help="load before each measured window")
    load.add_argument("--load-processes", type=int, default=1, help="load generator processes")
    space = parser.add_argument_group("the space searched")
    space.add_argument("--architecture", choices=["stack", "coupled", "both"], default="stack")
    space.add_argument("--worker-classes", default=",".join(WORKER_CLASSES), help="comma-separated")
    space.add_argument(
        "--coupled-worker-classes", default="sync", help="coupled architecture: comma-separated"
    )
    space.add_argument("--upstreams", default=",".join(UPSTREAMS), help="rest,grpc: gateway -> model server")
    space.add_argument(
        "--batching",
        default="adaptive,off,static:32:2000",
        help="variants, first tried first: adaptive, off, static:MAX_BATCH:TIMEOUT_US (comma-separated)",
    )
    space.add_argument("--min-workers", type=int, default=1)
    space.add_argument("--max-workers", type=int, default=max(8, 4 * (os.cpu_count() or 1)))
    space.add_argument(
        "--start-workers", type=int, default=None,
        help="the screening worker count (default 2 x cores; a running stack: its current count)",
    )  # fmt: skip
    space.add_argument(
        "--serve-arg", dest="serve_args", action="append", default=[], metavar="FLAG",
        help="extra modelserve serve flag for every stack trial (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--output-dir", type=Path, default=Path("tune-output"), help="where files are written"
    )
    return parser


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"10m"`` or ``"1h"``."""
    value = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(value[-1:])
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90, 90s, 10m or 1h") from None
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return seconds


def parse_batching(text: str) -> tuple[Batching, ...]:
    """``adaptive,off,static:32:2000`` as batching variants."""
    variants: list[Batching] = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item == "adaptive":
            variants.append(BATCHING_ADAPTIVE)
        elif item == "off":
            variants.append(BATCHING_OFF)
        elif item.startswith("static:") and len(item.split(":")) == 3:
            _, size, timeout = item.split(":")
            variants.append(static_batching(int(size), int(timeout)))
        else:
            raise ValueError(
                f"--batching: unknown variant {item!r} (adaptive, off, static:MAX_BATCH:TIMEOUT_US)"
            )
    if not variants:
        raise ValueError("--batching: give at least one variant")
    return tuple(variants)


def _names(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"{flag}: expected some of {', '.join(allowed)}, got {text!r}")
    return names


def space_from_args(args: argparse.Namespace) -> SearchSpace:
    """The space the flags describe (ValueError names a bad flag)."""
    architectures = ("stack", "coupled") if args.architecture == "both" else (args.architecture,)
    return SearchSpace(
        architectures=architectures,
        worker_classes=_names(args.worker_classes, WORKER_CLASSES, "--worker-classes"),
        coupled_worker_classes=_names(
            args.coupled_worker_classes, WORKER_CLASSES, "--coupled-worker-classes"
        ),
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        upstreams=_names(args.upstreams, UPSTREAMS, "--upstreams"),
        batching=parse_batching(args.batching),
        start_workers=args.start_workers if args.start_workers is not None else DEFAULT_START_WORKERS,
    )


# What tune runs beyond the core: Gunicorn for every trial's web workers, matplotlib for the report.
_NEEDS = (("gunicorn", "gateway"), ("matplotlib", "tune"))


def run_tune(args: argparse.Namespace) -> int:
    """Run the search; 0 with a configuration chosen, 1 when none respected the limits, 2 on bad flags,
    128 + the signal when SIGTERM or SIGINT ended it (after stopping the trial and writing the files)."""
    missing = [extra for module, extra in _NEEDS if importlib.util.find_spec(module) is None]
    if missing:  # before the time budget is spent, not at the report
        print(f"modelserve tune: error: pip install 'modelserve[{','.join(missing)}]'", file=sys.stderr)
        return 2
    if args.url and not args.stack_ready_file:
        print(
            "modelserve tune: error: tuning a running stack by --url alone is not implemented: tune must "
            "signal its gateway's Gunicorn master and sample its processes' memory. Give the stack's "
            "--stack-ready-file (modelserve stack --ready-file), or measure the URL with modelserve bench.",
            file=sys.stderr,
        )
        return 2
    if args.stack_ready_file:
        from modelserve.tune.live import run_live

        return run_live(args)
    if args.restore:
        print("modelserve tune: error: --restore needs --stack-ready-file", file=sys.stderr)
        return 2
    try:
        context = _prepare(args)
    except (ValueError, ServingError, OSError) as error:
        message = error.message if isinstance(error, ServingError) else str(error)
        print(f"modelserve tune: error: {message}", file=sys.stderr)
        return 2
    return _run(args, *context)


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    from modelserve.tune.trial import Workload

    if not args.handler:
        raise ValueError(
            "give --handler (and --model_base_path/--model_name or --model_config_file), or a running "
            "stack's --stack-ready-file"
        )
    if bool(args.model_base_path) == bool(args.model_config_file):
        raise ValueError("give either --model_base_path (with --model_name) or --model_config_file")
    limits = limits_from_args(args)
    workload = Workload.resolved(
        args.handler,
        args.model_name,
        args.model_base_path,
        args.model_config_file,
        body=body_from_args(args),
        path=args.path,
        content_type=args.content_type,
        concurrency=args.concurrency,
        warmup_s=args.warmup_seconds,
        load_processes=args.load_processes,
        serve_args=tuple(args.serve_args),
    )
    return space_from_args(args), limits, settings_from_args(args, overhead_s=4.0), workload


def settings_from_args(args: argparse.Namespace, overhead_s: float) -> Any:
    """The search's `SearchSettings` from the flags; ``overhead_s`` is what a trial costs besides its
    warm-up and measured windows (starting and stopping a deployment, or changing a worker count)."""
    from modelserve.tune.search import SearchSettings

    return SearchSettings(
        time_budget_s=parse_duration(args.time_budget),
        short_s=args.trial_seconds,
        long_s=args.confirm_seconds,
        overhead_s=args.warmup_seconds + overhead_s,
        concurrency=args.concurrency,
    )


def limits_from_args(args: argparse.Namespace) -> Any:
    """The `Limits` the flags give (ValueError names a bad size or a device budget without NVML)."""
    from modelserve.tune.device import nvml_problem
    from modelserve.tune.results import Limits

    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.device_memory_budget and (problem := nvml_problem()):
        raise ValueError(f"--device-memory-budget needs GPU memory figures from NVML: {problem}")
    return Limits(
        memory_budget_bytes=parse_memory_size(args.memory_budget) if args.memory_budget else None,
        device_memory_budget_bytes=(
            parse_memory_size(args.device_memory_budget) if args.device_memory_budget else None
        ),
        p99_slo_ms=args.p99_slo_ms,
    )


def body_from_args(args: argparse.Namespace) -> bytes:
    """The request body: ``--body-file``, ``--body`` or the tiny demo model's."""
    if args.body_file:
        data: bytes = args.body_file.read_bytes()
        return data
    return args.body.encode() if args.body else DEFAULT_BODY


def _run(args: argparse.Namespace, space: Any, limits: Any, settings: Any, workload: Any) -> int:
    from modelserve.tune.search import Search
    from modelserve.tune.trial import GRACEFUL_TIMEOUT_S, TrialRunner

    output: Path = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="trials-", dir=output))

    def log(line: str) -> None:
        print(line, flush=True)

    print(
        f"modelserve tune: {', '.join(space.architectures)}; budget {settings.time_budget_s:g} s; "
        f"limits: memory {_bytes(limits.memory_budget_bytes)}, p99 {limits.p99_slo_ms or '-'} ms; "
        f"up to {settings.concurrency} requests in flight; trial logs in {workdir}",
        flush=True,
    )
    runner = TrialRunner(workload, limits, workdir, log)
    started = time.monotonic()
    with InterruptOnSignals() as signals:
        outcome = Search(space, limits, settings, runner.evaluate, log=log).run()
    elapsed = time.monotonic() - started
    command_args = {
        "handler": workload.handler,
        "model_name": workload.model_name,
        "model_base_path": workload.model_base_path,
        "model_config_file": workload.model_config_file,
        "serve_args": workload.serve_args,
        "timeout_s": workload.request_timeout_s,
        "graceful_timeout_s": GRACEFUL_TIMEOUT_S,
    }
    return conclude(output, outcome, space, limits, settings, elapsed, command_args, signals.received)


def conclude(
    output: Path,
    outcome: Any,
    space: Any,
    limits: Any,
    settings: Any,
    elapsed: float,
    command_args: dict[str, Any],
    received: signal.Signals | None,
    command_argv: list[str] | None = None,
    running: dict[str, Any] | None = None,
    summary_rows: tuple[tuple[str, str], ...] = (),
) -> int:
    """Write the files and the report, print the choice; the exit status (see `run_tune`).
    ``command_argv``, ``running`` and ``summary_rows``: a running stack's command, facts and report rows."""
    from modelserve.tune.outputs import write_outputs
    from modelserve.tune.report import write_report

    search = {
        "time_budget_s": settings.time_budget_s,
        "elapsed_s": round(elapsed, 1),
        "trials": len(outcome.trials),
        "grid_points": len(space.grid()),
        "concurrency": settings.concurrency,
        "out_of_time": outcome.out_of_time,
        "log": outcome.log,
        **({"running_stack": running} if running is not None else {}),
    }
    files = write_outputs(output, outcome, limits, command_args, search, command_argv=command_argv)
    summary = [
        ("memory budget", _bytes(limits.memory_budget_bytes)),
        ("p99 SLO", f"{limits.p99_slo_ms:g} ms" if limits.p99_slo_ms else "none"),
        ("time budget / spent", f"{settings.time_budget_s:g} s / {elapsed:.0f} s"),
        ("trials", f"{len(outcome.trials)} (the grid has {len(space.grid())} points)"),
        ("concurrency", f"up to {settings.concurrency} requests in flight"),
        *summary_rows,
    ]
    report = write_report(output / "report.html", outcome, limits, summary)
    if received is not None:
        print(f"\nstopped by {received.name}: what was measured is in {files['result']} and {report}")
        return 128 + int(received)
    best = outcome.best
    if best is None:
        print("\nno configuration respected the limits; nothing was chosen. Nearest misses:")
        for miss in outcome.nearest_misses:
            print(
                f"  {miss.config.label} at {miss.concurrency} in flight: {miss.rps:.1f} req/s, "
                f"p99 {miss.p99_ms:.1f} ms, {format_bytes(miss.peak_pss_bytes)}, "
                f"{miss.errors} errors in {miss.requests} requests"
            )
        print(f"see the report: {report}")
        return 1
    print(
        f"\nbest: {best.config.label}: {best.rps:.1f} requests/s at {best.concurrency} in flight, "
        f"p99 {best.p99_ms:.1f} ms, {format_bytes(best.peak_pss_bytes)} "
        f"({len(outcome.trials)} trials in {elapsed:.0f} s)"
    )
    print(f"run it:  {files['command'].read_text().splitlines()[-1].removeprefix('exec ')}")
    for name in ("gunicorn", "batching", "command", "result"):
        if name in files:
            print(f"  {files[name]}")
    print(f"  {report}")
    return 0


class InterruptOnSignals:
    """SIGTERM and SIGINT raise `Interrupted` once (the search stops its trial and returns what it
    measured); a second signal while that happens is ignored, so the cleanup is not cut short."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._holding = False

    def __enter__(self) -> InterruptOnSignals:
        for number in (signal.SIGTERM, signal.SIGINT):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def hold(self) -> None:
        """From now on a first signal is only recorded (`received`), not raised: for cleanup that must
        finish, such as setting a running stack's final worker count."""
        self._holding = True

    def _handle(self, number: int, frame: object) -> None:
        from modelserve.tune.search import Interrupted

        if self.received is not None:
            return
        self.received = signal.Signals(number)
        if not self._holding:
            raise Interrupted(self.received.name)

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)


def _bytes(value: int | None) -> str:
    return "none" if value is None else format_bytes(value)
