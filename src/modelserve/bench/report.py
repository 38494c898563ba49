"""What bench writes: the final table (rich), and JSON and CSV files.

The JSON holds everything needed to compare runs later: the spec, the result, the memory peaks and the
machine's facts (cores, memory, CPU model, Python, versions), because load figures mean little without the
machine they were taken on. The CSV is one header line and one row of flat columns, for spreadsheets and for
concatenating runs.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from modelserve import __version__
from modelserve.bench.histogram import PERCENTILES
from modelserve.bench.load import LoadResult, LoadSpec
from modelserve.bench.memory import MemoryResult

if TYPE_CHECKING:
    from rich.table import Table

LATENCY_KEYS = (*(name for name, _ in PERCENTILES), "mean", "max")


def machine_facts() -> dict[str, Any]:
    """Where the figures were taken."""
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "modelserve": __version__,
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "memory_bytes": int(psutil.virtual_memory().total),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def document(spec: LoadSpec, result: LoadResult, memory: MemoryResult | None) -> dict[str, Any]:
    """The JSON document: spec, result, memory (or null) and machine."""
    return {
        "spec": spec.to_dict(),
        "result": result.to_dict(),
        "memory": memory.to_dict() if memory is not None else None,
        "machine": machine_facts(),
    }


def write_json(path: str | Path, spec: LoadSpec, result: LoadResult, memory: MemoryResult | None) -> None:
    """The JSON document; strict JSON (no NaN: a latency without any success is null)."""
    Path(path).write_text(json.dumps(document(spec, result, memory), indent=1, allow_nan=False) + "\n")


def csv_row(spec: LoadSpec, result: LoadResult, memory: MemoryResult | None) -> dict[str, Any]:
    """The flat columns of one run."""
    row: dict[str, Any] = {
        "url": spec.request.url,
        "method": spec.request.method,
        "mode": "closed" if spec.rate is None else "open",
        "concurrency": spec.concurrency,
        "rate": "" if spec.rate is None else spec.rate,
        "arrival": spec.arrival if spec.rate is not None else "",
        "processes": spec.processes,
        "duration_s": round(result.duration_s, 3),
        "requests": result.requests,
        "errors": result.error_count,
        "errors_by_status": ";".join(f"{k}={v}" for k, v in result.errors.items()),
        "rps": round(result.rps, 2),
    }
    for key in LATENCY_KEYS:  # empty cells when no request succeeded (no latency to report)
        value = result.latency_ms.get(key, math.nan)
        row[f"{key}_ms"] = "" if math.isnan(value) else round(value, 3)
    row["saturated"] = result.saturated
    row["peak_rss_bytes"] = memory.peak_rss_bytes if memory is not None else ""
    row["peak_pss_bytes"] = memory.peak_pss_bytes if memory is not None else ""
    return row


def write_csv(path: str | Path, spec: LoadSpec, result: LoadResult, memory: MemoryResult | None) -> None:
    write_csv_rows(path, [csv_row(spec, result, memory)])


def write_csv_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows with the same columns (those of the first), a header first."""
    with Path(path).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"


def result_table(spec: LoadSpec, result: LoadResult, title: str = "modelserve bench") -> Table:
    """The final table: load, throughput, latency percentiles, errors by status."""
    from rich.table import Table

    mode = (
        f"closed loop, {spec.concurrency} connections"
        if spec.rate is None
        else f"open loop, {spec.rate:g}/s {spec.arrival}, at most {spec.concurrency} in flight"
    )
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("target", f"{spec.request.method} {spec.request.url}")
    table.add_row("load", f"{mode}, {spec.processes} process{'es' if spec.processes > 1 else ''}")
    table.add_row("measured", f"{result.duration_s:.2f} s after {spec.warmup_s:g} s warm-up")
    table.add_row("requests", f"{result.requests:,}")
    table.add_row("throughput", f"{result.rps:,.1f} requests/s (successful)")
    for key in LATENCY_KEYS:
        value = result.latency_ms.get(key, math.nan)
        table.add_row(f"latency {key}", "-" if math.isnan(value) else f"{value:,.3f} ms")
    errors = ", ".join(f"{k}: {v:,}" for k, v in result.errors.items()) or "none"
    table.add_row("errors", errors, style="red" if result.errors else None)
    cpu = ", ".join(f"{c:.0%}" for c in result.generator_cpu)
    table.add_row("bench CPU", f"{cpu} of a core")
    if result.saturated:
        verdict = "SATURATED: the figures may describe bench (see the warnings)"
        table.add_row("load generator", verdict, style="yellow")
    else:
        table.add_row("load generator", "kept up")
    return table


def memory_table(memory: MemoryResult) -> Table:
    """Peak memory per process and of the sum (and per GPU)."""
    from rich.table import Table

    table = Table(title="Peak memory", title_justify="left")
    table.add_column("pid", justify="right")
    table.add_column("process")
    table.add_column("peak RSS", justify="right")
    table.add_column("peak PSS", justify="right")
    for entry in memory.per_process:
        table.add_row(
            str(entry["pid"]), entry["name"], _mib(entry["peak_rss_bytes"]), _mib(entry["peak_pss_bytes"])
        )
    table.add_section()
    label = f"all {len(memory.per_process)} at once (peak of the sum)"
    table.add_row("", label, _mib(memory.peak_rss_bytes), _mib(memory.peak_pss_bytes), style="bold")
    for gpu in memory.gpus:
        table.add_row(
            f"GPU {gpu['index']}", gpu["name"], f"used {_mib(gpu['peak_used_bytes'])}",
            f"these pids {_mib(gpu['peak_used_by_pids_bytes'])}",
        )  # fmt: skip
    return table
