"""Open-loop arrival schedules: when each request is meant to be sent, independent of when answers come.

A closed loop sends the next request only after an answer, so a server that stalls also stops the load:
the requests that would have queued behind the stall are never sent and their waiting is never measured
(coordinated omission). An open loop sends on a schedule fixed in advance and measures each latency from
the request's *intended* send time, so time spent waiting for a free connection, or behind a stall, counts.

Schedules are pure: offsets in seconds from the start of the run. `Pacer` walks one against a clock that it
is given, so tests drive it with a fake clock.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

ARRIVALS = ("constant", "poisson")


def constant_offsets(rate: float, phase: float = 0.0) -> Iterator[float]:
    """``phase/rate, (1+phase)/rate, ...``: evenly spaced sends (``phase`` in [0, 1) staggers processes)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    interval = 1.0 / rate
    return ((index + phase) * interval for index in itertools.count())


def poisson_offsets(rate: float, seed: int | None = None) -> Iterator[float]:
    """A Poisson process: independent exponential gaps of mean ``1/rate`` (reproducible with ``seed``)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    generator = random.Random(seed)
    offset = 0.0
    while True:
        offset += generator.expovariate(rate)
        yield offset


def schedule(
    rate: float, arrival: str = "constant", seed: int | None = None, part: int = 0, parts: int = 1
) -> Iterator[float]:
    """The offsets of part ``part`` of ``parts`` (one per process) of a ``rate`` requests/s schedule.

    Each part runs at ``rate/parts``: constant parts are staggered so that together they are evenly spaced;
    Poisson parts use distinct seeds, and the sum of independent Poisson processes is a Poisson process.
    """
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    share = rate / parts
    if arrival == "constant":
        return constant_offsets(share, phase=part / parts)
    return poisson_offsets(share, seed=None if seed is None else seed * 1_000_003 + part)


@dataclass
class Pacer:
    """Hands out intended send times against a clock and counts how late sends are.

    ``next(now)`` returns the next intended time (absolute, on the caller's clock) and how long to wait for
    it. A sender that is free before its intended time sleeps and then reports its real send time with
    ``sent``; the difference is the load generator's own lateness (a busy event loop, coarse timers). An
    intended time already past when asked for means every sender was busy: the in-flight cap was reached,
    which is the server's slowness, not the generator's, and is counted apart (``behind_cap``).
    """

    offsets: Iterator[float]
    start: float
    late_tolerance_s: float = 0.005
    issued: int = 0
    behind_cap: int = 0
    late: int = 0  # sends later than late_tolerance_s after their intended time, though a sender was free
    max_lateness_s: float = 0.0
    _lateness_total_s: float = field(default=0.0, repr=False)
    _timed: int = field(default=0, repr=False)

    def next(self, now: float) -> tuple[float, float]:
        """``(intended_time, wait_s)`` of the next send; ``wait_s`` is 0 when it is already due."""
        intended = self.start + next(self.offsets)
        self.issued += 1
        wait = intended - now
        if wait < 0:
            self.behind_cap += 1
            return intended, 0.0
        return intended, wait

    def unsent_before(self, end: float) -> Iterator[float]:
        """The intended times not handed out yet before ``end``: a run cut short still counts them."""
        for offset in self.offsets:
            intended = self.start + offset
            if intended >= end:
                return
            yield intended

    def sent(self, intended: float, now: float) -> None:
        """Record a send that waited for its intended time and happened at ``now``."""
        lateness = max(0.0, now - intended)
        self._lateness_total_s += lateness
        self._timed += 1
        self.max_lateness_s = max(self.max_lateness_s, lateness)
        if lateness > self.late_tolerance_s:
            self.late += 1

    @property
    def mean_lateness_s(self) -> float:
        """Mean lateness of the sends that waited for their time."""
        return self._lateness_total_s / self._timed if self._timed else 0.0

    @property
    def late_fraction(self) -> float:
        """Share of timed sends later than the tolerance: above a few %, the generator could not keep up."""
        return self.late / self._timed if self._timed else 0.0
