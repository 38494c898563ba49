"""A reference to one AVAILABLE model version, held for the duration of one request.

While a handle is open the version cannot be unloaded; closing it (leaving the ``with`` block) lets a
pending unload proceed. Handles are cheap: one lock round-trip to open, one to close.
"""

from __future__ import annotations

from types import TracebackType

from modelserve.core.servable import Servable
from modelserve.core.servable_version import ServableVersion
from modelserve.core.signature import DEFAULT_SIGNATURE, Signature
from modelserve.errors import InvalidArgument


class ServableHandle:
    """Context manager around an acquired ``ServableVersion``; usable once."""

    __slots__ = ("_closed", "_version")

    def __init__(self, version: ServableVersion) -> None:
        # The caller has already acquired a reference.
        self._version = version
        self._closed = False

    @property
    def model(self) -> str:
        return self._version.model

    @property
    def version(self) -> int:
        return self._version.version

    @property
    def servable(self) -> Servable:
        return self._version.servable

    @property
    def avg_run_seconds(self) -> float | None:
        """Measured cost of one predict call on this version (None until the first call)."""
        return self._version.avg_run_seconds

    def record_run(self, seconds: float) -> None:
        """Fold one measured call into the version's moving average (races only blur the average)."""
        previous = self._version.avg_run_seconds
        self._version.avg_run_seconds = seconds if previous is None else 0.9 * previous + 0.1 * seconds

    def signature(self, name: str | None) -> Signature:
        """The signature called ``name`` (default ``serving_default``); InvalidArgument (400) if absent."""
        key = name or DEFAULT_SIGNATURE
        signatures = self._version.servable.signatures
        signature = signatures.get(key)
        if signature is None:
            # TF Serving's message (servables/tensorflow/util.cc).
            raise InvalidArgument(f'Serving signature name: "{key}" not found in signature def')
        return signature

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._version.release()

    def __enter__(self) -> ServableHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
