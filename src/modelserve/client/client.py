"""`Client` (blocking, thread-safe) and `AsyncClient` (asyncio): the public face of the package.

Both build the same plans (`calls`) from the same protocol objects and differ only in how a request is
sent. The transport (a pooled HTTP client or a gRPC channel) is made on first use, not in the constructor:
a client created in a Gunicorn master process before ``fork`` opens nothing there, and each worker opens its
own connections. If the process id changes anyway (a client used before the fork), the child makes a fresh
transport and leaves the inherited one untouched: its sockets belong to the parent.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from modelserve.client.calls import ModelRef, Plan, Request, T, drive, drive_async, retry_delay
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus
from modelserve.client.protocol import Inputs
from modelserve.client.settings import Settings, make_api, redact


class _SyncTransport(Protocol):
    def send(self, request: Request, timeout: float | None) -> Any: ...
    def close(self) -> None: ...


class _AsyncTransport(Protocol):
    async def send(self, request: Request, timeout: float | None) -> Any: ...
    async def close(self) -> None: ...


def _filter(output_filter: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if output_filter is None:
        return None
    return (output_filter,) if isinstance(output_filter, str) else tuple(output_filter)


class _ClientBase:
    """Configuration shared by both clients (the keyword arguments are documented in `Settings`)."""

    def __init__(
        self,
        url: str,
        *,
        protocol: str = "tfserving",
        timeout: float | None = None,
        retries: int = 0,
        binary: bool = True,
        max_connections: int = 100,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float | None = 5.0,
        connect_timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        grpc_options: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        self.settings = Settings.create(
            url,
            protocol=protocol,
            timeout=timeout,
            retries=retries,
            binary=binary,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            connect_timeout=connect_timeout,
            headers=headers,
            grpc_options=grpc_options,
        )
        self._api = make_api(self.settings)
        self._pid = os.getpid()
        self._closed = False
        self._inherited: list[object] = []  # transports from a parent process: kept, never closed
        self._lock = threading.Lock()

    def _timeout(self, timeout: float | None) -> float | None:
        return self.settings.timeout if timeout is None else timeout

    def __repr__(self) -> str:
        s = self.settings
        where = redact(s.target) if s.transport == "rest" else f"grpc{'s' if s.secure else ''}://{s.target}"
        return f"{type(self).__name__}({where!r}, protocol={s.protocol!r})"


class Client(_ClientBase):
    """A blocking client; share one per process between threads (it pools its connections).

    ``Client("http://127.0.0.1:8501")`` speaks REST, ``Client("grpc://127.0.0.1:8500")`` gRPC;
    ``protocol="v2"`` switches from TF Serving's API to KServe V2. Every failure raises `ModelServerError`.
    """

    _transport: _SyncTransport | None = None

    def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str | None = None,
        output_filter: Sequence[str] | str | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (a dict of arrays by input name, or one array for a single input)."""
        ref = ModelRef(model, version, version_label, signature_name)
        return self._run(self._api.predict(ref, inputs, _filter(output_filter)), timeout)

    def model_status(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> ModelStatus:
        """The state of every version of ``model`` (or of the one named)."""
        return self._run(self._api.model_status(ModelRef(model, version, version_label)), timeout)

    def model_metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        """The signature's inputs and outputs: names, numpy dtypes, shapes."""
        ref = ModelRef(model, version, version_label, signature_name)
        return self._run(self._api.model_metadata(ref), timeout)

    def is_ready(
        self,
        model: str | None = None,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Whether ``model`` (or, without one, every model of the server) can serve; never raises for "no"."""
        ref = None if model is None else ModelRef(model, version, version_label)
        return self._run(self._api.is_ready(ref), timeout)

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        with self._lock:
            self._closed = True
            transport, self._transport = self._transport, None
        if transport is not None and self._pid == os.getpid():
            transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _connected(self) -> _SyncTransport:
        transport = self._transport
        if transport is not None and self._pid == os.getpid():
            return transport
        if self._pid != os.getpid():
            self._lock = threading.Lock()  # a lock copied mid-acquire by fork would never be released
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            if self._transport is not None and self._pid != os.getpid():
                self._inherited.append(self._transport)
                self._transport = None
            if self._transport is None:
                self._transport = self._make_transport()
                self._pid = os.getpid()
            return self._transport

    def _make_transport(self) -> _SyncTransport:
        if self.settings.transport == "rest":
            from modelserve.client.rest_transport import RestTransport

            return RestTransport(self.settings)
        from modelserve.client.grpc_transport import GrpcTransport

        return GrpcTransport(self.settings)

    def _run(self, plan: Plan[T], timeout: float | None) -> T:
        transport = self._connected()
        deadline = self._timeout(timeout)
        retries = self.settings.retries

        def send(request: Request) -> Any:
            attempt = 0
            while True:
                try:
                    return transport.send(request, deadline)
                except ModelServerError as error:
                    delay = retry_delay(error, request, attempt, retries)
                    if delay is None:
                        raise
                time.sleep(delay)
                attempt += 1

        return drive(plan, send)


class AsyncClient(_ClientBase):
    """The asyncio client: the same calls as `Client`, awaited; share one between the tasks of one loop.

    Use it as ``async with AsyncClient(url) as client:`` or call ``await client.close()``.
    """

    _transport: _AsyncTransport | None = None
    _loop: asyncio.AbstractEventLoop | None = None  # the loop the transport's connections belong to

    async def predict(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str | None = None,
        output_filter: Sequence[str] | str | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (a dict of arrays by input name, or one array for a single input)."""
        ref = ModelRef(model, version, version_label, signature_name)
        return await self._run(self._api.predict(ref, inputs, _filter(output_filter)), timeout)

    async def model_status(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> ModelStatus:
        """The state of every version of ``model`` (or of the one named)."""
        return await self._run(self._api.model_status(ModelRef(model, version, version_label)), timeout)

    async def model_metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str | None = None,
        timeout: float | None = None,
    ) -> ModelMetadata:
        """The signature's inputs and outputs: names, numpy dtypes, shapes."""
        ref = ModelRef(model, version, version_label, signature_name)
        return await self._run(self._api.model_metadata(ref), timeout)

    async def is_ready(
        self,
        model: str | None = None,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Whether ``model`` (or, without one, every model of the server) can serve; never raises for "no"."""
        ref = None if model is None else ModelRef(model, version, version_label)
        return await self._run(self._api.is_ready(ref), timeout)

    async def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None and self._pid == os.getpid() and self._loop is asyncio.get_running_loop():
            await transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    def _connected(self) -> _AsyncTransport:
        # No lock: the check and the assignment run without an await between them, so tasks cannot race.
        if self._closed:
            raise RuntimeError("the client is closed")
        loop = asyncio.get_running_loop()
        if self._transport is not None and (self._pid != os.getpid() or self._loop is not loop):
            # Forked, or a new event loop (a second asyncio.run): the connections belong to the old one.
            self._inherited.append(self._transport)
            self._transport = None
        if self._transport is None:
            self._transport = self._make_transport()
            self._pid = os.getpid()
            self._loop = loop
        return self._transport

    def _make_transport(self) -> _AsyncTransport:
        if self.settings.transport == "rest":
            from modelserve.client.rest_transport import AsyncRestTransport

            return AsyncRestTransport(self.settings)
        from modelserve.client.grpc_transport import AsyncGrpcTransport

        return AsyncGrpcTransport(self.settings)

    async def _run(self, plan: Plan[T], timeout: float | None) -> T:
        transport = self._connected()
        deadline = self._timeout(timeout)
        retries = self.settings.retries

        async def send(request: Request) -> Any:
            attempt = 0
            while True:
                try:
                    return await transport.send(request, deadline)
                except ModelServerError as error:
                    delay = retry_delay(error, request, attempt, retries)
                    if delay is None:
                        raise
                await asyncio.sleep(delay)
                attempt += 1

        return await drive_async(plan, send)
