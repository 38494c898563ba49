"""A light closed-loop load generator for gRPC unary calls and HTTP/1.1 keep-alive requests.

wrk speaks no gRPC, so ``protocols.py`` drives gRPC with this, and REST with this too, so that the
protocols are compared through the same client. Each worker process runs one asyncio loop with
``connections`` concurrent requests in flight, each sent again as soon as its answer arrives (wrk's model):

- HTTP: one keep-alive TCP connection per concurrent request (as ``wrk -c``), raw asyncio streams
  writing the pre-built request bytes and reading the reply by its ``Content-Length``;
- gRPC: one ``grpc.aio`` channel (one HTTP/2 connection, as gRPC clients share a channel) carrying
  ``connections`` concurrent unary calls of a pre-serialized message, with no serializers (bytes in,
  bytes out), so the client's protobuf work is not part of what is measured.

A request counts when its answer arrives inside the measured window (after the warm-up); its latency is
recorded exactly (p50/p99 from every sample). Replies that are not 2xx / OK count as errors, and so do
requests still unanswered ``timeout_s`` after the window (then cancelled), so every run is bounded in time.

The parent (``drive``) starts the workers in their own process groups, waits until each has connected
(``READY``), releases them together (``GO``), samples the server's CPU time over the measured window, and
always stops them (``_common.stop``). Worker command line (internal):
``python loadgen.py JOB_JSON LATENCIES_FILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_WAIT_S = 10.0
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close\r\n", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Job:
    """What one run sends: ``payload_file`` holds the whole HTTP request or the serialized gRPC message."""

    kind: str  # "http" or "grpc"
    port: int
    payload_file: str
    method: str  # gRPC method ("/package.Service/Method"); "" for HTTP
    connections: int
    warmup_s: float
    duration_s: float
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One measured window over all worker processes."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    client_cpu_us: float  # load generator CPU per answered request (all its threads)
    server_cpu_us: float | None  # server CPU per answered request, when its pid was given


class _Window:
    """Counts answers that arrive inside [warm_end, end) and keeps their latencies (seconds)."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        now = time.perf_counter()
        self.warm_end = now + warmup_s
        self.end = self.warm_end + duration_s
        self.latencies: list[float] = []
        self.errors = 0

    def record(self, start: float, done: float, ok: bool) -> None:
        if self.warm_end <= done < self.end:
            if ok:
                self.latencies.append(done - start)
            else:
                self.errors += 1


async def _http_client(port: int, wire: bytes, window: _Window, connection: Any) -> None:
    """One keep-alive connection sending ``wire`` back to back; reconnects after a failure."""
    reader, writer = connection
    big = len(wire) > 1 << 16  # only then can the write buffer fill and need draining
    while (start := time.perf_counter()) < window.end:
        try:
            writer.write(wire)
            if big:
                await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            found = _CONTENT_LENGTH.search(head)
            if found:
                await reader.readexactly(int(found.group(1)))
            window.record(start, time.perf_counter(), head[9:10] == b"2")
            if _CLOSE.search(head):  # e.g. Gunicorn's sync workers: one request per connection
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            window.record(start, time.perf_counter(), False)
            writer.close()
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(HOST, port)
    writer.close()


async def _grpc_client(call: Any, body: bytes, timeout_s: float, window: _Window) -> None:
    """Unary calls of ``body`` back to back on the shared channel."""
    import grpc

    while (start := time.perf_counter()) < window.end:
        try:
            await call(body, timeout=timeout_s)
            ok = True
        except grpc.aio.AioRpcError:
            ok = False
        window.record(start, time.perf_counter(), ok)


async def _work(job: Job, latencies_file: Path) -> dict[str, Any]:
    """Connect, report READY, wait for GO, run the window, save the latencies; returns the summary."""
    payload = Path(job.payload_file).read_bytes()
    loop = asyncio.get_running_loop()
    channel: Any = None
    if job.kind == "grpc":
        import grpc

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        channel = grpc.aio.insecure_channel(f"{HOST}:{job.port}", options=options)
        await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        call = channel.unary_unary(job.method)  # no serializers: bytes in, bytes out
    else:
        connections = [
            await asyncio.open_connection(HOST, job.port, limit=1 << 20) for _ in range(job.connections)
        ]
    print("READY", flush=True)
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "GO":
        raise SystemExit("loadgen: expected GO on stdin")

    window = _Window(job.warmup_s, job.duration_s)
    cpu: list[float] = []
    loop.call_later(job.warmup_s, lambda: cpu.append(time.process_time()))
    loop.call_later(job.warmup_s + job.duration_s, lambda: cpu.append(time.process_time()))
    if job.kind == "grpc":
        clients = [_grpc_client(call, payload, job.timeout_s, window) for _ in range(job.connections)]
    else:
        clients = [_http_client(job.port, payload, window, c) for c in connections]
    tasks = [asyncio.ensure_future(client) for client in clients]
    _, late = await asyncio.wait(tasks, timeout=job.warmup_s + job.duration_s + job.timeout_s)
    for task in late:  # unanswered long after the window: a timeout, as wrk counts it
        task.cancel()
    window.errors += len(late)
    if channel is not None:
        await channel.close()
    np.save(latencies_file, np.asarray(window.latencies, dtype=np.float64))
    cpu_s = cpu[1] - cpu[0] if len(cpu) == 2 else float("nan")
    return {"requests": len(window.latencies), "errors": window.errors, "cpu_s": cpu_s}


def worker_main(argv: list[str]) -> int:
    """Entry point of one worker process (``python loadgen.py JOB_JSON LATENCIES_FILE``)."""
    job = Job(**json.loads(argv[0]))
    summary = asyncio.run(_work(job, Path(argv[1])))
    print("RESULT " + json.dumps(summary), flush=True)
    return 0


# -- the parent side -------------------------------------------------------------------------------------


def split(connections: int, processes: int) -> list[int]:
    """Concurrent requests per worker: as even as possible, no idle workers."""
    workers = max(1, min(processes, connections))
    return [connections // workers + (i < connections % workers) for i in range(workers)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@contextlib.contextmanager
def _worker(command: list[str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """A worker in its own process group with pipes for READY / GO / RESULT; always stopped."""
    from _common import stop

    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True
    )
    try:
        yield process
    finally:
        stop(process)


def _read_line(process: subprocess.Popen[bytes], timeout_s: float, log: IO[bytes]) -> str:
    """The worker's next line, or a RuntimeError with the log's tail if it dies or stays silent."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline().decode() if ready else ""
    if not line:
        log.flush()
        tail = Path(log.name).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"load generator worker failed or timed out\n{tail}")
    return line.strip()


def drive(job: Job, processes: int, workdir: Path, log: IO[bytes], server_pid: int | None) -> LoadResult:
    """Run ``job`` over ``processes`` workers and merge their windows (exact percentiles over all)."""
    with contextlib.ExitStack() as stack:
        workers = []
        for index, connections in enumerate(split(job.connections, processes)):
            latencies_file = workdir / f"latencies-{index}.npy"
            spec = json.dumps(asdict(replace(job, connections=connections)))
            command = [sys.executable, str(Path(__file__).resolve()), spec, str(latencies_file)]
            workers.append((stack.enter_context(_worker(command, log)), latencies_file))
        for process, _ in workers:
            if _read_line(process, READY_TIMEOUT_S, log) != "READY":
                raise RuntimeError("load generator worker did not report READY")
        for process, _ in workers:
            assert process.stdin is not None
            process.stdin.write(b"GO\n")
            process.stdin.flush()
        server_cpu = None
        if server_pid is not None:
            time.sleep(job.warmup_s)
            before = cpu_seconds(server_pid)
            time.sleep(job.duration_s)
            server_cpu = cpu_seconds(server_pid) - before
        bound = job.warmup_s + job.duration_s + job.timeout_s + READY_TIMEOUT_S
        summaries = []
        for process, _ in workers:
            line = _read_line(process, bound, log)
            if not line.startswith("RESULT "):
                raise RuntimeError(f"unexpected load generator output: {line!r}")
            summaries.append(json.loads(line.removeprefix("RESULT ")))
            process.wait(STOP_WAIT_S)
        latencies = np.concatenate([np.load(file) for _, file in workers])
    requests = int(sum(s["requests"] for s in summaries))
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3 if requests else (float("nan"), float("nan"))
    per_request = 1e6 / requests if requests else float("nan")
    return LoadResult(
        rps=requests / job.duration_s,
        p50_ms=float(p50),
        p99_ms=float(p99),
        errors=int(sum(s["errors"] for s in summaries)),
        requests=requests,
        client_cpu_us=sum(s["cpu_s"] for s in summaries) * per_request,
        server_cpu_us=None if server_cpu is None else server_cpu * per_request,
    )


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
