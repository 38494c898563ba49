"""TF Serving's REST URL grammar: versions, labels, case-insensitivity, malformed paths."""

from __future__ import annotations

import pytest

from modelserve.core.inference import ModelSpec
from modelserve.errors import InvalidArgument
from modelserve.frontends.rest.routes import Route, match_route


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/models/m:predict", Route("predict", ModelSpec("m"))),
        ("POST", "/v1/models/m/versions/3:classify", Route("classify", ModelSpec("m", version=3))),
        ("POST", "/v1/models/m/labels/stable:regress", Route("regress", ModelSpec("m", label="stable"))),
        ("POST", "/V1/MODELS/m:PREDICT", Route("predict", ModelSpec("m"))),
        ("GET", "/v1/models/m", Route("status", ModelSpec("m"))),
        ("GET", "/v1/models/m/versions/7", Route("status", ModelSpec("m", version=7))),
        ("GET", "/v1/models/m/labels/canary", Route("status", ModelSpec("m", label="canary"))),
        ("GET", "/v1/models/m/metadata", Route("metadata", ModelSpec("m"))),
        ("GET", "/v1/models/m/versions/7/metadata", Route("metadata", ModelSpec("m", version=7))),
        ("GET", "/v1/models/m:predict", None),
        ("POST", "/v1/models/m", None),
        ("POST", "/v1/models/m:train", None),
        ("POST", "/v1/models/m/versions/x:predict", None),
        ("DELETE", "/v1/models/m", None),
    ],
)
def test_match_route(method: str, path: str, expected: Route | None) -> None:
    assert match_route(method, path) == expected


def test_status_without_model_name() -> None:
    with pytest.raises(InvalidArgument, match=r"Missing model name in request\."):
        match_route("GET", "/v1/models")


def test_version_overflow_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="Failed to convert version"):
        match_route("POST", "/v1/models/m/versions/99999999999999999999:predict")
