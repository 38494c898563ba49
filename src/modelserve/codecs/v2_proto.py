"""V2 gRPC messages (``inference.ModelInferRequest`` / ``ModelInferResponse``) <-> numpy.

Inputs come either as ``raw_input_contents`` (one little-endian blob per input, what tritonclient sends)
or in the typed ``InferTensorContents`` fields; outputs always go back as ``raw_output_contents``, like
Triton, because building repeated fields element by element costs far more than one ``tobytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelserve.codecs.v2_binary import element_count, tensor_from_raw, tensor_to_raw
from modelserve.codecs.v2_datatypes import BYTES, datatype_name, numpy_dtype
from modelserve.codecs.v2_json import DecodedInput, InferRequest, RequestedOutput
from modelserve.core.signature import STRING
from modelserve.errors import InvalidArgument
from modelserve.proto.inference import grpc_service_pb2 as pb

# The InferTensorContents field that carries each datatype, and that field's own element type (the
# narrow integer types travel widened to 32 bits). FP16 has no field: it must come raw.
_CONTENTS_FIELD: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    BYTES: ("bytes_contents", STRING),
}


def parameter_value(parameter: Any) -> bool | int | float | str | None:
    """The value an ``InferParameter`` holds (None when unset)."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def parse_infer_request(message: Any) -> InferRequest:
    """Decode a ``ModelInferRequest``; errors name the input and what is wrong with it."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries but the request has {len(message.inputs)} inputs"
        )
    if not message.inputs:
        raise InvalidArgument("the request has no inputs")
    inputs: dict[str, DecodedInput] = {}
    for position, tensor in enumerate(message.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if name in inputs:
            raise InvalidArgument(f"input '{name}' is given more than once")
        dtype = numpy_dtype(datatype)
        count = element_count(name, shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input '{name}' has contents although the request uses raw_input_contents"
                )
            array = tensor_from_raw(name, datatype, shape, raw[position])
        else:
            array = _from_contents(name, datatype, dtype, shape, count, tensor.contents)
        inputs[name] = DecodedInput(datatype, array)
    outputs = []
    for requested in message.outputs:
        parameters = requested.parameters
        if "classification" in parameters and parameter_value(parameters["classification"]):
            raise InvalidArgument(
                f"output '{requested.name}': the 'classification' extension is not supported"
            )
        outputs.append(RequestedOutput(requested.name))
    return InferRequest(message.id, inputs, outputs)


def _from_contents(
    name: str, datatype: str, dtype: np.dtype, shape: list[int], count: int, contents: Any
) -> np.ndarray:
    found = _CONTENTS_FIELD.get(datatype)
    if found is None:
        raise InvalidArgument(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    field, field_dtype = found
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"input '{name}' has {len(values)} values in contents.{field} but shape "
            f"[{','.join(str(d) for d in shape)}] needs {count}"
        )
    if dtype == STRING:
        array = np.empty(count, dtype=STRING)
        array[:] = list(values)
        return array.reshape(shape)
    array = np.array(values, dtype=field_dtype)
    if field_dtype != dtype:
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidArgument(f"input '{name}' holds values out of the range of {datatype}")
        array = array.astype(dtype)
    return array.reshape(shape)


def encode_infer_response(
    model: str, version: int, request_id: str, outputs: Mapping[str, np.ndarray], order: Sequence[str]
) -> Any:
    """A ``ModelInferResponse`` carrying ``order``'s outputs in ``raw_output_contents``."""
    response = pb.ModelInferResponse(model_name=model, model_version=str(version), id=request_id)
    for name in order:
        array = outputs[name]
        if array.dtype.kind in "US":
            array = array.astype(STRING)
        response.outputs.add(name=name, datatype=datatype_name(array.dtype), shape=array.shape)
        response.raw_output_contents.append(tensor_to_raw(array))
    return response


def model_metadata_message(metadata: Mapping[str, Any]) -> Any:
    """A ``ModelMetadataResponse`` from `v2_metadata.model_metadata`'s dict."""
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in metadata["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in metadata["outputs"]],
    )
