"""TF Serving's gRPC services: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Thin, like the REST handler: decode the request into numpy arrays, call the core, encode the reply. A call
cheap enough to run inline runs on the event loop, its handle is closed here, and the method returns the
reply itself (sync-first, see ``transport``); any other call is handed to ``InferenceService.run``, which
owns the handle from then on and bounds the call by the caller's gRPC deadline, and the method returns a
coroutine. Errors become gRPC statuses in `status.at_edge`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import text_format

from modelserve.codecs.tensor_proto import decode_tensor, encode_tensor
from modelserve.config.model_config import ServingConfig
from modelserve.config.text_files import parse_model_server_config
from modelserve.core.inference import InferenceService, ModelSpec, PreparedCall
from modelserve.core.signature import CLASSIFY_METHOD, REGRESS_METHOD, Signature, check_examples_signature
from modelserve.errors import FailedPrecondition, InvalidArgument
from modelserve.frontends.grpc import tfserving_messages as messages
from modelserve.frontends.grpc.status import (
    at_edge,
    counted_at_edge,
    deadline_seconds,
    then,
    with_routing_key,
)
from modelserve.metrics import RequestMetrics
from modelserve.proto.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

ReloadConfig = Callable[[ServingConfig], Awaitable[None]]
"""Replace the served models with a new config and wait until its versions settled."""

# Importing the *_pb2 service modules also puts the service descriptors into our pool, for reflection.
PREDICTION_SERVICE: str = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
MODEL_SERVICE: str = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name

InputsFor = Callable[[Signature], Mapping[str, np.ndarray]]
WriteResult = Callable[[Mapping[str, np.ndarray], int, Any], None]
"""Fills a response's ``result`` from the outputs of ``n`` examples (``tfserving_messages``)."""


def _model(request: Any) -> str:
    return str(request.model_spec.name)


def _version(response: Any) -> str:
    return str(response.model_spec.version.value)


def _multi_model(request: Any) -> str:
    return str(request.tasks[0].model_spec.name) if request.tasks else ""


def _multi_version(response: Any) -> str:
    return str(response.results[0].model_spec.version.value) if response.results else ""


@dataclass(frozen=True, slots=True)
class Served:
    """What a request actually ran on: TF Serving echoes it in the response's ``model_spec``."""

    model: str
    version: int
    signature_name: str


Inferred = tuple[dict[str, np.ndarray], Served]
"""A request's outputs by alias, and what it ran on."""


def _examples_for(examples: np.ndarray) -> InputsFor:
    def inputs(signature: Signature) -> Mapping[str, np.ndarray]:
        return {next(iter(signature.inputs)): examples}

    return inputs


def _predict_response(inferred: Inferred) -> Any:
    outputs, served = inferred
    response = predict_pb2.PredictResponse()
    messages.served_spec(response.model_spec, served.model, served.version, served.signature_name)
    for name, array in outputs.items():
        encode_tensor(array, response.outputs[name])
    return response


def _examples_response(message: Any, write_result: WriteResult, examples: int, inferred: Inferred) -> Any:
    """A ClassificationResponse or RegressionResponse: the served spec, then the result per example."""
    outputs, served = inferred
    messages.served_spec(message.model_spec, served.model, served.version, served.signature_name)
    write_result(outputs, examples, message.result)
    return message


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata over the core."""

    def __init__(self, service: InferenceService, requests: RequestMetrics | None = None) -> None:
        self.service = service
        self.requests = requests

    def _infer(
        self,
        spec: ModelSpec,
        signature_name: str,
        inputs_for: InputsFor,
        context: Any,
        *,
        method: str | None = None,
        output_filter: Sequence[str] = (),
    ) -> Inferred | Awaitable[Inferred]:
        """Resolve, validate and run one request; the handle is released on every path.

        Sync-first: the outputs now when the model ran inline, else a coroutine that waits for them.
        """
        handle = self.service.handle(with_routing_key(spec, context, self.service.manager))
        deferred = False
        try:
            signature = handle.signature(signature_name)
            if method is not None:
                check_examples_signature(signature, method)
            call = self.service.prepare(handle, signature, inputs_for(signature), output_filter)
            served = Served(handle.model, handle.version, signature.name)
            if call.inline:
                return self.service.run_inline(call), served
            deferred = True  # service.run owns the handle from here
        finally:
            if not deferred:
                handle.close()
        timeout = deadline_seconds(context, self.service.settings.timeout_seconds)
        return self._run(call, timeout, served)

    async def _run(self, call: PreparedCall, timeout: float | None, served: Served) -> Inferred:
        return await self.service.run(call, timeout), served

    @counted_at_edge("Predict", _model, _version)
    def Predict(self, request: Any, context: Any) -> Any:
        inferred = self._infer(
            messages.model_spec(request.model_spec),
            request.model_spec.signature_name,
            # Decoded after the model and signature resolved: a missing model is reported first (TF order).
            lambda _: {name: decode_tensor(tensor) for name, tensor in request.inputs.items()},
            context,
            output_filter=list(request.output_filter),
        )
        return then(inferred, _predict_response)

    @counted_at_edge("Classify", _model, _version)
    def Classify(self, request: Any, context: Any) -> Any:
        examples = messages.serialized_examples(request.input)
        inferred = self._infer(
            messages.model_spec(request.model_spec),
            request.model_spec.signature_name,
            _examples_for(examples),
            context,
            method=CLASSIFY_METHOD,
        )
        response = classification_pb2.ClassificationResponse()
        return then(
            inferred,
            functools.partial(_examples_response, response, messages.classification_result, len(examples)),
        )

    @counted_at_edge("Regress", _model, _version)
    def Regress(self, request: Any, context: Any) -> Any:
        examples = messages.serialized_examples(request.input)
        inferred = self._infer(
            messages.model_spec(request.model_spec),
            request.model_spec.signature_name,
            _examples_for(examples),
            context,
            method=REGRESS_METHOD,
        )
        response = regression_pb2.RegressionResponse()
        return then(
            inferred,
            functools.partial(_examples_response, response, messages.regression_result, len(examples)),
        )

    @counted_at_edge("MultiInference", _multi_model, _multi_version)
    async def MultiInference(self, request: Any, context: Any) -> Any:
        """Several classify/regress signatures of one model version over the same examples."""
        tasks = list(request.tasks)
        if not tasks:
            raise InvalidArgument("Found no tasks in the request")  # TF Serving's checks, in its order
        names = {task.model_spec.name for task in tasks}
        if len(names) > 1:
            raise InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        signature_names = [task.model_spec.signature_name or "serving_default" for task in tasks]
        if len(set(signature_names)) != len(signature_names):
            raise InvalidArgument("Duplicate evaluation of signature")
        examples = messages.serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        first_version: int | None = None
        for task in tasks:
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise InvalidArgument(f"Unsupported signature method_name: {task.method_name}")
            spec = messages.model_spec(task.model_spec)
            if first_version is not None and spec.version is None and spec.label is None:
                spec = ModelSpec(spec.name, version=first_version)  # every task on the same version
            inferred = self._infer(
                spec,
                task.model_spec.signature_name,
                _examples_for(examples),
                context,
                method=task.method_name,
            )
            outputs, served = await inferred if inspect.isawaitable(inferred) else inferred
            if first_version is not None and served.version != first_version:
                raise InvalidArgument("ModelSpecs in a MultiInferenceRequest must access the same version.")
            first_version = served.version
            result = response.results.add()
            messages.served_spec(result.model_spec, served.model, served.version, served.signature_name)
            if task.method_name == CLASSIFY_METHOD:
                messages.classification_result(outputs, len(examples), result.classification_result)
            else:
                messages.regression_result(outputs, len(examples), result.regression_result)
        return response

    @at_edge
    def GetModelMetadata(self, request: Any, context: Any) -> Any:
        with self.service.handle(messages.model_spec(request.model_spec)) as handle:
            return messages.model_metadata_response(
                handle.model, handle.version, handle.servable.signatures, list(request.metadata_field)
            )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest (which replaces the whole model config)."""

    def __init__(self, service: InferenceService, reload_config: ReloadConfig | None) -> None:
        self.service = service
        self.reload_config = reload_config

    @at_edge
    def GetModelStatus(self, request: Any, context: Any) -> Any:
        spec = messages.model_spec(request.model_spec)
        statuses = self.service.manager.statuses(spec.name, spec.version, spec.label)
        return messages.model_status_response(statuses)

    @at_edge
    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
        if self.reload_config is None:
            raise FailedPrecondition("this server does not accept model config reloads")
        if request.config.WhichOneof("config") != "model_config_list":
            # TF Serving's ServerCore::ReloadConfig wording.
            raise FailedPrecondition(
                "Cannot transition to requested config. It is only legal to transition from one "
                "ModelConfigList to another."
            )
        # The same parser as --model_config_file, so both accept and reject the same configs.
        config = parse_model_server_config(text_format.MessageToString(request.config), "ReloadConfigRequest")
        await self.reload_config(config)
        return model_management_pb2.ReloadConfigResponse()


def tfserving_registrar(
    reload_config: ReloadConfig | None = None, requests: RequestMetrics | None = None
) -> Callable[[Any, InferenceService], list[str]]:
    """A registrar adding TF Serving's two services to a ``grpc.aio`` server (counting requests on
    ``requests`` when given)."""

    def register(server: Any, service: InferenceService) -> list[str]:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(service, requests), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(service, reload_config), server
        )
        return [PREDICTION_SERVICE, MODEL_SERVICE]

    return register
