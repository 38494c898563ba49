"""``GET /modelserve/status``: every model version with its state, error and memory, the routes, and the
process's own RSS/PSS.

TF Serving's status API has no room for memory, labels or splits, and clients parse it strictly, so the
operator's view lives on its own path instead of as extra fields there.
"""

from __future__ import annotations

from typing import Any

from modelserve.core.manager import ModelManager
from modelserve.core.routing import DEFAULT_ROUTE
from modelserve.errors import NotFound
from modelserve.process_memory import process_memory


def server_status(manager: ModelManager) -> dict[str, Any]:
    statuses = manager.all_statuses()
    # Every configured model, those with no version yet included (a model a reload added, still empty).
    models: dict[str, dict[str, Any]] = {
        name: {"name": name, "versions": []} for name in manager.model_names()
    }
    for status in statuses:
        model = models.setdefault(status.model, {"name": status.model, "versions": []})
        model["versions"].append(
            {
                "version": status.version,
                "state": status.state.value,
                "memory_bytes": status.memory_bytes,
                "error": (
                    {"code": status.error_code.name, "message": status.error_message}
                    if status.error_message
                    else None
                ),
            }
        )
    for name, model in models.items():
        try:
            routes = manager.routes(name)
        except NotFound:  # removed meanwhile
            continue
        model["labels"] = dict(routes.labels)
        model["traffic_splits"] = {
            label or DEFAULT_ROUTE: [
                {"version": version, "weight": weight}
                for version, weight in zip(split.versions, _weights(split.cumulative), strict=True)
            ]
            for label, split in routes.splits.items()
        }
    guard = manager.memory_guard
    return {
        "memory": {"budget_bytes": guard.budget_bytes, "used_bytes": sum(s.memory_bytes for s in statuses)},
        "process": process_memory(),
        "models": [models[name] for name in sorted(models)],
    }


def _weights(cumulative: tuple[int, ...]) -> list[int]:
    return [b - a for a, b in zip((0, *cumulative), cumulative, strict=False)]
