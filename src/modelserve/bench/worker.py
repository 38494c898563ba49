"""One load-generating process: an asyncio loop running closed- or open-loop clients over one window.

The parent (`load.run_load`) starts each worker (see `spawn`; its
first message is the `WorkerJob`), waits for ``ready`` (connections open), sends ``go`` to all
together, and reads ``progress`` messages until the ``result``. Messages are tuples on a multiprocessing
pipe: ``("ready",)``, ``("progress", dict)``, ``("result", dict)``, ``("failed", traceback)``. The parent
sends nothing after ``go``: anything readable on the pipe during the run (its end of file, when the parent
died) stops the worker at once, so a killed ``modelserve bench`` does not leave its workers loading the
server.

Timing uses ``time.perf_counter`` (uvloop's loop clock has 1 ms steps). A closed-loop request counts when its
answer arrives in the measured window, an open-loop one when its *intended* send time falls in it, and its
latency runs from that intended time. Every request has a deadline ``timeout_s`` after that start: a ticker
aborts it then, an open-loop request still waiting for a free connection at its deadline is not sent, and
either counts as a ``"timeout"``, so every run ends by itself: the window, then at most ``timeout_s`` of
draining. Throughput is the successes that *arrived* inside the window, per second of it: in an open loop
faster than the server, that is what the server achieved, not the rate offered. Only successful requests
enter the latency histogram; failures are counted by key: the HTTP status (``"500"``), ``"connection"``,
``"timeout"``, or the gRPC code name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modelserve.bench.arrivals import Pacer, schedule
from modelserve.bench.histogram import LatencyHistogram
from modelserve.bench.http1 import READ_LIMIT, HttpTarget, read_reply
from modelserve.bench.spawn import child_connection

TICK_S = 0.05
CONNECT_TIMEOUT_S = 5.0


def demand_seconds() -> tuple[float, float]:
    """``(cpu_s, wanted_s)`` of this thread so far: CPU used, and that plus time spent runnable but waiting.

    On a shared machine a loop that always has work may get only part of a core; the time it waited for one
    counts as demand too, so ``wanted_s`` per wall second near 1 means the loop never idled. Linux reads
    ``/proc/thread-self/schedstat``; elsewhere both are the process's CPU time.
    """
    try:
        with open("/proc/thread-self/schedstat") as stream:
            running_ns, waiting_ns = (int(field) for field in stream.read().split()[:2])
        return running_ns / 1e9, (running_ns + waiting_ns) / 1e9
    except (OSError, ValueError):
        cpu = time.process_time()
        return cpu, cpu


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """This process's share of a `LoadSpec` (picklable: it crosses to a spawned process)."""

    kind: str  # "http" or "grpc"
    http: tuple[HttpTarget, ...]  # one per body of the pool (HTTP)
    grpc_target: str  # host:port (gRPC)
    grpc_method: str
    grpc_bodies: tuple[bytes, ...]
    connections: int
    rate: float | None  # the whole run's rate; this worker sends its part
    arrival: str
    seed: int | None
    part: int
    parts: int
    warmup_s: float
    duration_s: float
    requests: int | None
    timeout_s: float
    progress_interval_s: float = 0.5


class _Window:
    """Which answers count (warm-up first, then the measured window) and what they measured."""

    def __init__(self, job: WorkerJob, start: float) -> None:
        self.open_loop = job.rate is not None
        self.timeout_s = job.timeout_s
        self.warm_end = start + job.warmup_s
        self.end = self.warm_end + job.duration_s
        self.limit = job.requests
        self.histogram = LatencyHistogram()
        self.requests = 0  # measured requests, failures included
        self.completed = 0  # successes that arrived inside the window, whenever sent: the achieved throughput
        self.errors: Counter[str] = Counter()
        self.answered = 0  # every answer, warm-up included (progress)
        self.failed = 0
        self.limit_reached_at: float | None = None

    def record(self, start: float, done: float, error: str | None) -> None:
        """One request's end: ``start`` is when it was sent (closed loop) or meant to be sent (open loop).

        A success that took longer than ``timeout_s`` from ``start`` is a ``"timeout"``: its user gave up.
        """
        self.answered += 1
        if error is None and done - start > self.timeout_s:
            error = "timeout"
        self.failed += error is not None
        if error is None and self.warm_end <= done < self.end:
            self.completed += 1
        moment = start if self.open_loop else done
        if not self.warm_end <= moment < self.end:
            return
        if self.limit is not None and self.requests >= self.limit:
            return
        self.requests += 1
        if error is None:
            self.histogram.record_seconds(done - start)
        else:
            self.errors[error] += 1
        if self.limit is not None and self.requests >= self.limit:
            self.limit_reached_at = done
            self.end = min(self.end, done)  # no more sends

    def measured_s(self) -> float:
        if self.limit_reached_at is not None:
            return max(self.limit_reached_at - self.warm_end, 1e-9)
        return self.end - self.warm_end


class _HttpSlot:
    """One client: its keep-alive connection (HTTP) and the request in flight, which the ticker aborts at its
    deadline and a run cut short counts as a timeout."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.started = 0.0  # of the request in flight: its send time (closed loop) or intended time (open)
        self.deadline = 0.0  # 0.0: nothing in flight
        self.timed_out = False

    async def connect(self, timeout_s: float) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=READ_LIMIT), timeout_s
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def exchange(self, target: HttpTarget) -> str | None:
        """Send one request and read its reply before ``deadline``; None on 2xx, else the error key."""
        try:
            if self.writer is None:
                await self.connect(min(CONNECT_TIMEOUT_S, max(self.deadline - time.perf_counter(), 1e-3)))
            assert self.reader is not None and self.writer is not None
            self.writer.write(target.wire)
            if len(target.wire) > 1 << 16:  # only then can the write buffer fill and need draining
                await self.writer.drain()
            status, keep_alive = await read_reply(self.reader, target.head_only)
            if not keep_alive:
                self.close()
            return None if 200 <= status < 300 else str(status)
        except TimeoutError:  # the connect timed out (TimeoutError is an OSError: caught first)
            self.close()
            return "timeout"
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return "timeout" if self.timed_out else "connection"
        finally:
            self.timed_out = False


class _Run:
    """The clients, the window and the ticker of one worker."""

    def __init__(
        self, job: WorkerJob, send: Callable[[tuple[Any, ...]], None], parent_gone: Callable[[], bool]
    ) -> None:
        self.job = job
        self.send = send
        self.parent_gone = parent_gone
        self.abandoned = False  # the parent went away: stop, send nothing
        self.connect_timeout_s = min(CONNECT_TIMEOUT_S, job.timeout_s)
        self.tasks: list[asyncio.Future[None]] = []
        host, port = (job.http[0].host, job.http[0].port) if job.http else ("", 0)
        self.slots = [_HttpSlot(host, port) for _ in range(job.connections)]  # gRPC: one per client, unused
        self.channel: Any = None
        self.call: Any = None
        self.window: _Window | None = None
        self.pacer: Pacer | None = None
        self.cpu: list[tuple[float, float, float]] = []  # (perf_counter, *demand_seconds()) at the edges
        self.http_targets: Iterator[HttpTarget] = itertools.cycle(job.http)
        self.grpc_bodies: Iterator[bytes] = itertools.cycle(job.grpc_bodies)

    async def connect(self) -> None:
        """Open the connections before ``ready`` so the measured run does not pay for them."""
        if self.job.kind == "grpc":
            import grpc  # type: ignore[import-untyped]

            options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
            self.channel = grpc.aio.insecure_channel(self.job.grpc_target, options=options)
            with contextlib.suppress(TimeoutError):  # a server that is down: calls fail, counted
                await asyncio.wait_for(self.channel.channel_ready(), self.connect_timeout_s)
            self.call = self.channel.unary_unary(self.job.grpc_method)  # no serializers: bytes in and out
            return
        for slot in self.slots:
            with contextlib.suppress(OSError, TimeoutError):
                await slot.connect(self.connect_timeout_s)

    async def exchange(self, slot: _HttpSlot, started: float) -> str | None:
        """One request on ``slot``, due ``timeout_s`` after ``started``; None on success, else the error key.

        ``slot.deadline`` stays set if the call is cancelled, so a run cut short counts it as a timeout.
        """
        slot.started, slot.deadline = started, started + self.job.timeout_s
        if self.call is None:
            error = await slot.exchange(next(self.http_targets))
        else:
            error = await self._grpc_exchange(slot.deadline)
        slot.deadline = 0.0
        return error

    async def _grpc_exchange(self, deadline: float) -> str | None:
        import grpc

        try:
            await self.call(next(self.grpc_bodies), timeout=max(deadline - time.perf_counter(), 1e-3))
            return None
        except grpc.aio.AioRpcError as error:
            code = error.code()
            return "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else str(code.name)

    async def closed_client(self, slot: _HttpSlot) -> None:
        window = self.window
        assert window is not None
        while (start := time.perf_counter()) < window.end:
            error = await self.exchange(slot, start)
            window.record(start, time.perf_counter(), error)

    async def open_client(self, slot: _HttpSlot) -> None:
        window, pacer, timeout_s = self.window, self.pacer, self.job.timeout_s
        assert window is not None and pacer is not None
        while True:
            now = time.perf_counter()
            intended, wait = pacer.next(now)
            if intended >= window.end:
                return
            if wait > 0:
                await asyncio.sleep(wait)
                pacer.sent(intended, time.perf_counter())
            elif now - intended > timeout_s:  # waited for a free connection past its deadline: not sent
                window.record(intended, now, "timeout")
                continue
            error = await self.exchange(slot, intended)
            window.record(intended, time.perf_counter(), error)

    async def ticker(self, done: asyncio.Event) -> None:
        """Stop if the parent went away; abort overdue HTTP requests, sample CPU at the window's edges, send
        progress."""
        window = self.window
        assert window is not None
        next_progress = time.perf_counter() + self.job.progress_interval_s
        while not done.is_set():
            if self.parent_gone():
                self.abandon()
                return
            now = time.perf_counter()
            for slot in self.slots:
                if slot.deadline and now > slot.deadline and slot.writer is not None:
                    slot.timed_out = True
                    slot.writer.transport.abort()
            if (not self.cpu and now >= window.warm_end) or (len(self.cpu) == 1 and now >= window.end):
                self.cpu.append((now, *demand_seconds()))
            if now >= next_progress:
                next_progress = now + self.job.progress_interval_s
                try:
                    self.send(("progress", self.progress()))
                except OSError:  # the parent closed the pipe (it died) since the check above
                    self.abandon()
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), TICK_S)

    def abandon(self) -> None:
        """The parent went away: nobody reads the result, so stop loading the server at once."""
        self.abandoned = True
        for task in self.tasks:
            task.cancel()

    def progress(self) -> dict[str, Any]:
        window = self.window
        assert window is not None
        return {
            "answered": window.answered,
            "failed": window.failed,
            "measured": window.requests,
            "histogram": window.histogram.encode() if window.histogram.count else b"",
        }

    async def run(self) -> dict[str, Any]:
        job = self.job
        start = time.perf_counter()
        self.window = window = _Window(job, start)
        if job.rate is not None:
            offsets = schedule(job.rate, job.arrival, job.seed, job.part, job.parts)
            self.pacer = Pacer(offsets, start)
        client = self.open_client if job.rate is not None else self.closed_client
        done = asyncio.Event()
        ticker = asyncio.ensure_future(self.ticker(done))
        self.tasks = [asyncio.ensure_future(client(slot)) for slot in self.slots]
        bound = job.warmup_s + job.duration_s + job.timeout_s + 1.0
        try:
            _, late = await asyncio.wait(self.tasks, timeout=bound)
            for task in late:  # only possible for a gRPC call the library did not end
                task.cancel()
            if late:
                await asyncio.wait(late)
            now = time.perf_counter()
            if len(self.cpu) < 2:
                self.cpu += [(now, *demand_seconds())] * (2 - len(self.cpu))
            done.set()
            await ticker
        finally:
            for slot in self.slots:
                slot.close()
            if self.channel is not None:
                await self.channel.close()
        for slot in self.slots:  # cut short: what was in flight timed out, as did what was still to send
            if slot.deadline:
                window.record(slot.started, now, "timeout")
        for intended in self.pacer.unsent_before(window.end) if self.pacer is not None else ():
            window.record(intended, now, "timeout")
        (t0, cpu0, wanted0), (t1, cpu1, wanted1) = self.cpu
        pacer = self.pacer
        return {
            "requests": window.requests,
            "completed": window.completed,
            "errors": dict(window.errors),
            "histogram": window.histogram.encode(),
            "measured_s": window.measured_s(),
            "cpu_fraction": (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else 0.0,
            "demand_fraction": (wanted1 - wanted0) / (t1 - t0) if t1 > t0 else 0.0,
            "issued": pacer.issued if pacer else 0,
            "behind_cap": pacer.behind_cap if pacer else 0,
            "late": pacer.late if pacer else 0,
            "late_fraction": pacer.late_fraction if pacer else 0.0,
            "max_lateness_s": pacer.max_lateness_s if pacer else 0.0,
            "mean_lateness_s": pacer.mean_lateness_s if pacer else 0.0,
        }


async def _main(job: WorkerJob, connection: Any) -> None:
    run = _Run(job, connection.send, connection.poll)
    await run.connect()
    connection.send(("ready",))
    loop = asyncio.get_running_loop()
    try:
        message = await loop.run_in_executor(None, connection.recv)
    except EOFError:  # the parent went away before the start
        return
    if message != ("go",):
        return
    result = await run.run()
    if not run.abandoned:
        connection.send(("result", result))


def worker_main(job: WorkerJob, connection: Any) -> None:
    """Entry point of a spawned worker process (uvloop for HTTP when it is installed)."""
    try:
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        if job.kind == "http":
            with contextlib.suppress(ImportError):
                import uvloop

                loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_main(job, connection))
    except BaseException:
        with contextlib.suppress(OSError):
            connection.send(("failed", traceback.format_exc()))
        raise
    finally:
        connection.close()


def child_main(argv: list[str]) -> None:
    """Entry point of a worker process started by `spawn.start_child`: its first message is the job."""
    connection = child_connection(argv)
    worker_main(connection.recv(), connection)
