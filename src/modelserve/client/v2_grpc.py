"""The V2 gRPC API (``inference.GRPCInferenceService``) as plans, with ``raw_input_contents``.

Inputs and outputs travel as raw little-endian blobs (what tritonclient and Triton use), encoded and
decoded by the server's own `v2_binary` codec: one ``tobytes`` / ``np.frombuffer`` per tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelserve.client.calls import ModelRef, Plan, RpcRequest
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus, v2_metadata, v2_status
from modelserve.client.protocol import NOT_READY, Api, Inputs, codec_error
from modelserve.client.v2_rest import check_v2, datatype
from modelserve.codecs.v2_binary import tensor_from_raw, tensor_to_raw
from modelserve.errors import Code, ServingError
from modelserve.proto.inference import grpc_service_pb2 as pb

_SERVICE = "/inference.GRPCInferenceService/"


def _version(ref: ModelRef) -> str:
    check_v2(ref)
    return "" if ref.version is None else str(ref.version)


def ready(call: str, request: Any, response_type: Any) -> Plan[bool]:
    """A V2 readiness call; errors that mean "not ready" answer False."""
    try:
        reply = yield RpcRequest(_SERVICE + call, request, response_type, idempotent=True)
    except ModelServerError as error:
        if error.code in NOT_READY:
            return False
        raise
    return bool(reply.ready)


def server_ready() -> Plan[bool]:
    """``ServerReady``: every configured model has an available version."""
    return (yield from ready("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse))


class V2Grpc(Api):
    """The V2 gRPC API."""

    def predict(
        self, ref: ModelRef, inputs: Inputs, output_filter: Sequence[str] | None
    ) -> Plan[dict[str, np.ndarray]]:
        request: Any = pb.ModelInferRequest(model_name=ref.name, model_version=_version(ref))
        arrays = yield from self.named_inputs(ref, inputs)
        for name, array in arrays.items():
            request.inputs.add(name=name, datatype=datatype(name, array), shape=array.shape)
            request.raw_input_contents.append(tensor_to_raw(array))
        for name in output_filter or ():
            request.outputs.add(name=name)
        reply = yield RpcRequest(_SERVICE + "ModelInfer", request, pb.ModelInferResponse)
        raw = reply.raw_output_contents
        if len(raw) != len(reply.outputs):
            raise ModelServerError(Code.DATA_LOSS, "the reply has outputs without raw_output_contents")
        try:
            return {
                tensor.name: tensor_from_raw(tensor.name, tensor.datatype, list(tensor.shape), raw[i])
                for i, tensor in enumerate(reply.outputs)
            }
        except ServingError as error:
            raise codec_error(error) from None

    def fetch_metadata(self, ref: ModelRef) -> Plan[ModelMetadata]:
        request = pb.ModelMetadataRequest(name=ref.name, version=_version(ref))
        reply = yield RpcRequest(
            _SERVICE + "ModelMetadata", request, pb.ModelMetadataResponse, idempotent=True
        )

        def tensors(items: Any) -> list[tuple[str, str, list[int]]]:
            return [(t.name, t.datatype, list(t.shape)) for t in items]

        return v2_metadata(
            reply.name, reply.versions, reply.platform, tensors(reply.inputs), tensors(reply.outputs)
        )

    def model_status(self, ref: ModelRef) -> Plan[ModelStatus]:
        metadata = yield from self.model_metadata(ref)
        return v2_status(metadata)

    def is_ready(self, ref: ModelRef | None) -> Plan[bool]:
        if ref is None:
            return (yield from server_ready())
        request = pb.ModelReadyRequest(name=ref.name, version=_version(ref))
        return (yield from ready("ModelReady", request, pb.ModelReadyResponse))
