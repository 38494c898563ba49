"""REST :predict throughput and latency: modelserve vs the seed's coupled Flask + Gunicorn baseline.

Both serve the same tiny ONNX MLP (64 → 256 → 256 → 10, generated) and get the same request (one instance
of 64 floats) from ``wrk -t1`` at 1, 8 and 64 connections, on loopback, in one run, so the ratios are
comparable even on a noisy shared machine. In-process ONNX Runtime on the same model is printed as the limit.

    python benchmarks/rest_predict.py [--duration 10] [--warmup 3] [--connections 1,8,64] [--json out.json]

Targets (issue 2, no batching): at 64 connections modelserve >= 4x the coupled baseline's
requests/s, with p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"instances": [np.linspace(-1, 1, 64).round(4).tolist()]})
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass(frozen=True)
class Point:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is needed: apt-get install wrk")
    return found


def in_process_limit(model: Path) -> dict[str, float]:
    """Calls/s of ONNX Runtime on the same model and request, with no serving around it."""
    import onnxruntime as ort

    x = np.asarray(json.loads(BODY)["instances"], dtype=np.float32)
    limits = {}
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        runs = 5000
        seconds = min(timeit.repeat(lambda s=session: s.run(["y"], {"x": x}), number=runs, repeat=5))
        limits[f"ort_{threads}_thread_calls_per_s"] = runs / seconds
    return limits


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, data=BODY.encode(), method="POST")
            with urllib.request.urlopen(request, timeout=2) as reply:
                reply.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def predict(url: str) -> np.ndarray:
    request = urllib.request.Request(url, data=BODY.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return np.asarray(json.loads(reply.read())["predictions"], dtype=np.float32)


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def modelserve(base: Path, workdir: Path) -> Iterator[str]:
    ready = workdir / "ready.json"
    command = [
        sys.executable, "-m", "modelserve", "serve", "--port=0", "--rest_api_host=127.0.0.1",
        "--ephemeral_ports", f"--ready_file={ready}", "--model_name=tiny", f"--model_base_path={base}",
        "--log_level=warning",
    ]  # fmt: skip
    with running(command) as process:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"modelserve did not start: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.02)
        port = json.loads(ready.read_text())["rest_port"]
        yield f"http://127.0.0.1:{port}/v1/models/tiny:predict"


def free_port() -> int:
    # Gunicorn cannot report an OS-assigned port; take one from the OS and hand it over.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def coupled(model: Path, workers: int) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model), "ORT_THREADS": "1", "PYTHONPATH": str(ROOT)}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [
        gunicorn, "-w", str(workers), "-k", "sync", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
        "--backlog", "2048", "benchmarks.coupled_baseline.app:create_app()",
    ]  # fmt: skip
    with running(command, env):
        url = f"http://127.0.0.1:{port}/v1/models/tiny:predict"
        wait_http(url)
        yield url


def drive(
    wrk: str, script: Path, url: str, connections: int, seconds: float
) -> tuple[float, float, float, int]:
    result = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", result.stdout)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}")
    requests, micros, p50, p99, errors = (int(g) for g in found.groups())
    return requests / (micros / 1e6), p50 / 1000, p99 / 1000, errors


def measure(name: str, url: str, args: argparse.Namespace, wrk: str, script: Path) -> list[Point]:
    points = []
    for connections in args.connections:
        drive(wrk, script, url, connections, args.warmup)
        rps, p50, p99, errors = drive(wrk, script, url, connections, args.duration)
        points.append(Point(name, connections, rps, p50, p99, errors))
        print(
            f"  {name:<24} c={connections:<3} {rps:>9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
            flush=True,
        )
    return points


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 64])
    parser.add_argument("--coupled-workers", type=lambda s: [int(c) for c in s.split(",")], default=[2])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    from modelserve.demo.models import write_tiny_mlp

    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="modelserve-bench-"))
    base = workdir / "tiny"
    model = write_tiny_mlp(base, version=1)
    script = workdir / "predict.lua"
    script.write_text(LUA.format(body=BODY))

    limits = in_process_limit(model)
    for key, value in limits.items():
        print(f"in-process limit: {key} = {value:,.0f}")

    points: list[Point] = []
    with modelserve(base, workdir) as ours:
        reference = predict(ours)
        points += measure("modelserve", ours, args, wrk, script)
    for workers in args.coupled_workers:
        with coupled(model, workers) as theirs:
            np.testing.assert_allclose(predict(theirs), reference, rtol=1e-5, atol=1e-5)
            points += measure(f"coupled flask x{workers}", theirs, args, wrk, script)

    baseline = f"coupled flask x{args.coupled_workers[0]}"
    print(f"\n{'connections':>11} {'modelserve rps':>15} {'coupled rps':>12} {'ratio':>7} {'p99 ms':>8}")
    ok = True
    for connections in args.connections:
        ours_point = next(p for p in points if p.target == "modelserve" and p.connections == connections)
        theirs_point = next(p for p in points if p.target == baseline and p.connections == connections)
        ratio = ours_point.rps / theirs_point.rps
        print(
            f"{connections:>11} {ours_point.rps:>15.0f} {theirs_point.rps:>12.0f} {ratio:>6.2f}x "
            f"{ours_point.p99_ms:>8.2f}"
        )
        if connections == 64:
            ratio_ok, p99_ok = ratio >= 4.0, ours_point.p99_ms < 10.0
            ok = ratio_ok and p99_ok
            verdict = {True: "PASS", False: "FAIL"}
            print(f"target rps >= 4x coupled at 64 connections: {verdict[ratio_ok]} ({ratio:.2f}x)")
            p99 = ours_point.p99_ms
            print(f"target p99 < 10 ms at 64 connections:       {verdict[p99_ok]} ({p99:.2f} ms)")
    if args.json:
        args.json.write_text(json.dumps({"limits": limits, "points": [asdict(p) for p in points]}, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
