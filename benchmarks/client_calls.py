"""What a call costs the caller: the modelserve Python client against a hand-written httpx call, in one run.

A web worker that calls the model server spends its own CPU on every call, beside the pre- and
post-processing it exists for; this measures that share. One ``modelserve serve`` of the tiny MLP (64 -> 256
-> 256 -> 10, one row per call) on loopback; in this process, one after the other:

- ``httpx`` (the baseline): ``httpx.Client`` posting TF Serving REST JSON (orjson), what one would write by
  hand;
- ``client rest``: ``modelserve.client.Client`` over REST, TF Serving's API;
- ``client rest-v2``: the same over REST, KServe V2 with the binary tensor extension;
- ``client grpc``: the same over gRPC, TF Serving's API;
- ``httpx async`` (the asyncio baseline): ``httpx.AsyncClient``, as ``httpx`` above;
- ``async client rest``: ``modelserve.client.AsyncClient`` over REST, TF Serving's API.

Each is measured with 1 caller (calls/s and this process's CPU µs per call) and with 16 callers (threads,
or tasks on one event loop) sharing one client of 8 connections (calls/s and failed calls). Figures are
medians over ``--repeats`` rounds; every round measures every target back to back.

    python benchmarks/client_calls.py [--calls 3000] [--repeats 5] [--threads 16] [--json out.json]

Targets: the client's REST call costs at most half its baseline's CPU per call (1 caller; sync against
``httpx``, asyncio against ``httpx async``), and no call fails with 16 callers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from _common import exit_on_sigterm, serving_ready, venv_script, warn_if_busy

from modelserve.client import AsyncClient, Client
from modelserve.demo.models import write_tiny_mlp

TARGET_CPU_RATIO = 0.5
Call = Callable[[], np.ndarray]
AsyncCall = Callable[[], Awaitable[np.ndarray]]
BASELINE = {"httpx async": "httpx async", "async client rest": "httpx async"}  # others: "httpx"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=3000, help="calls per measurement (split between threads)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--connections", type=int, default=8, help="the shared client's max_connections")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args()


def httpx_call(client: httpx.Client, x: np.ndarray) -> Call:
    body = {"instances": x.tolist()}

    def call() -> np.ndarray:
        reply = client.post("/v1/models/tiny:predict", content=orjson.dumps(body))
        reply.raise_for_status()
        return np.asarray(orjson.loads(reply.content)["predictions"], np.float32)

    return call


def client_call(client: Client, x: np.ndarray) -> Call:
    return lambda: client.predict("tiny", {"x": x})["y"]


def measure(call: Call, calls: int, threads: int) -> tuple[float, float, int]:
    """(calls/s, this process's CPU µs per call, failed calls) for ``calls`` calls over ``threads``."""
    failures = [0]

    def work(count: int) -> None:
        for _ in range(count):
            try:
                call()
            except Exception:
                failures[0] += 1

    each = calls // threads
    wall, cpu = time.perf_counter(), time.process_time()
    if threads == 1:
        work(each)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, [each] * threads))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return each * threads / wall, cpu / (each * threads) * 1e6, failures[0]


async def measure_async(call: AsyncCall, calls: int, tasks: int) -> tuple[float, float, int]:
    """`measure` for a coroutine: ``tasks`` tasks on this event loop."""
    failures = [0]

    async def work(count: int) -> None:
        for _ in range(count):
            try:
                await call()
            except Exception:
                failures[0] += 1

    each = calls // tasks
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(work(each) for _ in range(tasks)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return each * tasks / wall, cpu / (each * tasks) * 1e6, failures[0]


async def async_point(
    name: str, rest: str, x: np.ndarray, expected: np.ndarray, args: argparse.Namespace
) -> tuple[float, float, float, int]:
    """One round of an asyncio target, its client made on this loop: warm, checked, then measured."""
    call: AsyncCall
    if name == "httpx async":
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
        client: Any = httpx.AsyncClient(base_url=rest, trust_env=False, limits=limits)
        body = orjson.dumps({"instances": x.tolist()})

        async def call() -> np.ndarray:
            reply = await client.post("/v1/models/tiny:predict", content=body)
            reply.raise_for_status()
            return np.asarray(orjson.loads(reply.content)["predictions"], np.float32)

        close = client.aclose
    else:
        client = AsyncClient(rest, max_connections=args.connections)

        async def call() -> np.ndarray:
            return (await client.predict("tiny", {"x": x}))["y"]

        close = client.close
    try:
        np.testing.assert_allclose(await call(), expected, rtol=1e-5, atol=1e-6, err_msg=name)
        await measure_async(call, 200, 1)
        rate, cpu, _ = await measure_async(call, args.calls, 1)
        shared_rate, _, failed = await measure_async(call, args.calls, args.threads)
    finally:
        await close()
    return rate, cpu, shared_rate, failed


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    busy = warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="client-calls-") as tmp:
        workdir = Path(tmp)
        write_tiny_mlp(workdir / "tiny", version=1, seed=0)
        ready = workdir / "ready.json"
        command = [
            venv_script("modelserve"), "serve", "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1",
            "--model_name=tiny", f"--model_base_path={workdir / 'tiny'}", "--ephemeral_ports",
            f"--ready_file={ready}",
        ]  # fmt: skip
        with (
            open(workdir / "server.log", "wb") as log,
            serving_ready("modelserve", command, ready, log) as info,
        ):
            rows = run(args, f"http://127.0.0.1:{info['rest_port']}", f"grpc://127.0.0.1:{info['grpc_port']}")
    report(args, rows, busy)


def run(args: argparse.Namespace, rest: str, grpc: str) -> dict[str, dict[str, list[float]]]:
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    targets = {
        "httpx": lambda: httpx.Client(base_url=rest, trust_env=False, limits=limits),
        "client rest": lambda: Client(rest, max_connections=args.connections),
        "client rest-v2": lambda: Client(rest, protocol="v2", max_connections=args.connections),
        "client grpc": lambda: Client(grpc),
    }
    calls: dict[str, Call] = {}
    closers: list[Callable[[], None]] = []
    for name, make in targets.items():
        client = make()
        closers.append(client.close)
        calls[name] = httpx_call(client, x) if isinstance(client, httpx.Client) else client_call(client, x)
    expected = calls["client grpc"]()
    for name, call in calls.items():  # every target answers the same, and is warm
        np.testing.assert_allclose(call(), expected, rtol=1e-5, atol=1e-6, err_msg=name)
        measure(call, 200, 1)
    names = [*calls, "httpx async", "async client rest"]
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    try:
        for round_ in range(args.repeats):
            for name in names:
                if name in calls:
                    rate, cpu, _ = measure(calls[name], args.calls, 1)
                    shared_rate, _, failed = measure(calls[name], args.calls, args.threads)
                else:
                    rate, cpu, shared_rate, failed = asyncio.run(async_point(name, rest, x, expected, args))
                for key, value in (
                    ("rps_1", rate),
                    ("cpu_us_1", cpu),
                    ("rps_n", shared_rate),
                    ("failed_n", failed),
                ):
                    figures[name].setdefault(key, []).append(value)
                print(
                    f"round {round_ + 1}/{args.repeats} {name:17s} 1 caller: {rate:7.0f} calls/s "
                    f"{cpu:5.0f} µs CPU | {args.threads} callers: {shared_rate:7.0f} calls/s, {failed} lost",
                    flush=True,
                )
    finally:
        for close in closers:
            close()
    return figures


def report(args: argparse.Namespace, figures: dict[str, dict[str, list[float]]], busy: float) -> None:
    rows = {
        name: {key: statistics.median(values) for key, values in per.items()}
        | {"failed_total": sum(per["failed_n"])}
        for name, per in figures.items()
    }
    print(f"\nmedians of {args.repeats} rounds, {args.calls} calls each; {args.threads} callers share "
          f"{args.connections} connections")  # fmt: skip
    print(f"{'target':18s} {'calls/s @1':>11s} {'CPU µs/call':>12s} {'vs baseline':>12s} "
          f"{'calls/s @' + str(args.threads):>12s} {'failed':>7s}")  # fmt: skip
    checks = []
    for name, row in rows.items():
        baseline = BASELINE.get(name, "httpx")
        relative = row["cpu_us_1"] / rows[baseline]["cpu_us_1"]
        print(
            f"{name:18s} {row['rps_1']:11.0f} {row['cpu_us_1']:12.0f} {relative:11.2f}x "
            f"{row['rps_n']:12.0f} {row['failed_total']:7d}"
        )
        if name in ("client rest", "async client rest"):
            checks.append((f"{name} CPU per call <= {TARGET_CPU_RATIO:g}x {baseline}'s", f"{relative:.2f}x",
                           relative <= TARGET_CPU_RATIO))  # fmt: skip
    for name, row in rows.items():
        if not name.startswith("httpx"):
            failed = int(row["failed_total"])
            checks.append((f"{name}: no failed call with {args.threads} callers", str(failed), failed == 0))
    print()
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {value}")
    if args.json:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "cpu_busy_before": busy, "rows": rows,
                  "checks": [{"name": n, "value": v, "pass": ok} for n, v, ok in checks]}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.exit(main())
