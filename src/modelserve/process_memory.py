"""RSS and PSS of one process, as the model server's status and the gateway's ``/stats`` report them.

RSS counts every page a process maps, shared or not; PSS divides each shared page among the processes that
map it, so PSS values add up to what a group of forked processes really uses. Linux gives PSS; elsewhere
(or without permission) it is None.
"""

from __future__ import annotations

import psutil


def process_memory(pid: int | None = None) -> dict[str, int | None]:
    """``{"pid", "rss_bytes", "pss_bytes"}`` of ``pid`` (default: this process)."""
    process = psutil.Process(pid)
    try:
        full = process.memory_full_info()
    except (psutil.AccessDenied, AttributeError):
        return {"pid": process.pid, "rss_bytes": int(process.memory_info().rss), "pss_bytes": None}
    pss = getattr(full, "pss", None)
    return {"pid": process.pid, "rss_bytes": int(full.rss), "pss_bytes": None if pss is None else int(pss)}
