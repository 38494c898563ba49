"""One model version under the manager's care: its state machine, its servable and its reference count.

This is TF Serving's LoaderHarness and ref-counted handle in one small class. A version is loaded once,
shared by every request through ``acquire``/``release``, and unloaded only when no request holds it, so an
unload never cuts a request short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from modelserve.core.servable import Servable
from modelserve.core.version_state import TRANSITIONS, VersionState, VersionStatus
from modelserve.errors import Code, ServingError


class ServableVersion:
    """Thread-safe holder of one version. All state changes go through ``_transition``."""

    def __init__(self, model: str, version: int, path: Path, fingerprint: str = "") -> None:
        self.model = model
        self.version = version
        self.path = path
        # The source's digest of the files this version was loaded from: a failed load is retried
        # only once the files differ.
        self.fingerprint = fingerprint
        # Host memory the version holds, measured after loading (set by the manager).
        self.memory_bytes = 0
        # The manager's memory epoch when this load started (see ModelManager._held).
        self.refused_epoch = 0
        # Load attempts of this version number so far (timed retries stop at --max_num_load_retries).
        self.attempt = 1
        self.failed_at = 0.0  # time.monotonic() of a failed load
        self.unload_scheduled = False  # guarded by the manager's lock
        self._state = VersionState.START
        self._error: ServingError | None = None
        self._servable: Servable | None = None
        self._refs = 0
        self._cond = threading.Condition()
        self.load_seconds = 0.0
        # Moving average of one predict call, None until measured; the inference service uses it to
        # decide whether a call is cheap enough to run inline on the event loop.
        self.avg_run_seconds: float | None = None

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state(self) -> VersionState:
        return self._state

    @property
    def error(self) -> ServingError | None:
        return self._error

    @property
    def servable(self) -> Servable:
        """The loaded servable; only valid between ``acquire`` and ``release``."""
        assert self._servable is not None, "servable read outside of AVAILABLE"
        return self._servable

    def status(self) -> VersionStatus:
        error = self._error
        held = self._state in (VersionState.AVAILABLE, VersionState.UNLOADING)
        return VersionStatus(
            model=self.model,
            version=self.version,
            state=self._state,
            error_code=error.code if error else Code.OK,
            error_message=error.message if error else "",
            memory_bytes=self.memory_bytes if held else 0,
        )

    def _transition(self, new: VersionState) -> None:
        # Caller holds self._cond.
        if new not in TRANSITIONS[self._state]:
            raise RuntimeError(f"{self.model}/{self.version}: illegal transition {self._state} -> {new}")
        self._state = new
        self._cond.notify_all()

    # -- load / unload -------------------------------------------------------------------------------

    def load(self, load_fn: Callable[[Path], Servable]) -> None:
        """Load with ``load_fn``; never raises: a failure ends the version with its error recorded."""
        with self._cond:
            if self._state is not VersionState.START:
                return
            self._transition(VersionState.LOADING)
        started = time.perf_counter()
        try:
            servable = load_fn(self.path)
        except ServingError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # a runtime's own exception: keep the server up, report it
            self._fail(ServingError(f"{type(exc).__name__}: {exc}", code=Code.UNKNOWN))
            return
        self.load_seconds = time.perf_counter() - started
        with self._cond:
            self._servable = servable
            self._transition(VersionState.AVAILABLE)

    def _fail(self, error: ServingError) -> None:
        with self._cond:
            self._error = error
            self.failed_at = time.monotonic()
            self._transition(VersionState.END)

    def cancel(self) -> None:
        """End a version that never started loading (it left the aspired set first)."""
        with self._cond:
            if self._state is VersionState.START:
                self._transition(VersionState.END)

    def unload(self, drain_timeout: float | None = None) -> None:
        """Stop new requests, wait for in-flight ones (up to ``drain_timeout``), then free the servable."""
        if self.begin_unload():
            self.finish_unload(drain_timeout)

    def begin_unload(self) -> bool:
        """AVAILABLE → UNLOADING: no new request gets this version. False if it was not AVAILABLE."""
        with self._cond:
            if self._state is not VersionState.AVAILABLE:
                return False
            self._transition(VersionState.UNLOADING)
            return True

    def finish_unload(self, drain_timeout: float | None = None) -> None:
        """After ``begin_unload``: wait for in-flight requests (up to ``drain_timeout``), free, END."""
        with self._cond:
            self._cond.wait_for(lambda: self._refs == 0, timeout=drain_timeout)
            servable, self._servable = self._servable, None
        try:
            if servable is not None:
                servable.close()
        finally:
            with self._cond:
                self._transition(VersionState.END)

    # -- references ----------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take a reference if the version is AVAILABLE; False otherwise (the caller looks elsewhere)."""
        with self._cond:
            if self._state is not VersionState.AVAILABLE:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._refs -= 1
            if self._refs == 0:
                self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        return self._refs
