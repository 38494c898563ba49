"""When to try a failed download again: exponential backoff per version and listing.

A version that cannot be fetched (a full disk, one unreadable object) must not be downloaded again at every
poll forever. Each failure of a (version, listing fingerprint) doubles the wait before the next try, up to
``MAX_DELAY_SECONDS``; a new listing of the version (something was uploaded again) starts afresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0


def retry_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1, 2, 4, ... capped at 5 minutes)."""
    if failures <= 0:
        return 0.0
    return min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2.0 ** min(failures - 1, 30))


@dataclass(frozen=True, slots=True)
class Failures:
    """The failures in a row of one listing of a version, and when it may be tried again (monotonic)."""

    fingerprint: str
    count: int
    retry_at: float


class RetrySchedule:
    """Failed downloads by version; used from the source's thread only."""

    def __init__(self) -> None:
        self._failures: dict[int, Failures] = {}

    def wait_left(self, version: int, fingerprint: str) -> float:
        """Seconds before ``version`` with this listing may be downloaded again (0: now)."""
        failures = self._failures.get(version)
        if failures is None or failures.fingerprint != fingerprint:
            return 0.0
        return max(0.0, failures.retry_at - time.monotonic())

    def failed(self, version: int, fingerprint: str) -> Failures:
        """Record a failed download; returns the failures so far, with the time of the next try."""
        previous = self._failures.get(version)
        count = previous.count + 1 if previous is not None and previous.fingerprint == fingerprint else 1
        failures = Failures(fingerprint, count, time.monotonic() + retry_delay(count))
        self._failures[version] = failures
        return failures

    def succeeded(self, version: int) -> None:
        self._failures.pop(version, None)

    def forget_except(self, versions: set[int]) -> None:
        """Drop the record of versions no longer on storage."""
        for version in set(self._failures) - versions:
            del self._failures[version]
