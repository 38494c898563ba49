"""Memory of every process of the stack: the Gunicorn master, its workers, and the model server.

RSS counts every page a process maps, shared or not, so summing the RSS of forked workers counts the
pages they share with the master (the interpreter, numpy, the handler's imports) once per worker. PSS
divides each shared page among the processes that map it, so PSS values add up to what the stack really
uses. A worker finds its siblings as the children of the master (its parent process); the model server
reports its own ``process`` in ``GET /modelserve/status``. Linux gives PSS; elsewhere it is None.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

from modelserve.process_memory import process_memory


def gateway_memory(master_pid: int, worker_class: str) -> dict[str, Any]:
    """The master and every live worker (sorted by pid); ``served_by`` is the worker answering."""
    workers = []
    for child in psutil.Process(master_pid).children():
        try:
            workers.append(process_memory(child.pid))
        except psutil.NoSuchProcess:  # a worker that exited meanwhile (restart, max-requests)
            continue
    return {
        "worker_class": worker_class,
        "served_by": os.getpid(),
        "master": process_memory(master_pid),
        "workers": sorted(workers, key=lambda worker: worker["pid"] or 0),
    }


def stack_memory(gateway: dict[str, Any], model_server: dict[str, Any]) -> dict[str, Any]:
    """The ``/stats`` document: both tiers and their PSS total (RSS totals would double-count)."""
    processes = [gateway["master"], *gateway["workers"]]
    gateway_pss = _total(processes, "pss_bytes")
    server_pss = _total([model_server["process"]], "pss_bytes") if "process" in model_server else None
    return {
        "gateway": {**gateway, "pss_bytes": gateway_pss},
        "model_server": model_server,
        "total_pss_bytes": None if gateway_pss is None or server_pss is None else gateway_pss + server_pss,
    }


def _total(processes: list[dict[str, Any]], key: str) -> int | None:
    values: list[int] = [process[key] for process in processes if process.get(key) is not None]
    return sum(values) if len(values) == len(processes) else None
