"""The V2 inference protocol over gRPC: KServe's / Triton's ``inference.GRPCInferenceService``.

Thin, like the REST handlers: decode the message (`codecs.v2_proto`), call the core, encode the reply.
A call cheap enough to run inline runs on the event loop, its handle is closed here and the method returns
the reply itself (sync-first, see ``transport``); any other call is handed to ``InferenceService.run``,
which owns the handle from then on and is bounded by the caller's gRPC deadline. Errors become the gRPC
status with the same number as ``ServingError.code``, message verbatim (`status.at_edge`).
``ModelStreamInfer`` answers each request of the stream in order and reports a failed one in
``error_message`` without ending the stream, as Triton does.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from modelserve.codecs import v2_proto
from modelserve.codecs.v2_metadata import available_versions, model_metadata, server_metadata, v2_model_spec
from modelserve.core.inference import InferenceService, PreparedCall
from modelserve.errors import NotFound, ServingError
from modelserve.frontends.grpc.status import at_edge, counted_at_edge, deadline_seconds, with_routing_key
from modelserve.frontends.health import Health, health_of
from modelserve.metrics import RequestMetrics
from modelserve.proto.inference import grpc_service_pb2 as pb
from modelserve.proto.inference import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("modelserve.grpc.v2")

V2_SERVICE = "inference.GRPCInferenceService"


class V2Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's required RPCs plus ModelStreamInfer; Triton's other RPCs answer UNIMPLEMENTED."""

    def __init__(
        self, service: InferenceService, requests: RequestMetrics | None = None, health: Health | None = None
    ) -> None:
        self.service = service
        self.requests = requests
        self.health = health_of(service.manager, health)

    @at_edge
    def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    @at_edge
    def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.health.ready())

    @at_edge
    def ModelReady(self, request: Any, context: Any) -> Any:
        spec = v2_model_spec(request.name, request.version)
        try:
            self.service.handle(spec).close()
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @at_edge
    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**server_metadata())

    @at_edge
    def ModelMetadata(self, request: Any, context: Any) -> Any:
        spec = v2_model_spec(request.name, request.version)
        with self.service.handle(spec) as handle:
            signature = handle.signature(None)
            versions = available_versions(self.service.manager.statuses(spec.name))
            metadata = model_metadata(handle.model, versions, handle.servable.platform, signature)
        return v2_proto.model_metadata_message(metadata)

    @counted_at_edge(
        "ModelInfer", lambda request: str(request.model_name), lambda reply: str(reply.model_version)
    )
    def ModelInfer(self, request: Any, context: Any) -> Any:
        return self._infer(request, context)

    async def ModelStreamInfer(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            try:
                response = self._infer(request, context)
                if inspect.isawaitable(response):
                    response = await response
            except ServingError as exc:
                yield pb.ModelStreamInferResponse(error_message=exc.message)
                continue
            except Exception as exc:  # one bad request must not end the stream
                log.exception("unhandled error in ModelStreamInfer")
                yield pb.ModelStreamInferResponse(
                    error_message=f"Internal error: {type(exc).__name__}: {exc}"
                )
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    def _infer(self, message: Any, context: Any) -> Any:
        """Sync-first: the reply now when the model ran inline, else a coroutine that waits for it."""
        spec = with_routing_key(
            v2_model_spec(message.model_name, message.model_version), context, self.service.manager
        )
        request = v2_proto.parse_infer_request(message)
        handle = self.service.handle(spec)
        try:
            signature = handle.signature(None)
            inputs = request.model_inputs(handle.model, signature)
            call = self.service.prepare(handle, signature, inputs, request.output_names)
        except BaseException:
            handle.close()
            raise
        if call.inline:
            try:
                outputs = self.service.run_inline(call)
            finally:
                handle.close()
            return _reply(call, request.id, outputs)
        # service.run owns the handle from here
        timeout = deadline_seconds(context, self.service.settings.timeout_seconds)
        return self._run(call, timeout, request.id)

    async def _run(self, call: PreparedCall, timeout: float | None, request_id: str) -> Any:
        return _reply(call, request_id, await self.service.run(call, timeout))


def _reply(call: PreparedCall, request_id: str, outputs: dict[str, Any]) -> Any:
    """The ModelInferResponse of a call that ran (its handle may be closed: only names are read)."""
    handle = call.handle
    return v2_proto.encode_infer_response(handle.model, handle.version, request_id, outputs, call.outputs)


def add_v2_services(server: Any, service: InferenceService) -> list[str]:
    """Register the V2 servicer on ``server``; returns the full service names (for reflection, health)."""
    return v2_registrar()(server, service)


def v2_registrar(
    requests: RequestMetrics | None = None, health: Health | None = None
) -> Callable[[Any, InferenceService], list[str]]:
    """A registrar adding the V2 service, counting requests on ``requests`` and reporting ``health``."""

    def register(server: Any, service: InferenceService) -> list[str]:
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(V2Servicer(service, requests, health), server)
        return [V2_SERVICE]

    return register
