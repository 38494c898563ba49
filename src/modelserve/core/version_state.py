"""The life of one model version: TF Serving's ManagerState, with the error that ended a failed load.

START ──▶ LOADING ──▶ AVAILABLE ──▶ UNLOADING ──▶ END
             │
             └──(load failed)──▶ END  (status carries the error)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelserve.errors import Code


class VersionState(enum.Enum):
    """State names as TF Serving prints them in GetModelStatus."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


# Legal transitions; anything else is a bug in the manager.
TRANSITIONS: dict[VersionState, frozenset[VersionState]] = {
    VersionState.START: frozenset({VersionState.LOADING, VersionState.END}),
    VersionState.LOADING: frozenset({VersionState.AVAILABLE, VersionState.END}),
    VersionState.AVAILABLE: frozenset({VersionState.UNLOADING}),
    VersionState.UNLOADING: frozenset({VersionState.END}),
    VersionState.END: frozenset(),
}


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """A snapshot of one version for status APIs: state plus the error of a failed load."""

    model: str
    version: int
    state: VersionState
    error_code: Code = Code.OK
    error_message: str = ""
    memory_bytes: int = 0
