"""GPU memory of a trial, for ``--device-memory-budget``: which NVML figure stands for the configuration.

`MemorySampler` reports, per GPU, the peak memory used by the sampled pids and the peak used on the whole
device. The per-pid figure is the right one where it works, but in a container NVML reports host pids (none
match: 0) and some drivers report ``usedGpuMemory`` as None (also 0). Then the device-wide peak *minus what
was used before the trial started* stands in: it also counts other users of the GPU, so it errs on the
safe side of the budget.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from typing import Any


def nvml_problem() -> str:
    """Why GPU memory cannot be read here ('' when NVML works and sees at least one GPU)."""
    try:
        pynvml = importlib.import_module("pynvml")
    except ImportError:
        return "NVML is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as error:
        return f"NVML cannot start: {error}"
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as error:
        return f"NVML cannot count the GPUs: {error}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return "" if count > 0 else "NVML sees no GPU"


def device_used_now() -> list[int]:
    """Memory used on each GPU right now, by index ([] without NVML): the baseline before a trial."""
    try:
        pynvml = importlib.import_module("pynvml")
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        return [
            int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
            for index in range(pynvml.nvmlDeviceGetCount())
        ]
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def trial_device_bytes(gpus: Sequence[dict[str, Any]], baseline: Sequence[int]) -> int | None:
    """GPU memory the trial used at its peak, summed over the GPUs; None when there is no figure.

    Per GPU: the sampled pids' peak when it is positive, else the device-wide peak minus ``baseline`` (what
    that GPU used before the trial; unknown baseline: the whole device-wide peak).
    """
    if not gpus:
        return None
    total = 0
    for gpu in gpus:
        by_pids = gpu.get("peak_used_by_pids_bytes") or 0
        if by_pids > 0:
            total += int(by_pids)
            continue
        device_wide = gpu.get("peak_used_bytes")
        if device_wide is None:
            return None
        index = int(gpu.get("index", 0))
        before = baseline[index] if 0 <= index < len(baseline) else 0
        total += max(0, int(device_wide) - before)
    return total
