"""TF Serving's gRPC API (PredictionService, ModelService) as plans, on our copies of its messages.

Numeric tensors travel in ``tensor_content`` (one copy each way, exact) through the server's own
`tensor_proto` codec; strings in ``string_val``. Status and metadata replies are turned into TF Serving's
REST JSON so one parser (`metadata`) reads both transports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from modelserve.client.calls import ModelRef, Plan, RpcRequest
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus, tf_metadata, tf_status
from modelserve.client.protocol import NOT_READY, Api, Inputs, codec_error
from modelserve.client.v2_grpc import server_ready
from modelserve.codecs.tensor_proto import decode_tensor, encode_tensor
from modelserve.errors import Code, ServingError
from modelserve.proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

_PREDICTION = "/tensorflow.serving.PredictionService/"
_MODEL = "/tensorflow.serving.ModelService/"


def _spec(ref: ModelRef, message: Any) -> None:
    spec = message.model_spec
    spec.name = ref.name
    if ref.version is not None:
        spec.version.value = ref.version
    elif ref.label is not None:
        spec.version_label = ref.label
    if ref.signature_name:
        spec.signature_name = ref.signature_name


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class TfServingGrpc(Api):
    """TF Serving's gRPC API; V2's ``ServerReady`` (same port) answers the whole-server readiness probe."""

    def predict(
        self, ref: ModelRef, inputs: Inputs, output_filter: Sequence[str] | None
    ) -> Plan[dict[str, np.ndarray]]:
        arrays = yield from self.named_inputs(ref, inputs)
        request: Any = predict_pb2.PredictRequest()
        _spec(ref, request)
        try:
            for name, array in arrays.items():
                encode_tensor(array, request.inputs[name])
        except ServingError as error:
            raise codec_error(error) from None
        if output_filter:
            request.output_filter.extend(output_filter)
        reply = yield RpcRequest(_PREDICTION + "Predict", request, predict_pb2.PredictResponse)
        try:
            return {name: decode_tensor(tensor) for name, tensor in reply.outputs.items()}
        except ServingError as error:
            raise codec_error(error) from None

    def fetch_metadata(self, ref: ModelRef) -> Plan[ModelMetadata]:
        request: Any = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _spec(ref, request)
        reply = yield RpcRequest(
            _PREDICTION + "GetModelMetadata",
            request,
            get_model_metadata_pb2.GetModelMetadataResponse,
            idempotent=True,
        )
        signatures: Any = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in reply.metadata or not reply.metadata["signature_def"].Unpack(signatures):
            raise ModelServerError(Code.DATA_LOSS, "the metadata reply carries no SignatureDefMap")
        document = {
            "model_spec": _as_dict(reply.model_spec),
            "metadata": {"signature_def": _as_dict(signatures)},
        }
        version = reply.model_spec.version.value if reply.model_spec.HasField("version") else None
        document["model_spec"]["version"] = version
        return tf_metadata(ref.name, document, ref.signature_name)

    def model_status(self, ref: ModelRef) -> Plan[ModelStatus]:
        request: Any = get_model_status_pb2.GetModelStatusRequest()
        _spec(ref, request)
        request.model_spec.ClearField("signature_name")
        reply = yield RpcRequest(
            _MODEL + "GetModelStatus", request, get_model_status_pb2.GetModelStatusResponse, idempotent=True
        )
        return tf_status(ref.name, _as_dict(reply))

    def is_ready(self, ref: ModelRef | None) -> Plan[bool]:
        if ref is None:
            return (yield from server_ready())
        try:
            status = yield from self.model_status(ref)
        except ModelServerError as error:
            if error.code in NOT_READY:
                return False
            raise
        return status.available
