"""Latency histograms: HDR histograms from 1 µs to 60 s with 3 significant digits.

An HDR histogram keeps every percentile within 0.1% of the exact value in a fixed ~30 KiB, whatever the
number of samples, and two of them add up exactly: each load-generating process keeps its own, and the
parent merges their encoded forms (``encode`` / ``decode``), so no process ships its raw samples.
Latencies above 60 s are recorded as 60 s (they are timeouts anyway).
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


class LatencyHistogram:
    """Latencies in microseconds; ``summary_ms`` gives the percentiles a report prints. Not thread-safe."""

    def __init__(self, histogram: HdrHistogram | None = None) -> None:
        self._histogram = histogram or HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    @property
    def count(self) -> int:
        """How many latencies were recorded."""
        return int(self._histogram.get_total_count())

    def record_us(self, latency_us: int) -> None:
        """Record one latency; values outside 1 µs..60 s are clamped to that range."""
        self._histogram.record_value(min(max(latency_us, LOWEST_US), HIGHEST_US))

    def record_seconds(self, latency_s: float) -> None:
        """Record one latency given in seconds (the clocks' unit)."""
        self.record_us(int(latency_s * 1e6 + 0.5))

    def percentile_ms(self, percentile: float) -> float:
        """The latency below which ``percentile`` % of the recorded ones fall (NaN when empty: no latency)."""
        if self.count == 0:
            return float("nan")
        return float(self._histogram.get_value_at_percentile(percentile)) / 1e3

    def summary_ms(self) -> dict[str, float]:
        """``p50``, ``p90``, ``p99``, ``p99.9``, ``mean`` and ``max`` in milliseconds (NaN when empty)."""
        if self.count == 0:
            return {name: float("nan") for name in (*(n for n, _ in PERCENTILES), "mean", "max")}
        summary = {name: self.percentile_ms(value) for name, value in PERCENTILES}
        summary["mean"] = float(self._histogram.get_mean_value()) / 1e3
        summary["max"] = float(self._histogram.get_max_value()) / 1e3
        return summary

    def merge(self, other: LatencyHistogram) -> None:
        """Add every latency of ``other`` to this histogram."""
        self._histogram.add(other._histogram)

    def encode(self) -> bytes:
        """A compact, portable form (base64 of the compressed HDR payload), for another process."""
        encoded: bytes = self._histogram.encode()
        return encoded

    @classmethod
    def decode(cls, encoded: bytes) -> LatencyHistogram:
        """The histogram ``encode`` produced."""
        return cls(HdrHistogram.decode(encoded))

    @classmethod
    def merged(cls, encoded: list[bytes]) -> LatencyHistogram:
        """One histogram holding the latencies of every encoded one (an empty one for an empty list)."""
        total = cls()
        for item in encoded:
            total.merge(cls.decode(item))
        return total
