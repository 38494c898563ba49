"""``modelserve tune --stack-ready-file F``: tune a running ``modelserve stack``'s gateway worker count, live.

The same search as for configurations tune starts itself (`modelserve.tune.search`), over a space of one
family: the running stack's worker class, threads, upstream and batching, which stay as they are (changing
them needs a restart); only the worker count varies. A live trial sets the count (`GatewayWorkers`: SIGTTIN
and SIGTTOU to the Gunicorn master until it runs exactly that many workers, each answering), then warms up
and measures like any trial (`TrialRunner`: the request answered 2xx, `run_load` on the gateway's URL, the
peak PSS of the model server, the gateway and nginx with their workers, judged against the limits).

At the end the gateway runs the best count (or, with ``--restore``, after an interrupt or when nothing
fitted, the count it had before), always: the final step runs while SIGTERM/SIGINT are only recorded, on
errors too, and what is announced is the count counted afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from modelserve.errors import ServingError
from modelserve.tune.results import Limits
from modelserve.tune.running_stack import GatewayWorkers, RunningStack, WorkerCountError, attach, claim
from modelserve.tune.space import UPSTREAMS, WORKER_CLASSES, SearchSpace, TrialConfig
from modelserve.tune.trial import TrialFailed, TrialRunner, Workload

_RESIZE_TIMEOUT_S = 60.0  # the most a trial waits for the worker count (a retired worker finishes requests)
# Flags that choose what tune starts, which a running stack fixes: (attribute, flag, default).
_FIXED_FLAGS: tuple[tuple[str, str, object], ...] = (
    ("handler", "--handler", None),
    ("model_base_path", "--model_base_path", ""),
    ("model_config_file", "--model_config_file", ""),
    ("architecture", "--architecture", "stack"),
    ("upstreams", "--upstreams", ",".join(UPSTREAMS)),
    ("batching", "--batching", "adaptive,off,static:32:2000"),
    ("worker_classes", "--worker-classes", ",".join(WORKER_CLASSES)),
    ("serve_args", "--serve-arg", []),
)


class LiveTrialRunner(TrialRunner):
    """Trials on a running stack: each sets the gateway's worker count instead of starting a stack, and
    stops nothing afterwards (the command sets the final count)."""

    stop_reserve_s = 0.5  # nothing to stop: only the load generator's own end

    def __init__(
        self,
        stack: RunningStack,
        workers: GatewayWorkers,
        workload: Workload,
        limits: Limits,
        workdir: Path,
        log: Any = None,
    ) -> None:
        super().__init__(workload, limits, workdir, log)
        self.stack = stack
        self.workers = workers

    def _bring_up(self, config: TrialConfig, deadline: float, tail: float) -> tuple[str, list[int]]:
        if config.family != self.stack.config.family:  # the search's space has this one family only
            raise TrialFailed(f"{config.label}: a running stack can change only its worker count")
        try:
            self.workers.resize(config.workers, self._left(deadline, tail, _RESIZE_TIMEOUT_S))
        except WorkerCountError as error:
            raise TrialFailed(str(error)) from None
        return self.stack.gateway_url, list(self.stack.sampled_pids)

    def _take_down(self, deadline: float) -> None:
        """Nothing to stop: the stack keeps running."""


def run_live(args: argparse.Namespace) -> int:
    """Tune the running stack of ``--stack-ready-file``; exit statuses as `run_tune`'s, and 1 also when the
    final worker count could not be set (the count it runs is printed)."""
    from modelserve.tune.command import limits_from_args

    lock = None
    try:
        fixed = [flag for name, flag, default in _FIXED_FLAGS if getattr(args, name) != default]
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)}: a running stack fixes what it serves and runs; with --stack-ready-file "
                "only the gateway's worker count is searched"
            )
        limits = limits_from_args(args)
        stack = attach(Path(args.stack_ready_file))
        lock = claim(stack)  # held until the run ends
        workers = GatewayWorkers(stack.gateway_pid, stack.gateway_url, log=_say)
        original = workers.count()
        space, settings, workload = _plan(args, stack, original)
    except (ValueError, ServingError, OSError, WorkerCountError) as error:
        message = error.message if isinstance(error, ServingError) else str(error)
        print(f"modelserve tune: error: {message}", file=sys.stderr)
        if lock is not None:
            lock.close()
        return 2
    with lock:
        return _run_live(args, stack, workers, original, space, limits, settings, workload)


def _plan(args: argparse.Namespace, stack: RunningStack, original: int) -> tuple[SearchSpace, Any, Workload]:
    from modelserve.tune.command import body_from_args, settings_from_args

    fixed = stack.config
    space = SearchSpace(
        architectures=("stack",),
        worker_classes=(fixed.worker_class,),
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        upstreams=(fixed.upstream,),
        batching=(fixed.batching,),
        start_workers=args.start_workers if args.start_workers is not None else original,
        threads=fixed.threads,
    )
    # No start or stop: the worker count changes in about a second.
    settings = settings_from_args(args, overhead_s=2.0)
    workload = Workload(
        handler=stack.handler,
        body=body_from_args(args),
        path=args.path,
        content_type=args.content_type,
        concurrency=args.concurrency,
        warmup_s=args.warmup_seconds,
        load_processes=args.load_processes,
        request_timeout_s=stack.timeout_s,
    )
    return space, settings, workload


def _run_live(
    args: argparse.Namespace,
    stack: RunningStack,
    workers: GatewayWorkers,
    original: int,
    space: SearchSpace,
    limits: Limits,
    settings: Any,
    workload: Workload,
) -> int:
    from modelserve.tune.command import InterruptOnSignals, conclude
    from modelserve.tune.search import Interrupted, Search, SearchOutcome

    output: Path = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    fixed = stack.config
    fixed_text = (
        f"{fixed.worker_class} workers"
        + (f" ({fixed.threads} threads)" if fixed.worker_class == "gthread" else "")
        + f", upstream {fixed.upstream}, batching {fixed.batching.name}"
    )
    print(
        f"modelserve tune: the running stack of {stack.ready_file}: gateway {stack.gateway_url} (Gunicorn "
        f"master pid {stack.gateway_pid}) runs {original} {fixed_text}; only the worker count is searched "
        f"({space.min_workers}-{space.max_workers}); budget {settings.time_budget_s:g} s; limits: memory "
        f"{_bytes(limits.memory_budget_bytes)}, p99 {limits.p99_slo_ms or '-'} ms; up to "
        f"{settings.concurrency} requests in flight",
        flush=True,
    )
    runner = LiveTrialRunner(stack, workers, workload, limits, output, log=_say)
    started = time.monotonic()
    outcome = None
    failure: BaseException | None = None
    with InterruptOnSignals() as signals:
        try:
            outcome = Search(space, limits, settings, runner.evaluate, log=_say).run()
        except Interrupted:
            pass  # a signal between the search's end and here: what was measured is lost with it
        except BaseException as error:  # a bug: the original count is set and announced, then it goes on
            failure = error
        finally:
            signals.hold()  # the final count must be set: a signal from here on is only recorded
            interrupted = signals.received is not None or outcome is None or outcome.interrupted
            interrupted = interrupted and failure is None
            best = None if outcome is None or interrupted else outcome.best
            target = best.config.workers if best is not None and not args.restore else original
            running, problem = _settle(workers, target, stack.graceful_timeout_s)
    if failure is not None:
        _announce(running, fixed.worker_class, f"the original: tune failed: {failure!r}")
        raise failure
    elapsed = time.monotonic() - started
    if outcome is None:  # a signal just before or after the search: nothing it measured was kept
        outcome = SearchOutcome(best=None, trials=[], elapsed_s=elapsed, interrupted=True)
    why = _why(best is not None, args.restore, interrupted)
    facts = {
        "ready_file": str(stack.ready_file),
        "gateway_url": stack.gateway_url,
        "gunicorn_master_pid": stack.gateway_pid,
        "fixed": {
            "worker_class": fixed.worker_class,
            "threads": fixed.threads,
            "upstream": fixed.upstream,
            "batching": fixed.batching.name,
        },
        "original_workers": original,
        "final_workers": running,
        "final_is": why,
    }
    rows = (
        ("running stack", f"{stack.gateway_url}: {fixed_text} (fixed: not searched)"),
        ("gateway workers", f"{original} before, {running if running is not None else '?'} after ({why})"),
    )
    timeouts = {"timeout_s": stack.timeout_s, "graceful_timeout_s": stack.graceful_timeout_s}
    status = conclude(
        output, outcome, space, limits, settings, elapsed, {"handler": stack.handler, **timeouts},
        signals.received,
        command_argv=stack.command(outcome.best.config.workers) if outcome.best is not None else None,
        running=facts, summary_rows=rows,
    )  # fmt: skip
    if problem:
        print(f"modelserve tune: error: setting {target} gateway workers failed: {problem}", file=sys.stderr)
    _announce(running, fixed.worker_class, why)
    return 1 if problem and status == 0 else status


def _why(chosen: bool, restore: bool, interrupted: bool) -> str:
    """Why the gateway ends with the count it has: the choice, or the original and why."""
    if chosen:
        return "the original: --restore" if restore else "the choice"
    return "the original: interrupted" if interrupted else "the original: nothing fitted"


def _announce(running: int | None, worker_class: str, why: str) -> None:
    count = running if running is not None else "an unknown number of"
    print(f"the running stack's gateway now runs {count} {worker_class} workers ({why})", flush=True)


def _settle(workers: GatewayWorkers, target: int, graceful_timeout_s: float) -> tuple[int | None, str]:
    """Set the final count; (the count running afterwards, None if unknown; what went wrong, or "")."""
    timeout = graceful_timeout_s + _RESIZE_TIMEOUT_S  # a retired worker may first finish its requests
    try:
        return len(workers.resize(target, timeout)), ""
    except (WorkerCountError, OSError, psutil.Error) as error:
        try:
            return workers.count(timeout_s=10.0), str(error)
        except (WorkerCountError, psutil.Error):
            return None, str(error)


def _say(line: str) -> None:
    print(line, flush=True)


def _bytes(value: int | None) -> str:
    from modelserve.core.memory_guard import format_bytes

    return "none" if value is None else format_bytes(value)
