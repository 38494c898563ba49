"""The coupled worker: the gateway's routes and error mapping, with the model call answered in-process.

The request handling is the gateway's own (`modelserve.gateway.pipeline`): the same handler module, the same
routes (``/healthz``, ``/readyz``, ``/stats``, POST anything else), the same error replies. Only the
executor of a plan's operations differs: `LocalUpstream` runs the model in this process instead of calling
a model server. Each worker loads its own copy after the fork (no preload), as the seed's Flask app did.

`CoupledApplication` is the gateway's Gunicorn application with these apps, so readiness (``--ready-file``
once every worker has booted, i.e. loaded its model) and worker classes behave exactly as the gateway's.
For a plain ``gunicorn -c gunicorn.conf.py`` deployment, `create_wsgi_app` / `create_asgi_app` read the
same settings from ``MODELSERVE_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from modelserve.coupled.models import LocalModels, ModelSource, model_sources
from modelserve.gateway.asgi import Receive, Scope, Send
from modelserve.gateway.asgi import read_request as read_asgi_request
from modelserve.gateway.gunicorn_app import GatewayApplication
from modelserve.gateway.handler import Handler, load_handler
from modelserve.gateway.options import GatewayOptions
from modelserve.gateway.pipeline import (
    CheckReady,
    Gateway,
    Op,
    Predict,
    Readiness,
    Reply,
    drive,
    drive_async,
    error_reply,
)
from modelserve.gateway.wsgi import StartResponse
from modelserve.gateway.wsgi import read_request as read_wsgi_request

IN_PROCESS = {"url": None, "error": "coupled architecture: the model is inside every web worker"}


class LocalUpstream:
    """Executes a plan's operations against the models of this process (see `pipeline.Op`)."""

    def __init__(self, models: LocalModels) -> None:
        self.models = models

    def execute(self, op: Op) -> Any:
        """Run one operation of a plan: a predict in-process, readiness from what is loaded."""
        if isinstance(op, Predict):
            call = op.call
            assert call.model is not None
            return self.models.predict(call.model, call.inputs, call.signature, call.output_filter)
        if isinstance(op, CheckReady):
            loaded = op.model in self.models.names
            return Readiness(loaded, "" if loaded else f"model '{op.model}' is not in the repository")
        return dict(IN_PROCESS)

    async def execute_async(self, op: Op) -> Any:
        """`execute` for the asyncio worker."""
        # Off the event loop: the framework releases the GIL, so the worker keeps accepting requests.
        return await asyncio.to_thread(self.execute, op)


class CoupledWsgiApp:
    """The WSGI app of a coupled sync, gthread or gevent worker; `start` loads the model after the fork."""

    def __init__(
        self, options: GatewayOptions, sources: tuple[ModelSource, ...], intra_op_threads: int
    ) -> None:
        self._options = options
        self._sources = sources
        self._intra_op_threads = intra_op_threads
        self._gateway: Gateway | None = None
        self._upstream: LocalUpstream | None = None

    def start(self, handler: Handler) -> None:
        """Load this worker's own copy of every model, then serve ``handler``."""
        self._upstream = LocalUpstream(LocalModels(self._sources, self._intra_op_threads))
        self._gateway = Gateway(handler, self._options.worker_class)

    def stop(self) -> None:
        """Free the worker's models (Gunicorn's worker_exit)."""
        if self._upstream is not None:
            self._upstream.models.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        reply = self._reply(environ)
        start_response(reply.status_line, reply.header_list())
        return [reply.body]

    def _reply(self, environ: dict[str, Any]) -> Reply:
        if self._gateway is None or self._upstream is None:
            return error_reply(503, "the worker is starting")
        request = read_wsgi_request(environ, self._options.max_body_bytes)
        if isinstance(request, Reply):
            return request
        return drive(self._gateway.respond(request), self._upstream.execute)


class CoupledAsgiApp(CoupledWsgiApp):
    """The ASGI app of a coupled asyncio (uvicorn) worker: the model runs on a thread, off the loop."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        reply = await self._reply_async(scope, receive)
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.header_list()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _reply_async(self, scope: Scope, receive: Receive) -> Reply:
        if self._gateway is None or self._upstream is None:
            return error_reply(503, "the worker is starting")
        request = await read_asgi_request(scope, receive, self._options.max_body_bytes)
        if isinstance(request, Reply):
            return request
        return await drive_async(self._gateway.respond(request), self._upstream.execute_async)


class CoupledApplication(GatewayApplication):
    """``modelserve gateway``'s Gunicorn application serving coupled workers (each loads the model)."""

    def __init__(
        self, options: GatewayOptions, sources: tuple[ModelSource, ...], intra_op_threads: int
    ) -> None:
        self.sources = sources
        self.intra_op_threads = intra_op_threads
        super().__init__(options)

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("proc_name", "modelserve-coupled")

    def load(self) -> Any:
        app_class = CoupledAsgiApp if self.options.worker_class == "asyncio" else CoupledWsgiApp
        return app_class(self.options, self.sources, self.intra_op_threads)


# -- factories for a plain Gunicorn deployment (gunicorn.conf.py's wsgi_app) -----------------------------


def _from_environment(app_class: type[CoupledWsgiApp], worker_class: str) -> CoupledWsgiApp:
    environ = os.environ
    options = GatewayOptions(handler=environ["MODELSERVE_HANDLER"], worker_class=worker_class)
    sources = model_sources(
        environ.get("MODELSERVE_MODEL_NAME", "default"),
        environ.get("MODELSERVE_MODEL_BASE_PATH", ""),
        environ.get("MODELSERVE_MODEL_CONFIG_FILE", ""),
    )
    app = app_class(options, sources, int(environ.get("MODELSERVE_INTRA_OP_THREADS", "1")))
    handler = load_handler(options.handler)
    if handler.setup is not None:
        handler.setup()
    app.start(handler)
    return app


def create_wsgi_app(worker_class: str = "sync") -> CoupledWsgiApp:
    """A coupled WSGI app from ``MODELSERVE_HANDLER``, ``MODELSERVE_MODEL_NAME``/``_BASE_PATH`` (or
    ``MODELSERVE_MODEL_CONFIG_FILE``) and ``MODELSERVE_INTRA_OP_THREADS``; called in each worker.

    ``worker_class`` is the Gunicorn worker class it runs under (``sync``, ``gthread`` or ``gevent``; the
    generated gunicorn.conf.py passes it: ``create_wsgi_app('gevent')``), so ``/stats`` reports it right.
    """
    if worker_class not in ("sync", "gthread", "gevent"):
        raise ValueError(
            f"create_wsgi_app: a WSGI worker class (sync, gthread, gevent), got {worker_class!r}"
        )
    return _from_environment(CoupledWsgiApp, worker_class)


def create_asgi_app() -> CoupledAsgiApp:
    """The same for uvicorn's worker (``worker_class = "uvicorn_worker.UvicornWorker"``)."""
    app = _from_environment(CoupledAsgiApp, "asyncio")
    assert isinstance(app, CoupledAsgiApp)
    return app
