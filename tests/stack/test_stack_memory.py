"""Memory of real processes: RSS/PSS per process and its children, runtimes mapped, the rich table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from modelserve.stack.memory import ProcessMemory, loaded_runtimes, measure, memory_table, totals


@pytest.fixture
def parent_with_children() -> object:
    """A Python process with two children (a master and its workers, in miniature)."""
    kid = "import time; print('ready', flush=True); time.sleep(60)"
    code = (
        "import subprocess, sys, time\n"
        f"kids = [subprocess.Popen([sys.executable, '-c', {kid!r}], stdout=subprocess.PIPE) for _ in range(2)]\n"
        "assert all(k.stdout.readline() == b'ready\\n' for k in kids)  # started up: memory is stable\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    yield process
    import psutil

    for child in psutil.Process(process.pid).children():
        child.kill()
    process.kill()
    process.wait()


def test_measure_names_master_and_workers(parent_with_children: subprocess.Popen[bytes]) -> None:
    rows = measure({"gateway": parent_with_children.pid, "me": os.getpid()}, children=True)
    gateway = [row for row in rows if row.role.startswith("gateway")]
    assert [row.role for row in gateway] == ["gateway master", "gateway worker", "gateway worker"]
    assert gateway[0].pid == parent_with_children.pid
    for row in gateway:
        assert row.rss_bytes > 1_000_000
        if sys.platform == "linux":
            assert row.pss_bytes is not None and 0 < row.pss_bytes <= row.rss_bytes


def test_measure_without_children_and_with_exited_processes(
    parent_with_children: subprocess.Popen[bytes],
) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    rows = measure({"gateway": parent_with_children.pid, "gone": exited.pid}, children=False)
    assert [row.role for row in rows] == ["gateway"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")
def test_loaded_runtimes_sees_onnxruntime_only_where_imported(tmp_path: Path) -> None:
    code = "import onnxruntime, sys; print('ready', flush=True); sys.stdin.read()"
    with (
        subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        ) as with_runtime,
        subprocess.Popen(
            [sys.executable, "-c", "import numpy, sys; print('ready', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as without,
    ):
        for process in (with_runtime, without):
            assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        assert loaded_runtimes(with_runtime.pid) == ("onnxruntime",)
        assert loaded_runtimes(without.pid) == ()
        for process in (with_runtime, without):
            assert process.stdin is not None
            process.stdin.close()
    assert loaded_runtimes(2**22 + 12345) is None  # no such process


def test_totals_and_table() -> None:
    rows = [
        ProcessMemory("model server", 10, 300 * 2**20, 280 * 2**20, ("onnxruntime",)),
        ProcessMemory("gateway master", 11, 40 * 2**20, 20 * 2**20, ()),
        ProcessMemory("gateway worker", 12, 45 * 2**20, 15 * 2**20, ()),
    ]
    assert totals(rows) == (385 * 2**20, 315 * 2**20)
    assert totals([*rows, ProcessMemory("elsewhere", 13, 2**20, None)]) == (386 * 2**20, None)
    console = Console(record=True, width=120)
    console.print(memory_table(rows))
    text = console.export_text()
    assert "model server" in text and "onnxruntime" in text
    worker_line = next(line for line in text.splitlines() if "gateway worker" in line)
    assert "45.0 MiB" in worker_line and "15.0 MiB" in worker_line and "none" in worker_line
    total_line = next(line for line in text.splitlines() if "total" in line)
    assert "3 processes" in total_line and "385.0 MiB" in total_line and "315.0 MiB" in total_line


def test_measure_is_quick_enough_for_benchmarks(parent_with_children: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    for _ in range(10):
        measure({"gateway": parent_with_children.pid})
    assert time.monotonic() - started < 5
