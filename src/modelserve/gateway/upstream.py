"""The model server as one worker process sees it: a pooled client made after the fork, bounded retries.

`Upstream` (blocking: the sync, gthread and gevent workers) and `AsyncUpstream` (the asyncio worker)
execute the operations a plan asks for (`pipeline.Op`). Each worker makes its own in ``post_worker_init``,
and the client opens its connections (its REST pool, or one gRPC channel) on first use, so nothing made
in the Gunicorn master is ever shared across ``fork``.

A predict is sent again, at most ``retries`` times with a short backoff, only when it did not reach the
model server:

- REST: the connection could not be opened (refused, unreachable: a ``ConnectFailed`` cause); nothing was
  sent.
- gRPC: UNAVAILABLE because the channel could not connect. gRPC also says UNAVAILABLE for a stream cut
  after the request was sent and the model server for its own "shutting down": those may have run the
  model, so they are final.

and, once per call and counted against ``retries``, over REST, when a connection was closed or reset by
the model server before a reply's head came back (``closed_before_reply``). Usually the server closed an
idle keep-alive connection (its keep-alive timeout) while the request was on its way, and the request never
reached a handler; the next attempt opens a fresh connection. But the same error is what a client sees when
the model server died while running the request (killed, out of memory), so this retry treats a predict as
idempotent and may run it twice: ``--retries 0`` turns it off. (The asyncio client, on aiohttp, reports
a connection closed after part of a head like one closed before any byte; the sync client's http.client
reports a bad status line instead, which is final. Our model server writes a head and its body in one
write, so in practice only a reply cut inside its body is final.)

A timeout, or any answer from the model server, is final. Readiness probes and the memory fetch are never
retried: a probe must answer quickly, and the caller asks again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import orjson

from modelserve.client import AsyncClient, Client, ModelServerError, ModelStatus
from modelserve.client.errors import ClosedBeforeReply, ConnectFailed
from modelserve.errors import Code
from modelserve.gateway.handler import ModelCall
from modelserve.gateway.options import GatewayOptions
from modelserve.gateway.pipeline import CheckReady, FetchServerMemory, Op, Predict, Readiness

# Reconnect quickly after the model server restarts (gRPC's default backoff grows to two minutes).
_GRPC_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_STATUS_PATH = "/modelserve/status"


def client_options(options: GatewayOptions) -> dict[str, Any]:
    """Keyword arguments for `Client` / `AsyncClient` (retries are the gateway's own, see the module doc)."""
    return {
        "protocol": options.protocol,
        "timeout": options.timeout,
        "connect_timeout": min(options.timeout, 10.0),
        "grpc_options": _GRPC_OPTIONS,
    }


_GRPC_NOT_CONNECTED = ("failed to connect to all addresses", "connection refused", "dns resolution failed")


def is_connection_error(error: ModelServerError) -> bool:
    """Whether the failed call never reached the model server (see the module doc)."""
    if error.code != Code.UNAVAILABLE:
        return False
    if error.http_status is not None:  # the model server answered (503)
        return False
    cause = error.__cause__
    if cause is not None:
        return isinstance(cause, ConnectFailed)  # REST: the connection was never opened
    # gRPC says UNAVAILABLE for a connection never made, but also for a stream cut after the request was
    # sent and for the server's own "shutting down": only the first is safe to send again.
    return any(marker in error.message.lower() for marker in _GRPC_NOT_CONNECTED)


def closed_before_reply(error: ModelServerError) -> bool:
    """Whether a REST call failed on a connection the server closed before replying (see the module doc):
    the connection ended (EOF) or was reset before the response's head. Both REST transports say so with
    a `ClosedBeforeReply` cause."""
    return isinstance(error.__cause__, ClosedBeforeReply)


def should_retry(error: ModelServerError, attempt: int, retries: int, stale_retried: bool) -> str | None:
    """Why the failed predict is sent again ("connect" or "stale"), or None when the error is final."""
    if attempt >= retries:
        return None
    if is_connection_error(error):
        return "connect"
    if not stale_retried and closed_before_reply(error):
        return "stale"
    return None


def backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0-based): 50 ms, doubling, at most 1 s."""
    return min(0.05 * 2**attempt, 1.0)


def readiness(model: str, status: ModelStatus) -> Readiness:
    """Ready when some version is AVAILABLE; otherwise the states (and errors) of every version."""
    if status.available:
        return Readiness(True)
    if not status.versions:
        return Readiness(False, f"model '{model}' has no version loaded yet")
    states = "; ".join(
        f"version {v.version} {v.state}" + (f" ({v.error_message})" if v.error_message else "")
        for v in status.versions
    )
    return Readiness(False, f"model '{model}' has no AVAILABLE version: {states}")


def no_status_url() -> dict[str, Any]:
    """What ``/stats`` says of the model server when only its gRPC address is known."""
    return {
        "url": None,
        "error": "the model server is reached over gRPC: pass --model-server-rest http://HOST:PORT",
    }


def memory_document(url: str, status: int, body: bytes) -> dict[str, Any]:
    """The ``process`` entry of a ``/modelserve/status`` reply, or why there is none."""
    if status != 200:
        return {"url": url, "error": f"GET {_STATUS_PATH} answered {status}"}
    try:
        return {"url": url, "process": orjson.loads(body)["process"]}
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        return {"url": url, "error": f"GET {_STATUS_PATH}: unexpected reply ({error})"}


def _call_args(call: ModelCall) -> dict[str, Any]:
    return {
        "version": call.version,
        "version_label": call.label,
        "signature_name": call.signature,
        "output_filter": call.output_filter,
    }


class Upstream:
    """The blocking side: one thread-safe `Client` per worker process."""

    def __init__(self, options: GatewayOptions) -> None:
        self._options = options
        self._client = Client(options.model_server, **client_options(options))

    def execute(self, op: Op) -> Any:
        """Run one operation of a plan (see `pipeline`)."""
        if isinstance(op, Predict):
            return self.predict(op.call)
        if isinstance(op, CheckReady):
            return self.readiness(op)
        return self.server_memory(op)

    def predict(self, call: ModelCall) -> dict[str, np.ndarray]:
        assert call.model is not None
        attempt, stale_retried = 0, False
        while True:
            try:
                return self._client.predict(call.model, call.inputs, **_call_args(call))
            except ModelServerError as error:
                why = should_retry(error, attempt, self._options.retries, stale_retried)
                if why is None:
                    raise
            if why == "stale":
                stale_retried, attempt = True, attempt + 1  # at once, on a fresh connection
                continue
            time.sleep(backoff(attempt))  # gevent patches time.sleep: other requests run meanwhile
            attempt += 1

    def readiness(self, op: CheckReady) -> Readiness:
        try:
            status = self._client.model_status(op.model, version=op.version, version_label=op.label)
        except (ModelServerError, ValueError) as error:
            return Readiness(False, f"model server: {error}")
        return readiness(op.model, status)

    def server_memory(self, op: FetchServerMemory) -> dict[str, Any]:
        url = self._options.status_url
        if url is None:
            return no_status_url()
        try:
            reply = httpx.get(url + _STATUS_PATH, timeout=self._options.timeout, trust_env=False)
        except httpx.HTTPError as error:
            return {"url": url, "error": f"{type(error).__name__}: {error}"}
        return memory_document(url, reply.status_code, reply.content)

    def close(self) -> None:
        self._client.close()


class AsyncUpstream:
    """The asyncio side: one `AsyncClient` per worker process, used from its event loop only."""

    def __init__(self, options: GatewayOptions) -> None:
        self._options = options
        # The client opens its transport (and binds it to the running loop) on the first call.
        self._client = AsyncClient(options.model_server, **client_options(options))

    async def execute(self, op: Op) -> Any:
        """Run one operation of a plan (see `pipeline`)."""
        if isinstance(op, Predict):
            return await self.predict(op.call)
        if isinstance(op, CheckReady):
            return await self.readiness(op)
        return await self.server_memory(op)

    async def predict(self, call: ModelCall) -> dict[str, np.ndarray]:
        assert call.model is not None
        attempt, stale_retried = 0, False
        while True:
            try:
                return await self._client.predict(call.model, call.inputs, **_call_args(call))
            except ModelServerError as error:
                why = should_retry(error, attempt, self._options.retries, stale_retried)
                if why is None:
                    raise
            if why == "stale":
                stale_retried, attempt = True, attempt + 1  # at once, on a fresh connection
                continue
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def readiness(self, op: CheckReady) -> Readiness:
        try:
            status = await self._client.model_status(op.model, version=op.version, version_label=op.label)
        except (ModelServerError, ValueError) as error:
            return Readiness(False, f"model server: {error}")
        return readiness(op.model, status)

    async def server_memory(self, op: FetchServerMemory) -> dict[str, Any]:
        url = self._options.status_url
        if url is None:
            return no_status_url()
        try:
            async with httpx.AsyncClient(timeout=self._options.timeout, trust_env=False) as http:
                reply = await http.get(url + _STATUS_PATH)
        except httpx.HTTPError as error:
            return {"url": url, "error": f"{type(error).__name__}: {error}"}
        return memory_document(url, reply.status_code, reply.content)

    async def close(self) -> None:
        await self._client.close()
