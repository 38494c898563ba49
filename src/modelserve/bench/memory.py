"""Memory of the processes under load: RSS and PSS of given pids (children included) and GPU memory (NVML).

A background thread samples every ``interval_s`` and keeps peaks: of the *sum* over every sampled process at
one moment (what the deployment needs at its worst), and of each process. PSS divides shared pages between
the processes that share them, so PSS sums to what the machine spends (RSS counts a page shared by forked
workers once per worker); where PSS cannot be read (not Linux, no permission) RSS stands in. Processes that
appear later (a recycled worker) are picked up at the next sample, and the ones that exit are skipped.

GPU memory comes from NVML (``pip install nvidia-ml-py``), imported only when sampling starts; without it,
or without a GPU, ``gpus`` is empty.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from modelserve.process_memory import read_rss_pss


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """Peaks over the sampling period."""

    peak_rss_bytes: int  # peak of the SUM over all sampled processes
    peak_pss_bytes: int  # same for PSS (falls back to RSS where PSS cannot be read)
    per_process: list[dict[str, Any]]  # [{"pid", "name", "cmdline", "peak_rss_bytes", "peak_pss_bytes"}]
    gpus: list[dict[str, Any]]  # NVML, [] when no GPU / no pynvml
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return asdict(self)


def stack_pids(ready_file: str | Path) -> list[int]:
    """The pids of a running ``modelserve stack`` from its ready file (model server, gateway, nginx).

    The stack's supervisor itself is left out: systemd or Kubernetes can do its job, so it is not part of
    what a deployment needs. The gateway's and nginx's workers are found as children at each sample.
    """
    state = json.loads(Path(ready_file).read_text())
    pids: list[int] = []
    for value in state.get("pids", {}).values():
        for pid in value if isinstance(value, list) else [value]:
            if isinstance(pid, int) and pid not in pids:
                pids.append(pid)
    return pids


class _Gpus:
    """NVML handles and per-device peaks; inert when NVML is missing or finds no device."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.devices: list[dict[str, Any]] = []
        try:
            pynvml = importlib.import_module("pynvml")  # nvidia-ml-py, optional
            pynvml.nvmlInit()
            self.nvml = pynvml
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
                self.devices.append(
                    {
                        "index": index,
                        "name": name.decode() if isinstance(name, bytes) else str(name),
                        "total_bytes": total,
                        "peak_used_bytes": 0,
                        "peak_used_by_pids_bytes": 0,
                        "_handle": handle,
                    }
                )
        except Exception:  # no library, no driver, no device: no GPU figures
            self.nvml = None
            self.devices = []

    def sample(self, pids: set[int]) -> None:
        for device in self.devices:
            with contextlib.suppress(Exception):
                handle = device["_handle"]
                used = int(self.nvml.nvmlDeviceGetMemoryInfo(handle).used)
                device["peak_used_bytes"] = max(device["peak_used_bytes"], used)
                running = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                mine = sum(int(p.usedGpuMemory or 0) for p in running if p.pid in pids)
                device["peak_used_by_pids_bytes"] = max(device["peak_used_by_pids_bytes"], mine)

    def result(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in device.items() if not k.startswith("_")} for device in self.devices]

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()


class MemorySampler:
    """Samples RSS and PSS of processes (each with its children) every interval_s in a background thread."""

    def __init__(self, pids: Sequence[int], interval_s: float = 0.5, include_children: bool = True) -> None:
        self.pids = list(pids)
        self.interval_s = interval_s
        self.include_children = include_children
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._peak_rss = 0
        self._peak_pss = 0
        self._samples = 0
        self._processes: dict[int, dict[str, Any]] = {}
        self._gpus: _Gpus | None = None

    def __enter__(self) -> MemorySampler:
        """Starts sampling (one sample at once, so even a short run has one)."""
        self._gpus = _Gpus()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops, after one last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        if self._gpus is not None:
            self._gpus.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _targets(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in self.pids:
            try:
                process = psutil.Process(pid)
                found.setdefault(pid, process)
                if self.include_children:
                    for child in process.children(recursive=True):
                        found.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def sample(self) -> None:
        """Read every process once and update the peaks (thread-safe; also callable by hand)."""
        total_rss = total_pss = 0
        seen: set[int] = set()
        for process in self._targets():
            try:
                rss, maybe_pss = read_rss_pss(process)
                pss = rss if maybe_pss is None else maybe_pss  # RSS stands in where PSS cannot be read
                with self._lock:
                    entry = self._processes.get(process.pid)
                    if entry is None:
                        entry = self._processes[process.pid] = self._describe(process)
                    entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], rss)
                    entry["peak_pss_bytes"] = max(entry["peak_pss_bytes"], pss)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            total_rss += rss
            total_pss += pss
            seen.add(process.pid)
        with self._lock:
            self._peak_rss = max(self._peak_rss, total_rss)
            self._peak_pss = max(self._peak_pss, total_pss)
            self._samples += 1
        if self._gpus is not None:
            self._gpus.sample(seen)

    @staticmethod
    def _describe(process: psutil.Process) -> dict[str, Any]:
        try:
            name, cmdline = process.name(), " ".join(process.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            name, cmdline = "?", ""
        return {
            "pid": process.pid,
            "name": name,
            "cmdline": cmdline,
            "peak_rss_bytes": 0,
            "peak_pss_bytes": 0,
        }

    def result(self) -> MemoryResult:
        """The peaks so far."""
        with self._lock:
            return MemoryResult(
                peak_rss_bytes=self._peak_rss,
                peak_pss_bytes=self._peak_pss,
                per_process=[dict(entry) for entry in self._processes.values()],
                gpus=self._gpus.result() if self._gpus is not None else [],
                samples=self._samples,
            )
