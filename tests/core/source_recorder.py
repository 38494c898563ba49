"""A stand-in for the manager's callback that records what a source announces (shared by source tests)."""

from __future__ import annotations

from collections.abc import Sequence

from modelserve.core.source import AspiredVersion


class Recorder:
    """Every announcement, in order: (model, its complete aspired versions)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[AspiredVersion]]] = []

    def __call__(self, model: str, versions: Sequence[AspiredVersion]) -> None:
        self.calls.append((model, list(versions)))

    def last(self) -> list[int]:
        return [v.version for v in self.calls[-1][1]]
