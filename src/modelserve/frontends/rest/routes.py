"""URL patterns of TF Serving's REST API (model_servers/http_rest_api_util.cc), matched case-insensitively."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelserve.core.inference import ModelSpec
from modelserve.errors import InvalidArgument

_PREDICTION = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path asks for: a method (predict/classify/regress/status/metadata) on a model."""

    method: str
    spec: ModelSpec


def match_route(http_method: str, path: str) -> Route | None:
    """Parse a TF Serving REST path; None when it is not one (the caller answers 'Malformed request')."""
    if http_method == "POST":
        found = _PREDICTION.fullmatch(path)
        if found is None:
            return None
        name, version, label, method = found.groups()
        return Route(method.lower(), _spec(name, version, label))
    if http_method == "GET":
        found = _STATUS.fullmatch(path)
        if found is None:
            return None
        name, version, label, metadata = found.groups()
        if not name:
            raise InvalidArgument("Missing model name in request.")
        return Route("metadata" if metadata else "status", _spec(name, version, label))
    return None


def _spec(name: str, version: str | None, label: str | None) -> ModelSpec:
    number: int | None = None
    if version:
        try:
            number = int(version)
        except ValueError:
            raise InvalidArgument(f"Failed to convert version: {version} to numeric.") from None
        if number > 2**63 - 1:
            raise InvalidArgument(f"Failed to convert version: {version} to numeric.")
    return ModelSpec(name=name, version=number, label=label or None)
