"""bench's own ceiling against wrk: requests/s of ``modelserve bench`` (1 and 2 processes) and ``wrk`` (1
and 2 threads) against the same trivial local server, same connections, same duration.

The server (``modelserve.bench.ceiling.trivial_server``: a raw asyncio protocol, uvloop, one process,
answering a fixed 200 with a 2-byte body) costs a few microseconds a request, so what is measured is the
load generators. Every round runs the four generators back to back; figures are medians over ``--rounds``
rounds and each ratio is the median of per-round ratios bench/wrk at the same process/thread count. On a
machine with few cores the server, bench and wrk share them: compare ratios within one run.

    python benchmarks/bench_ceiling.py [--duration 10] [--rounds 3] [--connections 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import DONE_HOOK, ensure_wrk

from modelserve.bench.ceiling import trivial_server
from modelserve.bench.load import LoadSpec, RequestTemplate, run_load
from modelserve.bench.report import machine_facts

GENERATORS = (("bench", 1), ("wrk", 1), ("bench", 2), ("wrk", 2))


def _wrk(wrk: str, script: Path, url: str, threads: int, connections: int, seconds: float) -> dict[str, Any]:
    """One ``wrk -tN`` run; exact p99 through the Lua ``done()`` hook."""
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", output)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    requests, micros, _, p99_us, errors = (int(group) for group in found.groups())
    return {"rps": requests / (micros / 1e6), "p99_ms": p99_us / 1e3, "errors": errors, "saturated": None}


def _measure(
    kind: str, parallel: int, url: str, args: argparse.Namespace, wrk: str, script: Path
) -> dict[str, Any]:
    if kind == "wrk":
        return _wrk(wrk, script, url, parallel, args.connections, args.duration)
    spec = LoadSpec(
        RequestTemplate(url, "GET"),
        concurrency=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        processes=parallel,
        timeout_s=10.0,
    )
    measured = run_load(spec)
    errors = measured.error_count
    return {
        "rps": measured.rps,
        "p99_ms": measured.latency_ms["p99"],
        "errors": errors,
        "saturated": measured.saturated,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="bench's warm-up before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    args = parser.parse_args()
    wrk = ensure_wrk()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir, trivial_server() as (url, _):
        script = Path(workdir) / "get.lua"
        script.write_text(DONE_HOOK)
        for round_index in range(args.rounds):
            for kind, parallel in GENERATORS:
                point = {"round": round_index, "generator": kind, "parallel": parallel}
                point.update(_measure(kind, parallel, url, args, wrk, script))
                runs.append(point)
                print(
                    f"round {round_index + 1}: {kind} x{parallel}: {point['rps']:,.0f} requests/s", flush=True
                )
    rows = []
    for kind, parallel in GENERATORS:
        points = [r for r in runs if r["generator"] == kind and r["parallel"] == parallel]
        rps = statistics.median(p["rps"] for p in points)
        rows.append({"generator": kind, "parallel": parallel, "rps": rps,
                     "p99_ms": statistics.median(p["p99_ms"] for p in points)})  # fmt: skip
    ratios = {}
    for parallel in (1, 2):
        per_round = [
            next(
                r["rps"]
                for r in runs
                if r["round"] == i and r["generator"] == "bench" and r["parallel"] == parallel
            )
            / next(
                r["rps"]
                for r in runs
                if r["round"] == i and r["generator"] == "wrk" and r["parallel"] == parallel
            )
            for i in range(args.rounds)
        ]
        ratios[parallel] = statistics.median(per_round)
    print(f"\n{args.connections} connections, {args.duration:g} s per run, medians over {args.rounds} rounds")
    print(f"{'generator':<22}{'requests/s':>14}{'p99 ms':>10}{'bench/wrk':>12}")
    for row in rows:
        unit = "processes" if row["generator"] == "bench" else "threads"
        name = f"{row['generator']}, {row['parallel']} {unit}"
        ratio = f"{ratios[row['parallel']]:.2f}" if row["generator"] == "bench" else ""
        print(f"{name:<22}{row['rps']:>14,.0f}{row['p99_ms']:>10.2f}{ratio:>12}")
    if args.json:
        document = {
            "runs": runs,
            "medians": rows,
            "ratios": ratios,
            "machine": machine_facts(),
            "args": vars(args),
        }
        args.json.write_text(json.dumps(document, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
