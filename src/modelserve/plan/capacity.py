"""Capacity arithmetic: instances and monthly cost for a target traffic, decoupled and coupled.

The seed's opening calculation, made a function: 100 requests/s at 2 requests/s per instance and
$3.06 an hour is 50 instances and $110,160 a month (720 hours). The coupled architecture's throughput per
instance is limited by memory (one model copy per web worker), so it is derived from how many copies fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOURS_PER_MONTH = 720.0  # 30 days, the seed's convention


@dataclass(frozen=True, slots=True)
class Capacity:
    """What one architecture needs for the target traffic."""

    architecture: str
    rps_per_instance: float
    instances: int
    hourly_cost: float
    monthly_cost: float
    note: str = ""


def instances_needed(target_rps: float, rps_per_instance: float, headroom: float = 1.0) -> int:
    """Instances that serve ``target_rps`` with ``headroom`` (1.25: 25% spare), at least one."""
    if target_rps <= 0:
        raise ValueError(f"--target-rps must be positive, got {target_rps:g}")
    if rps_per_instance <= 0:
        raise ValueError(f"requests/s per instance must be positive, got {rps_per_instance:g}")
    if headroom < 1:
        raise ValueError(f"--headroom must be >= 1 (1.25 keeps 25% spare), got {headroom:g}")
    # Round before the ceiling: 100 * 1.0 / 2 must be 50, not 51 through floating-point noise.
    return max(1, math.ceil(round(target_rps * headroom / rps_per_instance, 9)))


def capacity(
    architecture: str,
    target_rps: float,
    rps_per_instance: float,
    price_per_hour: float,
    *,
    headroom: float = 1.0,
    hours_per_month: float = HOURS_PER_MONTH,
    note: str = "",
) -> Capacity:
    if price_per_hour < 0:
        raise ValueError(f"--price-per-hour must be >= 0, got {price_per_hour:g}")
    instances = instances_needed(target_rps, rps_per_instance, headroom)
    hourly = instances * price_per_hour
    return Capacity(
        architecture=architecture,
        rps_per_instance=rps_per_instance,
        instances=instances,
        hourly_cost=round(hourly, 2),
        monthly_cost=round(hourly * hours_per_month, 2),
        note=note,
    )


def coupled_rps_per_instance(
    instance_memory_gib: float, model_memory_gib: float, rps_per_worker: float, overhead_gib: float = 0.5
) -> tuple[float, int]:
    """The coupled architecture's requests/s per instance, and its workers: one model copy per worker.

    ``overhead_gib`` is what the instance needs besides the copies (OS, the web server's own memory).
    """
    if model_memory_gib <= 0 or rps_per_worker <= 0:
        raise ValueError("model memory and requests/s per worker must be positive")
    workers = math.floor((instance_memory_gib - overhead_gib) / model_memory_gib)
    if workers < 1:
        raise ValueError(
            f"a {model_memory_gib:g} GiB model does not fit an instance with {instance_memory_gib:g} GiB "
            f"({overhead_gib:g} GiB kept for the system): pick a larger instance"
        )
    return workers * rps_per_worker, workers
