"""How busy the event loop is, from how late a periodic callback runs (its lag).

The inference service asks it one question: is the loop saturated? An idle loop runs a callback due now
within microseconds; a loop with many sockets ready runs it after all of them, milliseconds later. One
probe every few milliseconds costs nothing measurable, and works the same for every front-end on the loop.
"""

from __future__ import annotations

import asyncio


class LoopLoad:
    """Lag of one event loop, smoothed; ``saturated`` when it exceeds ``threshold_seconds``."""

    def __init__(self, interval_seconds: float = 0.002, threshold_seconds: float = 0.0005) -> None:
        self.interval = interval_seconds
        self.threshold = threshold_seconds
        self.lag = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start probing ``loop`` (idempotent for the same loop; a new loop replaces the old one)."""
        if self._loop is loop:
            return
        self.stop()
        self._loop = loop
        self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._probe)

    def _probe(self) -> None:
        assert self._loop is not None
        lag = max(0.0, self._loop.time() - self._due)
        # Rise at once, fall slowly: one quiet probe does not make a busy loop idle.
        self.lag = lag if lag > self.lag else 0.8 * self.lag + 0.2 * lag
        self._schedule()

    @property
    def saturated(self) -> bool:
        return self.lag > self.threshold

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None
