"""The HDR latency histogram against exact percentiles, and its merge across processes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelserve.bench.histogram import LatencyHistogram

RELATIVE = 2e-3  # 3 significant digits: a value is reported within 0.1% of its bucket; 2x for rounding


def _latencies_s(seed: int, count: int = 50_001) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return generator.lognormal(mean=np.log(0.005), sigma=1.0, size=count)  # ~5 ms, a long tail


@pytest.mark.parametrize("percentile", [50.0, 90.0, 99.0, 99.9])
def test_percentiles_match_exact_numpy_percentiles(percentile: float) -> None:
    samples = _latencies_s(seed=1)  # an odd count: p% of it is never a whole rank, so no rounding tie
    histogram = LatencyHistogram()
    for value in samples:
        histogram.record_seconds(float(value))
    exact_ms = float(np.percentile(samples, percentile, method="inverted_cdf")) * 1e3
    assert histogram.percentile_ms(percentile) == pytest.approx(exact_ms, rel=RELATIVE, abs=1e-3)


def test_summary_has_every_key_with_mean_and_max() -> None:
    samples = _latencies_s(seed=2, count=5_000)
    histogram = LatencyHistogram()
    for value in samples:
        histogram.record_seconds(float(value))
    summary = histogram.summary_ms()
    assert list(summary) == ["p50", "p90", "p99", "p99.9", "mean", "max"]
    assert summary["mean"] == pytest.approx(samples.mean() * 1e3, rel=RELATIVE)
    assert summary["max"] == pytest.approx(samples.max() * 1e3, rel=RELATIVE)
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["p99.9"] <= summary["max"]


def test_merging_encoded_histograms_equals_one_histogram_of_everything() -> None:
    parts = [_latencies_s(seed=seed, count=10_000) for seed in (3, 4, 5)]
    encoded = []
    for part in parts:
        histogram = LatencyHistogram()
        for value in part:
            histogram.record_seconds(float(value))
        encoded.append(histogram.encode())
    merged = LatencyHistogram.merged(encoded)
    whole = LatencyHistogram()
    for value in np.concatenate(parts):
        whole.record_seconds(float(value))
    assert merged.count == 30_000
    assert merged.summary_ms() == whole.summary_ms()


def test_empty_histogram_reports_nan_and_out_of_range_values_are_clamped() -> None:
    assert all(math.isnan(value) for value in LatencyHistogram().summary_ms().values())
    assert math.isnan(LatencyHistogram().percentile_ms(99.0))  # no latency, not a latency of 0 ms
    histogram = LatencyHistogram()
    histogram.record_seconds(0.0)  # below 1 µs
    histogram.record_seconds(3600.0)  # above 60 s
    assert histogram.count == 2
    assert histogram.percentile_ms(0.0) == pytest.approx(0.001)
    assert histogram.summary_ms()["max"] == pytest.approx(60_000, rel=RELATIVE)
