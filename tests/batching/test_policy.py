"""The batch-forming policies as tables: queue contents + clock -> dispatch now, or wait how long."""

from __future__ import annotations

import math

import pytest

from modelserve.batching.estimators import ArrivalRate, BatchLatencyModel
from modelserve.batching.policy import AdaptivePolicy, QueueView, StaticPolicy


@pytest.mark.parametrize(
    ("rows", "oldest_wait", "dispatch", "wait"),
    [
        (0, 0.0, False, math.inf),  # nothing queued: sleep until an arrival
        (1, 0.0, False, 0.002),  # one row, just arrived: wait the whole timeout
        (3, 0.0015, False, 0.0005),  # part of the timeout spent
        (3, 0.002, True, 0.0),  # timeout reached
        (3, 0.010, True, 0.0),  # well past it
        (8, 0.0, True, 0.0),  # full batch: no reason to wait
        (20, 0.0, True, 0.0),  # more than a batch queued
    ],
)
def test_static_policy_table(rows: int, oldest_wait: float, dispatch: bool, wait: float) -> None:
    decision = StaticPolicy(max_batch_size=8, timeout_seconds=0.002).decide(
        QueueView(rows, oldest_wait, 1), 0.0
    )
    assert decision.dispatch is dispatch
    assert decision.wait == pytest.approx(wait)


def test_static_policy_zero_timeout_dispatches_whatever_is_queued() -> None:
    policy = StaticPolicy(max_batch_size=8, timeout_seconds=0.0)
    assert policy.decide(QueueView(1, 0.0, 1), 0.0).dispatch


def adaptive(batch_seconds: dict[int, float], threads: int = 1) -> AdaptivePolicy:
    """A policy that has measured ``batch_seconds``."""
    latency = BatchLatencyModel()
    for size, seconds in batch_seconds.items():
        latency.observe(size, seconds)
    return AdaptivePolicy(max_batch_size=32, threads=threads, latency=latency)


def steady_rate(arrivals_per_second: float) -> float:
    """What the queue's estimator reads after 2 s of a steady stream, one row at a time."""
    rate = ArrivalRate(tau_seconds=0.25)
    if arrivals_per_second:
        step = 1 / arrivals_per_second
        t = 8.0
        while t <= 10.0:
            rate.record(1, t)
            t += step
    return rate.rate(10.0)


# A model whose cost is mostly per-batch overhead (10 ms for 1 row, 12 ms for 32): batching pays.
OVERHEAD = {1: 0.010, 32: 0.012}
# A model whose cost is all per row: larger batches are not cheaper per row.
LINEAR = {1: 0.001, 32: 0.032}


@pytest.mark.parametrize(
    ("model", "arrivals", "rows", "oldest_wait", "idle", "dispatch", "why"),
    [
        (OVERHEAD, 0, 1, 0.0, 1, True, "no traffic: a lone request runs at once"),
        (OVERHEAD, 50, 1, 0.0, 1, True, "low load: one row per batch keeps up"),
        (OVERHEAD, 2000, 1, 0.0, 1, False, "high load: ten more rows are due within half a run time"),
        (OVERHEAD, 2000, 1, 0.0, 2, True, "another batch thread is idle: the server is not saturated"),
        (OVERHEAD, 2000, 1, 0.005, 1, True, "waited half a run time already: the delay is bounded"),
        (OVERHEAD, 2000, 32, 0.0, 1, True, "a full batch never waits"),
        (
            OVERHEAD,
            100,
            1,
            0.0,
            1,
            True,
            "closed loop, one client: the next row comes after this one's answer",
        ),
        (OVERHEAD, 760, 8, 0.0, 1, True, "closed loop, eight clients all queued: nobody else is coming"),
        (LINEAR, 2000, 1, 0.0, 1, True, "batches are not cheaper per row: never wait"),
        (OVERHEAD, 0, 0, 0.0, 1, False, "empty queue"),
    ],
)
def test_adaptive_policy_table(
    model: dict[int, float],
    arrivals: float,
    rows: int,
    oldest_wait: float,
    idle: int,
    dispatch: bool,
    why: str,
) -> None:
    policy = adaptive(model)
    decision = policy.decide(QueueView(rows, oldest_wait, idle, steady_rate(arrivals)), 10.0)
    assert decision.dispatch is dispatch, why


@pytest.mark.parametrize(
    ("rows", "returning", "ready_wait", "dispatch", "why"),
    [
        (2, 2, 0.0, False, "two clients just answered will send again: wait for them"),
        (2, 2, 0.003, True, "waited a quarter of the run time for them already"),
        (2, 0, 0.0, True, "nobody is coming back, and the rate alone brings too few rows"),
        (1, 1, 0.0, False, "one client coming back doubles the batch"),
    ],
)
def test_adaptive_waits_for_closed_loop_clients_coming_back(
    rows: int, returning: int, ready_wait: float, dispatch: bool, why: str
) -> None:
    # OVERHEAD model at 300 rows/s: the target is 4 rows; 2 rows run in about 10 ms (a quarter: 2.5 ms).
    # The rows queued behind a busy thread long ago (oldest_wait), but could run only now (ready_wait).
    view = QueueView(
        rows,
        oldest_wait=0.5,
        idle_threads=1,
        arrival_rate=steady_rate(300),
        returning=returning,
        ready_wait=ready_wait,
    )
    assert adaptive(OVERHEAD).decide(view, 10.0).dispatch is dispatch, why


def test_adaptive_does_not_wait_for_returning_clients_when_batches_are_not_cheaper() -> None:
    view = QueueView(2, 0.0, 1, steady_rate(300), returning=2, ready_wait=0.0)
    assert adaptive(LINEAR).decide(view, 10.0).dispatch


def test_adaptive_wait_is_bounded_by_half_the_run_time() -> None:
    policy = adaptive(OVERHEAD)
    rate = steady_rate(2000)
    decision = policy.decide(QueueView(1, 0.0, 1, rate), 10.0)
    assert not decision.dispatch
    assert 0 < decision.wait <= AdaptivePolicy.MAX_WAIT_FRACTION * 0.010
    # Asked again once the wait is over, it runs what it has, even if no row came meanwhile.
    assert policy.decide(QueueView(1, decision.wait, 1, rate), 10.0 + decision.wait).dispatch


def test_adaptive_target_grows_with_the_arrival_rate() -> None:
    targets = [adaptive(OVERHEAD).target_size(steady_rate(rate)) for rate in (10, 300, 700, 1200, 2000)]
    assert targets == sorted(targets)
    assert targets[0] == 1 and targets[-1] > 4


def test_adaptive_before_any_measurement_dispatches() -> None:
    policy = AdaptivePolicy(max_batch_size=32, threads=1)
    assert policy.decide(QueueView(1, 0.0, 1), 0.0).dispatch
