"""The client's pieces that need no server: settings, error mapping, retry policy, tensor encoding.

Policies are tables; the last tests check the import footprint and a server that cannot be reached.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

from modelserve.client import Client, Code, ModelServerError
from modelserve.client.calls import HttpRequest, HttpResponse, ModelRef, RpcRequest, retry_delay
from modelserve.client.errors import error_from_http
from modelserve.client.metadata import TensorInfo
from modelserve.client.settings import Settings
from modelserve.client.tfserving_rest import array_from_json, json_tensor
from modelserve.client.v2_rest import decode_infer, encode_infer

# -- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "transport", "target", "secure"),
    [
        ("http://127.0.0.1:8501", "rest", "http://127.0.0.1:8501", False),
        ("https://models.internal/prefix/", "rest", "https://models.internal/prefix", True),
        ("grpc://127.0.0.1:8500", "grpc", "127.0.0.1:8500", False),
        ("grpc://models", "grpc", "models:8500", False),
        ("grpcs://models", "grpc", "models:443", True),
    ],
)
def test_url_picks_the_transport(url: str, transport: str, target: str, secure: bool) -> None:
    settings = Settings.create(url)
    assert (settings.transport, settings.target, settings.secure) == (transport, target, secure)


@pytest.mark.parametrize(
    ("url", "options", "names"),
    [
        ("127.0.0.1:8500", {}, "url"),
        ("ftp://host", {}, "url"),
        ("grpc://host:1/path", {}, "url"),
        ("http://host", {"protocol": "kserve"}, "protocol"),
        ("http://host", {"timeout": 0}, "timeout"),
        ("http://host", {"retries": -1}, "retries"),
        ("http://host", {"max_connections": 0}, "max_connections"),
    ],
)
def test_bad_settings_name_the_option(url: str, options: dict[str, object], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        Client(url, **options)  # type: ignore[arg-type]


def test_version_and_label_together_are_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="not both"):
        ModelRef("m", version=1, label="stable")
    with Client("http://127.0.0.1:1") as client, pytest.raises(ValueError, match="not both"):
        client.predict("m", np.zeros(1), version=1, version_label="stable")


# -- errors and retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (
            404,
            b'{"error": "Servable not found for request: Latest(m)"}',
            Code.NOT_FOUND,
            "Servable not found",
        ),
        (400, b'{\n    "error": "bad"\n}', Code.INVALID_ARGUMENT, "bad"),
        (400, b"", Code.INVALID_ARGUMENT, "HTTP status 400"),
        (413, b"too big", Code.RESOURCE_EXHAUSTED, "too big"),
        (429, b'{"error": "queue full"}', Code.RESOURCE_EXHAUSTED, "queue full"),
        (502, b"<html>bad gateway</html>", Code.UNAVAILABLE, "bad gateway"),
        (503, b"{}", Code.UNAVAILABLE, "{}"),
        (504, b'{"error": "late"}', Code.DEADLINE_EXCEEDED, "late"),
        (418, b"teapot", Code.UNKNOWN, "teapot"),
    ],
)
def test_http_status_to_code(status: int, body: bytes, code: Code, message: str) -> None:
    error = error_from_http(status, body)
    assert (error.code, error.http_status) == (code, status)
    assert message in error.message
    assert str(error).startswith(code.name)


GET = HttpRequest("GET", "/v1/models/m", idempotent=True)
POST = HttpRequest("POST", "/v1/models/m:predict")
RPC = RpcRequest("/x/Y", None, None, idempotent=True)
UNAVAILABLE = ModelServerError(Code.UNAVAILABLE, "down")
NOT_FOUND = ModelServerError(Code.NOT_FOUND, "no")


@pytest.mark.parametrize(
    ("error", "request_", "attempt", "retries", "delay"),
    [
        (UNAVAILABLE, GET, 0, 0, None),  # no retries by default
        (UNAVAILABLE, GET, 0, 3, 0.05),
        (UNAVAILABLE, RPC, 1, 3, 0.1),
        (UNAVAILABLE, GET, 3, 3, None),  # attempts used up
        (UNAVAILABLE, GET, 9, 20, 1.0),  # capped
        (UNAVAILABLE, POST, 0, 3, None),  # a predict may have run: never sent twice
        (NOT_FOUND, GET, 0, 3, None),  # an answer, not an outage
    ],
)
def test_retry_policy(
    error: ModelServerError,
    request_: HttpRequest | RpcRequest,
    attempt: int,
    retries: int,
    delay: float | None,
) -> None:
    assert retry_delay(error, request_, attempt, retries) == delay


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "grpc://127.0.0.1:1"])
def test_an_unreachable_server_is_unavailable(url: str) -> None:
    with Client(url, retries=2) as client:
        assert client.is_ready() is False
        started = time.monotonic()
        with pytest.raises(ModelServerError) as caught:
            client.model_status("m")
        assert caught.value.code == Code.UNAVAILABLE
        assert time.monotonic() - started >= 0.15  # two retries: 0.05 s + 0.1 s of back-off
        with pytest.raises(ModelServerError) as caught:
            client.predict("m", {"x": np.zeros((1, 2), np.float32)})
        assert caught.value.code == Code.UNAVAILABLE


# -- tensors -------------------------------------------------------------------------------------------------


def test_tfserving_json_strings_are_text_or_b64() -> None:
    strings = np.array([[b"caf\xc3\xa9", b"\xff\x00"], [b"", b"plain"]], dtype=object)
    assert json_tensor("s", strings) == [
        ["café", {"b64": base64.b64encode(b"\xff\x00").decode()}],
        ["", "plain"],
    ]
    assert json_tensor("s", np.array(["a", "b"])) == ["a", "b"]
    with pytest.raises(ModelServerError) as caught:
        json_tensor("c", np.zeros(2, np.complex64))
    assert caught.value.code == Code.INVALID_ARGUMENT


def test_tfserving_json_numbers_keep_their_float32_bits() -> None:
    x = np.array([np.float32(1) / 3, 1e-8, -3.4e38, 16777216, 7e-45], dtype=np.float32)
    document = orjson.dumps({"v": json_tensor("x", x)}, option=orjson.OPT_SERIALIZE_NUMPY)
    back = np.asarray(orjson.loads(document)["v"], dtype=np.float32)
    assert back.tobytes() == x.tobytes()


def test_tfserving_json_outputs_take_the_signature_dtype() -> None:
    assert array_from_json([[1, 2]], TensorInfo("c", np.dtype(np.int64), (None, 2))).dtype == np.int64
    floats = array_from_json([0.3333333432674408], TensorInfo("p", np.dtype(np.float32), (None,)))
    assert floats.dtype == np.float32 and floats[0] == np.float32(1) / 3
    strings = array_from_json([["é", {"b64": "/wA="}]], TensorInfo("s", np.dtype(object), None))
    assert strings.shape == (1, 2) and strings.tolist() == [["é".encode(), b"\xff\x00"]]
    assert array_from_json([1.5, 2.5], None).dtype == np.float64


def test_v2_binary_request_and_reply_round_trip() -> None:
    arrays = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "s": np.array([b"ab", b"\xff"], dtype=object),
        "b": np.array([True, False]),
    }
    body, headers = encode_infer(arrays, None, binary=True)
    length = int(headers["inference-header-content-length"])
    header = orjson.loads(body[:length])
    assert header["parameters"] == {"binary_data_output": True}
    assert [t["datatype"] for t in header["inputs"]] == ["FP32", "BYTES", "BOOL"]
    # Answer with the same tensors, the way the server writes binary outputs.
    reply_header = orjson.dumps(
        {
            "outputs": [
                {
                    "name": t["name"],
                    "datatype": t["datatype"],
                    "shape": t["shape"],
                    "parameters": t["parameters"],
                }
                for t in header["inputs"]
            ]
        }
    )
    reply = HttpResponse(
        200, {"inference-header-content-length": str(len(reply_header))}, reply_header + body[length:]
    )
    decoded = decode_infer(reply)
    for name, array in arrays.items():
        assert decoded[name].dtype == array.dtype
        assert decoded[name].tolist() == array.tolist()


def test_v2_json_mode_refuses_bytes_that_are_not_utf8() -> None:
    body, headers = encode_infer({"s": np.array(["é"], dtype=object)}, ["y"], binary=False)
    assert "inference-header-content-length" not in headers
    document = orjson.loads(body)
    assert document["inputs"][0]["data"] == ["é"]
    assert document["outputs"] == [{"name": "y", "parameters": {"binary_data": False}}]
    with pytest.raises(ModelServerError, match="UTF-8"):
        encode_infer({"s": np.array([b"\xff"], dtype=object)}, None, binary=False)


# -- footprint -----------------------------------------------------------------------------------------------


def test_importing_the_client_loads_no_framework_and_no_server() -> None:
    script = (
        "import sys, modelserve.client\n"
        "heavy = ['onnxruntime', 'tensorflow', 'torch', 'modelserve.core.manager', 'modelserve.core.inference',\n"
        "         'modelserve.runtimes', 'modelserve.frontends', 'modelserve.server', 'modelserve.batching']\n"
        "print([name for name in heavy if name in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
