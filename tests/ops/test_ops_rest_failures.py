"""A pending REST reply that ends without one: the HTTP server's answer and the request metrics agree.

A real `HttpServer` on an OS-assigned port, in process, with a `RestHandler` whose model call either
raises an unexpected exception (500) or never finishes (cancelled at the drain deadline: 503).
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from modelserve.config.options import ServerOptions
from modelserve.frontends.rest.handler import PendingReply, Reply, RestHandler, RestSettings
from modelserve.frontends.rest.http_server import HttpServer
from modelserve.metrics import ServerMetrics
from modelserve.server import ModelServer

PREDICT = "/v1/models/tiny:predict"


class FailingHandler(RestHandler):
    """Every predict is pending, then raises (``fail``) or waits until cancelled."""

    fail = True

    def _dispatch(
        self, method: str, path: str, body: bytes, headers: Mapping[bytes, bytes]
    ) -> Reply | PendingReply:
        if path == PREDICT:
            return self._never_answers()
        return super()._dispatch(method, path, body, headers)

    async def _never_answers(self) -> Reply:
        await asyncio.sleep(0)  # pending: the HTTP server awaits it as a task
        if self.fail:
            raise RuntimeError("a bug in a model call")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def post(port: int) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", PREDICT, b'{"instances": [[0.0]]}')
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def counted(metrics: ServerMetrics) -> dict[str, float]:
    """modelserve_requests_total by code, for the tiny model."""
    codes = {}
    for family in metrics.requests.collect():
        if family.name == "modelserve_requests":
            for sample in family.samples:
                if sample.labels["model"] == "tiny":
                    codes[sample.labels["code"]] = sample.value
    return codes


@pytest.mark.parametrize(("fail", "status"), [(True, 500), (False, 503)])
def test_the_status_counted_is_the_status_sent(tiny_repo: Path, fail: bool, status: int) -> None:
    async def scenario() -> None:
        server = ModelServer(ServerOptions(model_name="tiny", model_base_path=str(tiny_repo)))
        metrics = ServerMetrics()
        metrics.watch_versions(server.manager.all_statuses, None, lambda: ["tiny"])
        handler = FailingHandler(server.service, RestSettings(metrics_path="/metrics"), metrics=metrics)
        handler.fail = fail
        http_server = HttpServer(handler)
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setblocking(False)
        await http_server.start(sock)
        try:
            reply = asyncio.create_task(asyncio.to_thread(post, sock.getsockname()[1]))
            if not fail:
                while not http_server.tasks:  # the request is in flight
                    await asyncio.sleep(0.01)
                await http_server.shutdown(timeout=0.3)  # its deadline cancels it
            answered, body = await reply
        finally:
            await http_server.shutdown(timeout=0)
            server.service.close()
            await asyncio.to_thread(server.manager.close)
        assert answered == status, body
        assert counted(metrics) == {str(status): 1}

    asyncio.run(scenario())
