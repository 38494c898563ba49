"""available_cpus: the affinity mask and the cgroup CPU quota bound the threads the server starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelserve.cpus import available_cpus, cgroup_cpu_quota


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("200000 100000\n", 2.0), ("50000 100000\n", 0.5)],
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, expected: float | None) -> None:
    v2 = _write(tmp_path / "cpu.max", cpu_max)
    assert cgroup_cpu_quota(v2, tmp_path / "none", tmp_path / "none") == expected


@pytest.mark.parametrize(("quota", "expected"), [("-1", None), ("300000", 3.0), ("garbage", None)])
def test_cgroup_v1_quota_when_there_is_no_v2_file(tmp_path: Path, quota: str, expected: float | None) -> None:
    v1_quota = _write(tmp_path / "cfs_quota_us", quota)
    v1_period = _write(tmp_path / "cfs_period_us", "100000")
    assert cgroup_cpu_quota(tmp_path / "missing", v1_quota, v1_period) == expected


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "a", tmp_path / "b", tmp_path / "c") is None


def test_available_cpus_is_bounded_by_the_affinity_mask() -> None:
    cpus = available_cpus()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    assert cpus <= len(os.sched_getaffinity(0))
