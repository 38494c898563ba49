"""Request bodies: from a file, from a template expanded per request, or generated from a model's signature.

Bodies are made *before* the run, as a small pool the workers send in turn, so the hot loop never formats
or serializes anything. Template placeholders (expanded independently for each body of the pool)::

    {{seq}}                  0, 1, 2, ... (the body's index in the pool)
    {{random_int:A:B}}       an integer drawn uniformly from A..B (both included)
    {{random_float}}         a float drawn uniformly from [0, 1)
    {{random_float:A:B}}     a float drawn uniformly from [A, B)

A signature-generated body reads the model's metadata (TF Serving or V2, over REST or gRPC, through
`modelserve.client`) and fills every input with random values of its dtype and shape; a dimension of any size
becomes ``batch`` for the first dimension and 1 elsewhere. Over REST it is the JSON of ``:predict`` (TF
Serving, columnar ``inputs``) or ``/infer`` (V2); over gRPC the serialized ``PredictRequest`` or
``ModelInferRequest``, made with the server's own codecs.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelserve.bench.load import RequestTemplate
from modelserve.client.metadata import ModelMetadata, TensorInfo
from modelserve.core.signature import STRING

POOL_SIZE = 16
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)((?::[^:}]+)*)\s*\}\}")
TF_PREDICT = "/tensorflow.serving.PredictionService/Predict"
V2_INFER = "/inference.GRPCInferenceService/ModelInfer"


def body_argument(text: str) -> bytes:
    """``--body``: ``@path`` reads a file, anything else is the body itself."""
    return Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()


def expand_template(template: str, count: int = POOL_SIZE, seed: int | None = None) -> tuple[bytes, ...]:
    """``count`` bodies, each with the placeholders expanded anew; ValueError names an unknown one."""
    generator = random.Random(seed)

    pool = []
    for index in range(count):
        pool.append(_PLACEHOLDER.sub(lambda m, i=index: _expand(m, i, generator), template).encode())  # type: ignore[misc]
    return tuple(pool)


def _expand(match: re.Match[str], index: int, generator: random.Random) -> str:
    name, raw = match.group(1), match.group(2)
    arguments = [a for a in raw.split(":") if a]
    if name == "seq" and not arguments:
        return str(index)
    if name == "random_int" and len(arguments) == 2:
        return str(generator.randint(int(arguments[0]), int(arguments[1])))
    if name == "random_float" and len(arguments) in (0, 2):
        low, high = (float(arguments[0]), float(arguments[1])) if arguments else (0.0, 1.0)
        return repr(generator.uniform(low, high))
    raise ValueError(
        f"unknown template placeholder {match.group(0)!r}; "
        "use {{seq}}, {{random_int:A:B}}, {{random_float}} or {{random_float:A:B}}"
    )


def random_inputs(
    metadata: ModelMetadata, batch: int, generator: np.random.Generator
) -> dict[str, np.ndarray]:
    """One random array per input of the signature, of its dtype and shape."""
    return {name: _random_array(info, batch, generator) for name, info in metadata.inputs.items()}


def _random_array(info: TensorInfo, batch: int, generator: np.random.Generator) -> np.ndarray:
    if info.dtype is None:
        raise ValueError(f"input '{info.name}' has a dtype numpy cannot hold: give a --body instead")
    if info.shape is None:
        raise ValueError(f"input '{info.name}' has an unknown rank: give a --body instead")
    shape = tuple(
        size if size is not None else (batch if axis == 0 else 1) for axis, size in enumerate(info.shape)
    )
    dtype = info.dtype
    if dtype == STRING:
        words = generator.integers(0, 10**6, size=shape)
        return (
            np.vectorize(lambda n: f"w{n}".encode(), otypes=[object])(words)
            if words.size
            else words.astype(object)
        )
    if dtype == np.bool_:
        return generator.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        high = min(
            int(np.iinfo(dtype).max), 100
        )  # small values: valid as indices or token ids of most models
        return generator.integers(0, high, size=shape, endpoint=True).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        return (generator.random(shape) + 1j * generator.random(shape)).astype(dtype)
    return generator.random(shape).astype(dtype)


def _json_values(array: np.ndarray) -> Any:
    if array.dtype == STRING:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def tfserving_json(arrays: dict[str, np.ndarray], signature_name: str | None = None) -> bytes:
    """A TF Serving REST ``:predict`` body in the columnar form (``{"inputs": {name: values}}``)."""
    document: dict[str, Any] = {"inputs": {name: _json_values(array) for name, array in arrays.items()}}
    if signature_name:
        document["signature_name"] = signature_name
    return orjson.dumps(document)


def v2_json(arrays: dict[str, np.ndarray]) -> bytes:
    """A V2 REST ``/infer`` body with JSON ``data``."""
    from modelserve.codecs.v2_datatypes import datatype_name

    inputs = [
        {
            "name": name,
            "shape": list(a.shape),
            "datatype": datatype_name(a.dtype),
            "data": _json_values(a.ravel()),
        }
        for name, a in arrays.items()
    ]
    return orjson.dumps({"inputs": inputs})


def tfserving_grpc(model: str, arrays: dict[str, np.ndarray], signature_name: str | None = None) -> bytes:
    """A serialized ``tensorflow.serving.PredictRequest``."""
    from modelserve.codecs.tensor_proto import encode_tensor
    from modelserve.proto.tensorflow_serving.apis import predict_pb2

    request: Any = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature_name:
        request.model_spec.signature_name = signature_name
    for name, array in arrays.items():
        encode_tensor(array, request.inputs[name])
    return bytes(request.SerializeToString())


def v2_grpc(model: str, arrays: dict[str, np.ndarray]) -> bytes:
    """A serialized ``inference.ModelInferRequest`` with ``raw_input_contents``."""
    from modelserve.codecs.v2_binary import tensor_to_raw
    from modelserve.codecs.v2_datatypes import datatype_name
    from modelserve.proto.inference import grpc_service_pb2 as pb

    request: Any = pb.ModelInferRequest(model_name=model)
    for name, array in arrays.items():
        request.inputs.add(name=name, datatype=datatype_name(array.dtype), shape=array.shape)
        request.raw_input_contents.append(tensor_to_raw(array))
    return bytes(request.SerializeToString())


def fetch_metadata(
    url: str, model: str, protocol: str = "tfserving", signature_name: str | None = None
) -> ModelMetadata:
    """The model's signature from a running server (``http://`` or ``grpc://``)."""
    from modelserve.client import Client

    with Client(url, protocol=protocol, timeout=30.0) as client:
        return client.model_metadata(model, signature_name=signature_name)


def signature_request(
    url: str,
    model: str,
    *,
    protocol: str = "tfserving",
    batch: int = 1,
    signature_name: str | None = None,
    pool: int = POOL_SIZE,
    seed: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> RequestTemplate:
    """A request for ``model`` at ``url`` (the server's base URL): ``pool`` random bodies of its signature."""
    if protocol not in ("tfserving", "v2"):
        raise ValueError(f"protocol must be tfserving or v2, got {protocol!r}")
    metadata = fetch_metadata(url, model, protocol, signature_name)
    generator = np.random.default_rng(seed)
    samples = [random_inputs(metadata, batch, generator) for _ in range(pool)]
    base = url.rstrip("/")
    if url.startswith("grpc://"):
        if protocol == "v2":
            return RequestTemplate(
                base, V2_INFER, bodies=tuple(v2_grpc(model, s) for s in samples), headers=headers
            )
        bodies = tuple(tfserving_grpc(model, s, signature_name) for s in samples)
        return RequestTemplate(base, TF_PREDICT, bodies=bodies, headers=headers)
    if protocol == "v2":
        bodies = tuple(v2_json(s) for s in samples)
        return RequestTemplate(f"{base}/v2/models/{model}/infer", "POST", bodies=bodies, headers=headers)
    bodies = tuple(tfserving_json(s, signature_name) for s in samples)
    return RequestTemplate(f"{base}/v1/models/{model}:predict", "POST", bodies=bodies, headers=headers)
