"""A running ``modelserve stack``, seen from its ready file: what it runs, and its gateway's worker count
changed live.

The ready file (``--ready-file``, written once the stack is up) names the gateway's URL and the pids of
the supervisor (``pid``), the model server, the gateway and nginx. The gateway's pid is the Gunicorn master
(``modelserve gateway`` runs Gunicorn's arbiter in its own process; its workers are its children). Gunicorn
adds one worker on SIGTTIN and retires the oldest on SIGTTOU, for every worker class, so the worker count is
the one thing a running stack lets tune change. The worker class, threads, upstream and the model server's
batching are read from the supervisor's command line (the ``modelserve stack`` flags) and stay fixed.

Gunicorn queues at most five signals and a retired worker first finishes its requests, so `GatewayWorkers`
sends one signal at a time and waits for the count of live children to follow; a count is reached when the
same workers have run for `SETTLE_S` and every new one has answered a request itself (``GET /stats`` names
the worker that served it).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil

from modelserve.tune.space import BATCHING_OFF, Batching, TrialConfig, static_batching

SETTLE_S = 0.5  # the same live workers this long: the count is stable
_POLL_S = 0.02
_ANSWER_WAIT_S = 10.0  # the most spent waiting for new workers to answer once the count is stable


class WorkerCountError(Exception):
    """The gateway did not reach the worker count asked for (or its master is gone); the message says why."""


@dataclass(frozen=True, slots=True)
class RunningStack:
    """What a running stack's ready file and its supervisor's command line say."""

    ready_file: Path
    supervisor_pid: int
    gateway_pid: int  # the Gunicorn master
    gateway_url: str
    sampled_pids: tuple[int, ...]  # model server, gateway, nginx (workers are found as their children)
    stack_args: tuple[str, ...]  # the ``modelserve stack`` flags it runs with (after ``stack``)
    config: TrialConfig  # its worker class, threads, upstream and batching (``workers``: the flag's)
    handler: str
    timeout_s: float
    graceful_timeout_s: float

    def command(self, workers: int) -> list[str]:
        """``modelserve stack`` with the running stack's flags and ``workers`` gateway workers."""
        kept: list[str] = []
        skip_next = False
        for arg in self.stack_args:
            if skip_next:
                skip_next = False
            elif arg == "--workers":
                skip_next = True
            elif not arg.startswith("--workers="):
                kept.append(arg)
        return ["modelserve", "stack", *kept, f"--workers={workers}"]


def attach(ready_file: Path) -> RunningStack:
    """The stack behind ``ready_file`` (ValueError when it is not a running ``modelserve stack``)."""
    try:
        state = json.loads(ready_file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--stack-ready-file {ready_file}: cannot read it: {error}") from None
    pids = state.get("pids") or {}
    if not isinstance(state.get("pid"), int) or not isinstance(pids.get("gateway"), int):
        raise ValueError(
            f"--stack-ready-file {ready_file}: no pid and pids.gateway: not a stack's ready file"
        )
    try:
        cmdline = psutil.Process(state["pid"]).cmdline()
        psutil.Process(pids["gateway"]).children()
    except psutil.Error:
        raise ValueError(
            f"--stack-ready-file {ready_file}: the stack (pid {state['pid']}) or its gateway "
            f"(pid {pids['gateway']}) is not running"
        ) from None
    stack_args = _stack_args(cmdline)
    if stack_args is None:
        raise ValueError(
            f"--stack-ready-file {ready_file}: pid {state['pid']} is not modelserve stack: "
            + " ".join(cmdline)
        )
    args = _parse_stack_args(stack_args)
    config = TrialConfig(
        "stack",
        args.worker_class,
        max(1, args.workers),
        args.upstream,
        _batching(tuple(args.serve_args)),
        threads=args.threads,
    )
    return RunningStack(
        ready_file=ready_file,
        supervisor_pid=int(state["pid"]),
        gateway_pid=int(pids["gateway"]),
        gateway_url=str(state.get("gateway_url") or state["url"]).rstrip("/"),
        sampled_pids=tuple(int(pids[r]) for r in ("model_server", "gateway", "nginx") if pids.get(r)),
        stack_args=tuple(stack_args),
        config=config,
        handler=args.handler,
        timeout_s=args.timeout,
        graceful_timeout_s=args.graceful_timeout,
    )


def claim(stack: RunningStack) -> IO[bytes]:
    """An exclusive lock on the stack's ready file, held while the returned file stays open: two tune runs
    signalling one master would each miscount its workers. ValueError when another run holds it."""
    handle = stack.ready_file.open("rb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(f"another modelserve tune is tuning the stack of {stack.ready_file}") from None
    return handle


def _stack_args(cmdline: list[str]) -> list[str] | None:
    """The flags after ``-m modelserve.stack``, or after ``stack`` in ``modelserve stack`` /
    ``python -m modelserve stack``; None for another program."""
    for index, arg in enumerate(cmdline):
        if arg == "modelserve.stack" and index > 0 and cmdline[index - 1] == "-m":
            return cmdline[index + 1 :]
        if arg == "stack" and index > 0 and Path(cmdline[index - 1]).name == "modelserve":
            return cmdline[index + 1 :]
    return None


def _parse_stack_args(stack_args: list[str]) -> argparse.Namespace:
    from modelserve.stack.command import configure_parser

    parser = argparse.ArgumentParser(prog="modelserve stack", add_help=False)
    configure_parser(parser)
    args, _ = parser.parse_known_args(stack_args)
    return args


def _batching(serve_args: tuple[str, ...]) -> Batching:
    """The model server's batching from the stack's ``--serve-arg`` flags: off, adaptive (no timeout in the
    parameters file, or no file) or static."""
    from modelserve.cli import parse_serve_options
    from modelserve.config.text_files import BatchingParameters, read_batching_parameters

    options = parse_serve_options(serve_args)
    if not options.enable_batching:
        return BATCHING_OFF
    parameters = (
        read_batching_parameters(options.batching_parameters_file)
        if options.batching_parameters_file
        else BatchingParameters()
    )
    if parameters.timeout_given:
        return static_batching(parameters.max_batch_size, parameters.batch_timeout_micros)
    return Batching("adaptive", max_batch_size=parameters.max_batch_size)


class GatewayWorkers:
    """The live worker count of a Gunicorn master, set with SIGTTIN/SIGTTOU (one signal at a time)."""

    def __init__(self, master_pid: int, url: str, log: Callable[[str], None] | None = None) -> None:
        self.master_pid = master_pid
        self.url = url.rstrip("/")
        self._log = log
        self._target: int | None = None  # the master's worker count as far as we know; None: unknown

    def pids(self) -> set[int]:
        """The master's live workers (zombies left out: they are gone, only not reaped yet)."""
        try:
            children = psutil.Process(self.master_pid).children()
        except psutil.NoSuchProcess:
            raise WorkerCountError(f"the gateway's Gunicorn master (pid {self.master_pid}) is gone") from None
        live = set()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    live.add(child.pid)
        return live

    def count(self, timeout_s: float = 30.0) -> int:
        """The worker count once it is stable (no worker starting or retiring)."""
        return len(self._stable(time.monotonic() + timeout_s))

    def resize(self, workers: int, timeout_s: float) -> set[int]:
        """Make the master run exactly ``workers`` workers, each of them answering; returns their pids.
        After an interrupted call the master's count is read again from the stable number of workers."""
        if workers < 1:
            raise ValueError(f"a Gunicorn master runs at least 1 worker, not {workers}")
        deadline = time.monotonic() + timeout_s
        before = self._stable(deadline) if self._target is None else self.pids()
        if self._target is None:
            self._target = len(before)
        target = self._target
        self._target = None  # unknown until this call completes
        while target != workers:
            step = 1 if workers > target else -1
            target += step
            try:
                os.kill(self.master_pid, signal.SIGTTIN if step > 0 else signal.SIGTTOU)
            except ProcessLookupError:
                raise WorkerCountError(
                    f"the gateway's Gunicorn master (pid {self.master_pid}) is gone"
                ) from None
            self._wait_for(target, deadline)  # one signal at a time: Gunicorn queues at most five
        live = self._stable(deadline)
        if len(live) != workers:
            raise WorkerCountError(f"the gateway settled at {len(live)} workers, not {workers}")
        silent = self._await_answers(live - before, workers, deadline)
        if silent and self._log is not None:
            self._log(f"workers {sorted(silent)} started but did not answer GET /stats yet")
        self._target = workers
        return live

    def _wait_for(self, workers: int, deadline: float) -> None:
        while (running := len(self.pids())) != workers:
            if time.monotonic() > deadline:
                raise WorkerCountError(
                    f"the gateway did not reach {workers} workers in time: it runs {running}"
                )
            time.sleep(_POLL_S)

    def _stable(self, deadline: float) -> set[int]:
        """The live workers once the same ones have run for `SETTLE_S`."""
        live, since = self.pids(), time.monotonic()
        while time.monotonic() - since < SETTLE_S:
            if time.monotonic() > deadline:
                raise WorkerCountError(f"the gateway's workers kept changing (now {len(live)})")
            time.sleep(_POLL_S)
            now = self.pids()
            if now != live:
                live, since = now, time.monotonic()
        return live

    def _await_answers(self, new: set[int], workers: int, deadline: float) -> set[int]:
        """Send rounds of ``workers`` concurrent ``GET /stats`` (a fresh connection each: a busy sync
        worker cannot take the next one) until every new worker served one, for at most `_ANSWER_WAIT_S`;
        returns the ones that did not."""
        waiting = set(new)
        stop = min(deadline, time.monotonic() + _ANSWER_WAIT_S)
        limits = httpx.Limits(max_keepalive_connections=0, max_connections=workers)
        with (
            httpx.Client(limits=limits, timeout=5.0, trust_env=False) as client,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            while waiting and time.monotonic() < stop:
                for served_by in pool.map(lambda _: self._served_by(client), range(workers)):
                    waiting.discard(served_by)
                time.sleep(_POLL_S)
        return waiting

    def _served_by(self, client: httpx.Client) -> int:
        """The pid of the worker that answered a ``GET /stats`` (0: no answer, or not a /stats document)."""
        try:
            return int(client.get(f"{self.url}/stats").json()["gateway"]["served_by"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return 0
