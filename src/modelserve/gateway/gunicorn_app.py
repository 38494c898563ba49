"""Real Gunicorn, configured in code: the master's settings and hooks, and each worker's start after fork.

What happens where::

    master   command.run_gateway: load_handler (fail fast) -> GatewayApplication(options).run()
             Arbiter: bind the listener, fork the workers, restart any that die
    worker   1. the worker class initialises (gevent: monkey-patches the standard library)
             2. load(): an empty WsgiApp (sync, gthread, gevent) or AsgiApp (asyncio)
             3. post_worker_init: gevent + gRPC: grpc.experimental.gevent.init_gevent(), before any
                channel; load_handler again, so module state is the worker's own; the handler's setup();
                app.start(handler), which makes the upstream client (it connects on first use)
             4. the worker marks itself booted; the one that finds every worker booted writes --ready-file

A worker whose handler fails to import or whose ``setup()`` raises never boots, and Gunicorn stops the
whole gateway (exit status 3) instead of serving without it.

Stopping (SIGTERM on the master): new connections are refused at once and the connections the kernel has
already queued are left to the workers (``modelserve.draining``); then Gunicorn's own graceful stop runs:
listeners closed, workers finish their requests and exit (SIGKILL for those still running), and the
master exits 0. Both steps share one deadline, ``--graceful-timeout`` after the signal, so a stop never
outlasts the pod's termination grace period. Metrics: see `gateway.metrics` (a per-run multiprocess
folder, set up around ``run`` and removed when it returns).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]

from modelserve import logs
from modelserve.draining import drain_listener
from modelserve.files import write_atomically
from modelserve.gateway import metrics
from modelserve.gateway.handler import load_handler
from modelserve.gateway.options import WORKER_CLASSES, GatewayOptions

log = logging.getLogger("modelserve.gateway")


def gunicorn_settings(options: GatewayOptions) -> dict[str, Any]:
    """Gunicorn's settings for ``options`` (names as in Gunicorn's configuration file)."""
    return {
        "bind": [options.bind],
        "workers": options.workers,
        "worker_class": WORKER_CLASSES[options.worker_class],
        # More than one thread turns Gunicorn's sync worker into gthread: only gthread gets them.
        "threads": options.threads if options.worker_class == "gthread" else 1,
        # A sync worker is silent while it waits for the model server: allow every attempt, then some.
        "timeout": math.ceil(options.timeout * (options.retries + 1)) + 30,
        "graceful_timeout": math.ceil(options.graceful_timeout),
        "loglevel": options.log_level.lower(),
        "errorlog": "-",
        "proc_name": "modelserve-gateway",
        "preload_app": False,  # the app (and the handler's state) is made in each worker
        # Gunicorn 23+'s control socket lives at one path per user: two gateways would fight over it.
        "control_socket_disable": True,
    }


def stop_seconds(options: GatewayOptions) -> float:
    """The longest a graceful stop takes from SIGTERM to exit: the accept-queue drain and the workers'
    requests share one deadline (`_DrainingArbiter`); a pod's termination grace period must exceed it."""
    return float(math.ceil(options.graceful_timeout)) + 1.0  # Gunicorn's wait is whole seconds, at least 1


class GatewayApplication(BaseApplication):
    """The gateway as a Gunicorn application; ``run()`` returns only in the master, when it stops."""

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        self._booted_dir: Path | None = None
        if options.ready_file:
            Path(options.ready_file).unlink(missing_ok=True)  # never report a previous run as ready
            self._booted_dir = Path(tempfile.mkdtemp(prefix="modelserve-gateway-"))
        super().__init__(prog="modelserve gateway")

    def run(self) -> None:
        """Gunicorn's ``BaseApplication.run`` with an arbiter that drains its listeners before stopping."""
        # Multiprocess metrics for the workers this run forks, and for nothing else in this process.
        with metrics.multiprocess_folder():
            try:
                _DrainingArbiter(self).run()
            except RuntimeError as error:
                print(f"\nError: {error}\n", file=sys.stderr)
                sys.exit(1)

    def load_config(self) -> None:
        for name, value in gunicorn_settings(self.options).items():
            self.cfg.set(name, value)
        self.cfg.set("on_starting", self._on_starting)
        self.cfg.set("post_worker_init", self._post_worker_init)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("child_exit", self._child_exit)
        self.cfg.set("on_exit", self._on_exit)

    def load(self) -> Any:
        """The app of one worker (called in the worker, after the fork)."""
        if self.options.worker_class == "asyncio":
            from modelserve.gateway.asgi import AsgiApp

            return AsgiApp(self.options)
        from modelserve.gateway.wsgi import WsgiApp

        return WsgiApp(self.options)

    # -- hooks -------------------------------------------------------------------------------------------

    def _on_starting(self, server: Any) -> None:
        _use_gunicorn_logging(server.log, self.options.log_format)

    def _post_worker_init(self, worker: Any) -> None:
        _use_gunicorn_logging(worker.log, self.options.log_format)
        if self.options.worker_class == "gevent" and self.options.transport == "grpc":
            # gRPC's own threads must yield to gevent's hub; this must precede the first channel.
            from grpc.experimental import gevent as grpc_gevent  # type: ignore[import-untyped]

            grpc_gevent.init_gevent()
        handler = load_handler(self.options.handler)
        if handler.setup is not None:
            handler.setup()
        worker.wsgi.start(handler)
        log.info("worker %d serves handler %s (model %s)", os.getpid(), handler.name, handler.model)
        if self._booted_dir is not None:
            self._mark_booted(worker)

    def _worker_exit(self, server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        stop = getattr(app, "stop", None)  # the WSGI app; the ASGI app closes on lifespan shutdown
        if stop is not None:
            try:
                stop()
            except Exception:
                log.debug("closing the upstream client failed", exc_info=True)

    def _child_exit(self, server: Any, worker: Any) -> None:
        metrics.worker_exited(worker.pid)

    def _on_exit(self, server: Any) -> None:
        if self._booted_dir is not None:
            shutil.rmtree(self._booted_dir, ignore_errors=True)

    # -- readiness ---------------------------------------------------------------------------------------

    def _mark_booted(self, worker: Any) -> None:
        """Record this worker as booted; when every live worker is, write the ready file.

        Each worker writes its marker before counting, so the last of several finishing at once sees
        every marker: the file is written at least once (and a concurrent second write is the same).
        """
        assert self._booted_dir is not None and self.options.ready_file
        (self._booted_dir / str(os.getpid())).touch()
        booted = {int(name) for name in os.listdir(self._booted_dir) if name.isdigit()}
        live = {child.pid for child in psutil.Process(worker.ppid).children()}
        target = Path(self.options.ready_file)
        if len(booted & live) < self.options.workers or target.exists():
            return
        document = {"url": listener_url(worker.sockets[0].getsockname()), "pid": worker.ppid}
        write_atomically(target, json.dumps(document))


def listener_url(address: Any) -> str:
    """The URL of a listening socket's address: ``http://host:port`` or ``unix:path``."""
    if isinstance(address, str | bytes):
        return f"unix:{os.fsdecode(address)}"
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _DrainingArbiter(Arbiter):
    """Gunicorn's arbiter; a graceful stop first lets the workers accept what the kernel has queued.

    The drain and Gunicorn's wait for its workers share one deadline, ``graceful_timeout`` from now."""

    def stop(self, graceful: bool = True) -> None:
        if not graceful:
            super().stop(graceful)
            return
        grace = self.cfg.graceful_timeout
        deadline = time.monotonic() + grace
        for listener in self.LISTENERS:
            sock = getattr(listener, "sock", None)
            if sock is not None:
                drain_listener(sock, max(0.0, deadline - time.monotonic()))
        # Gunicorn reads graceful_timeout for its own wait: give it what is left, in whole seconds (its
        # setting is an integer) and never 0, which would SIGKILL the workers and their requests at once.
        self.cfg.set("graceful_timeout", max(1, math.ceil(deadline - time.monotonic())))
        try:
            super().stop(graceful)
        finally:
            self.cfg.set("graceful_timeout", grace)


def _use_gunicorn_logging(gunicorn_log: Any, fmt: str = "text") -> None:
    if fmt == "json":  # Gunicorn's own lines too: one format per stream
        for handler in gunicorn_log.error_log.handlers:
            handler.setFormatter(logs.formatter(fmt))
    # Handler errors (with their tracebacks) go where Gunicorn's error log goes, at its level.
    logger = logging.getLogger("modelserve.gateway")
    logger.handlers = list(gunicorn_log.error_log.handlers)
    logger.setLevel(gunicorn_log.error_log.level)
    logger.propagate = False
