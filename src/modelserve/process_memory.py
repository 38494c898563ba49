"""RSS and PSS of one process: the one reader behind the model server's status, the gateway's ``/stats``,
the stack's memory table and bench's memory sampler.

RSS counts every page a process maps, shared or not; PSS divides each shared page among the processes that
map it, so PSS values add up to what a group of forked processes really uses. Linux gives PSS; elsewhere
(or without permission) it is None.
"""

from __future__ import annotations

import psutil


def read_rss_pss(process: psutil.Process) -> tuple[int, int | None]:
    """``(rss_bytes, pss_bytes)`` of ``process``; PSS is None where it cannot be read.

    Raises `psutil.NoSuchProcess` (and its subclass `psutil.ZombieProcess`) when the process has exited:
    callers that walk changing process trees skip it.
    """
    try:
        full = process.memory_full_info()
    except (psutil.AccessDenied, AttributeError):  # another user's process; no memory_full_info here
        return int(process.memory_info().rss), None
    pss = getattr(full, "pss", None)
    return int(full.rss), None if pss is None else int(pss)


def process_memory(pid: int | None = None) -> dict[str, int | None]:
    """``{"pid", "rss_bytes", "pss_bytes"}`` of ``pid`` (default: this process)."""
    process = psutil.Process(pid)
    rss, pss = read_rss_pss(process)
    return {"pid": process.pid, "rss_bytes": rss, "pss_bytes": pss}
