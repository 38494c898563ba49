"""When a batch thread that is free to run should take the rows waiting in a queue, or wait for more.

Pure functions of a ``QueueView`` (what is queued, how long the oldest row waited, how many batch threads
are free, how fast rows arrive at this queue) and the clock: the batcher asks, the policy answers
dispatch-now or look-again-in-``wait``.

- ``StaticPolicy`` is TF Serving's: a batch closes when it is full or when its oldest task has waited
  ``batch_timeout_micros``.
- ``AdaptivePolicy`` needs no timeout. It measures the run time of each batch size and the arrival rate,
  and picks a target: the smallest batch that lets the batch threads keep up with the arrivals (with
  headroom). It dispatches at once when the queue holds the target, when another batch thread is idle
  (the server is not saturated), or when waiting would not pay: larger batches are not cheaper per row on
  this model, or no more rows are expected soon. Rows are expected soon when clients answered from this
  queue have not sent again yet (closed-loop callers come back within a round trip; wait up to a quarter
  of the batch at hand's run time), or when the measured rate brings enough of them (to reach the target
  or double the batch) within half that run time. Waits count from when the rows could have run, so rows
  that queued behind a busy thread do not use up the budget. At low load the target is one row, so
  requests run as they arrive, with no added delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from modelserve.batching.estimators import BatchLatencyModel

WAIT_FOREVER = math.inf


@dataclass(frozen=True, slots=True)
class QueueView:
    """One queue as a free batch thread sees it."""

    rows: int
    oldest_wait: float  # seconds since the oldest queued row arrived; 0 when empty
    idle_threads: int  # batch threads free to run a batch, the asking one included
    arrival_rate: float = 0.0  # rows/s arriving at this queue lately
    # Rows answered from this queue whose senders have not sent again yet: closed-loop clients about
    # to come back (a web tier waiting on its answers before it sends the next requests).
    returning: int = 0
    # Seconds the rows could have run but waited (since the oldest arrived or a thread came free,
    # whichever is later); None: same as ``oldest_wait``. What the adaptive policy's bound applies to.
    ready_wait: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Dispatch the queued rows now, or look again after ``wait`` seconds (or at the next arrival)."""

    dispatch: bool
    wait: float = WAIT_FOREVER


DISPATCH = Decision(dispatch=True, wait=0.0)
IDLE = Decision(dispatch=False)


class BatchPolicy(Protocol):
    """Decides for one queue; called under the batcher's lock, so it must be cheap and must not block."""

    def decide(self, view: QueueView, now: float) -> Decision:
        """Whether to dispatch ``view``'s rows now (``now`` is the batcher's monotonic clock)."""
        ...

    def observe_batch(self, rows: int, seconds: float) -> None:
        """A batch of ``rows`` rows (after padding) ran in ``seconds``."""
        ...


class StaticPolicy:
    """TF Serving's rule: full batch, or the oldest task waited ``timeout_seconds``."""

    def __init__(self, max_batch_size: int, timeout_seconds: float) -> None:
        self.max_batch_size = max_batch_size
        self.timeout_seconds = timeout_seconds

    def decide(self, view: QueueView, now: float) -> Decision:
        if view.rows == 0:
            return IDLE
        if view.rows >= self.max_batch_size or view.oldest_wait >= self.timeout_seconds:
            return DISPATCH
        return Decision(dispatch=False, wait=self.timeout_seconds - view.oldest_wait)

    def observe_batch(self, rows: int, seconds: float) -> None:
        pass


class AdaptivePolicy:
    """Waits only while waiting pays: see the module docstring."""

    # Capacity must exceed the arrival rate by this factor, or the queue grows.
    HEADROOM = 1.25
    # Longest wait, as a fraction of the run time of the batch at hand: bounds the latency waiting adds.
    MAX_WAIT_FRACTION = 0.5
    # Longest wait for answered clients to send again, as a fraction of the batch at hand's run time.
    RETURN_WAIT_FRACTION = 0.25
    # Waiting must raise rows/second by this factor to be worth it.
    MIN_GAIN = 1.1

    def __init__(
        self,
        max_batch_size: int,
        threads: int,
        candidate_sizes: tuple[int, ...] = (),
        latency: BatchLatencyModel | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.threads = max(1, threads)
        self.candidates = candidate_sizes or _powers_of_two_up_to(max_batch_size)
        self.latency = latency or BatchLatencyModel()

    def estimate(self, rows: int) -> float | None:
        """Seconds a batch of ``rows`` rows takes to run, as measured so far."""
        return self.latency.estimate(rows)

    def target_size(self, arrival_rate: float) -> int:
        """The smallest batch size whose throughput over all batch threads keeps up with arrivals."""
        demand = arrival_rate * self.HEADROOM
        for size in self.candidates:
            seconds = self.latency.estimate(size)
            if seconds is None or seconds <= 0 or self.threads * size / seconds >= demand:
                return size
        return self.candidates[-1]

    def decide(self, view: QueueView, now: float) -> Decision:
        rows = view.rows
        if rows == 0:
            return IDLE
        if rows >= self.max_batch_size or view.idle_threads > 1 or not self.latency.known:
            return DISPATCH
        rate = view.arrival_rate
        target = self.target_size(rate)
        if rows >= target:
            return DISPATCH
        run_now = self.latency.estimate(rows) or 0.0
        waited = view.oldest_wait if view.ready_wait is None else view.ready_wait
        remaining = self.MAX_WAIT_FRACTION * run_now - waited
        if remaining <= 0:
            return DISPATCH
        gain = self._throughput(min(rows + max(view.returning, 1), target)) / self._throughput(rows)
        if gain < self.MIN_GAIN:
            return DISPATCH  # larger batches are not cheaper per row on this model
        # Clients just answered come back within a round trip: wait for them (bounded).
        returning_remaining = self.RETURN_WAIT_FRACTION * run_now - waited
        if view.returning > 0 and returning_remaining > 0:
            return Decision(dispatch=False, wait=returning_remaining)
        # Otherwise, rows expected from the measured rate by the end of the longest wait. A closed-loop
        # client waiting for this very batch sends nothing more, which the rate reflects.
        expected = rows + rate * remaining
        if rate <= 0 or expected < min(target, 2 * rows):
            return DISPATCH
        reachable = min(int(expected), target)
        if self._throughput(reachable) < self.MIN_GAIN * self._throughput(rows):
            return DISPATCH
        return Decision(dispatch=False, wait=min(remaining, (target - rows) / rate))

    def _throughput(self, rows: int) -> float:
        seconds = self.latency.estimate(rows) or 0.0
        return rows / seconds if seconds > 0 else float("inf")

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.latency.observe(rows, seconds)


def _powers_of_two_up_to(limit: int) -> tuple[int, ...]:
    sizes = []
    size = 1
    while size < limit:
        sizes.append(size)
        size *= 2
    sizes.append(limit)
    return tuple(sizes)
