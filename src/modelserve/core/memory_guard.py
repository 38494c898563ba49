"""The memory guard: a load that would not fit is refused before it starts, so the box never OOMs.

During a hot swap the old and the new version sit side by side; with large models that is how servers
die. Before a load starts, the guard reserves an estimate of what the version will take (the size of its
files, or what the version it replaces measured, whichever is larger) against two limits:

- the budget (``--memory_budget``): the total host memory model versions may hold;
- the memory the host has available right now (other processes count too).

A refused load ends the version with RESOURCE_EXHAUSTED and a message that says what was needed, what was
free and who holds the rest; the version it would have replaced keeps serving. After the load, the
estimate is replaced by the measured figure (see ``ModelManager``); a version that measured over budget
is unloaded again.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import psutil

from modelserve.errors import InvalidArgument, ResourceExhausted

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory_size(text: str, total: int | None = None) -> int:
    """Bytes in ``"8GiB"``, ``"500MB"``, ``"1073741824"`` or ``"80%"`` (of ``total``, default: host RAM)."""
    value = text.strip()
    if value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            raise InvalidArgument(f"invalid memory size {text!r}: expected e.g. 80%") from None
        if not 0 < percent <= 100:
            raise InvalidArgument(f"invalid memory size {text!r}: a percentage must be in (0, 100]")
        return int((total if total is not None else psutil.virtual_memory().total) * percent / 100)
    found = _SIZE.match(value)
    if found is None or found.group(2).lower() not in _UNITS:
        raise InvalidArgument(
            f"invalid memory size {text!r}: expected bytes with an optional unit (B, KB, MB, GB, KiB, MiB, "
            f"GiB) or a percentage of host memory, e.g. 8GiB or 80%"
        )
    size = int(float(found.group(1)) * _UNITS[found.group(2).lower()])
    if size <= 0:
        raise InvalidArgument(f"invalid memory size {text!r}: must be positive")
    return size


def format_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def files_bytes(path: Path) -> int:
    """Total size of the files under ``path``: the first estimate of what loading it takes."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


class MemoryGuard:
    """Thread-safe accounting of the host memory each model version holds or is about to hold.

    Entries are keyed by a token the caller owns (one per load attempt), so a late release of an old
    attempt never erases the reservation of a newer one with the same name.
    """

    def __init__(self, budget_bytes: int | None, *, check_available: bool = True) -> None:
        self.budget_bytes = budget_bytes
        self._check_available = check_available
        self._held: dict[object, tuple[str, int]] = {}
        self._pending: set[object] = set()  # reserved, not yet allocated: invisible in "available"
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._held.values())

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held.values())

    def reserve(self, token: object, name: str, estimate: int) -> None:
        """Reserve ``estimate`` bytes for ``name`` or raise ResourceExhausted saying why not."""
        with self._lock:
            others = {t: held for t, held in self._held.items() if t is not token}
            used = sum(size for _, size in others.values())
            if self.budget_bytes is not None and used + estimate > self.budget_bytes:
                raise ResourceExhausted(
                    f"loading {name} needs about {format_bytes(estimate)} but only "
                    f"{format_bytes(max(0, self.budget_bytes - used))} of the memory budget of "
                    f"{format_bytes(self.budget_bytes)} is free ({_holders(others.values())}); raise "
                    f"--memory_budget, or unload a version first"
                )
            if self._check_available:
                # Memory other processes use counts too, and so do loads admitted but not done yet.
                pending = sum(others[t][1] for t in self._pending if t in others)
                available = psutil.virtual_memory().available
                if estimate + pending > available:
                    loading = (
                        f" ({format_bytes(pending)} of it promised to loads in progress)" if pending else ""
                    )
                    raise ResourceExhausted(
                        f"loading {name} needs about {format_bytes(estimate)} but the host has only "
                        f"{format_bytes(available)} available{loading}"
                    )
            self._held[token] = (name, estimate)
            self._pending.add(token)

    def settle(self, token: object, measured: int) -> None:
        """Replace the estimate by the measured figure; raise (and release) if that breaks the budget."""
        with self._lock:
            self._pending.discard(token)
            name, _ = self._held[token]
            self._held[token] = (name, measured)
            used = sum(size for _, size in self._held.values())
            if self.budget_bytes is not None and used > self.budget_bytes:
                del self._held[token]
                raise ResourceExhausted(
                    f"{name} measured {format_bytes(measured)} after loading, which puts model memory at "
                    f"{format_bytes(used)}, over the memory budget of {format_bytes(self.budget_bytes)}; "
                    f"raise --memory_budget"
                )

    def release(self, token: object) -> None:
        with self._lock:
            self._held.pop(token, None)
            self._pending.discard(token)


def _holders(held: Iterable[tuple[str, int]]) -> str:
    ranked = sorted(held, key=lambda item: -item[1])
    if not ranked:
        return "nothing else is loaded"
    shown = ", ".join(f"{key} {format_bytes(size)}" for key, size in ranked[:5])
    more = f" and {len(ranked) - 5} more" if len(ranked) > 5 else ""
    return f"in use: {shown}{more}"
