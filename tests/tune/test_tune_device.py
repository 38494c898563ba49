"""``--device-memory-budget``: which NVML figure stands for a trial, and the flag refused without NVML."""

from __future__ import annotations

from typing import Any

import pytest

from modelserve.cli import main
from modelserve.tune.device import nvml_problem, trial_device_bytes

GIB = 2**30


def gpu(index: int, device_wide: int | None, by_pids: int | None) -> dict[str, Any]:
    return {"index": index, "peak_used_bytes": device_wide, "peak_used_by_pids_bytes": by_pids}


@pytest.mark.parametrize(
    ("gpus", "baseline", "expected"),
    [
        ([], [], None),  # no NVML figures at all
        ([gpu(0, 10 * GIB, 3 * GIB)], [6 * GIB], 3 * GIB),  # the pids' own figure when NVML matched them
        ([gpu(0, 10 * GIB, 0)], [6 * GIB], 4 * GIB),  # container: host pids, nothing matched -> device delta
        ([gpu(0, 10 * GIB, None)], [6 * GIB], 4 * GIB),  # usedGpuMemory=None on this driver -> device delta
        ([gpu(0, 10 * GIB, 0)], [], 10 * GIB),  # no baseline: the whole device-wide peak (safe side)
        ([gpu(0, 5 * GIB, 0)], [6 * GIB], 0),  # memory freed by someone else: never negative
        ([gpu(0, 10 * GIB, 2 * GIB), gpu(1, 9 * GIB, 0)], [1 * GIB, 8 * GIB], 3 * GIB),  # summed over GPUs
        ([gpu(0, None, 0)], [0], None),  # no figure for this GPU: unknown, so it cannot be judged within
    ],
)
def test_the_figure_that_stands_for_the_trial(
    gpus: list[dict[str, Any]], baseline: list[int], expected: int | None
) -> None:
    assert trial_device_bytes(gpus, baseline) == expected


def test_the_device_budget_is_refused_at_start_without_nvml(capsys: pytest.CaptureFixture[str]) -> None:
    if not nvml_problem():
        pytest.skip("NVML works on this machine: the flag is accepted")
    flags = ["--handler=h.py", "--model_base_path=/m", "--device-memory-budget=1GiB"]
    assert main(["tune", *flags]) == 2
    assert "--device-memory-budget needs GPU memory figures from NVML" in capsys.readouterr().err
