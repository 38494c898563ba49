"""Memory of the stack's processes: RSS and PSS per process, and which ML runtime each one has loaded.

RSS counts every page a process maps, shared ones too, so RSS summed over Gunicorn workers forked from one
master counts their shared pages once per worker. PSS splits each shared page between the processes that
share it: PSS sums to what the machine really spends. The "ML runtime" column reads the shared libraries a
process has mapped: the model server shows onnxruntime (or tensorflow, torch), the gateway's workers none,
which is the point of the architecture — the workers carry no model.

``measure`` is also what benchmarks use to read the memory of a set of processes and their children.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from modelserve.process_memory import read_rss_pss

if TYPE_CHECKING:
    from rich.table import Table

# Substrings of mapped library paths, per runtime (Linux /proc/<pid>/maps).
_RUNTIME_LIBRARIES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("libonnxruntime", "onnxruntime_pybind11_state"),
    "tensorflow": ("libtensorflow_framework", "_pywrap_tensorflow_internal"),
    "torch": ("libtorch_cpu", "libtorch_python"),
}


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    """One process's memory at one moment."""

    role: str  # "model server", "gateway master", "gateway worker", ...
    pid: int
    rss_bytes: int
    pss_bytes: int | None  # None where the platform does not report it (not Linux) or access is denied
    runtimes: tuple[str, ...] | None = None  # ML runtimes mapped; None: unknown (not Linux)


def loaded_runtimes(pid: int) -> tuple[str, ...] | None:
    """The ML runtimes whose libraries process ``pid`` has mapped; None where that cannot be read."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
    except OSError:
        return None
    return tuple(name for name, needles in _RUNTIME_LIBRARIES.items() if any(n in maps for n in needles))


def _read(process: psutil.Process, role: str) -> ProcessMemory | None:
    try:
        rss, pss = read_rss_pss(process)
    except psutil.NoSuchProcess:
        return None  # exited meanwhile (a recycled worker): nothing to count
    return ProcessMemory(
        role=role, pid=process.pid, rss_bytes=rss, pss_bytes=pss, runtimes=loaded_runtimes(process.pid)
    )


def measure(roles: Mapping[str, int], children: bool = True) -> list[ProcessMemory]:
    """RSS/PSS of each process in ``roles`` (role -> pid) and, with ``children``, of its descendants.

    A descendant of role ``"gateway"`` is listed as ``"gateway worker"``, and the parent then as
    ``"gateway master"``; a process that has exited is left out.
    """
    rows: list[ProcessMemory] = []
    for role, pid in roles.items():
        try:
            process = psutil.Process(pid)
            descendants = process.children(recursive=True) if children else []
        except psutil.NoSuchProcess:
            continue
        parent = _read(process, f"{role} master" if descendants else role)
        if parent is not None:
            rows.append(parent)
        rows += [row for child in descendants if (row := _read(child, f"{role} worker")) is not None]
    return rows


def totals(rows: Iterable[ProcessMemory]) -> tuple[int, int | None]:
    """Summed RSS and PSS (PSS None if any process lacks it)."""
    listed = list(rows)
    pss = [row.pss_bytes for row in listed]
    return sum(row.rss_bytes for row in listed), (
        None if any(p is None for p in pss) else sum(p for p in pss if p is not None)
    )


def format_mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f} MiB"


def memory_table(rows: Sequence[ProcessMemory], title: str = "Memory of the stack's processes") -> Table:
    """A rich Table: one line per process and a total line."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("process")
    table.add_column("pid", justify="right")
    table.add_column("RSS", justify="right")
    table.add_column("PSS", justify="right")
    table.add_column("ML runtime loaded")
    for row in rows:
        runtimes = "?" if row.runtimes is None else ", ".join(row.runtimes) or "none"
        table.add_row(row.role, str(row.pid), format_mib(row.rss_bytes), format_mib(row.pss_bytes), runtimes)
    rss, pss = totals(rows)
    table.add_section()
    table.add_row(f"total ({len(rows)} processes)", "", format_mib(rss), format_mib(pss), "", style="bold")
    return table
