"""Capacity arithmetic, including the seed's own example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelserve.plan.capacity import capacity, coupled_rps_per_instance, instances_needed


def test_the_seeds_arithmetic() -> None:
    plan = capacity("coupled", target_rps=100, rps_per_instance=2, price_per_hour=3.06)
    assert plan.instances == 50
    assert plan.monthly_cost == 110_160.0
    assert plan.hourly_cost == 153.0


@pytest.mark.parametrize(
    ("target", "per_instance", "headroom", "expected"),
    [(100, 2, 1.0, 50), (100, 3, 1.0, 34), (100, 2, 1.25, 63), (0.5, 138, 1.0, 1), (138, 138, 1.0, 1)],
)
def test_instances_round_up(target: float, per_instance: float, headroom: float, expected: int) -> None:
    assert instances_needed(target, per_instance, headroom) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 2, 1.0), "target-rps"), ((100, 0, 1.0), "per instance"), ((100, 2, 0.9), "headroom")],
)
def test_nonsense_is_refused(args: tuple[float, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        instances_needed(*args)


def test_coupled_throughput_is_limited_by_model_copies() -> None:
    assert coupled_rps_per_instance(16, 1.5, 9, overhead_gib=0.5) == (90.0, 10)
    with pytest.raises(ValueError, match="does not fit"):
        coupled_rps_per_instance(1, 1.5, 9)


def test_plan_command_prints_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = subprocess.run(
        [sys.executable, "-m", "modelserve", "plan", "--target-rps", "100", "--rps-per-instance", "2",
         "--price-per-hour", "3.06", "--json", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "110,160" in done.stdout
    (row,) = json.loads(out.read_text())["plans"]
    assert row["instances"] == 50 and row["monthly_cost"] == 110160.0


def test_plan_from_a_web_tier_result_compares_both_architectures(tmp_path: Path) -> None:
    result = tmp_path / "web_tier.json"
    result.write_text(
        json.dumps(
            {
                "points": [
                    {
                        "architecture": "coupled",
                        "worker_class": "sync",
                        "workers": 2,
                        "rps": 17.6,
                        "fits": True,
                    },
                    {
                        "architecture": "coupled",
                        "worker_class": "sync",
                        "workers": 3,
                        "rps": 17.9,
                        "fits": False,
                    },
                    {
                        "architecture": "stack/grpc",
                        "worker_class": "gevent",
                        "workers": 8,
                        "rps": 138.0,
                        "fits": True,
                    },
                ]
            }
        )
    )
    out = tmp_path / "plan.json"
    done = subprocess.run(
        [sys.executable, "-m", "modelserve", "plan", "--from", str(result), "--target-rps", "100",
         "--price-per-hour", "3.06", "--json", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plans = {row["architecture"]: row for row in json.loads(out.read_text())["plans"]}
    assert plans["modelserve stack"]["instances"] == 1
    assert plans["coupled"]["instances"] == 6  # 17.6 req/s each: the over-budget 17.9 is not used
    assert plans["coupled"]["monthly_cost"] == round(6 * 3.06 * 720, 2)


def test_plan_refuses_missing_inputs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelserve", "plan", "--target-rps", "100", "--price-per-hour", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--rps-per-instance" in done.stderr


def _plan_from(tmp_path: Path, document: dict[str, object]) -> dict[str, dict[str, object]]:
    result = tmp_path / "tune_result.json"
    result.write_text(json.dumps(document))
    out = tmp_path / "plan.json"
    done = subprocess.run(
        [sys.executable, "-m", "modelserve", "plan", "--from", str(result), "--target-rps", "100",
         "--price-per-hour", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {row["architecture"]: row for row in json.loads(out.read_text())["plans"]}


def test_plan_from_a_tune_result_prices_what_tune_chose_not_its_luckiest_trial(tmp_path: Path) -> None:
    chosen = {
        "architecture": "stack/rest",
        "worker_class": "gthread",
        "workers": 4,
        "rps": 20.0,
        "fits": True,
    }
    lucky = {**chosen, "workers": 6, "rps": 60.0, "phase": "screen"}  # one short trial; its long one missed
    plans = _plan_from(
        tmp_path,
        {"best": chosen, "best_by_architecture": {"stack": chosen}, "points": [lucky, chosen]},
    )
    assert (
        plans["modelserve stack"]["rps_per_instance"] == 20.0 and plans["modelserve stack"]["instances"] == 5
    )
    assert "gthread x 4" in str(plans["modelserve stack"]["note"])
    assert "coupled" not in plans


def test_plan_from_a_tune_result_where_only_the_coupled_architecture_fitted(tmp_path: Path) -> None:
    coupled = {"architecture": "coupled", "worker_class": "sync", "workers": 2, "rps": 25.0, "fits": True}
    plans = _plan_from(
        tmp_path, {"best": coupled, "best_by_architecture": {"coupled": coupled}, "points": []}
    )
    assert set(plans) == {"coupled"} and plans["coupled"]["instances"] == 4
