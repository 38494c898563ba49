"""Liveness and readiness of the model server, as every front-end reports them.

Live: the process answers. Ready: every configured model has an AVAILABLE version *and* the server is not
shutting down. Shutdown turns readiness off first (``start_draining``), so load balancers and Kubernetes
stop sending while the requests in flight finish; REST ``/readyz`` and ``/v2/health/ready``, V2's gRPC
``ServerReady`` and ``grpc.health.v1`` all read this one object.
"""

from __future__ import annotations

from modelserve.core.manager import ModelManager
from modelserve.core.version_state import VersionState


class Health:
    """Readiness over the manager's state plus the server's own draining flag; cheap, lock-free reads."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.draining = False

    def start_draining(self) -> None:
        """Shutdown began: report not ready from now on (idempotent)."""
        self.draining = True

    def ready(self) -> bool:
        return not self.draining and self.manager.is_ready()

    def not_ready(self) -> dict[str, str]:
        """What keeps the server from being ready: model name (or ``server``) -> why; empty when ready."""
        if self.draining:
            return {"server": "shutting down"}
        problems: dict[str, str] = {}
        by_model: dict[str, list[str]] = {name: [] for name in self.manager.model_names()}
        available: set[str] = set()
        for status in self.manager.all_statuses():
            if status.state is VersionState.AVAILABLE:
                available.add(status.model)
            detail = f"version {status.version} {status.state.value}"
            if status.error_message:
                detail += f": {status.error_message}"
            by_model.setdefault(status.model, []).append(detail)
        for model, details in by_model.items():
            if model not in available:
                problems[model] = "; ".join(details) or "no version found yet"
        return problems
