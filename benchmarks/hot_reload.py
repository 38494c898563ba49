"""Hot reload under load: model version swaps while closed-loop clients send REST :predict.

One ``modelserve serve`` polls a base path (default version policy: latest 1). Closed-loop clients
(``--clients``, default 8: asyncio in this process, one keep-alive connection each, on loopback, sharing
the machine's cores with the server) send one-row :predict requests for the whole run; every request's
start, end, status and ``x-model-version`` header is recorded, and each answer's output must have been
computed by the version its header names (``hot_reload_models.py``). Phases:

1. steady state (``--steady`` s, no swaps): the baseline;
2. ``--swaps`` swaps published by atomic rename: the files written under a hidden non-integer name in the
   base path, then renamed to ``<base>/<N>``. One every 1.5-2 s (a random phase against the poll), each
   waited for until a reply carries the new version; the older directories are then deleted, so the base
   path holds one version;
3. ``--aged-swaps`` swaps renaming into place a directory written at the start of the run (old mtimes);
4. ``--copy-swaps`` swaps published by writing the file straight into ``<base>/<N>/`` over
   ``--copy-seconds`` (a slow copy: the server must wait for its settle rule);
5. steady state again (``--after`` s): did anything drift.

    python benchmarks/hot_reload.py [--swaps 20] [--aged-swaps 5] [--copy-swaps 5] [--clients 8] [--poll 1]
                                    [--settle 1.0] [--steady 10] [--after 5] [--json-out out.json]

Targets (issue "Model versions"): no failed request during the swaps; p99 during the (rename) swaps <= 2x
the steady state's; a version published by rename serves within poll interval + load + warm-up, measured
per swap from the rename to the end of the first reply that carries it (copies in place: from their last
byte written, within poll + settle + load + warm-up). The server's load and warm-up times come from
its log. Exits 0 whatever the figures (this is a measurement), 1 if the server does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import random
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hot_reload_models as models
import numpy as np
import orjson
import psutil
from _common import exit_on_sigterm, serving_ready, venv_script, warn_if_busy

MODEL_NAME = "m"
HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 10.0
CLIENT_WARMUP_S = 1.0  # connections opened, first calls made: not part of any phase
GAP_S = (1.5, 2.0)  # from one publish to the next, drawn at random so publishes fall anywhere in a poll
MIN_QUIET_S = 0.3  # at least this long (+ a random part of a poll) from one version serving to the next
MODES = ("rename", "rename-aged", "copy")
DRAIN_S = 0.5  # a phase ends this long after its last swap served: the old version's unload is in it
WINDOW_TAIL_S = 0.1  # a swap's window ends this long after its predecessor was unloaded
LAG_TICK_S = 0.005  # the clients' loop is probed this often: a late wake-up is a client-side stall
P99_TARGET = 2.0
ERRORS_KEPT = 20
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_VERSION = re.compile(rb"\r\nx-model-version:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+): (.*)$")
_LOG_EVENT = re.compile(
    r"^(loading|available|unloaded|load failed) model=\S+ version=(\d+)(?: load_seconds=([\d.]+))?"
)
_LOG_WARMUP = re.compile(r"^warm-up model=\S+ version=(\d+): .* in ([\d.]+) ms")
_LOG_UNSETTLED = re.compile(r"version=(\d+) .*(?:being written|until it is quiet)")


def parse_args() -> argparse.Namespace:
    """Command line; the defaults run in about 90 s."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--swaps", type=int, default=20, help="swaps published by rename (default 20)")
    parser.add_argument("--aged-swaps", type=int, default=5, help="swaps renaming in old files (default 5)")
    parser.add_argument("--copy-swaps", type=int, default=5, help="swaps copied in place (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (default 8)")
    parser.add_argument("--poll", type=int, default=1, help="--file_system_poll_wait_seconds (default 1)")
    parser.add_argument("--settle", type=float, default=1.0, help="--version_settle_seconds (default 1.0)")
    parser.add_argument("--steady", type=float, default=10.0, help="steady-state seconds first (default 10)")
    parser.add_argument("--after", type=float, default=5.0, help="steady-state seconds last (default 5)")
    parser.add_argument(
        "--copy-seconds", type=float, default=0.5, help="how long a copy in place takes (default 0.5)"
    )
    parser.add_argument("--width", type=int, default=1024, help="hidden layer width (default 1024)")
    parser.add_argument("--layers", type=int, default=4, help="hidden layers (default 4: 13 MB)")
    parser.add_argument(
        "--swap-timeout", type=float, default=30.0, help="give up on a version not served after this long"
    )
    parser.add_argument("--json-out", type=Path, help="write the figures, every swap and the verdicts here")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--samples-out", type=Path, help="save every request (start, end, ok, version) .npz")
    args = parser.parse_args()
    if args.poll < 1:
        parser.error("--poll must be >= 1: with 0 the server never looks for new versions")
    if args.swaps < 1 or args.clients < 1:
        parser.error("--swaps and --clients must be >= 1")
    return args


# -- the load ------------------------------------------------------------------------------------------------


class Load:
    """Closed-loop clients on one asyncio loop, recording every request.

    Requests live in flat arrays (no object per request that the garbage collector would walk), so the
    record itself causes no pauses in the clients that would read as server latency.
    """

    def __init__(self, port: int, body: bytes, base_output: float) -> None:
        head = (
            f"POST /v1/models/{MODEL_NAME}:predict HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._wire = head.encode() + body
        self._port = port
        self._base_output = base_output  # output[0][0] minus the version that computed it
        self.starts = array("d")  # time.perf_counter()
        self.ends = array("d")
        self.ok = array("b")
        self.versions = array("q")  # x-model-version, -1 when absent
        self.failures = 0
        self.errors: list[tuple[float, str]] = []  # the first ERRORS_KEPT failures: (end, why)
        self.first_served: dict[int, float] = {}  # version -> end of its first good reply
        self.lag_at = array("d")  # when a probe of the clients' loop went to sleep
        self.lag = array("d")  # and how much later than asked it woke up
        self._waiters: dict[int, asyncio.Event] = {}
        self._running = True
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, clients: int) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]
        self._tasks.append(asyncio.create_task(self._probe()))

    async def stop(self) -> None:
        """Let every client finish its request in flight (bounded), then cancel what is left."""
        self._running = False
        _, late = await asyncio.wait(self._tasks, timeout=REQUEST_TIMEOUT_S + 1)
        for task in late:
            task.cancel()

    async def served(self, version: int, timeout_s: float) -> float | None:
        """When the first good reply from ``version`` arrived, or None if none within ``timeout_s``."""
        if version not in self.first_served:
            event = self._waiters.setdefault(version, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return self.first_served.get(version)

    async def _probe(self) -> None:
        """Measure how late the loop wakes up: a slow reply during a loop stall is the client's doing."""
        while self._running:
            before = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self.lag_at.append(before)
            self.lag.append(time.perf_counter() - before - LAG_TICK_S)

    def lag_max_ms(self, start: float, end: float) -> float:
        """The clients' worst loop stall between ``start`` and ``end``, in ms."""
        at = np.frombuffer(self.lag_at, dtype=np.float64)
        lag = np.frombuffer(self.lag, dtype=np.float64)[(at >= start - LAG_TICK_S) & (at < end)]
        return float(lag.max() * 1e3) if lag.size else float("nan")

    async def _client(self) -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while self._running:
            start = time.perf_counter()
            version, error, unreachable = -1, None, False
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    if connection is None:
                        connection = await asyncio.open_connection(HOST, self._port)
                    reader, writer = connection
                    writer.write(self._wire)
                    head = await reader.readuntil(b"\r\n\r\n")
                    found = _CONTENT_LENGTH.search(head)
                    body = await reader.readexactly(int(found.group(1))) if found else b""
                version, error = self._check(head, body)
                if _CLOSE.search(head):
                    writer.close()
                    connection = None
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                unreachable = isinstance(exc, ConnectionRefusedError)
                if connection is not None:
                    connection[1].close()
                    connection = None
            self._record(start, time.perf_counter(), version, error)
            if unreachable:
                await asyncio.sleep(0.01)  # no server: do not spin

    def _check(self, head: bytes, body: bytes) -> tuple[int, str | None]:
        """The reply's version and what is wrong with it, if anything."""
        found = _VERSION.search(head)
        version = int(found.group(1)) if found else -1
        status = head[9:12].decode(errors="replace")
        if status != "200":
            return version, f"HTTP {status}: {body[:200].decode(errors='replace')}"
        if found is None:
            return version, "no x-model-version header"
        try:
            computed = round(orjson.loads(body)["predictions"][0][0] - self._base_output)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return version, f"unreadable reply ({exc}): {body[:200].decode(errors='replace')}"
        if computed != version:
            return version, f"x-model-version: {version}, but version {computed} computed the output"
        return version, None

    def _record(self, start: float, end: float, version: int, error: str | None) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.ok.append(error is None)
        self.versions.append(version)
        if error is not None:
            self.failures += 1
            if len(self.errors) < ERRORS_KEPT:
                self.errors.append((end, error))
        elif version not in self.first_served:
            self.first_served[version] = end
            waiter = self._waiters.pop(version, None)
            if waiter is not None:
                waiter.set()


# -- the swaps -----------------------------------------------------------------------------------------------


@dataclass
class Swap:
    """One published version; times are ``time.perf_counter()``, the log's converted to that clock."""

    version: int
    mode: str  # one of MODES
    started: float  # when the benchmark began writing or renaming it
    published: float  # the version complete on disk (rename: the rename)
    served: float | None = None  # end of the first good reply from it
    loading: float | None = None  # server log: "loading"
    available: float | None = None  # server log: "available"
    load_seconds: float | None = None  # server log: load, warm-up included
    warmup_ms: float | None = None  # server log: the warm-up alone
    predecessor_unloaded: float | None = None  # server log: the version it replaced, "unloaded"
    waited_to_settle: bool = False  # server log: it saw the version "being written" and waited
    failed_loads: int = 0  # server log: "load failed" lines (e.g. a copy loaded half-written)

    @property
    def to_serve(self) -> float | None:
        """Seconds from complete on disk to the first reply it served."""
        return None if self.served is None else self.served - self.published


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds used so far by the whole machine, the server, and this process (the clients)."""

    at: float
    machine: float
    server: float
    clients: float

    @classmethod
    def take(cls, server: psutil.Process) -> CpuSample:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        server_times, own = server.cpu_times(), psutil.Process().cpu_times()
        return cls(time.perf_counter(), total - idle, server_times.user + server_times.system,
                   own.user + own.system)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the run; requests belong to the phase in which they started. CPU shares are % of
    all the machine's cores; "others" is everything else running on it (steal time included)."""

    name: str
    start: float
    end: float
    server_cpu: float
    clients_cpu: float
    others_cpu: float

    @classmethod
    def since(cls, name: str, first: CpuSample, server: psutil.Process) -> Phase:
        last = CpuSample.take(server)
        capacity = (last.at - first.at) * (os.cpu_count() or 1) / 100
        server_cpu, clients_cpu = last.server - first.server, last.clients - first.clients
        others = last.machine - first.machine - server_cpu - clients_cpu
        return cls(name, first.at, last.at, server_cpu / capacity, clients_cpu / capacity,
                   max(0.0, others) / capacity)  # fmt: skip


@dataclass
class Run:
    """What ``exercise`` did: the requests, the phases and the swaps."""

    load: Load
    phases: list[Phase] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    gave_up: str = ""  # why the swaps stopped early, if they did


async def exercise(port: int, server: psutil.Process, args: argparse.Namespace, base: Path, staging: Path,
                   body: bytes, base_output: float) -> Run:  # fmt: skip
    """Steady state, the swaps of each publishing mode, steady state again; always stops the clients."""
    run = Run(Load(port, body, base_output))
    run.load.start(args.clients)
    rng = random.Random(0)
    try:
        await asyncio.sleep(CLIENT_WARMUP_S)
        first = CpuSample.take(server)
        await asyncio.sleep(args.steady)
        run.phases.append(Phase.since("steady", first, server))
        version = 1
        counts = {"rename": args.swaps, "rename-aged": args.aged_swaps, "copy": args.copy_swaps}
        for mode, count in counts.items():
            if count < 1 or run.gave_up:
                continue
            first = CpuSample.take(server)
            next_publish = first.at
            for index in range(count):
                version += 1
                await asyncio.sleep(max(0.0, next_publish - time.perf_counter()))
                swap = await publish(mode, staging / str(version), base, version, args.copy_seconds)
                swap.served = await run.load.served(version, args.swap_timeout)
                run.swaps.append(swap)
                if swap.served is None:
                    run.gave_up = f"version {version} was not served {args.swap_timeout:g} s after {mode}"
                    print(f"  {run.gave_up}: no more swaps", flush=True)
                    break
                print(
                    f"  swap {index + 1:>2}/{count} {mode:<11} version {version:>2}: served "
                    f"{swap.served - swap.published:.3f} s after it was complete on disk",
                    flush=True,
                )
                await asyncio.to_thread(models.delete_versions_below, base, version)
                quiet = MIN_QUIET_S + rng.uniform(0, args.poll)  # not locked to the poll's phase
                next_publish = max(swap.started + rng.uniform(*GAP_S), swap.served + quiet)
            await asyncio.sleep(DRAIN_S)
            run.phases.append(Phase.since(f"{mode} swaps", first, server))
        if args.after > 0:
            first = CpuSample.take(server)
            await asyncio.sleep(args.after)
            run.phases.append(Phase.since("steady after", first, server))
    finally:
        await run.load.stop()
    return run


async def publish(mode: str, staged: Path, base: Path, version: int, copy_seconds: float) -> Swap:
    """Publish one staged version the ``mode`` way, off the loop (it writes files, or sleeps)."""
    started = time.perf_counter()
    if mode == "rename":
        done = await asyncio.to_thread(models.publish_by_rename, staged, base, version)
    elif mode == "rename-aged":
        done = models.publish_aged(staged, base, version)
    else:
        done = await asyncio.to_thread(models.copy_in_place, staged, base, version, copy_seconds)
    return Swap(version, mode, started, done)


# -- the server's log ----------------------------------------------------------------------------------------


@dataclass
class ServerLog:
    """What the server logged about versions, its warnings and errors, and its settle-rule waits."""

    # (event, version) -> wall times, in order: a version whose load failed is loaded again
    events: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    load_seconds: dict[int, float] = field(default_factory=dict)
    warmup_ms: dict[int, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # WARNING and ERROR lines
    unsettled: set[int] = field(default_factory=set)  # versions it saw "being written" and waited for


def read_log(text: str) -> ServerLog:
    """Parse ``asctime level logger: message`` lines (the server's format; asctime is local time)."""
    parsed = ServerLog()
    for line in text.splitlines():
        found = _LOG_LINE.match(line)
        if found is None:
            continue
        stamp, level, _, message = found.groups()
        when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if level in ("WARNING", "ERROR", "CRITICAL"):
            parsed.problems.append(line)
        if unsettled := _LOG_UNSETTLED.search(message):
            parsed.unsettled.add(int(unsettled.group(1)))
        if event := _LOG_EVENT.match(message):
            version = int(event.group(2))
            parsed.events.setdefault((event.group(1), version), []).append(when)
            if event.group(3) is not None:
                parsed.load_seconds[version] = float(event.group(3))
        elif warm := _LOG_WARMUP.match(message):
            parsed.warmup_ms[int(warm.group(1))] = float(warm.group(2))
    return parsed


def attach_log(swaps: list[Swap], log: ServerLog, wall_minus_perf: float) -> None:
    """Fill each swap's server-side times, converted to ``perf_counter`` time."""

    def event(kind: str, version: int, before: float | None = None) -> float | None:
        """The first such event, or with ``before`` the last one no later than it (perf clock)."""
        times = [when - wall_minus_perf for when in log.events.get((kind, version), [])]
        if before is not None:
            times = [when for when in times if when <= before][-1:]
        return times[0] if times else None

    for swap in swaps:
        swap.available = event("available", swap.version)
        # The load that succeeded, not an earlier one that failed.
        swap.loading = event("loading", swap.version, swap.available or float("inf"))
        swap.predecessor_unloaded = event("unloaded", swap.version - 1)
        swap.failed_loads = len(log.events.get(("load failed", swap.version), []))
        swap.load_seconds = log.load_seconds.get(swap.version)
        swap.warmup_ms = log.warmup_ms.get(swap.version)
        swap.waited_to_settle = swap.version in log.unsettled


# -- figures -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """Requests that started in some stretch of the run; latencies of the good ones."""

    name: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    failed: int
    client_lag_max_ms: float  # the clients' worst loop stall in this stretch
    server_cpu: float | None = None  # % of all cores (whole phases only)
    clients_cpu: float | None = None
    others_cpu: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One of the issue's targets, or (``passed`` None) a figure shown beside them for comparison."""

    name: str
    value: str
    passed: bool | None


def stats(name: str, load: Load, mask: np.ndarray, seconds: float, phase: Phase | None = None) -> Stats:
    """Figures of the requests selected by ``mask`` (over ``seconds`` of the run)."""
    starts = np.frombuffer(load.starts, dtype=np.float64)
    ends = np.frombuffer(load.ends, dtype=np.float64)
    ok = np.frombuffer(load.ok, dtype=np.int8).astype(bool)
    good = (ends - starts)[mask & ok] * 1e3
    p50, p99, top = np.percentile(good, [50, 99, 100]) if good.size else (np.nan, np.nan, np.nan)
    requests = int(mask.sum())
    lag = load.lag_max_ms(float(starts[mask].min()), float(ends[mask].max())) if requests else float("nan")
    cpu = (phase.server_cpu, phase.clients_cpu, phase.others_cpu) if phase else (None, None, None)
    return Stats(name, requests, requests / seconds, float(p50), float(p99), float(top),
                 int((mask & ~ok).sum()), lag, *cpu)  # fmt: skip


def slowest(run: Run, count: int = 5) -> list[str]:
    """The slowest good requests, each placed against the last swap whose load began before it."""
    starts = np.frombuffer(run.load.starts, dtype=np.float64)
    latencies = np.frombuffer(run.load.ends, dtype=np.float64) - starts
    origin = run.phases[0].start if run.phases else 0.0
    measured = (np.frombuffer(run.load.ok, dtype=np.int8) == 1) & (starts >= origin)  # not the warm-up
    latencies = np.where(measured, latencies, -1.0)
    lines = []
    for index in np.argsort(latencies)[::-1][:count]:
        if latencies[index] < 0:
            break
        start = float(starts[index])
        where = next((p.name for p in run.phases if p.start <= start < p.end), "between phases")
        before = [s for s in run.swaps if s.loading is not None and s.loading <= start]
        if before:
            swap = before[-1]
            assert swap.loading is not None
            where += f", {(start - swap.loading) * 1e3:+.0f} ms from version {swap.version}'s load start"
        stall = run.load.lag_max_ms(start, start + float(latencies[index]))
        took = latencies[index] * 1e3
        lines.append(f"  {took:7.1f} ms at t={start - origin:7.3f} s, client stall {stall:5.1f} ms ({where})")
    return lines


def phase_stats(run: Run) -> list[Stats]:
    """One row per phase, and one for the requests that started while the server was swapping versions:
    from a version's "loading" to its predecessor's "unloaded" (+ WINDOW_TAIL_S)."""
    starts = np.frombuffer(run.load.starts, dtype=np.float64)
    rows = []
    for phase in run.phases:
        mask = (starts >= phase.start) & (starts < phase.end)
        rows.append(stats(phase.name, run.load, mask, phase.end - phase.start, phase))
        swaps = [s for s in run.swaps if phase.start <= s.started < phase.end and s.loading is not None]
        if not swaps:
            continue
        busy = np.zeros_like(mask)
        seconds = 0.0
        for swap in swaps:
            assert swap.loading is not None
            done = swap.predecessor_unloaded or swap.available or swap.loading
            end = done + WINDOW_TAIL_S
            busy |= (starts >= swap.loading) & (starts < end)
            seconds += end - swap.loading
        rows.append(stats("  of which swapping", run.load, busy, seconds))
    return rows


def bound(swap: Swap, args: argparse.Namespace) -> float | None:
    """What the target allows this swap: poll + load + warm-up (+ settle when copied in place)."""
    if swap.load_seconds is None:
        return None
    settle = float(args.settle) if swap.mode == "copy" else 0.0
    return float(args.poll) + swap.load_seconds + settle


def verdicts(run: Run, rows: list[Stats], args: argparse.Namespace) -> list[Verdict]:
    """The issue's three targets; the third is the rename's, the other modes are shown against theirs."""
    by_name = {row.name: row for row in rows}
    checks = []
    swapping = [by_name[f"{mode} swaps"] for mode in MODES if f"{mode} swaps" in by_name]
    failed = sum(row.failed for row in swapping)
    checks.append(Verdict("no failed requests during the swaps", str(failed), failed == 0 and bool(swapping)))
    if "steady" in by_name and "rename swaps" in by_name:
        steady, swaps = by_name["steady"], by_name["rename swaps"]
        ratio = swaps.p99_ms / steady.p99_ms
        checks.append(Verdict(
            f"p99 during the rename swaps <= {P99_TARGET:g}x steady state",
            f"{ratio:.2f}x ({swaps.p99_ms:.2f} ms vs {steady.p99_ms:.2f} ms)", ratio <= P99_TARGET,
        ))  # fmt: skip
    for mode in MODES:
        allowed = "poll + settle + load + warm-up" if mode == "copy" else "poll + load + warm-up"
        swaps_of_mode = [s for s in run.swaps if s.mode == mode]
        if not swaps_of_mode:
            continue
        ratios = [ratio_to_bound(s, args) for s in swaps_of_mode]
        known = [r for r in ratios if r is not None]
        worst = max(known) if known else float("nan")
        passed = len(known) == len(swaps_of_mode) and worst <= 1.0
        checks.append(Verdict(
            f"{mode}: every version serves within {allowed}",
            f"max {worst:.2f}x the bound, {len(known)}/{len(swaps_of_mode)} served and timed",
            passed if mode == "rename" else None,
        ))  # fmt: skip
    return checks


def ratio_to_bound(swap: Swap, args: argparse.Namespace) -> float | None:
    """Measured appear -> serve over what the target allows; None when either is unknown."""
    allowed = bound(swap, args)
    return None if swap.to_serve is None or allowed is None else swap.to_serve / allowed


def span(start: float | None, end: float | None) -> float | None:
    """``end - start``, None when either is unknown."""
    return None if start is None or end is None else end - start


def median(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def maximum(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return max(known) if known else float("nan")


def print_report(run: Run, rows: list[Stats], log: ServerLog, checks: list[Verdict],
                 args: argparse.Namespace) -> None:  # fmt: skip
    """Latency per phase, appear -> serve per mode with its parts, failures, server warnings, verdicts."""
    columns = ("requests", "req/s", "p50 ms", "p99 ms", "max ms", "failed", "stall ms", "server%", "client%")
    print(f"\n{'requests that started in':<26}", *columns, "other%")
    for row in rows:
        cpu = ""
        if row.server_cpu is not None:
            cpu = f" {row.server_cpu:>7.0f} {row.clients_cpu:>7.0f} {row.others_cpu:>6.0f}"
        print(f"{row.name:<26} {row.requests:>8} {row.rps:>5.0f} {row.p50_ms:>6.2f} {row.p99_ms:>6.2f} "
              f"{row.max_ms:>6.1f} {row.failed:>6} {row.client_lag_max_ms:>8.1f}{cpu}")  # fmt: skip
    print(f"stall: the clients' worst event-loop stall; CPU: % of all {os.cpu_count()} cores used by the "
          "server, the clients (this process) and everything else (steal included)")  # fmt: skip
    if rows and rows[0].name == "steady":
        steady = rows[0]
        for row in rows[1:]:
            print(f"  {row.name.strip():<24} / steady: p50 {row.p50_ms / steady.p50_ms:.2f}x, "
                  f"p99 {row.p99_ms / steady.p99_ms:.2f}x")  # fmt: skip
    print("slowest requests:", *slowest(run), sep="\n")
    print_swaps(run, args)
    print(f"\nfailed requests: {run.load.failures} over the whole run")
    origin = run.phases[0].start if run.phases else 0.0
    for when, why in run.load.errors:
        print(f"  t={when - origin:+.3f} s  {why}")
    if log.problems:
        print(f"server warnings and errors: {len(log.problems)}")
        for line in log.problems[:10]:
            print(f"  {line}")
    if run.gave_up:
        print(f"swaps stopped early: {run.gave_up}")
    print()
    for check in checks:
        label = "info" if check.passed is None else "PASS" if check.passed else "FAIL"
        print(f"{label:<4}  {check.name}: {check.value}")


def print_swaps(run: Run, args: argparse.Namespace) -> None:
    """Per publishing mode: complete on disk -> first reply, its parts, and the bound it is held to."""
    print("\ncomplete on disk -> first reply from it, seconds: median [max]")
    print(f"{'publishing':<12} {'swaps':>5} {'waited':>6} {'failed':>6} {'measured':>15} {'detected':>8} "
          f"{'loaded':>7} {'routed':>7} {'bound':>6} {'measured / bound':>16}")  # fmt: skip
    for mode in MODES:
        swaps = [s for s in run.swaps if s.mode == mode]
        if not swaps:
            continue
        measured = [s.to_serve for s in swaps]
        ratios = [ratio_to_bound(s, args) for s in swaps]
        waited = sum(s.waited_to_settle for s in swaps)
        failed = sum(s.failed_loads for s in swaps)
        print(
            f"{mode:<12} {len(swaps):>5} {waited:>6} {failed:>6} {median(measured):>6.3f} "
            f"[{maximum(measured):.3f}] {median([span(s.published, s.loading) for s in swaps]):>8.3f} "
            f"{median([span(s.loading, s.available) for s in swaps]):>7.3f} "
            f"{median([span(s.available, s.served) for s in swaps]):>7.3f} "
            f"{median([bound(s, args) for s in swaps]):>6.3f} {median(ratios):>7.2f} [{maximum(ratios):.2f}]"
        )
    loads = [s.load_seconds for s in run.swaps]
    warmups = [s.warmup_ms for s in run.swaps]
    print(
        'detected: until the server logged "loading" (of the load that succeeded); loaded: until '
        '"available"; routed: until the first reply ended.\nwaited: swaps the server saw being written and '
        "waited for (settle rule); failed: loads that failed (retried once the files changed).\nbound: "
        "poll + load + warm-up (copy: + settle). Server load_seconds, warm-up included: "
        f"{median(loads):.3f} [{maximum(loads):.3f}], of which warm-up {median(warmups):.1f} ms "
        f"[{maximum(warmups):.1f}]; poll {args.poll} s, settle {args.settle:g} s"
    )


def write_json(path: Path, run: Run, rows: list[Stats], log: ServerLog, checks: list[Verdict],
               args: argparse.Namespace, busy: float) -> None:  # fmt: skip
    """Settings, machine, phases, every swap (times relative to the steady state's start), verdicts."""
    import onnxruntime as ort

    origin = run.phases[0].start if run.phases else 0.0

    def relative(swap: Swap) -> dict[str, Any]:
        record = asdict(swap)
        for key, value in record.items():
            if isinstance(value, float) and key not in ("load_seconds", "warmup_ms"):
                record[key] = value - origin
        record["to_serve"] = swap.to_serve
        record["bound"] = bound(swap, args)
        return record

    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "cpu_busy_percent_before": busy,
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "phases": [asdict(row) for row in rows],
        "swaps": [relative(swap) for swap in run.swaps],
        "failed_requests": run.load.failures,
        "first_errors": [{"t": when - origin, "error": why} for when, why in run.load.errors],
        "server_problems": log.problems,
        "targets": [asdict(check) for check in checks],
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


# -- main ----------------------------------------------------------------------------------------------------


def check_first_answer(port: int, body: bytes, expected: np.ndarray) -> None:
    """Refuse to measure unless version 1 answers as in-process ONNX Runtime does, with its header."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/v1/models/{MODEL_NAME}:predict",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:
        header = reply.headers.get("x-model-version")
        answer = np.asarray(json.loads(reply.read())["predictions"], dtype=np.float32)
    if header != "1" or not np.allclose(answer, expected, rtol=0, atol=1e-4):
        raise RuntimeError(f"version 1 answers {answer.tolist()} (x-model-version {header}), "
                           f"in-process ONNX Runtime {expected.tolist()}")  # fmt: skip


def server_command(args: argparse.Namespace, base: Path, ready: Path) -> list[str]:
    """``modelserve serve`` on loopback, REST only, OS-assigned port, with the benchmark's poll and settle."""
    return [
        venv_script("modelserve"), "serve", "--port=0", "--rest_api_port=8501", f"--rest_api_host={HOST}",
        "--ephemeral_ports", f"--ready_file={ready}", f"--model_name={MODEL_NAME}",
        f"--model_base_path={base}", f"--file_system_poll_wait_seconds={args.poll}",
        f"--version_settle_seconds={args.settle}",
    ]  # fmt: skip


def main() -> int:
    """Stage the versions, start the server, check it, run the phases, read its log, report."""
    args = parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    busy = warn_if_busy()
    last_version = 1 + args.swaps + args.aged_swaps + args.copy_swaps
    with tempfile.TemporaryDirectory(prefix="modelserve-hot-reload-") as tmp:
        workdir = Path(tmp)
        base, staging = workdir / "models" / MODEL_NAME, workdir / "staging"
        base.mkdir(parents=True)
        started = time.perf_counter()
        models.stage(models.build(args.width, args.layers), staging, range(1, last_version + 1))
        models.publish_aged(staging / "1", base, 1)
        model_file = base / "1" / models.MODEL_FILE
        seconds = time.perf_counter() - started
        megabytes = model_file.stat().st_size / 1e6
        print(f"staged {last_version} versions of a {megabytes:.1f} MB MLP in {seconds:.1f} s", flush=True)
        row = models.request_row()
        expected = models.offline_output(model_file, row)
        body = json.dumps({"instances": row.tolist()}).encode()
        base_output = float(expected[0, 0]) - 1.0  # version 1 adds 1 to every output

        ready, log_path = workdir / "ready.json", workdir / "server.log"
        command = server_command(args, base, ready)
        with open(log_path, "wb") as log_file, serving_ready("modelserve", command, ready, log_file) as info:
            port, server = int(info["rest_port"]), psutil.Process(int(info["pid"]))
            check_first_answer(port, body, expected)
            print(
                f"server ready; {args.clients} clients: {args.steady:g} s steady, {args.swaps} rename, "
                f"{args.aged_swaps} aged rename and {args.copy_swaps} copy swaps, {args.after:g} s steady",
                flush=True,
            )
            wall_minus_perf = time.time() - time.perf_counter()
            gc.collect()
            gc.freeze()  # what was built so far is never collected: fewer, shorter collector pauses
            run = asyncio.run(exercise(port, server, args, base, staging, body, base_output))
        log_text = log_path.read_text(errors="replace")
    if args.server_log:
        args.server_log.write_text(log_text)
    log = read_log(log_text)
    attach_log(run.swaps, log, wall_minus_perf)
    rows = phase_stats(run)
    checks = verdicts(run, rows, args)
    print_report(run, rows, log, checks, args)
    if args.json_out:
        write_json(args.json_out, run, rows, log, checks, args, busy)
    if args.samples_out:
        origin = run.phases[0].start if run.phases else 0.0
        np.savez_compressed(
            args.samples_out,
            start=np.frombuffer(run.load.starts, dtype=np.float64) - origin,
            end=np.frombuffer(run.load.ends, dtype=np.float64) - origin,
            ok=np.frombuffer(run.load.ok, dtype=np.int8),
            version=np.frombuffer(run.load.versions, dtype=np.int64),
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: the server this script started was stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:  # the server did not start or answered wrongly: nothing was measured
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
