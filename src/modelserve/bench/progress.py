"""The live one-line progress of a run (rich, on stderr): phase, elapsed, requests/s, p99 so far, errors."""

from __future__ import annotations

import math
from types import TracebackType
from typing import TYPE_CHECKING

from modelserve.bench.load import ProgressSnapshot

if TYPE_CHECKING:
    from rich.live import Live


def progress_line(snapshot: ProgressSnapshot, total_s: float) -> str:
    """``measuring  4.2/11.0 s  12,345 req/s  p99 3.10 ms  errors 0``."""
    p99 = "-" if math.isnan(snapshot.p99_ms) else f"{snapshot.p99_ms:,.2f} ms"
    return (
        f"{snapshot.phase:9} {snapshot.elapsed_s:5.1f}/{total_s:.1f} s  {snapshot.rps:10,.0f} req/s  "
        f"p99 {p99}  answered {snapshot.answered:,}  errors {snapshot.failed:,}"
    )


class LiveProgress:
    """A context manager whose ``update`` is the ``progress`` callback of `run_load`.

    On a terminal the line is redrawn in place; elsewhere (CI logs) nothing is drawn.
    """

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self._live: Live | None = None

    def __enter__(self) -> LiveProgress:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True, highlight=False)
        if console.is_terminal:
            self._live = Live("starting...", console=console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def update(self, snapshot: ProgressSnapshot) -> None:
        if self._live is not None:
            self._live.update(progress_line(snapshot, self.total_s))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, trace)
