"""Liveness and readiness of the model server, as every front-end reports them.

Live: the process answers. Ready: every model of the *startup* config that is still configured has an
AVAILABLE version, and the server is not shutting down. A model added later by a config reload does not
count: adding a model to a running fleet must not take every replica out of service while it loads, nor
for good when it never loads; it shows in ``unavailable`` (``/readyz``'s body) and in the status
endpoints instead. Shutdown turns readiness off first (``start_draining``), so load balancers and
Kubernetes stop sending while the requests in flight finish. REST ``/readyz`` and ``/v2/health/ready``,
V2's gRPC ``ServerReady`` and ``grpc.health.v1`` all read this one object.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelserve.core.manager import ModelManager
from modelserve.core.version_state import VersionState


class Health:
    """Readiness over the manager's state plus the server's own draining flag.

    ``required``: the models readiness waits for (the startup config's); None: every configured model.
    """

    def __init__(self, manager: ModelManager, required: Iterable[str] | None = None) -> None:
        self.manager = manager
        self._startup = None if required is None else frozenset(required)
        self.required = self._startup
        self.draining = False

    def configured(self, models: Iterable[str]) -> None:
        """A config reload named ``models``: a startup model it removed is no longer waited for, even
        while its versions still unload (or every replica would leave its Service at the same moment)."""
        if self._startup is not None:
            self.required = self._startup & frozenset(models)

    def start_draining(self) -> None:
        """Shutdown began: report not ready from now on (idempotent)."""
        self.draining = True

    def ready(self) -> bool:
        if self.draining:
            return False
        if self.required is None:
            return self.manager.is_ready()
        return not self.not_ready()

    def not_ready(self) -> dict[str, str]:
        """What keeps the server from being ready: model name (or ``server``) -> why; empty when ready."""
        if self.draining:
            return {"server": "shutting down"}
        return {model: why for model, why in self._missing().items() if self._waits_for(model)}

    def unavailable(self) -> dict[str, str]:
        """Models readiness does not wait for (added by a reload) that have no AVAILABLE version -> why."""
        return {model: why for model, why in self._missing().items() if not self._waits_for(model)}

    def _waits_for(self, model: str) -> bool:
        return self.required is None or model in self.required

    def _missing(self) -> dict[str, str]:
        """Every configured model without an AVAILABLE version -> its versions' states and errors."""
        by_model: dict[str, list[str]] = {name: [] for name in self.manager.model_names()}
        available: set[str] = set()
        for status in self.manager.all_statuses():
            if status.state is VersionState.AVAILABLE:
                available.add(status.model)
            detail = f"version {status.version} {status.state.value}"
            if status.error_message:
                detail += f": {status.error_message}"
            by_model.setdefault(status.model, []).append(detail)
        return {
            model: "; ".join(details) or "no version found yet"
            for model, details in by_model.items()
            if model not in available
        }


def health_of(manager: ModelManager, given: Health | None) -> Health:
    """``given``, or the readiness of every model ``manager`` serves (front-ends built on their own)."""
    return given if given is not None else Health(manager)
