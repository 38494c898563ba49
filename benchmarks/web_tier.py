"""The seed's experiment: the coupled architecture vs ``modelserve stack`` at the same memory budget.

Both run the *same* handler module (``web_tier_handlers/large.py``: JSON with 4096 floats in → the model →
the five best outputs back) on the **large** model (MLP 4096→16384→16384→4096, 1.5 GiB of fp32 weights,
memory-bandwidth bound: ANCHORS.md):

- **coupled**: Gunicorn sync workers, each importing the handler and loading its own ONNX Runtime copy of
  the model (``coupled_baseline/handler_app.py``), 1, 2, 3 … workers while they fit the budget;
- **stack**: ``modelserve stack`` — one model server holding one copy with adaptive batching, and 1…N light
  Gunicorn workers of each class (sync, gthread, gevent, asyncio) running the handler and calling it.

Each configuration is started, warmed up, measured with the same closed-loop load (``loadgen.py``: keep-alive
HTTP/1.1, ``--connections`` in flight) and its memory is read as the PSS of every process it runs (the stack
supervisor itself excluded: systemd or Kubernetes can play its part). Printed: requests/s, p50/p99, errors,
total PSS, whether it fits the budget, and the ratio of the best stack to the best coupled configuration
within the budget.

    python benchmarks/web_tier.py [--budget-gib 4] [--connections 16] [--duration 10] [--warmup 4]
                                  [--coupled-workers 1,2,3] [--gateway-workers 2,4,8]
                                  [--worker-classes sync,gthread,gevent,asyncio] [--json out.json]

Target (issue "web tier"): the stack's best requests/s >= 6x the coupled architecture's best at the same
memory budget. Needs the ``bench`` and ``gateway`` extras; the large model is generated once (~30 s) into
``~/.cache/modelserve-bench`` (see ``batching_models.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import psutil
from _common import exit_on_sigterm, int_list, running, venv_script, warn_if_busy
from batching_models import prepare_large
from loadgen import Job, drive

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "modelserve-bench"
TARGET_RATIO = 6.0
START_TIMEOUT_S = 300.0
WORKER_CLASSES = ("sync", "gthread", "gevent", "asyncio")


@dataclass(frozen=True, slots=True)
class Workload:
    """A model, the handler both architectures run, the one request, and the model server's flags."""

    name: str
    model_name: str  # the handler's MODEL
    handler: Path
    base_path: Path
    model_file: Path
    body: bytes
    serve_args: tuple[str, ...]


def large_workload() -> Workload:
    model = prepare_large(CACHE)
    values = np.round(np.random.default_rng(3).standard_normal(4096), 3).tolist()
    return Workload(
        name="large",
        model_name="large",
        handler=Path(__file__).resolve().parent / "web_tier_handlers" / "large.py",
        base_path=model.base_path,
        model_file=model.model_file,
        body=json.dumps({"x": values}).encode(),
        serve_args=("--enable_batching",),
    )


def embed_workload() -> Workload:
    """The embeddings example: tokenization in the web workers, MiniLM in the model server."""
    example = ROOT / "examples" / "embeddings"
    sys.path.insert(0, str(example))
    import prepare  # examples/embeddings/prepare.py

    base = prepare.prepare(CACHE / "examples")
    text = "A decoupled model server batches requests from many light web workers that hold no model."
    return Workload(
        name="embed",
        model_name=prepare.MODEL,
        handler=example / "handler.py",
        base_path=base,
        model_file=base / "1" / "model.onnx",
        body=json.dumps({"texts": [text]}).encode(),
        serve_args=("--enable_batching", f"--batching_parameters_file={example / 'batching.config'}"),
    )


@dataclass(frozen=True, slots=True)
class Point:
    """One measured configuration."""

    architecture: str  # "coupled", "stack/rest" or "stack/grpc" (how the gateway calls the model server)
    worker_class: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    pss_mib: float
    fits: bool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", choices=["large", "embed"], default="large", help="workload (default large)"
    )
    parser.add_argument("--budget-gib", type=float, default=4.0, help="memory budget, GiB of PSS (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of load before each point")
    parser.add_argument("--coupled-workers", type=int_list, default=[1, 2, 3])
    parser.add_argument("--gateway-workers", type=int_list, default=[2, 4, 8])
    parser.add_argument("--worker-classes", default=",".join(WORKER_CLASSES))
    parser.add_argument("--upstreams", default="rest,grpc", help="gateway → model server: rest, grpc")
    parser.add_argument("--json", type=Path, help="write every point and the verdict here")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request_wire(port: int, path: str, body: bytes) -> bytes:
    """The one request every configuration gets, as it goes on the socket."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def tree_pss(pids: list[int]) -> float:
    """PSS of the processes and all their descendants, MiB (each counted once)."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                seen[process.pid] = process
    total = 0
    for process in seen.values():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().pss
    return total / 2**20


def wait_answering(port: int, path: str, body: bytes, deadline_s: float, process: Any) -> None:
    """Until the server answers the benchmark request with 200 (models load after the fork)."""
    wire = request_wire(port, path, body)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(wire.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            if reply.startswith(b"HTTP/1.1 200") or reply.startswith(b"HTTP/1.0 200"):
                return
        time.sleep(0.5)
    raise RuntimeError(f"no 200 from 127.0.0.1:{port}{path} within {deadline_s:.0f} s")


def measure(port: int, body: bytes, args: argparse.Namespace, workdir: Path, log: IO[bytes]) -> Any:
    payload = workdir / f"request-{port}.bin"
    payload.write_bytes(request_wire(port, "/predict", body))
    job = Job("http", port, str(payload), "", args.connections, args.warmup, args.duration, timeout_s=30.0)
    return drive(job, 1, workdir, log, None)


def coupled(workers: int, work: Workload, args: argparse.Namespace, workdir: Path, log: IO[bytes]) -> Point:
    port = free_port()
    command = [
        venv_script("gunicorn"), "--chdir", str(ROOT), "-w", str(workers), "-k", "sync",
        "-b", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning",
        "benchmarks.coupled_baseline.handler_app:create_app()",
    ]  # fmt: skip
    env = {**os.environ, "HANDLER": str(work.handler), "MODEL_PATH": str(work.model_file), "ORT_THREADS": "1"}
    with running(command, log, env) as process:
        # Every worker loads its copy after the fork: wait until all of them answer.
        for _ in range(workers):
            wait_answering(port, "/predict", work.body, START_TIMEOUT_S, process)
        time.sleep(2.0 * workers)  # the slowest worker finishes loading
        result = measure(port, work.body, args, workdir, log)
        pss = tree_pss([process.pid])
    return _point("coupled", "sync", workers, result, pss, args)


def stack(
    worker_class: str,
    workers: int,
    upstream: str,
    work: Workload,
    args: argparse.Namespace,
    workdir: Path,
    log: IO[bytes],
) -> Point:
    port = free_port()
    ready = workdir / f"stack-{worker_class}-{workers}.json"
    ready.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "modelserve.stack", str(work.handler),
        f"--model_base_path={work.base_path}", f"--model_name={work.model_name}", f"--port={port}",
        f"--workers={workers}", f"--worker-class={worker_class}",
        "--rest_api_port=0", "--grpc_port=0", f"--ready-file={ready}",
        f"--log-dir={workdir / 'logs'}", f"--upstream={upstream}",
        *(f"--serve-arg={flag}" for flag in work.serve_args),
    ]  # fmt: skip
    with running(command, log) as process:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"modelserve stack did not start (exit {process.poll()})")
            time.sleep(0.1)
        state = json.loads(ready.read_text())
        wait_answering(port, "/predict", work.body, START_TIMEOUT_S, process)
        result = measure(port, work.body, args, workdir, log)
        # Everything the deployment runs, without the supervisor (systemd or Kubernetes can do its job).
        pss = tree_pss(
            [int(pid) for role, pid in state["pids"].items() if isinstance(pid, int) and role != "stack"]
        )
    return _point(f"stack/{upstream}", worker_class, workers, result, pss, args)


def _point(architecture: str, worker_class: str, workers: int, result: Any, pss: float, args: Any) -> Point:
    point = Point(
        architecture=architecture,
        worker_class=worker_class,
        workers=workers,
        rps=round(result.rps, 1),
        p50_ms=round(result.p50_ms, 1),
        p99_ms=round(result.p99_ms, 1),
        errors=result.errors,
        pss_mib=round(pss),
        fits=pss <= args.budget_gib * 1024,
    )
    print(
        f"{architecture:10} {worker_class:8} workers={workers:<2} {point.rps:8.1f} req/s"
        f"  p50 {point.p50_ms:7.1f} ms  p99 {point.p99_ms:7.1f} ms  errors {point.errors:<4}"
        f"  PSS {point.pss_mib:6.0f} MiB  {'fits' if point.fits else 'OVER BUDGET'}",
        flush=True,
    )
    return point


def main() -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args()
    busy = warn_if_busy()
    work = large_workload() if args.model == "large" else embed_workload()
    classes = [name for name in args.worker_classes.split(",") if name]
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="modelserve-web-tier-") as temp:
        workdir = Path(temp)
        with (workdir / "servers.log").open("wb") as log:
            budget = f"budget {args.budget_gib:g} GiB PSS"
            print(f"{budget}; {args.connections} connections; {work.name} model", flush=True)
            for workers in args.coupled_workers:
                point = coupled(workers, work, args, workdir, log)
                points.append(point)
                if not point.fits:
                    break  # more copies only cost more memory
            for upstream in [name for name in args.upstreams.split(",") if name]:
                for worker_class in classes:
                    for workers in args.gateway_workers:
                        point = stack(worker_class, workers, upstream, work, args, workdir, log)
                        points.append(point)
    best_coupled = max((p for p in points if p.architecture == "coupled" and p.fits), key=lambda p: p.rps)
    best_stack = max(
        (p for p in points if p.architecture.startswith("stack") and p.fits), key=lambda p: p.rps
    )
    ratio = best_stack.rps / best_coupled.rps
    # The target is the large model's; other workloads are shown for information.
    verdict = ("PASS" if ratio >= TARGET_RATIO else "FAIL") if work.name == "large" else "info"
    print(
        f"\nbest coupled within budget: {best_coupled.workers} workers, {best_coupled.rps:.1f} req/s "
        f"(p99 {best_coupled.p99_ms:.0f} ms, {best_coupled.pss_mib:.0f} MiB)\n"
        f"best stack within budget:   {best_stack.architecture} {best_stack.worker_class} x "
        f"{best_stack.workers}, {best_stack.rps:.1f} req/s "
        f"(p99 {best_stack.p99_ms:.0f} ms, {best_stack.pss_mib:.0f} MiB)\n"
        f"{verdict}  stack / coupled at {args.budget_gib:g} GiB: {ratio:.1f}x (target >= {TARGET_RATIO:g}x)"
    )
    if args.json:
        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "busy_percent_before": busy,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "points": [asdict(p) for p in points],
            "ratio": ratio,
        }
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
