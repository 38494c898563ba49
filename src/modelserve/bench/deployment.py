"""``modelserve bench --architecture``: bench starts the handler and the model itself, decoupled or coupled.

The same handler module and model served two ways, so one command shows the seed's comparison:

- ``stack``: ``modelserve stack`` (one model server, light Gunicorn workers calling it);
- ``coupled``: the seed's "typical" deployment, the model loaded in every Gunicorn worker
  (``python -m modelserve.coupled``);
- ``both``: one after the other, with the same load, and a comparison line.

Starting, readiness and stopping are tune's (`modelserve.tune.trial.TrialRunner.running`): bench and tune run
a configuration the same way, so their figures agree. Memory is sampled on every process of the deployment.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from modelserve.bench.load import LoadResult
from modelserve.bench.memory import MemoryResult

ARCHITECTURE_CHOICES = ("stack", "coupled", "both")


@dataclass(frozen=True, slots=True)
class ArchitectureRun:
    """One architecture's measurement."""

    architecture: str
    label: str  # e.g. "stack/rest gevent x4 adaptive"
    result: LoadResult
    memory: MemoryResult


def add_deployment_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "deployment (--architecture: bench starts the handler and model itself; URL: its path)"
    )
    group.add_argument("--architecture", choices=ARCHITECTURE_CHOICES, help="stack, coupled or both")
    group.add_argument("--handler", help="the gateway handler module (file or dotted name)")
    group.add_argument("--model_name", default="default")
    group.add_argument("--model_base_path", default="")
    group.add_argument("--model_config_file", default="")
    group.add_argument("--workers", type=int, default=2, help="Gunicorn workers (default 2)")
    group.add_argument("--worker-class", default="sync", help="sync, gthread, gevent or asyncio")
    group.add_argument("--upstream", default="rest", help="stack: how the gateway calls the model server")
    group.add_argument(
        "--batching", default="adaptive", help="stack: adaptive, off or static:MAX_BATCH:TIMEOUT_US"
    )
    group.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to become ready")


def deployments(args: argparse.Namespace) -> Generator[tuple[str, str, str, list[int]], None, None]:
    """Start each asked architecture in turn: yields (architecture, label, URL to load, pids), and stops
    each one when the caller moves on (or leaves early: the generator's cleanup runs)."""
    from modelserve.tune.command import parse_batching
    from modelserve.tune.results import Limits
    from modelserve.tune.space import TrialConfig
    from modelserve.tune.trial import TrialRunner, Workload

    if importlib.util.find_spec("gunicorn") is None:
        raise ValueError("--architecture runs Gunicorn web workers: pip install 'modelserve[gateway]'")
    if not args.handler or not (args.model_base_path or args.model_config_file):
        raise ValueError("--architecture needs --handler and --model_base_path (or --model_config_file)")
    (batching,) = parse_batching(args.batching)
    workload = Workload.resolved(
        args.handler,
        args.model_name,
        args.model_base_path,
        args.model_config_file,
        startup_timeout_s=args.startup_timeout,
    )
    path = args.url or "/predict"
    if not path.startswith("/"):
        raise ValueError(
            f"with --architecture, the URL argument is the path to load (/predict), got {path!r}"
        )
    architectures = ("stack", "coupled") if args.architecture == "both" else (args.architecture,)
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as workdir:
        runner = TrialRunner(workload, Limits(), Path(workdir))
        for architecture in architectures:
            config = TrialConfig(
                architecture=architecture,
                worker_class=args.worker_class,
                workers=args.workers,
                upstream=args.upstream,
                batching=batching,
            )
            with runner.running(config) as (base_url, pids):
                yield architecture, config.label, base_url.rstrip("/") + path, pids


def comparison(runs: list[ArchitectureRun]) -> str:
    """One line: the stack against the coupled architecture (throughput, p99, memory)."""
    by = {run.architecture: run for run in runs}
    stack, coupled = by["stack"], by["coupled"]
    ratio = stack.result.rps / coupled.result.rps if coupled.result.rps > 0 else float("inf")
    return (
        f"stack {stack.result.rps:,.1f} req/s vs coupled {coupled.result.rps:,.1f} req/s: {ratio:.2f}x; "
        f"p99 {stack.result.latency_ms.get('p99', float('nan')):.1f} vs "
        f"{coupled.result.latency_ms.get('p99', float('nan')):.1f} ms; peak PSS "
        f"{stack.memory.peak_pss_bytes / 2**20:,.0f} vs {coupled.memory.peak_pss_bytes / 2**20:,.0f} MiB"
    )
