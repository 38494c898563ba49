"""TF Serving's REST API end to end on a TensorFlow SavedModel (TF Serving's own half_plus_two).

Response bodies are compared byte for byte with what TF Serving prints for the same requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def server(start_module_server: Any, half_plus_two_repo: Path) -> Any:
    return start_module_server("--model_name=half_plus_two", f"--model_base_path={half_plus_two_repo}")


def post(server: Any, path: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/v1/models/half_plus_two{path}", data=json.dumps(body))


def test_predict_is_byte_identical_to_tf_serving(server: Any) -> None:
    reply = post(server, ":predict", {"instances": [1.0, 2.0, 5.0]})
    assert reply.status_code == 200, reply.text
    # TF Serving's README prints exactly this for the same request.
    assert reply.text == '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'


def test_predict_columnar_and_explicit_version(server: Any) -> None:
    reply = post(
        server, "/versions/123:predict", {"signature_name": "serving_default", "inputs": {"x": [1.0, 3.0]}}
    )
    assert reply.status_code == 200, reply.text
    assert reply.text == '{\n    "outputs": [\n        2.5,\n        3.5\n    ]\n}'


def test_regress(server: Any) -> None:
    reply = post(
        server, ":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.text == '{\n    "results": [2.5, 3.0]\n}'
    reply = post(server, ":regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 1.0}]})
    assert reply.json() == {"results": [3.5]}


def test_classify_with_context(server: Any) -> None:
    body = {
        "signature_name": "classify_x2_to_y3",
        "context": {"x2": 4.0},
        "examples": [{"x": 1.0}, {"x": 2.0, "x2": 2.0}],
    }
    reply = post(server, ":classify", body)
    assert reply.status_code == 200, reply.text
    # y3 = 0.5 * x2 + 3: the context's x2 for the first example, the example's own for the second.
    assert reply.text == '{\n    "results": [[["", 5.0]], [["", 4.0]]\n    ]\n}'


def test_metadata_lists_every_signature(server: Any) -> None:
    reply = requests.get(f"{server.url}/v1/models/half_plus_two/metadata")
    assert reply.status_code == 200
    assert reply.text.startswith(
        '{\n"model_spec":{\n "name": "half_plus_two",\n "signature_name": "",\n "version": "123"\n}\n,\n"metadata": {"signature_def": {\n "signature_def": {\n'
    )
    signatures = reply.json()["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "x:0",
    }
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"
    assert signatures["regress_x_to_y"]["inputs"]["inputs"]["tensor_shape"] == {
        "dim": [],
        "unknown_rank": True,
    }


def test_status_is_byte_identical_to_tf_serving(server: Any) -> None:
    reply = requests.get(f"{server.url}/v1/models/half_plus_two")
    assert reply.text == (
        '{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
        '   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n'
    )


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (":predict", {"instances": ["a"]}, 'JSON Value: "a" Type: String is not of expected type: float'),
        (
            ":regress",
            {"signature_name": "serving_default", "examples": [{"x": 1.0}]},
            "Expected regression signature method_name",
        ),
        (
            ":classify",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]},
            "Expected classification signature",
        ),
        (
            ":regress",
            {"signature_name": "regress_x_to_y", "examples": []},
            "'examples' value is an empty array",
        ),
        (
            ":regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, 2]}]},
            "Unexpected element type in feature: x",
        ),
        (":regress", {"signature_name": "regress_x_to_y"}, "'examples' is expected"),
        (":regress", {"signature_name": "regress_x_to_y", "examples": [{"y": 1.0}]}, ""),
    ],
)
def test_bad_requests(server: Any, path: str, body: Any, message: str) -> None:
    reply = post(server, path, body)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]
    assert post(server, ":predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}
