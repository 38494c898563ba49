"""The batcher of one model version: bounded queues, batch threads, merged runs, per-request results.

Threads, not the event loop, form and run batches, so any front-end on any event loop (REST, gRPC, V2)
feeds the same queues. ``submit`` is called on an event loop and returns an asyncio future of that loop;
batch threads resolve the futures of one batch with a single ``call_soon_threadsafe`` per loop, so a batch
of 64 costs the loop one wake-up, not 64.

Queues are keyed by signature, requested outputs and input shapes (``tensors.shape_key``): only requests
that can be stacked share a queue. All queues of a version share one bound on queued rows — a full
bound answers RESOURCE_EXHAUSTED at once (TF Serving's behaviour), so memory never grows without limit.

A request's rows stay together unless ``split_large_batches`` allows cutting it across batches (its
pieces are reassembled in order). A caller that stops waiting (deadline, cancellation) abandons its
ticket: the rows leave the queue at once and never run. If a merged batch fails, each request in it is
run alone, so one bad request fails only itself. Every task's ``release`` (the version handle) is called
exactly once, when the batcher is done with it, and never under the batcher's lock (a release takes the
version's own lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from modelserve.batching.estimators import ArrivalRate
from modelserve.batching.options import BatchingOptions
from modelserve.batching.policy import AdaptivePolicy, BatchPolicy, QueueView, StaticPolicy
from modelserve.batching.tensors import MergedBatch, batch_rows, merge, pad_target, shape_key, split
from modelserve.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    ServingError,
    Unavailable,
)

log = logging.getLogger("modelserve.batching")

Outputs = dict[str, np.ndarray]
RunFunction = Callable[[str, Mapping[str, np.ndarray], Sequence[str]], Outputs]
"""The wrapped servable's ``predict(signature_name, inputs, output_names)``."""


class BatchObserver(Protocol):
    """Metrics hooks; called on batch threads, outside the batcher's lock."""

    def batch_ran(
        self, rows: int, padded_rows: int, run_seconds: float, queue_delays: Sequence[float]
    ) -> None:
        """A batch of ``rows`` real rows (``padded_rows`` run) took ``run_seconds``; each part waited
        ``queue_delays`` seconds in the queue."""
        ...

    def task_rejected(self) -> None:
        """A request found the queue full."""
        ...

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """``depth()`` returns the rows queued now (read at scrape time)."""
        ...

    def close(self) -> None:
        """The version is unloaded."""
        ...


@dataclass(eq=False, slots=True)
class _Task:
    """One request in a queue; split requests are dispatched in pieces, ``taken`` rows at a time."""

    queue: _Queue
    inputs: Mapping[str, np.ndarray]
    rows: int
    enqueued: float
    deadline: float | None
    future: asyncio.Future[Outputs]
    loop: asyncio.AbstractEventLoop
    release: Callable[[], None]
    taken: int = 0  # rows handed to batches (or dropped) so far
    unfinished: int = 0  # rows not run or dropped yet; the handle is released when it reaches 0
    delivered: int = 0  # rows whose outputs are in ``parts``
    parts: list[tuple[int, Outputs]] = field(default_factory=list)
    failed: bool = False

    def abandoned(self, now: float) -> bool:
        return self.failed or self.future.done() or (self.deadline is not None and now >= self.deadline)


@dataclass(frozen=True, slots=True)
class _Piece:
    task: _Task
    start: int
    rows: int

    def inputs(self) -> Mapping[str, np.ndarray]:
        if self.start == 0 and self.rows == self.task.rows:
            return self.task.inputs
        end = self.start + self.rows
        return {name: array[self.start : end] for name, array in self.task.inputs.items()}


class _Queue:
    __slots__ = ("arrivals", "outputs", "returning", "rows", "signature_name", "tasks")

    def __init__(self, signature_name: str, outputs: tuple[str, ...]) -> None:
        self.signature_name = signature_name
        self.outputs = outputs
        self.tasks: deque[_Task] = deque()
        self.rows = 0  # rows queued and not yet handed to a batch
        self.arrivals = ArrivalRate()  # per queue: rows bound elsewhere never fill this one
        self.returning = 0  # rows answered whose senders have not sent as many rows again yet


Outcome = tuple[_Piece, Outputs | None, ServingError | None]


class BatchTicket:
    """A queued request: await ``future``; call ``abandon`` when no longer waiting for it."""

    __slots__ = ("_batcher", "_task")

    def __init__(self, batcher: Batcher, task: _Task) -> None:
        self._batcher = batcher
        self._task = task

    @property
    def future(self) -> asyncio.Future[Outputs]:
        return self._task.future

    def abandon(self) -> None:
        """Take the request's queued rows out at once (they never run); idempotent."""
        self._batcher._abandon(self._task)


class Batcher:
    """Queues and batch threads of one model version."""

    def __init__(
        self,
        run: RunFunction,
        options: BatchingOptions,
        name: str,
        observer: BatchObserver | None = None,
        variable_output_axes: Callable[[str], Mapping[str, frozenset[int]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_model = run
        self.options = options
        self.name = name
        self._observer = observer
        self._variable_output_axes = variable_output_axes
        self._clock = clock
        self.policy: BatchPolicy = (
            AdaptivePolicy(options.execution_batch_size, options.threads, options.allowed_batch_sizes)
            if options.adaptive
            else StaticPolicy(options.execution_batch_size, options.timeout_seconds or 0.0)
        )
        self._queues: dict[tuple[object, ...], _Queue] = {}
        self._queued_rows = 0
        self._busy = 0
        self._closed = False
        self._wait_seconds = 0.0
        self._last_free = 0.0  # when a batch thread last finished a batch
        # Handles to release once the lock is dropped: a release may take the version's own lock.
        self._to_release: list[Callable[[], None]] = []
        self._cond = threading.Condition(threading.Lock())
        self._threads = [
            threading.Thread(target=self._work, name=f"modelserve-batch-{name}-{i}", daemon=True)
            for i in range(options.threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- callers (event loops) --------------------------------------------------------------------------

    def can_batch(self, inputs: Mapping[str, np.ndarray]) -> bool:
        """False for requests without rows to stack (scalars, empty batches): those run unbatched."""
        return bool(batch_rows(inputs))

    def runs_inline(self, rows: int, threshold_seconds: float) -> bool:
        """Adaptive mode, idle batcher, cheap model: the caller may run this request itself, at once.

        A batch of one dispatched immediately is what the adaptive policy would do anyway; on the
        caller's thread it skips two thread hand-offs, so batching costs nothing at low load. Only for
        sizes already measured: an estimate never extrapolates a request onto the event loop.
        """
        policy = self.policy
        if not isinstance(policy, AdaptivePolicy) or rows > self.options.max_batch_size:
            return False
        with self._cond:
            if self._queued_rows or self._busy or rows > policy.latency.largest_observed:
                return False
            estimate = policy.estimate(rows)
        return estimate is not None and estimate < threshold_seconds

    def submit(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        timeout_seconds: float | None,
        release: Callable[[], None],
    ) -> BatchTicket:
        """Queue one request; the ticket's future resolves to its outputs. ``release`` is called exactly
        once, when the batcher no longer uses the request (at once when this raises)."""
        try:
            rows = batch_rows(inputs)
            if not rows:
                raise InvalidArgument("request cannot be batched: inputs must share a non-empty dimension 0")
            if rows > self.options.max_batch_size:
                # TF Serving's wording (shared_batch_scheduler.h).
                raise InvalidArgument(
                    f"Task size {rows} is larger than maximum input batch size {self.options.max_batch_size}"
                )
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Outputs] = loop.create_future()
            key = (signature_name, tuple(outputs), shape_key(inputs, self.options.pad_variable_length_inputs))
            with self._cond:
                if self._closed:
                    raise Unavailable(f"the batcher of {self.name} is shutting down")
                if self._queued_rows + rows > self.options.max_enqueued_rows:
                    task = None
                else:
                    now = self._clock()
                    queue = self._queues.get(key)
                    if queue is None:
                        queue = self._queues[key] = _Queue(signature_name, tuple(outputs))
                    queue.arrivals.record(rows, now)
                    queue.returning = max(0, queue.returning - rows)
                    deadline = None if timeout_seconds is None else now + timeout_seconds
                    task = _Task(queue, inputs, rows, now, deadline, future, loop, release, unfinished=rows)
                    queue.tasks.append(task)
                    queue.rows += rows
                    self._queued_rows += rows
                    if self._busy < len(self._threads):
                        self._cond.notify()
            if task is None:
                if self._observer is not None:
                    self._observer.task_rejected()
                # TF Serving's wording (shared_batch_scheduler.h), with the bound. TF Serving answers
                # UNAVAILABLE; modelserve answers RESOURCE_EXHAUSTED (HTTP 429), see docs/batching.md.
                raise ResourceExhausted(
                    f"The batch scheduling queue to which this task was submitted is full "
                    f"({self.options.max_enqueued_rows} rows queued for {self.name})"
                )
        except BaseException:
            release()
            raise
        return BatchTicket(self, task)

    def queued_rows(self) -> int:
        """Rows waiting in this version's queues (a gauge)."""
        return self._queued_rows

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, then stop the batch threads. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _abandon(self, task: _Task) -> None:
        with self._cond:
            task.failed = True
            remaining = task.rows - task.taken
            if remaining:
                task.queue.rows -= remaining
                self._queued_rows -= remaining
                task.taken = task.rows
                self._finish_rows(task, remaining)
            releases, self._to_release = self._to_release, []
        for release in releases:
            release()

    # -- batch threads ------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch: tuple[_Queue, list[_Piece]] | None = None
            with self._cond:
                try:
                    batch = self._next_batch()
                    # Wait for work, unless dropped tasks left handles to release first.
                    while batch is None and not self._to_release:
                        if self._closed and self._queued_rows == 0:
                            break
                        self._cond.wait(self._wait_seconds)
                        batch = self._next_batch()
                except Exception:  # a bug here must not stop the thread (nor every queue with it)
                    log.exception("batch thread of %s failed to form a batch", self.name)
                    self._cond.wait(0.01)
                if batch is not None:
                    self._busy += 1
                stop = batch is None and self._closed and self._queued_rows == 0
                releases, self._to_release = self._to_release, []
            for release in releases:
                release()
            if batch is None:
                if stop:
                    return
                continue
            try:
                self._run(*batch)
            except Exception as exc:  # last resort: answer every request of the batch, release them
                log.exception("batch of %s failed", self.name)
                error = Internal(f"batching failed: {type(exc).__name__}: {exc}")
                self._deliver([(piece, None, error) for piece in batch[1]])
            finally:
                with self._cond:
                    self._busy -= 1
                    self._last_free = self._clock()
                    if self._queued_rows:
                        self._cond.notify()

    def _next_batch(self) -> tuple[_Queue, list[_Piece]] | None:
        """Under the lock: the pieces of the batch to run now, or None (``_wait_seconds`` says how long)."""
        now = self._clock()
        idle = len(self._threads) - self._busy
        best: _Queue | None = None
        wait = 3600.0
        for key, queue in list(self._queues.items()):
            self._drop_abandoned_head(queue, now)
            if not queue.tasks:
                del self._queues[key]
                continue
            oldest = queue.tasks[0]
            view = QueueView(
                queue.rows,
                now - oldest.enqueued,
                idle,
                queue.arrivals.rate(now),
                queue.returning,
                now - max(oldest.enqueued, self._last_free),
            )
            decision = self.policy.decide(view, now)
            if decision.dispatch or self._closed:
                if best is None or oldest.enqueued < best.tasks[0].enqueued:
                    best = queue
            else:
                wait = min(wait, decision.wait)
            if oldest.deadline is not None:  # wake up to answer it when it expires
                wait = min(wait, oldest.deadline - now)
        self._wait_seconds = max(wait, 0.0)
        if best is None:
            return None
        pieces = self._take(best, now)
        return (best, pieces) if pieces else None

    def _drop_abandoned_head(self, queue: _Queue, now: float) -> None:
        while queue.tasks and queue.tasks[0].abandoned(now):
            self._drop(queue.tasks.popleft())

    def _drop(self, task: _Task) -> None:
        """Under the lock: forget a queued task whose deadline passed or whose caller gave up."""
        remaining = task.rows - task.taken
        task.queue.rows -= remaining
        self._queued_rows -= remaining
        task.taken = task.rows
        if not task.failed and not task.future.done():
            error = DeadlineExceeded(f"Deadline exceeded while queued for batching on {self.name}")
            self._resolve([(task, None, error)])
        task.failed = True
        self._finish_rows(task, remaining)

    def _take(self, queue: _Queue, now: float) -> list[_Piece]:
        """Under the lock: pop up to one execution batch of rows, skipping abandoned tasks."""
        capacity = self.options.execution_batch_size
        pieces: list[_Piece] = []
        while queue.tasks and capacity > 0:
            task = queue.tasks[0]
            if task.abandoned(now):
                self._drop(queue.tasks.popleft())
                continue
            remaining = task.rows - task.taken
            if remaining > capacity and self.options.split_large_batches:
                count = capacity
            elif remaining > capacity and pieces:
                break  # the batch is full; this task opens the next one
            else:  # the whole task (never cut one that may not be split)
                count = remaining
                queue.tasks.popleft()
            pieces.append(_Piece(task, task.taken, count))
            task.taken += count
            capacity -= count
            queue.rows -= count
            self._queued_rows -= count
        return pieces

    def _run(self, queue: _Queue, pieces: list[_Piece]) -> None:
        started = self._clock()
        delays = [started - p.task.enqueued for p in pieces]
        variable = self._variable_output_axes(queue.signature_name) if self._variable_output_axes else None
        outcomes: list[Outcome]
        batch: MergedBatch | None = None
        try:
            batch = merge(
                [p.inputs() for p in pieces],
                pad_target(sum(p.rows for p in pieces), self.options.allowed_batch_sizes),
                self.options.pad_variable_length_inputs,
            )
            results = split(self._call(queue, batch.inputs), batch, variable)
            outcomes = [(p, r, None) for p, r in zip(pieces, results, strict=True)]
        except Exception as exc:
            batch = None
            if len(pieces) == 1:
                outcomes = [(pieces[0], None, _serving_error(exc))]
            else:
                outcomes = self._run_alone(queue, pieces, variable)
        elapsed = self._clock() - started
        if batch is not None:
            with self._cond:
                self.policy.observe_batch(batch.padded_rows, elapsed)
                queue.returning += batch.real_rows
        self._deliver(outcomes)
        if self._observer is not None and batch is not None:
            self._observer.batch_ran(batch.real_rows, batch.padded_rows, elapsed, delays)

    def _run_alone(
        self, queue: _Queue, pieces: list[_Piece], variable: Mapping[str, frozenset[int]] | None
    ) -> list[Outcome]:
        """After a merged batch failed: run each request alone, so only the bad ones fail."""
        outcomes: list[Outcome] = []
        for piece in pieces:
            try:
                batch = merge([piece.inputs()])
                outcomes.append((piece, split(self._call(queue, batch.inputs), batch, variable)[0], None))
            except Exception as exc:
                outcomes.append((piece, None, _serving_error(exc)))
        return outcomes

    def _call(self, queue: _Queue, inputs: Mapping[str, np.ndarray]) -> Outputs:
        return self._run_model(queue.signature_name, inputs, queue.outputs)

    def _deliver(self, outcomes: list[Outcome]) -> None:
        complete: list[_Task] = []
        ready: list[tuple[_Task, Outputs | None, ServingError | None]] = []
        with self._cond:  # pieces of one split task may finish on different batch threads
            for piece, result, error in outcomes:
                task = piece.task
                if error is not None:
                    if not task.failed:
                        task.failed = True
                        ready.append((task, None, error))
                elif not task.failed and result is not None:
                    task.parts.append((piece.start, result))
                    task.delivered += piece.rows
                    if task.delivered == task.rows:
                        complete.append(task)
                self._finish_rows(task, piece.rows)
            releases, self._to_release = self._to_release, []
        for task in complete:  # reassembly copies arrays: outside the lock
            try:
                ready.append((task, _assemble(task.parts), None))
            except Exception as exc:
                ready.append((task, None, _serving_error(exc)))
        self._resolve(ready)
        for release in releases:
            release()

    def _finish_rows(self, task: _Task, rows: int) -> None:
        """Under the lock: ``rows`` of ``task`` ran or were dropped; queue its release when all are done."""
        if rows <= 0:
            return
        task.unfinished -= rows
        if task.unfinished == 0:
            self._to_release.append(task.release)

    def _resolve(self, ready: list[tuple[_Task, Outputs | None, ServingError | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Task, Outputs | None, ServingError | None]]] = {}
        for item in ready:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            # RuntimeError: the loop closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_results, items)


def _serving_error(exc: Exception) -> ServingError:
    """A runtime's own exception on input that passed validation is an internal error."""
    if isinstance(exc, ServingError):
        return exc
    return Internal(f"{type(exc).__name__}: {exc}")


def _assemble(parts: list[tuple[int, Outputs]]) -> Outputs:
    if len(parts) == 1:
        return parts[0][1]
    ordered = [outputs for _, outputs in sorted(parts, key=lambda p: p[0])]
    return {name: np.concatenate([o[name] for o in ordered]) for name in ordered[0]}


def _set_results(items: list[tuple[_Task, Outputs | None, ServingError | None]]) -> None:
    for task, result, error in items:
        if task.future.done():
            continue
        if error is not None:
            task.future.set_exception(error)
        else:
            task.future.set_result(result or {})
