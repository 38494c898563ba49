"""Latency per batch size and arrival rate, driven by an explicit clock."""

from __future__ import annotations

import pytest

from modelserve.batching.estimators import ArrivalRate, BatchLatencyModel


def test_latency_unknown_until_measured() -> None:
    model = BatchLatencyModel()
    assert model.estimate(1) is None and not model.known


def test_latency_single_point_scales_up_not_down() -> None:
    model = BatchLatencyModel()
    model.observe(4, 0.008)
    assert model.estimate(4) == pytest.approx(0.008)
    assert model.estimate(1) == pytest.approx(0.008)  # below the point: assume overhead
    assert model.estimate(8) == pytest.approx(0.016)  # above: linear in rows


def test_latency_fits_a_line_between_points() -> None:
    model = BatchLatencyModel()
    for size in (1, 2, 8):
        model.observe(size, 0.004 + 0.0005 * size)
    assert model.estimate(4) == pytest.approx(0.006)
    assert model.estimate(32) == pytest.approx(0.020)


def test_latency_noise_never_makes_larger_batches_faster() -> None:
    model = BatchLatencyModel()
    model.observe(1, 0.010)
    model.observe(2, 0.004)
    assert model.estimate(64) is not None and model.estimate(64) >= 0.004


def test_latency_moving_average() -> None:
    model = BatchLatencyModel(smoothing=0.5)
    model.observe(1, 0.010)
    model.observe(1, 0.020)
    assert model.estimate(1) == pytest.approx(0.015)


def test_arrival_rate_steady_and_decaying() -> None:
    rate = ArrivalRate(tau_seconds=0.1)
    t = 0.0
    while t < 2.0:
        rate.record(1, t)
        t += 0.001  # 1000 rows/s
    assert rate.rate(t) == pytest.approx(1000, rel=0.05)
    assert rate.rate(t + 1.0) < 1  # ten time constants later the burst is forgotten
