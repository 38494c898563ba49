"""REST :predict throughput and latency: modelserve vs the seed's coupled Flask + Gunicorn baseline.

Both servers get the same tiny ONNX MLP (64 → 256 → 256 → 10, generated) and the same request (one instance
of 64 floats) from ``wrk -t1`` at 1, 8 and 64 connections, on loopback, in one run, with the load generator
sharing the machine's cores with the server. Each round measures every target back to back at one connection
count, so the printed ratios (medians over ``--repeats`` rounds) hold on a noisy shared machine even where the
absolute figures drift. In-process ONNX Runtime on the same model and request is printed as the limit.

    python benchmarks/rest_predict.py [--duration 10] [--warmup 3] [--connections 1,8,64] [--repeats 3]
                                      [--coupled 2x0,2x1] [--serve-flag=--FLAG=VALUE ...]
                                      [--json out.json] [--strict]

The coupled architecture runs in two configurations by default, ``WORKERSxTHREADS`` (0 threads: ONNX
Runtime's default, one per core):

- ``2x0``, the seed's app as the issue measured it (2 sync workers, each model with ONNX Runtime's default
  threads; the issue quotes 2,100-2,300 requests/s at 64 connections on this machine): the baseline the
  target is judged against;
- ``2x1``, the coupled architecture at its best on 2 cores (workers x threads = cores, ANCHORS.md): shown
  beside it, with its own ratio, because a team that keeps the coupled design would tune it so.

Targets (issue 2, no batching): at 64 connections modelserve serves >= 4x the requests/s of the seed's
coupled baseline, with a p99 below 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from _common import (
    START_TIMEOUT_S,
    ensure_wrk,
    exit_on_sigterm,
    int_list,
    machine,
    run_wrk,
    running,
    serving,
    start_failed,
    venv_script,
    warn_if_busy,
    write_lua,
)

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONF = ROOT / "benchmarks" / "coupled_baseline" / "gunicorn.conf.py"
MODEL_NAME = "tiny"
OURS = "modelserve"
BASELINE = (2, 0)  # the seed's app: 2 workers, ONNX Runtime's default threads
BEST_COUPLED = (2, 1)
TARGET_CONNECTIONS = 64
TARGET_RATIO = 4.0
TARGET_P99_MS = 10.0
TOLERANCE = 1e-5
# One instance of 64 float32 values, written the way a client's ``x.tolist()`` writes them.
INSTANCES = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
BODY = json.dumps({"instances": INSTANCES.tolist()}).encode()


@dataclass(frozen=True, slots=True)
class Point:
    """One wrk run of one target at one connection count."""

    target: str
    connections: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True, slots=True)
class Row:
    """Medians over the rounds of one target at one connection count; ``ratio`` is modelserve / target."""

    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One of the issue's targets, checked against the medians."""

    name: str
    value: str
    passed: bool


def parse_args() -> argparse.Namespace:
    """Command line; ``--strict`` needs the 64-connection point the targets are defined at."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per point (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each point (default 3)")
    parser.add_argument("--connections", type=int_list, default=[1, 8, 64], help="default 1,8,64")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; figures are medians (default 3)")
    parser.add_argument(
        "--coupled",
        type=coupled_list,
        default=[BASELINE, BEST_COUPLED],
        metavar="WxT,...",
        help="coupled configurations: W sync workers x T ONNX Runtime threads each, 0 = ORT's default "
        "(default 2x0,2x1; 2x0, the seed's, is always measured: the target is judged against it)",
    )
    parser.add_argument(
        "--serve-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra flag for modelserve serve, repeatable (e.g. --serve-flag=--reply_coalescing_us=0)",
    )
    parser.add_argument("--json", type=Path, help="write every point, the medians and the verdicts here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.strict and TARGET_CONNECTIONS not in args.connections:
        parser.error(f"--strict needs {TARGET_CONNECTIONS} in --connections (the targets are measured there)")
    return args


def write_model(directory: Path) -> Path:
    """Generate the tiny MLP in TF Serving's layout (``directory/1/model.onnx``); returns the ONNX file."""
    from modelserve.demo.models import write_tiny_mlp

    return write_tiny_mlp(directory, version=1)


def new_session(model: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def in_process_limits(model: Path) -> dict[str, float]:
    """Calls/s and µs per call of ONNX Runtime on the request, with no serving around it: the limit."""
    limits: dict[str, float] = {}
    calls = 2000
    for threads in (1, 2):
        call = functools.partial(new_session(model, threads).run, ["y"], {"x": INSTANCES})
        seconds = statistics.median(timeit.repeat(call, number=calls, repeat=7))
        limits[f"ort_{threads}_thread_calls_per_s"] = calls / seconds
        limits[f"ort_{threads}_thread_us_per_call"] = seconds / calls * 1e6
    return limits


@contextlib.contextmanager
def start_modelserve(base: Path, workdir: Path, log: IO[bytes], flags: Sequence[str] = ()) -> Iterator[str]:
    """Run ``modelserve serve`` on an OS-assigned port; ready when its ready file appears; yields the URL."""
    ready = workdir / "ready.json"
    command = [
        venv_script("modelserve"), "serve", "--rest_api_port=8501", "--port=0", f"--model_name={MODEL_NAME}",
        f"--model_base_path={base}", "--ephemeral_ports", f"--ready_file={ready}", *flags,
    ]  # fmt: skip
    with serving(OURS, command, ready, log) as port:
        yield f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"


def coupled_list(text: str) -> list[tuple[int, int]]:
    """``2x0,2x1`` → [(2, 0), (2, 1)]: workers x ONNX Runtime threads per worker."""
    configs = []
    for item in text.split(","):
        workers, sep, threads = item.strip().partition("x")
        if not sep or not workers.isdigit() or not threads.isdigit() or int(workers) < 1:
            raise argparse.ArgumentTypeError(f"expected WORKERSxTHREADS (e.g. 2x1), got {item!r}")
        configs.append((int(workers), int(threads)))
    return configs


def coupled_name(config: tuple[int, int]) -> str:
    """Table label of the coupled baseline with ``workers`` sync workers x ``threads`` ORT threads each."""
    workers, threads = config
    return f"coupled {workers}w x {f'{threads}t' if threads else 'ORT-default'}"


def free_port() -> int:
    """A port the OS just handed out; Gunicorn cannot bind port 0 and report it, so we pass one in."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def start_coupled(model: Path, config: tuple[int, int], log: IO[bytes]) -> Iterator[str]:
    """Run the coupled baseline under Gunicorn; ready when it answers a predict request; yields the URL."""
    workers, threads = config
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model), "MODEL_NAME": MODEL_NAME, "ORT_THREADS": str(threads)}
    command = [
        venv_script("gunicorn"), "-c", str(GUNICORN_CONF), "-w", str(workers), "-b", f"127.0.0.1:{port}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    with running(command, log, env) as process:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                predict(url)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise start_failed(coupled_name(config), command, log) from None
                time.sleep(0.05)
        yield url


def predict(url: str) -> np.ndarray:
    """Send the benchmark's request once and decode the predictions."""
    request = urllib.request.Request(
        url, data=BODY, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return np.asarray(json.loads(reply.read())["predictions"], dtype=np.float32)


def check_same_predictions(targets: dict[str, str], model: Path) -> None:
    """Refuse to measure unless every server returns what in-process ONNX Runtime and modelserve return."""
    (expected,) = new_session(model, 1).run(["y"], {"x": INSTANCES})
    answers = {name: predict(url) for name, url in targets.items()}
    for name, answer in answers.items():
        for reference_name, reference in (("in-process ONNX Runtime", expected), (OURS, answers[OURS])):
            if answer.shape != reference.shape or not np.allclose(answer, reference, rtol=0, atol=TOLERANCE):
                raise RuntimeError(f"{name} answers {answer.tolist()}, {reference_name} {reference.tolist()}")


def measure(targets: dict[str, str], args: argparse.Namespace, wrk: str, script: Path) -> list[Point]:
    """Drive every target at each connection count, back to back, for ``--repeats`` rounds."""
    points = []
    for round_ in range(args.repeats):
        for connections in args.connections:
            for name, url in targets.items():
                run_wrk(wrk, script, url, connections, args.warmup)
                result = run_wrk(wrk, script, url, connections, args.duration)
                rps, p50, p99, errors = result.rps, result.p50_ms, result.p99_ms, result.errors
                points.append(Point(name, connections, round_, rps, p50, p99, errors))
                print(
                    f"  round {round_ + 1}/{args.repeats}  {name:<24} c={connections:<3} {rps:>8.0f} req/s  "
                    f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}",
                    flush=True,
                )
    return points


def summarize(points: list[Point]) -> list[Row]:
    """Medians per target and connection count; the ratio is the median of the per-round ratios."""
    ours = {(p.connections, p.round): p.rps for p in points if p.target == OURS}
    rows = []
    for target, connections in dict.fromkeys((p.target, p.connections) for p in points):
        runs = [p for p in points if p.target == target and p.connections == connections]
        ratio = None
        if target != OURS:
            ratio = statistics.median(ours[(connections, p.round)] / p.rps for p in runs)
        rows.append(
            Row(
                target,
                connections,
                statistics.median(p.rps for p in runs),
                statistics.median(p.p50_ms for p in runs),
                statistics.median(p.p99_ms for p in runs),
                sum(p.errors for p in runs),
                ratio,
            )
        )
    return rows


def verdicts(rows: list[Row], baseline: str, best: str | None) -> list[Verdict]:
    """The issue's targets at 64 connections; none when that point was not measured. The ratio to the
    coupled architecture at its best is printed beside the judged one."""
    at_target = {r.target: r for r in rows if r.connections == TARGET_CONNECTIONS}
    if OURS not in at_target:
        return []
    ratio = at_target[baseline].ratio or 0.0
    beside = ""
    if best is not None and best in at_target:
        beside = f" ({(at_target[best].ratio or 0.0):.2f}x {best}, the coupled architecture at its best)"
    p99 = at_target[OURS].p99_ms
    return [
        Verdict(f"requests/s >= {TARGET_RATIO:g}x the seed's {baseline} at {TARGET_CONNECTIONS} conns",
                f"{ratio:.2f}x{beside}", ratio >= TARGET_RATIO),
        Verdict(f"p99 < {TARGET_P99_MS:g} ms at {TARGET_CONNECTIONS} connections",
                f"{p99:.2f} ms", p99 < TARGET_P99_MS),
        Verdict("no socket errors or non-2xx replies", str(sum(r.errors for r in rows)),
                all(r.errors == 0 for r in rows)),
    ]  # fmt: skip


def print_report(limits: dict[str, float], rows: list[Row], checks: list[Verdict]) -> None:
    """The limit, the table of medians with ratios, and PASS/FAIL per target."""
    print("\nin-process ONNX Runtime, batch 1 (the limit):")
    for threads in (1, 2):
        calls = limits[f"ort_{threads}_thread_calls_per_s"]
        micros = limits[f"ort_{threads}_thread_us_per_call"]
        print(f"  {threads} intra-op thread(s): {calls:>9,.0f} calls/s  {micros:5.1f} µs/call")
    print(
        f"\n{'target':<24} {'connections':>11} {'requests/s':>11} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'modelserve / target':>20}"
    )
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        print(
            f"{row.target:<24} {row.connections:>11} {row.rps:>11,.0f} {row.p50_ms:>7.2f} {row.p99_ms:>7.2f} "
            f"{row.errors:>6} {ratio:>20}"
        )
    print()
    if not checks:
        print(f"targets not checked: they are defined at {TARGET_CONNECTIONS} connections")
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.value}")


def main() -> int:
    """Generate the model, measure the limit, start the servers, check them, measure, report."""
    args = parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    wrk = ensure_wrk()
    busy_percent = warn_if_busy()
    configs = list(dict.fromkeys([BASELINE, *args.coupled]))
    baseline = coupled_name(BASELINE)
    best = coupled_name(BEST_COUPLED) if BEST_COUPLED in configs else None
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as tmp, contextlib.ExitStack() as servers:
        workdir = Path(tmp)
        base = workdir / MODEL_NAME
        model = write_model(base)
        script = write_lua(workdir / "predict.lua", BODY.decode())
        limits = in_process_limits(model)

        # Every server runs for the whole benchmark (idle ones cost nothing measurable), so each round can
        # measure all targets back to back.
        log = servers.enter_context(open(workdir / "modelserve.log", "wb"))
        targets = {OURS: servers.enter_context(start_modelserve(base, workdir, log, args.serve_flag))}
        for config in configs:
            log = servers.enter_context(open(workdir / f"coupled-{config[0]}x{config[1]}.log", "wb"))
            targets[coupled_name(config)] = servers.enter_context(start_coupled(model, config, log))
        check_same_predictions(targets, model)
        points = measure(targets, args, wrk, script)

    rows = summarize(points)
    checks = verdicts(rows, baseline, best)
    print_report(limits, rows, checks)
    if args.json:
        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(wrk, busy_percent),
            "settings": {k: v for k, v in vars(args).items() if k not in ("json", "strict")},
            "limits": limits,
            "points": [asdict(p) for p in points],
            "medians": [asdict(r) for r in rows],
            "targets": [asdict(c) for c in checks],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if args.strict and not all(c.passed for c in checks) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every server this script started was stopped", file=sys.stderr)
        sys.exit(130)
