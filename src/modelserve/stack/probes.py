"""Readiness probes: quick, single-shot checks that return a value once something is ready, else None.

The supervisor polls them (``Supervisor.wait_until``); none of them waits or retries itself, and none
reads logs: readiness is a ready file that a child writes atomically, then an HTTP answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from modelserve.stack.processes import StackError

_TIMEOUT = httpx.Timeout(2.0)


def _get(url: str) -> httpx.Response:
    # trust_env=False: the parts are local; an HTTP_PROXY in the environment must not reroute probes.
    return httpx.get(url, timeout=_TIMEOUT, trust_env=False)


def ready_file(path: Path) -> dict[str, Any] | None:
    """The JSON a child wrote to its ready file, or None while it has not (children write it atomically)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def http_ok(url: str) -> bool | None:
    """True once ``GET url`` answers 200; None before (refused, timed out, or another status)."""
    try:
        response = _get(url)
    except httpx.HTTPError:
        return None
    return True if response.status_code == 200 else None


def served_models(rest_url: str) -> list[str] | None:
    """The model names a modelserve model server serves (``GET /modelserve/status``)."""
    try:
        response = _get(f"{rest_url}/modelserve/status")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return [model["name"] for model in response.json().get("models", [])]


def models_available(rest_url: str, models: Sequence[str]) -> bool | None:
    """True once every model has an AVAILABLE version (``GET /v1/models/<name>``, TF Serving's status).

    Raises StackError when a model has no AVAILABLE version and a version failed to load: waiting longer
    would not help (the server retries loads itself; the error is shown at once).
    """
    for model in models:
        try:
            response = _get(f"{rest_url}/v1/models/{model}")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        versions = response.json().get("model_version_status", [])
        if any(v.get("state") == "AVAILABLE" for v in versions):
            continue
        errors = [
            f"version {v.get('version')}: {v['status']['error_message']}"
            for v in versions
            if v.get("status", {}).get("error_message")
        ]
        if errors and all(v.get("state") == "END" for v in versions):
            raise StackError(f"model {model} failed to load: {'; '.join(errors)}")
        return None
    return True
