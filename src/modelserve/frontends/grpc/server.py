"""The gRPC server: every gRPC front-end on one port, on the event loop the REST server uses.

It runs on our own HTTP/2 transport (``transport``), which calls the servicers inside the event loop's
read callback, as the REST server does: grpcio's ``grpc.aio`` server cost three times REST's CPU per call.
Servicers and registrars are grpcio's generated code, so the transport is a drop-in for ``grpc.aio.Server``.

Services come from registrars, ``(server, service) -> [full service names]``, so this module knows no
protocol; it adds what every gRPC server of ours has: standard health checking (``grpc.health.v1``,
SERVING for the whole server and for each service once the models are loaded) and server reflection over
our private descriptor pool (``modelserve.proto.POOL``), so ``grpcurl list`` / ``describe`` work without
.proto files.

Limits follow TF Serving (main.cc): messages up to INT_MAX bytes both ways, plus
``--grpc_channel_arguments`` (``key=value,key=value``; integer values become ints): the message size
limits and ``grpc.max_concurrent_streams`` are honoured, other keys are logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection,
    reflection_pb2,
    reflection_pb2_grpc,
)

from modelserve.core.inference import InferenceService
from modelserve.errors import FailedPrecondition, InvalidArgument
from modelserve.frontends.grpc.transport import SUPPORTED_OPTIONS, GrpcHttp2Server
from modelserve.frontends.health import Health, health_of
from modelserve.frontends.outbox import MAX_HOLD_SECONDS
from modelserve.proto import POOL

log = logging.getLogger("modelserve.grpc")

Registrar = Callable[[Any, InferenceService], list[str]]
"""Adds servicers to a gRPC server (grpcio's ``add_*Servicer_to_server``); returns the full names of the
services it added."""

_INT_MAX = 2**31 - 1

_DEFAULT_OPTIONS: dict[str, int | str] = {
    "grpc.max_send_message_length": _INT_MAX,
    "grpc.max_receive_message_length": _INT_MAX,
}


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    """Where and how the gRPC server listens (TF Serving's flags)."""

    host: str = "0.0.0.0"
    port: int | None = 8500  # None: no TCP port; 0: a port the OS picks
    socket_path: str = ""  # --grpc_socket_path: also listen on this UNIX socket
    channel_arguments: str = ""  # --grpc_channel_arguments
    health_service: bool = True  # --enable_grpc_healthcheck_service
    reflection: bool = True
    reply_coalescing_seconds: float = MAX_HOLD_SECONDS  # --reply_coalescing_us (frontends.outbox)


def parse_channel_arguments(text: str) -> dict[str, int | str]:
    """TF Serving's ``--grpc_channel_arguments`` format: ``key=value`` pairs separated by commas."""
    arguments: dict[str, int | str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        value = value.strip()
        try:
            arguments[key.strip()] = int(value)
        except ValueError:
            arguments[key.strip()] = value
    return arguments


def _add_to_pool(*modules: Any) -> None:
    """Make the health and reflection protos describable through our pool."""
    for module in modules:
        try:
            POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)


def _tcp_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """One gRPC server carrying the services of ``registrars``."""

    def __init__(
        self,
        service: InferenceService,
        registrars: Sequence[Registrar],
        settings: GrpcSettings,
        readiness: Health | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.readiness = health_of(service.manager, readiness)
        requested = parse_channel_arguments(settings.channel_arguments)
        for key in sorted(set(requested) - SUPPORTED_OPTIONS):
            log.warning(
                "--grpc_channel_arguments: %s is accepted and ignored (this server honours %s)",
                key,
                ", ".join(sorted(SUPPORTED_OPTIONS)),
            )
        options = {**_DEFAULT_OPTIONS, **requested}
        self._server = GrpcHttp2Server(
            options=list(options.items()), reply_coalescing_seconds=settings.reply_coalescing_seconds
        )
        self.service_names: list[str] = []
        for register in registrars:
            self.service_names.extend(register(self._server, service))
        self._health: Any = None
        if settings.health_service:
            self._health = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if settings.reflection:
            _add_to_pool(health_pb2, reflection_pb2)
            names = [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
                reflection.aio.ReflectionServicer(names, pool=POOL), self._server
            )

    async def start(self) -> int | None:
        """Bind the TCP port and/or UNIX socket, start serving; returns the bound TCP port (None: none)."""
        port: int | None = None
        if self.settings.port is not None:
            port = self._bind(_tcp_address(self.settings.host, self.settings.port))
        if self.settings.socket_path:
            self._bind(f"unix:{self.settings.socket_path}")
        await self._server.start()
        await self.update_health()
        return port

    def _bind(self, address: str) -> int:
        try:
            bound: int = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise FailedPrecondition(f"cannot bind gRPC address {address}: {exc}") from exc
        if bound == 0 and not address.startswith("unix:"):
            raise FailedPrecondition(f"cannot bind gRPC address {address}")
        return bound

    async def update_health(self) -> None:
        """SERVING while the server is ready (see ``frontends.health``), else NOT_SERVING."""
        if self._health is None:
            return
        ready = self.readiness.ready()
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self._health.set(name, status)

    async def report_not_serving(self) -> None:
        """Shutdown began: NOT_SERVING for every service from now on (health checks stop routing here)."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def stop(self, grace_seconds: float) -> None:
        """Report NOT_SERVING, refuse new calls, and let in-flight calls finish within the grace period."""
        await self.report_not_serving()
        await self._server.stop(grace_seconds)
