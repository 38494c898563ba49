"""Request bodies: files, templates, and bodies generated from a real server's model signature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.bench.bodies import (
    TF_PREDICT,
    V2_INFER,
    body_argument,
    expand_template,
    signature_request,
)
from modelserve.bench.load import LoadSpec, run_load
from modelserve.proto.inference import grpc_service_pb2 as v2
from modelserve.proto.tensorflow_serving.apis import predict_pb2


@pytest.fixture(scope="module")
def tiny_server(start_module_server: Any, tiny_repo: Path) -> Any:
    """A real ``modelserve serve`` of the tiny MLP (x float32 [-1, 64] -> y float32 [-1, 10])."""
    return start_module_server("--model_name=tiny", f"--model_base_path={tiny_repo}")


def test_body_from_text_or_file(tmp_path: Path) -> None:
    (tmp_path / "request.json").write_bytes(b'{"instances": [1]}')
    assert body_argument(f"@{tmp_path / 'request.json'}") == b'{"instances": [1]}'
    assert body_argument('{"a": 1}') == b'{"a": 1}'


def test_template_placeholders_expand_per_body() -> None:
    template = (
        '{"id": {{seq}}, "n": {{random_int:1:100}}, "f": {{random_float}}, "g": {{ random_float:5:6 }}}'
    )
    pool = expand_template(template, count=50, seed=1)
    documents = [json.loads(body) for body in pool]
    assert [d["id"] for d in documents] == list(range(50))
    assert all(1 <= d["n"] <= 100 and isinstance(d["n"], int) for d in documents)
    assert all(0.0 <= d["f"] < 1.0 for d in documents) and all(5.0 <= d["g"] < 6.0 for d in documents)
    assert len({d["n"] for d in documents}) > 10  # drawn anew for each body
    assert expand_template(template, count=50, seed=1) == pool  # reproducible with a seed


def test_unknown_placeholder_is_refused_with_the_list_of_known_ones() -> None:
    with pytest.raises(ValueError, match=r"\{\{uuid\}\}.*random_int"):
        expand_template("{{uuid}}")


def test_rest_tfserving_body_from_the_signature_is_accepted_by_the_server(tiny_server: Any) -> None:
    request = signature_request(tiny_server.url, "tiny", batch=3, pool=4, seed=0)
    assert request.url == f"{tiny_server.url}/v1/models/tiny:predict"
    assert len(request.bodies) == 4 and len(set(request.bodies)) == 4
    inputs = json.loads(request.bodies[0])["inputs"]
    assert np.asarray(inputs["x"]).shape == (3, 64)
    result = run_load(LoadSpec(request, concurrency=2, duration_s=0.5, warmup_s=0.1))
    assert result.errors == {} and result.requests > 0


def test_rest_v2_body_from_the_signature_is_accepted_by_the_server(tiny_server: Any) -> None:
    request = signature_request(tiny_server.url, "tiny", protocol="v2", pool=2, seed=0)
    assert request.url == f"{tiny_server.url}/v2/models/tiny/infer"
    (tensor,) = json.loads(request.bodies[0])["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("x", "FP32", [1, 64])
    result = run_load(LoadSpec(request, concurrency=2, duration_s=0.5, warmup_s=0.1))
    assert result.errors == {} and result.requests > 0


@pytest.mark.parametrize("protocol", ["tfserving", "v2"])
def test_grpc_load_with_a_body_generated_from_the_signature(tiny_server: Any, protocol: str) -> None:
    request = signature_request(
        f"grpc://{tiny_server.grpc_target}", "tiny", protocol=protocol, batch=2, pool=3
    )
    if protocol == "tfserving":
        assert request.method == TF_PREDICT
        message: Any = predict_pb2.PredictRequest.FromString(request.bodies[0])
        assert message.model_spec.name == "tiny"
        assert [d.size for d in message.inputs["x"].tensor_shape.dim] == [2, 64]
    else:
        assert request.method == V2_INFER
        message = v2.ModelInferRequest.FromString(request.bodies[0])
        assert (message.inputs[0].datatype, list(message.inputs[0].shape)) == ("FP32", [2, 64])
    result = run_load(LoadSpec(request, concurrency=4, duration_s=1.0, warmup_s=0.2))
    assert result.errors == {}
    assert result.requests > 20
    assert 0 < result.latency_ms["p50"] < 100


def test_grpc_errors_are_counted_by_status_code(tiny_server: Any) -> None:
    request = signature_request(f"grpc://{tiny_server.grpc_target}", "tiny", pool=1)
    message: Any = predict_pb2.PredictRequest.FromString(request.bodies[0])
    message.model_spec.name = "no_such_model"
    broken = type(request)(request.url, request.method, message.SerializeToString())
    result = run_load(LoadSpec(broken, concurrency=2, duration_s=0.5, warmup_s=0.0))
    assert set(result.errors) == {"NOT_FOUND"}
    assert result.rps == 0.0
