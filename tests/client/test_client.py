"""The client against a real server: every call over REST and gRPC, TF Serving and V2, sync and asyncio.

Results are compared with ONNX Runtime run in-process on the same model files.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from modelserve.client import Code, ModelServerError


def rows(seed: int, n: int = 3, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def digits_rows(n: int = 4) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 16, (n, 64)).astype(np.float32)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# -- predict -------------------------------------------------------------------------------------------------


def test_predict_equals_onnxruntime(client: Any, reference: Any) -> None:
    x = rows(1)
    outputs = client.predict("tiny", {"x": x})
    assert list(outputs) == ["y"]
    assert_same(outputs["y"], reference("tiny", {"x": x})["y"])


def test_predict_takes_a_bare_array_for_a_single_input(client: Any, reference: Any) -> None:
    x = rows(2, n=1)
    assert_same(client.predict("tiny", x)["y"], reference("tiny", {"x": x})["y"])


def test_predict_returns_every_output_with_its_dtype(client: Any, reference: Any) -> None:
    x = digits_rows()
    expected = reference("digits", {"images": x})
    outputs = client.predict("digits", {"images": x})
    assert sorted(outputs) == sorted(expected)
    for name, value in expected.items():
        assert_same(outputs[name], value)


def test_output_filter_returns_only_the_named_outputs(client: Any, reference: Any) -> None:
    x = digits_rows()
    expected = reference("digits", {"images": x})
    outputs = client.predict("digits", {"images": x}, output_filter=["classes"])
    assert list(outputs) == ["classes"]
    assert_same(outputs["classes"], expected["classes"])
    assert list(client.predict("digits", {"images": x}, output_filter="probabilities")) == ["probabilities"]


def test_float32_values_round_trip_exactly(client: Any, reference: Any) -> None:
    # Values a decimal printer gets wrong when it drops digits: the server must see these exact bits.
    x = np.full((1, 64), np.float32(0.1), dtype=np.float32)
    x[0, :8] = [np.float32(1) / 3, 1e-8, -3.4e38, 16777217, np.nextafter(np.float32(1), 2), 0, -0.0, 7e-45]
    outputs = client.predict("tiny", {"x": x})
    assert_same(outputs["y"], reference("tiny", {"x": x})["y"])


def test_version_selection(client: Any, reference: Any) -> None:
    x = rows(3)
    v1 = reference("versioned", {"x": x}, version=1)["y"]
    v2 = reference("versioned", {"x": x}, version=2)["y"]
    assert not np.allclose(v1, v2)
    assert_same(client.predict("versioned", {"x": x}, version=1)["y"], v1)
    assert_same(client.predict("versioned", {"x": x}, version=2)["y"], v2)
    assert_same(client.predict("versioned", {"x": x})["y"], v2)  # the latest by default
    if client.protocol == "tfserving":
        assert_same(client.predict("versioned", {"x": x}, version_label="stable")["y"], v1)
        assert_same(client.predict("versioned", {"x": x}, version_label="canary")["y"], v2)
    else:
        with pytest.raises(ValueError, match="labels"):
            client.predict("versioned", {"x": x}, version_label="stable")


# -- metadata, status, readiness -----------------------------------------------------------------------------


def test_metadata_names_dtypes_and_shapes(client: Any) -> None:
    metadata = client.model_metadata("tiny")
    assert metadata.name == "tiny"
    assert metadata.signature_name == "serving_default"
    assert metadata.versions == (1,)
    (x,) = metadata.inputs.values()
    (y,) = metadata.outputs.values()
    assert (x.name, x.dtype, x.shape) == ("x", np.dtype(np.float32), (None, 64))
    assert (y.name, y.dtype, y.shape) == ("y", np.dtype(np.float32), (None, 10))
    digits = client.model_metadata("digits")
    assert {name: info.dtype for name, info in digits.outputs.items()} == {
        "probabilities": np.dtype(np.float32),
        "classes": np.dtype(np.int64),
    }
    assert client.model_metadata("versioned", version=1).name == "versioned"


def test_status_lists_every_available_version(client: Any) -> None:
    status = client.model_status("versioned")
    assert status.name == "versioned"
    assert status.available
    assert sorted((v.version, v.state, v.error_code) for v in status.versions) == [
        (1, "AVAILABLE", Code.OK),
        (2, "AVAILABLE", Code.OK),
    ]


def test_readiness(client: Any) -> None:
    assert client.is_ready() is True
    assert client.is_ready("tiny") is True
    assert client.is_ready("versioned", version=1) is True
    assert client.is_ready("no_such_model") is False
    assert client.is_ready("versioned", version=3) is False


# -- errors --------------------------------------------------------------------------------------------------


def expect_error(code: Code, call: Any, *args: Any, **kwargs: Any) -> ModelServerError:
    with pytest.raises(ModelServerError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    assert caught.value.message
    return caught.value


def test_unknown_model_is_not_found(client: Any) -> None:
    error = expect_error(Code.NOT_FOUND, client.predict, "no_such_model", {"x": rows(4)})
    assert "no_such_model" in error.message
    assert error.http_status == (404 if client.transport == "rest" else None)
    expect_error(Code.NOT_FOUND, client.model_metadata, "no_such_model")
    expect_error(Code.NOT_FOUND, client.model_status, "no_such_model")
    expect_error(Code.NOT_FOUND, client.predict, "tiny", {"x": rows(4)}, version=99)


def test_bad_inputs_are_invalid_argument_and_the_server_stays_healthy(client: Any, reference: Any) -> None:
    expect_error(Code.INVALID_ARGUMENT, client.predict, "tiny", {"z": rows(5)})
    expect_error(Code.INVALID_ARGUMENT, client.predict, "tiny", {"x": rows(5, width=5)})
    expect_error(
        Code.INVALID_ARGUMENT, client.predict, "digits", {"images": digits_rows()}, output_filter=["nope"]
    )
    x = rows(6)
    assert_same(client.predict("tiny", {"x": x})["y"], reference("tiny", {"x": x})["y"])
    assert client.is_ready() is True


def test_a_tiny_timeout_is_deadline_exceeded(client: Any, reference: Any) -> None:
    big = rows(8, n=20_000)  # 5 MB of float32: no server answers it within a microsecond
    expect_error(Code.DEADLINE_EXCEEDED, client.predict, "tiny", {"x": big}, timeout=1e-6)
    x = rows(9)
    assert_same(client.predict("tiny", {"x": x})["y"], reference("tiny", {"x": x})["y"])


# -- options -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_v2_rest_json_mode_without_the_binary_extension(server_url: Any, reference: Any, mode: str) -> None:
    from modelserve.client import AsyncClient, Client

    x = digits_rows()
    expected = reference("digits", {"images": x})
    if mode == "sync":
        with Client(server_url("rest"), protocol="v2", binary=False) as client:
            outputs = client.predict("digits", {"images": x})
    else:

        async def main() -> dict[str, np.ndarray]:
            async with AsyncClient(server_url("rest"), protocol="v2", binary=False) as client:
                return await client.predict("digits", {"images": x})

        outputs = asyncio.run(main())
    for name, value in expected.items():
        assert_same(outputs[name], value)
