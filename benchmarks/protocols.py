"""Protocols side by side: TF Serving REST and gRPC, V2 REST (JSON and binary) and V2 gRPC, in one run.

Two generated models (``protocol_requests.py``): **tiny** (x [-1, 64] -> y [-1, 10], ~10 µs a call: pure
serving overhead) and **wide** (x [-1, 262144] float32, 1 MiB a row -> its mean: the model is cheap, so the
time goes to moving and decoding the request). Each is served by its own ``modelserve serve`` on loopback
(REST and gRPC ports of the same process), sharing the machine's cores with the load generator.

Five protocols send the same one-row tensor: ``rest-predict`` (TF Serving REST JSON), ``v2-json``,
``v2-binary`` (V2 REST with raw tensor bytes), ``grpc-predict`` (TF Serving gRPC, ``tensor_content``) and
``v2-grpc`` (V2 ModelInfer, ``raw_input_contents``). Two kinds of load generator drive them:

- native, in C: ``wrk -t1`` for the REST protocols (N connections) and ``h2load -t1`` for the gRPC ones
  (one HTTP/2 connection carrying N concurrent calls, as a gRPC channel does), both sending pre-built
  bytes, so the figures measure the server;
- the same Python generator for every protocol (``loadgen.py``: asyncio, pre-built bytes, grpcio's
  ``grpc.aio`` client for gRPC, one process by default), so both protocols are measured through one
  client.

Each round measures every protocol back to back at one connection count; figures are medians over
``--repeats`` rounds, and ratios are medians of per-round ratios.

    python benchmarks/protocols.py [--quick] [--models tiny,wide] [--connections 1,8,64] [--duration 3]
                                   [--warmup 1] [--repeats 3] [--load-processes 1] [--no-native]
                                   [--h2load-connection-per-call] [--json out.json] [--strict]

Targets (issue 4): (1) on tiny, gRPC Predict >= REST :predict requests/s at 8 and 64 in flight, judged
twice and passed only by both: through the same Python client for both protocols, and through the native
generators (h2load against wrk); (2) on wide, V2 binary (REST binary and gRPC raw) >= 5x the TF Serving
REST JSON throughput in MB/s of tensor data, at 8 and 64 connections, through the Python client.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from _common import (
    capture_wrk_request,
    ensure_h2load,
    ensure_wrk,
    exit_on_sigterm,
    grpc_frame,
    int_list,
    machine,
    run_h2load,
    run_wrk,
    serving_ready,
    venv_script,
    warm_h2load,
    warn_if_busy,
    write_lua_file_body,
)
from loadgen import Job, cpu_seconds, drive
from protocol_requests import (
    PROTOCOLS,
    REST_PROTOCOLS,
    BenchModel,
    GrpcRequest,
    HttpRequest,
    ask,
    build,
    expected_output,
    grpc_reply,
    write_tiny,
    write_wide,
)

WRITERS = {"tiny": write_tiny, "wide": write_wide}
QUICK = {"duration": 2, "warmup": 1, "repeats": 1}
FULL = {"duration": 3, "warmup": 1, "repeats": 3}
TARGET_CONNECTIONS = (8, 64)
TARGET_BINARY_RATIO = 5.0
PY, WRK, H2LOAD = "python", "wrk", "h2load"
IDLE_SAMPLE_S = 0.05
POINT_OVERHEAD_S = 0.5  # load generator start-up and the wrk warm-up's own start, per point


@dataclass(frozen=True, slots=True)
class Target:
    """One protocol of one model, ready to be driven: its request and where it goes."""

    model: BenchModel
    protocol: str
    request: HttpRequest | GrpcRequest
    port: int
    server_pid: int
    payload_file: Path  # what the Python generator sends (the whole HTTP request, or the gRPC message)
    wrk_script: Path | None  # REST only
    h2load_body: Path | None = None  # gRPC only: the framed message h2load posts
    reply_data_bytes: int = 0  # gRPC only: DATA bytes of one successful reply (framed reply message)


@dataclass(frozen=True, slots=True)
class Point:
    """One measured window of one protocol, client and connection count."""

    model: str
    protocol: str
    client: str
    connections: int
    round: int
    rps: float
    tensor_mb_s: float  # MB (1e6 bytes) of input tensor per second
    wire_mb_s: float  # MB of request body per second
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us: float | None  # server CPU time per answered request
    client_cpu_us: float | None  # Python load generator CPU time per answered request (None for wrk/h2load)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One of the issue's targets, checked against the medians."""

    name: str
    value: str
    passed: bool


def parse_args() -> argparse.Namespace:
    """Command line; ``--quick`` is one short round, explicit flags still win over it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round x (1 s warm-up + 2 s): ~3 min")
    parser.add_argument(
        "--duration", type=int, help=f"seconds measured per point (default {FULL['duration']})"
    )
    parser.add_argument(
        "--warmup", type=int, help=f"seconds of load before each point (default {FULL['warmup']})"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"rounds; figures are medians (default {FULL['repeats']})"
    )
    parser.add_argument("--connections", type=int_list, default=[1, 8, 64], help="default 1,8,64")
    parser.add_argument("--models", default="tiny,wide", help="default tiny,wide")
    parser.add_argument(
        "--load-processes",
        type=int,
        default=1,
        help="Python load generator processes (default 1, as wrk -t1)",
    )
    parser.add_argument(
        "--no-native",
        action="store_true",
        help="skip the native generators (wrk for REST, h2load for gRPC); gRPC's target then goes unjudged",
    )
    parser.add_argument(
        "--h2load-connection-per-call",
        action="store_true",
        help="h2load opens N connections with one call in flight each (as wrk does for REST), instead of "
        "one connection carrying N calls (as a gRPC channel does)",
    )
    parser.add_argument("--json", type=Path, help="write every point, the medians and the verdicts here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(WRITERS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(WRITERS)}")
    if args.strict and not set(TARGET_CONNECTIONS) & set(args.connections):
        parser.error("--strict needs 8 or 64 in --connections (the targets are measured there)")
    return args


def in_process_calls_per_s(model: BenchModel) -> float:
    """ONNX Runtime calls/s on the request, 1 intra-op thread, no serving: what the model itself costs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model.model_file), options, providers=["CPUExecutionProvider"])
    calls = 2000 if model.x.size < 10_000 else 100
    seconds = min(timeit.repeat(lambda: session.run(["y"], {"x": model.x}), number=calls, repeat=5))
    return calls / seconds


@contextlib.contextmanager
def start_server(model: BenchModel, workdir: Path, log: IO[bytes]) -> Iterator[dict[str, Any]]:
    """``modelserve serve`` of one model, REST and gRPC on loopback, OS-assigned ports; yields its ports."""
    ready = workdir / f"{model.name}.ready.json"
    command = [
        venv_script("modelserve"), "serve", "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1",
        f"--model_name={model.name}", f"--model_base_path={model.base_path}", "--ephemeral_ports",
        f"--ready_file={ready}",
    ]  # fmt: skip
    with serving_ready(f"modelserve ({model.name})", command, ready, log) as info:
        yield info


def prepare_targets(model: BenchModel, info: dict[str, Any], workdir: Path, wrk: str | None) -> list[Target]:
    """Build each protocol's request, write what the generators send, and refuse to measure unless every
    protocol answers what in-process ONNX Runtime does and wrk sends exactly the intended body (h2load
    posts the framed message file as it is)."""
    expected = expected_output(model)
    targets = []
    for protocol in PROTOCOLS:
        request = build(protocol, model)
        answer = ask(protocol, request, info["rest_port"], info["grpc_port"])
        if answer.shape != expected.shape or not np.allclose(answer, expected, rtol=0, atol=model.tolerance):
            raise RuntimeError(
                f"{model.name} {protocol} answers {answer.ravel()[:5]}, expected {expected.ravel()[:5]}"
            )
        stem = workdir / f"{model.name}-{protocol}"
        script = None
        if isinstance(request, HttpRequest):
            port = info["rest_port"]
            payload = stem.with_suffix(".http")
            payload.write_bytes(request.wire("127.0.0.1", port))
            if wrk is not None:
                body_file = stem.with_suffix(".body")
                body_file.write_bytes(request.body)
                script = write_lua_file_body(stem.with_suffix(".lua"), body_file, request.headers)
                check_wrk_sends(wrk, script, request, f"{model.name} {protocol}")
        else:
            port = info["grpc_port"]
            payload = stem.with_suffix(".grpc")
            payload.write_bytes(request.body)
            framed = stem.with_suffix(".h2body")
            framed.write_bytes(grpc_frame(request.body))
            reply_bytes = len(grpc_frame(grpc_reply(request, port)))
            pid = int(info["pid"])
            targets.append(Target(model, protocol, request, port, pid, payload, None, framed, reply_bytes))
            continue
        targets.append(Target(model, protocol, request, port, int(info["pid"]), payload, script))
    return targets


def check_wrk_sends(wrk: str, script: Path, request: HttpRequest, label: str) -> None:
    """Catch the request wrk sends and compare it byte for byte with the one the Python client sends."""
    head, body = capture_wrk_request(wrk, script, request.path)
    lines = {line.lower() for line in head.decode().split("\r\n")[1:]}
    missing = [f"{k}: {v}" for k, v in request.headers.items() if f"{k}: {v}".lower() not in lines]
    if body != request.body or missing:
        raise RuntimeError(
            f"{label}: wrk sends {len(body)} body bytes (want {len(request.body)}), missing {missing}"
        )


def run_point(target: Target, client: str, connections: int, round_: int, args: argparse.Namespace,
              native: dict[str, str], workdir: Path, log: IO[bytes]) -> Point:  # fmt: skip
    """One warm-up and one measured window of ``target`` through ``client``."""
    wait_until_idle(target.server_pid)
    if client == H2LOAD:
        assert isinstance(target.request, GrpcRequest) and target.h2load_body is not None
        url = f"http://127.0.0.1:{target.port}{target.request.method}"
        # One connection carrying the calls (a gRPC channel), or one connection per call (wrk's shape).
        streams, sockets = (1, connections) if args.h2load_connection_per_call else (connections, 1)
        if args.warmup > 0:
            warm_h2load(native[H2LOAD], url, target.h2load_body, streams, args.warmup, sockets)
            wait_until_idle(target.server_pid)
        before = cpu_seconds(target.server_pid)
        h2 = run_h2load(
            native[H2LOAD], url, target.h2load_body, streams, args.duration, target.reply_data_bytes,
            workdir / "h2load.log", sockets,
        )  # fmt: skip
        server_s = cpu_seconds(target.server_pid) - before
        rps, p50, p99, errors = h2.rps, h2.p50_ms, h2.p99_ms, h2.errors
        server_us = server_s / (rps * args.duration) * 1e6 if rps else None
        client_us = None
    elif client == WRK:
        wrk = native[WRK]
        assert target.wrk_script is not None
        assert isinstance(target.request, HttpRequest)
        url = f"http://127.0.0.1:{target.port}{target.request.path}"
        run_wrk(wrk, target.wrk_script, url, connections, args.warmup)
        wait_until_idle(target.server_pid)
        before = cpu_seconds(target.server_pid)
        result = run_wrk(wrk, target.wrk_script, url, connections, args.duration)
        server_s = cpu_seconds(target.server_pid) - before
        rps, p50, p99, errors = result.rps, result.p50_ms, result.p99_ms, result.errors
        server_us = server_s / (rps * args.duration) * 1e6 if rps else None
        client_us = None
    else:
        kind = "http" if isinstance(target.request, HttpRequest) else "grpc"
        method = target.request.method if isinstance(target.request, GrpcRequest) else ""
        job = Job(
            kind, target.port, str(target.payload_file), method, connections, args.warmup, args.duration
        )
        load = drive(job, args.load_processes, workdir, log, target.server_pid)
        rps, p50, p99, errors, server_us = load.rps, load.p50_ms, load.p99_ms, load.errors, load.server_cpu_us
        client_us = load.client_cpu_us
    tensor_mb, wire_mb = target.model.x.nbytes / 1e6, len(target.request.body) / 1e6
    return Point(target.model.name, target.protocol, client, connections, round_, rps, rps * tensor_mb,
                 rps * wire_mb, p50, p99, errors, server_us, client_us)  # fmt: skip


def wait_until_idle(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until the server's CPU falls quiet: wrk stops with requests in flight, and the server still
    answers them (64 wide JSON requests are ~1.5 s of work) inside whatever window comes next."""
    deadline = time.monotonic() + timeout_s
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(IDLE_SAMPLE_S)
        now = cpu_seconds(pid)
        if now - last < IDLE_SAMPLE_S * 0.1:  # under 10% of a core
            return
        last = now


def clients_of(protocol: str, args: argparse.Namespace) -> list[str]:
    """The Python generator drives every protocol; wrk also drives the REST ones, h2load the gRPC ones."""
    if args.no_native:
        return [PY]
    return [PY, WRK] if protocol in REST_PROTOCOLS else [PY, H2LOAD]


def measure(
    targets: list[Target], args: argparse.Namespace, native: dict[str, str], workdir: Path
) -> list[Point]:
    """Per round, model and connection count, every protocol and client back to back."""
    points = []
    with open(workdir / "loadgen.log", "wb") as log:
        for round_ in range(args.repeats):
            for model in args.models:
                for connections in args.connections:
                    for target in (t for t in targets if t.model.name == model):
                        for client in clients_of(target.protocol, args):
                            p = run_point(target, client, connections, round_, args, native, workdir, log)
                            points.append(p)
                            print_point(p, args.repeats)
    return points


def print_point(p: Point, repeats: int) -> None:
    """One progress line per measured window."""
    cpu = "" if p.server_cpu_us is None else f"  server {p.server_cpu_us:7.0f} µs/req"
    print(
        f"  round {p.round + 1}/{repeats}  {p.model:<5} {p.protocol:<12} {p.client:<6} c={p.connections:<3} "
        f"{p.rps:>8.0f} req/s {p.tensor_mb_s:>8.1f} MB/s  p50 {p.p50_ms:7.2f} ms  p99 {p.p99_ms:7.2f} ms  "
        f"errors {p.errors}{cpu}",
        flush=True,
    )


def medians(points: list[Point]) -> list[dict[str, Any]]:
    """Medians over the rounds per model, protocol, client and connection count."""
    rows = []
    for key in dict.fromkeys((p.model, p.protocol, p.client, p.connections) for p in points):
        runs = [p for p in points if (p.model, p.protocol, p.client, p.connections) == key]
        row: dict[str, Any] = dict(zip(("model", "protocol", "client", "connections"), key, strict=True))
        for name in ("rps", "tensor_mb_s", "wire_mb_s", "p50_ms", "p99_ms"):
            row[name] = statistics.median(getattr(p, name) for p in runs)
        row["errors"] = sum(p.errors for p in runs)
        for name in ("server_cpu_us", "client_cpu_us"):
            known = [getattr(p, name) for p in runs if getattr(p, name) is not None]
            row[name] = statistics.median(known) if known else None
        rows.append(row)
    return rows


def ratio(
    points: list[Point], model: str, top: tuple[str, str], bottom: tuple[str, str], connections: int
) -> float | None:
    """Median over rounds of top / bottom requests/s, each a (protocol, client), or None if one is missing."""
    by_round: dict[int, dict[tuple[str, str], float]] = {}
    for p in points:
        if p.model == model and p.connections == connections:
            by_round.setdefault(p.round, {})[(p.protocol, p.client)] = p.rps
    ratios = [r[top] / r[bottom] for r in by_round.values() if top in r and r.get(bottom)]
    return statistics.median(ratios) if ratios else None


def verdicts(points: list[Point], per_call: bool = False) -> list[Verdict]:
    """The issue's targets at 8 and 64 connections where measured. gRPC against REST is judged twice, and
    must pass both: through the same Python client for both protocols, and through the native generators
    (h2load against wrk). Binary against JSON is judged through the Python client."""
    checks = []
    shape = "a connection per call" if per_call else "one connection"
    for connections in TARGET_CONNECTIONS:
        python = ratio(points, "tiny", ("grpc-predict", PY), ("rest-predict", PY), connections)
        native = ratio(points, "tiny", ("grpc-predict", H2LOAD), ("rest-predict", WRK), connections)
        if python is not None:
            name = f"tiny, {connections} in flight: gRPC Predict >= REST :predict requests/s (Python client)"
            checks.append(Verdict(name, f"{python:.2f}x", python >= 1.0))
        if native is not None:
            name = (
                f"tiny, {connections} in flight: gRPC Predict (h2load, {shape}) >= REST :predict (wrk) "
                "requests/s"
            )
            checks.append(Verdict(name, f"{native:.2f}x", native >= 1.0))
        for protocol in ("v2-binary", "v2-grpc"):
            value = ratio(points, "wide", (protocol, PY), ("rest-predict", PY), connections)
            if value is not None:
                name = (
                    f"wide, c={connections}: {protocol} >= {TARGET_BINARY_RATIO:g}x REST :predict JSON MB/s"
                )
                checks.append(Verdict(name, f"{value:.1f}x", value >= TARGET_BINARY_RATIO))
    errors = sum(p.errors for p in points)
    checks.append(Verdict("no errors (non-2xx / non-OK, socket errors, timeouts)", str(errors), errors == 0))
    return checks


def print_report(limits: dict[str, float], rows: list[dict[str, Any]], checks: list[Verdict]) -> None:
    """Medians per model, then PASS/FAIL per target."""
    print("\nin-process ONNX Runtime, batch 1, 1 intra-op thread (what the model itself costs):")
    for model, calls in limits.items():
        print(f"  {model:<5} {calls:>9,.0f} calls/s  {1e6 / calls:7.1f} µs/call")
    for model in dict.fromkeys(r["model"] for r in rows):
        print(
            f"\n{model}: {'protocol':<12} {'client':<6} {'conns':>5} {'req/s':>9} {'tensor MB/s':>11} "
            f"{'wire MB/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server µs/req':>13} {'client µs/req':>13} "
            f"{'errors':>6}"
        )
        for r in (r for r in rows if r["model"] == model):
            server, client = (
                ("" if r[k] is None else f"{r[k]:.0f}") for k in ("server_cpu_us", "client_cpu_us")
            )
            print(
                f"{'':<{len(model) + 2}}{r['protocol']:<12} {r['client']:<6} {r['connections']:>5} "
                f"{r['rps']:>9,.0f} {r['tensor_mb_s']:>11,.1f} {r['wire_mb_s']:>9,.1f} {r['p50_ms']:>8.2f} "
                f"{r['p99_ms']:>8.2f} {server:>13} {client:>13} {r['errors']:>6}"
            )
    print("\ntargets (ratios are medians of per-round ratios):")
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.value}")


def main() -> int:
    """Generate the models, start one server per model, check every protocol, measure, report."""
    args = parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    native = {} if args.no_native else {WRK: ensure_wrk(), H2LOAD: ensure_h2load()}
    wrk = native.get(WRK)
    busy_percent = warn_if_busy()
    per_round = sum(len(clients_of(p, args)) for p in PROTOCOLS) * len(args.models) * len(args.connections)
    estimate = per_round * args.repeats * (args.warmup + args.duration + POINT_OVERHEAD_S)
    print(f"{per_round * args.repeats} points, about {estimate / 60:.0f} min", flush=True)
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-") as tmp, contextlib.ExitStack() as servers:
        workdir = Path(tmp)
        models = [WRITERS[name](workdir) for name in args.models]
        limits = {model.name: in_process_calls_per_s(model) for model in models}
        targets: list[Target] = []
        for model in models:
            log = servers.enter_context(open(workdir / f"{model.name}.log", "wb"))
            info = servers.enter_context(start_server(model, workdir, log))
            targets += prepare_targets(model, info, workdir, wrk)
        print(
            "every protocol answers as in-process ONNX Runtime does; wrk sends the intended bytes", flush=True
        )
        points = measure(targets, args, native, workdir)

    rows = medians(points)
    checks = verdicts(points, args.h2load_connection_per_call)
    print_report(limits, rows, checks)
    if args.json:
        import grpc

        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {
                **(
                    machine(wrk, busy_percent)
                    if wrk
                    else {"cpus": os.cpu_count(), "platform": platform.platform()}
                ),
                "grpcio": grpc.__version__,
            },
            "settings": {k: str(v) for k, v in vars(args).items() if k not in ("json", "strict")},
            "in_process_calls_per_s": limits,
            "points": [asdict(p) for p in points],
            "medians": rows,
            "targets": [asdict(c) for c in checks],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if args.strict and not all(c.passed for c in checks) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(
            "\ninterrupted: every server and load generator this script started was stopped", file=sys.stderr
        )
        sys.exit(130)
