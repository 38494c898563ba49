"""PLACEHOLDER: the KServe V2 ``inference.GRPCInferenceService`` (replaced by the V2 work)."""

from __future__ import annotations

from typing import Any


def add_v2_services(server: Any, service: Any) -> list[str]:
    """Register the V2 servicer on ``server``; returns the full service names (for reflection)."""
    return []
