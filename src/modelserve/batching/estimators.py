"""What the adaptive policy knows about the world: how long a batch of n rows takes, how fast rows arrive.

Both are measured online, cheaply (O(1) per batch or arrival), and take the clock as an argument so the
policy tests can drive them with a fake one.
"""

from __future__ import annotations

import math


class BatchLatencyModel:
    """Run time of one batch as a function of its size, learnt from the batches that ran.

    Each observed size keeps a moving average; sizes never seen are estimated from a least-squares line
    ``a + b * size`` fitted to the observed averages (per-batch overhead plus per-row cost, which is how
    CPU and GPU batch timings behave between the points we have), clamped to be positive and monotonic.
    """

    __slots__ = ("_avg", "_smoothing")

    def __init__(self, smoothing: float = 0.2) -> None:
        self._avg: dict[int, float] = {}
        self._smoothing = smoothing

    def observe(self, size: int, seconds: float) -> None:
        previous = self._avg.get(size)
        self._avg[size] = seconds if previous is None else previous + self._smoothing * (seconds - previous)

    @property
    def known(self) -> bool:
        return bool(self._avg)

    @property
    def largest_observed(self) -> int:
        """The largest batch size measured so far (0 before any)."""
        return max(self._avg, default=0)

    def estimate(self, size: int) -> float | None:
        """Seconds for a batch of ``size`` rows; None before any batch ran."""
        exact = self._avg.get(size)
        if exact is not None:
            return exact
        points = list(self._avg.items())  # one snapshot: batch threads may add sizes meanwhile
        if not points:
            return None
        if len(points) == 1:
            ((seen, seconds),) = points
            # One point: assume the cost is all overhead below it and linear in rows above it.
            return seconds if size <= seen else seconds * size / seen
        intercept, slope = _fit(points)
        low = min(seconds for _, seconds in points)
        return max(low, intercept + slope * size)


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line through (size, seconds), with a slope of at least 0."""
    sizes = [size for size, _ in points]
    times = [seconds for _, seconds in points]
    n = len(sizes)
    mean_x = sum(sizes) / n
    mean_y = sum(times) / n
    var_x = sum((x - mean_x) ** 2 for x in sizes)
    if var_x == 0:
        return mean_y, 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(sizes, times, strict=True)) / var_x
    slope = max(slope, 0.0)  # larger batches never run faster; noise must not say otherwise
    return mean_y - slope * mean_x, slope


class ArrivalRate:
    """Rows per second arriving at a queue: an exponentially decaying count with time constant ``tau``.

    ``rate = Σ rows_i · exp(-(now - t_i)/tau) / tau`` — an unbiased estimate of a steady rate that forgets
    a burst after a few ``tau``.
    """

    __slots__ = ("_level", "_tau", "_updated")

    def __init__(self, tau_seconds: float = 0.25) -> None:
        self._tau = tau_seconds
        self._level = 0.0
        self._updated = 0.0

    def _decay_to(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:
            self._level *= math.exp(-elapsed / self._tau)
            self._updated = now

    def record(self, rows: int, now: float) -> None:
        self._decay_to(now)
        self._level += rows

    def rate(self, now: float) -> float:
        self._decay_to(now)
        return self._level / self._tau
