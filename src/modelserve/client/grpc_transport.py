"""gRPC transports: one ``grpc.Channel`` (sync) or ``grpc.aio.Channel`` (asyncio) per client.

A channel multiplexes every call over one HTTP/2 connection (reconnecting by itself), so the channel is
the pool; it is thread-safe (sync) and task-safe (aio). Messages up to 2 GiB - 1 go both ways, as the
server allows. ``timeout`` is the call's deadline, which gRPC also sends to the server.
"""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped]

from modelserve.client.calls import Request, RpcRequest
from modelserve.client.errors import error_from_grpc
from modelserve.client.settings import Settings

_INT_MAX = 2**31 - 1
_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", _INT_MAX),
    ("grpc.max_receive_message_length", _INT_MAX),
)


def _serialize(message: Any) -> bytes:
    result: bytes = message.SerializeToString()
    return result


def _channel(module: Any, settings: Settings) -> Any:
    options = [*_OPTIONS, *settings.grpc_options]
    if settings.secure:
        return module.secure_channel(settings.target, grpc.ssl_channel_credentials(), options=options)
    return module.insecure_channel(settings.target, options=options)


class _Methods:
    """The channel's multi-callables, made once per method path (they are cheap to call, not to make)."""

    def __init__(self, channel: Any, settings: Settings) -> None:
        self.channel = channel
        self.metadata = settings.headers or None
        self._methods: dict[str, Any] = {}

    def __call__(self, request: Request) -> tuple[Any, Any]:
        assert isinstance(request, RpcRequest)
        method = self._methods.get(request.method)
        if method is None:
            method = self.channel.unary_unary(
                request.method,
                request_serializer=_serialize,
                response_deserializer=request.response_type.FromString,
            )
            self._methods[request.method] = method
        return method, request.message


class GrpcTransport:
    """Blocking calls on one ``grpc.Channel``; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._methods = _Methods(_channel(grpc, settings), settings)

    def send(self, request: Request, timeout: float | None) -> Any:
        method, message = self._methods(request)
        try:
            return method(message, timeout=timeout, metadata=self._methods.metadata)
        except grpc.RpcError as error:
            raise error_from_grpc(error) from None

    def close(self) -> None:
        self._methods.channel.close()


class AsyncGrpcTransport:
    """Calls on one ``grpc.aio.Channel``, bound to the event loop that made it."""

    def __init__(self, settings: Settings) -> None:
        self._methods = _Methods(_channel(grpc.aio, settings), settings)

    async def send(self, request: Request, timeout: float | None) -> Any:
        method, message = self._methods(request)
        try:
            return await method(message, timeout=timeout, metadata=self._methods.metadata)
        except grpc.RpcError as error:
            raise error_from_grpc(error) from None

    async def close(self) -> None:
        await self._methods.channel.close()
