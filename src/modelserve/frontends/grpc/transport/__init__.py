"""A gRPC server transport written for speed: HTTP/2 on an asyncio Protocol, HPACK via ``hpack``.

``grpc.aio``'s server costs ~320 µs of CPU per unary call; this one answers a unary call whose handler
returns synchronously inside the ``data_received`` that completed its request, for a few tens of µs.
It accepts grpcio's generated ``add_*Servicer_to_server`` registrations and runs grpcio's own aio
servicers (health, reflection) unchanged.

Modules: ``frames`` (HTTP/2 frame encoding), ``wire`` (gRPC headers, status, timeouts, compression),
``stream`` (per-call state), ``context`` (``ServicerContext``, ``AbortError``), ``calls`` (running
handlers), ``connection`` (the protocol), ``server`` (``GrpcHttp2Server``).
"""

from modelserve.frontends.grpc.transport.calls import pending
from modelserve.frontends.grpc.transport.context import AbortError, ServicerContext
from modelserve.frontends.grpc.transport.server import SUPPORTED_OPTIONS, GrpcHttp2Server

__all__ = ["SUPPORTED_OPTIONS", "AbortError", "GrpcHttp2Server", "ServicerContext", "pending"]
