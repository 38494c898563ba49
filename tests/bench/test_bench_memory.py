"""MemorySampler on real processes that allocate a known amount."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest

from modelserve.bench.memory import MemorySampler, stack_pids
from modelserve.stack.stack import Endpoints

MB = 2**20
ALLOCATED = 200 * MB


@contextmanager
def _allocator(tmp_path: Path, in_child: bool) -> Iterator[subprocess.Popen[str]]:
    """A process that allocates (and touches) 200 MiB when told to; with ``in_child``, its child does."""
    script = tmp_path / "allocate.py"
    script.write_text(
        "import subprocess, sys\n"
        "if sys.argv[1:] == ['child']:\n"
        "    raise SystemExit(subprocess.call([sys.executable, __file__]))\n"
        "import numpy as np\n"
        "print('started', flush=True)\n"
        "sys.stdin.readline()\n"
        f"block = np.ones({ALLOCATED // 8}, dtype=np.float64)\n"
        "print('allocated', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script), *(["child"] if in_child else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        yield process
    finally:
        process.kill()
        process.wait()


def _allocate(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "allocated"


def test_sampler_measures_a_known_allocation(tmp_path: Path) -> None:
    with _allocator(tmp_path, in_child=False) as process:
        with MemorySampler([process.pid], interval_s=0.05) as before:
            pass
        baseline = before.result()
        with MemorySampler([process.pid], interval_s=0.05) as sampler:
            _allocate(process)
            sampler.sample()
    result = sampler.result()
    growth = result.peak_rss_bytes - baseline.peak_rss_bytes
    assert growth == pytest.approx(ALLOCATED, rel=0.1)
    assert result.peak_pss_bytes - baseline.peak_pss_bytes == pytest.approx(ALLOCATED, rel=0.1)
    (entry,) = result.per_process
    assert entry["pid"] == process.pid and "python" in entry["name"] and "allocate.py" in entry["cmdline"]
    assert entry["peak_rss_bytes"] == result.peak_rss_bytes
    assert result.samples >= 2
    assert result.gpus == [] or all("total_bytes" in gpu for gpu in result.gpus)
    assert result.to_dict()["peak_rss_bytes"] == result.peak_rss_bytes


def test_children_are_included_unless_asked_not_to(tmp_path: Path) -> None:
    with (
        _allocator(tmp_path, in_child=True) as process,
        MemorySampler([process.pid], interval_s=0.05) as with_children,
        MemorySampler([process.pid], interval_s=0.05, include_children=False) as parent_only,
    ):
        _allocate(process)
        with_children.sample()
        parent_only.sample()
    assert with_children.result().peak_rss_bytes > ALLOCATED
    assert len(with_children.result().per_process) == 2
    assert parent_only.result().peak_rss_bytes < 100 * MB
    assert len(parent_only.result().per_process) == 1


def test_stack_pids_reads_a_stack_ready_file(tmp_path: Path) -> None:
    """The ready file ``modelserve stack`` writes: every pid of its parts, the supervisor left out."""
    endpoints = Endpoints(
        model_server_url="http://127.0.0.1:1",
        gateway_url="http://127.0.0.1:2",
        pids={
            "model_server": 11,
            "gateway": 12,
            "nginx": 13,
            "gateway_workers": [14, 15],
            "nginx_workers": [],
        },
    )
    ready = tmp_path / "stack.json"
    ready.write_text(json.dumps({"url": endpoints.url, "pid": 10, **asdict(endpoints)}))
    assert stack_pids(ready) == [11, 12, 13, 14, 15]


def test_processes_that_do_not_exist_are_skipped() -> None:
    with MemorySampler([2**22 + 12345], interval_s=0.05) as sampler:
        pass
    assert sampler.result().peak_rss_bytes == 0 and sampler.result().per_process == []
