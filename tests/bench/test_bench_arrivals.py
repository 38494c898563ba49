"""Open-loop schedules and the pacer, driven by a fake clock: no sleeps, no threads."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modelserve.bench.arrivals import Pacer, constant_offsets, poisson_offsets, schedule


def _take(offsets: object, count: int) -> np.ndarray:
    return np.fromiter(itertools.islice(offsets, count), dtype=np.float64)  # type: ignore[call-overload]


def test_constant_schedule_is_evenly_spaced() -> None:
    offsets = _take(constant_offsets(200.0), 1000)
    assert offsets[0] == 0.0
    assert np.allclose(np.diff(offsets), 1 / 200)


def test_constant_parts_of_several_processes_interleave_evenly() -> None:
    parts = [_take(schedule(300.0, "constant", part=p, parts=3), 100) for p in range(3)]
    combined = np.sort(np.concatenate(parts))
    assert np.allclose(np.diff(combined), 1 / 300)


def test_poisson_schedule_has_the_mean_rate_and_exponential_gaps() -> None:
    offsets = _take(poisson_offsets(500.0, seed=7), 20_000)
    gaps = np.diff(offsets)
    assert len(offsets) / offsets[-1] == pytest.approx(500.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV 1 (constant: 0)


def test_poisson_schedule_is_reproducible_with_a_seed_and_parts_differ() -> None:
    assert np.array_equal(
        _take(poisson_offsets(100.0, seed=3), 50), _take(poisson_offsets(100.0, seed=3), 50)
    )
    first, second = (_take(schedule(100.0, "poisson", seed=3, part=p, parts=2), 50) for p in range(2))
    assert not np.array_equal(first, second)


def test_schedules_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        next(constant_offsets(0.0))
    with pytest.raises(ValueError, match="arrival"):
        schedule(10.0, "bursty")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now


def test_pacer_waits_for_each_intended_time_and_measures_its_own_lateness() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(constant_offsets(10.0), start=clock.now)  # one send every 100 ms
    intended, wait = pacer.next(clock.now)
    assert (intended, wait) == (100.0, 0.0)  # the first is due at once
    pacer.sent(intended, clock.now)
    clock.now = 100.03  # the answer came after 30 ms: the sender is free early
    intended, wait = pacer.next(clock.now)
    assert intended == pytest.approx(100.1)
    assert wait == pytest.approx(0.07)
    clock.now += wait + 0.002  # woke 2 ms late: within tolerance
    pacer.sent(intended, clock.now)
    clock.now = 100.2 + 0.02  # woke 20 ms late: the generator fell behind
    intended, _ = pacer.next(100.19)
    pacer.sent(intended, clock.now)
    assert pacer.late == 1
    assert pacer.max_lateness_s == pytest.approx(0.02)
    assert pacer.late_fraction == pytest.approx(1 / 3)
    assert pacer.behind_cap == 0


def test_pacer_keeps_intended_times_when_every_sender_is_busy() -> None:
    """A stall does not move the schedule: sends due during it leave late, and keep their intended times,
    so latency measured from them includes the stall (no coordinated omission)."""
    pacer = Pacer(constant_offsets(100.0), start=0.0)
    pacer.next(0.0)
    stall_end = 0.300  # the only sender was stuck for 300 ms
    due = [pacer.next(stall_end) for _ in range(30)]
    assert [round(intended, 3) for intended, _ in due] == [round(0.01 * (i + 1), 3) for i in range(30)]
    assert all(wait == 0.0 for _, wait in due)
    assert pacer.behind_cap == 29  # 0.01..0.29 were due before 0.300; 0.300 itself was not late
    latencies = [stall_end - intended for intended, _ in due]
    assert max(latencies) == pytest.approx(0.29)
    assert pacer.late == 0  # waiting for a busy sender is not the generator's lateness


def test_pacer_lists_the_sends_still_due_before_a_cut_without_counting_them_as_issued() -> None:
    pacer = Pacer(constant_offsets(10.0), start=100.0)
    assert pacer.next(100.0) == (100.0, 0.0)
    unsent = list(pacer.unsent_before(100.35))
    assert unsent == pytest.approx([100.1, 100.2, 100.3])
    assert pacer.issued == 1
