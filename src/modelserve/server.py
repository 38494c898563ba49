"""The composition root: builds config, manager, source, inference service and front-ends; owns start/stop.

``ModelServer.serve`` reads as startup → main loop → shutdown:

- startup: read the model config, start the source, wait until the initial versions settled (TF Serving
  also loads before it opens its ports), bind the ports, write the ready file;
- main loop: serve until SIGTERM/SIGINT;
- shutdown (in this order): report not ready (``/readyz`` 503, gRPC health NOT_SERVING), stop accepting
  connections (those the kernel already queued are still served), let in-flight requests finish within
  ``--drain_timeout_seconds``, stop polling storage, unload every version, exit 0. A second SIGTERM or
  SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelserve import logs
from modelserve.batching.options import BatchingOptions
from modelserve.batching.plan import BatchingPlan
from modelserve.batching.servable import BatchingServable
from modelserve.config.model_config import ModelConfig, ServingConfig
from modelserve.config.options import ServerOptions
from modelserve.config.text_files import (
    BatchingParameters,
    MonitoringConfig,
    parse_model_server_config,
    read_batching_parameters,
    read_monitoring_config,
    read_text_file,
)
from modelserve.config.watcher import ConfigFileWatcher
from modelserve.core.inference import InferenceService, InferenceSettings
from modelserve.core.manager import LoadFunction, ModelManager
from modelserve.core.memory_guard import MemoryGuard, format_bytes, parse_memory_size
from modelserve.core.servable import RuntimeSettings, Servable
from modelserve.core.source import FileSystemSource
from modelserve.core.version_state import VersionState
from modelserve.cpus import available_cpus
from modelserve.errors import Code, FailedPrecondition, InvalidArgument, ServingError
from modelserve.files import write_atomically
from modelserve.frontends.health import Health
from modelserve.frontends.rest.handler import RestHandler, RestSettings
from modelserve.frontends.rest.http_server import HttpServer
from modelserve.metrics import ServerMetrics
from modelserve.runtimes import detect_platform, get_runtime
from modelserve.storage.repository import StorageRepositories, held_by
from modelserve.warmup import WarmupOptions, warm_up

if TYPE_CHECKING:
    from modelserve.frontends.grpc.server import GrpcServer

log = logging.getLogger("modelserve.server")
lifecycle = logging.getLogger("modelserve.lifecycle")  # one structured line per lifecycle event

_RELOAD_WAIT_SECONDS = 120.0  # a reload waits this long for copies in progress and loads

# Flags we accept for compatibility but do not act on yet: flag -> what happens instead.
_NOT_IMPLEMENTED: dict[str, str] = {
    "ssl_config_file": "TLS is not implemented; serving plain text",
    "use_alts_credentials": "ALTS is not implemented; serving plain text",
    "tensorflow_session_config_file": "session config files are not supported",
    "platform_config_file": "platform config files are not supported",
    "per_process_gpu_memory_fraction": "GPU memory fraction is not supported yet",
    "rest_api_num_threads": "REST runs on one event loop; model calls use their own thread pool",
    "grpc_max_threads": "gRPC runs on the event loop; model calls use their own thread pool",
    "xla_cpu_compilation_enabled": "XLA settings are left to TensorFlow's defaults",
    "enable_signature_method_name_check": "method names are checked for classify/regress only",
}


class StoppedWhileStarting(Exception):
    """SIGTERM/SIGINT came before the server was ready: it shuts down without opening its ports."""


@dataclass(frozen=True, slots=True)
class BoundPorts:
    rest_port: int | None
    grpc_port: int | None


def serving_config_from_options(options: ServerOptions) -> ServingConfig:
    """The models to serve: ``--model_config_file``, or ``--model_name`` + ``--model_base_path``."""
    if options.model_config_file:
        path = Path(options.model_config_file)
        return parse_config_file(read_text_file(path, "model config file"), path)
    if options.model_base_path:
        return ServingConfig(
            models=(ModelConfig(name=options.model_name, base_path=options.model_base_path),)
        )
    raise InvalidArgument(
        "no model to serve: give --model_base_path (with --model_name) or --model_config_file"
    )


def parse_config_file(text: str, path: Path) -> ServingConfig:
    """A model config file's text, with base paths made absolute relative to the file's folder."""
    config = parse_model_server_config(text, path)
    return ServingConfig(models=tuple(_absolute(m, path.parent) for m in config.models))


def _absolute(model: ModelConfig, relative_to: Path) -> ModelConfig:
    path = Path(model.base_path)
    if path.is_absolute() or "://" in model.base_path:
        return model
    return replace(model, base_path=str((relative_to / path).resolve()))


def runtime_settings_from_options(options: ServerOptions) -> RuntimeSettings:
    """TF Serving's parallelism flags apply to every runtime.

    Default: one intra-op thread per model call, and as many concurrent calls as cores (see
    ``ModelServer``), so the CPU is never oversubscribed: on a loaded server, more threads per call only
    fight the HTTP loop and each other for the same cores. Large models that run one request at a time
    get lower latency with ``--tensorflow_intra_op_parallelism=<cores>``.
    """
    intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    return RuntimeSettings(
        intra_op_threads=intra or 1,
        inter_op_threads=options.tensorflow_inter_op_parallelism,
        saved_model_tags=tuple(t.strip() for t in options.saved_model_tags.split(",") if t.strip()),
    )


def batching_plan_from_options(options: ServerOptions, default_threads: int) -> BatchingPlan:
    """``--enable_batching`` and where its parameters come from (see ``modelserve.batching.plan``)."""
    parameters = (
        read_batching_parameters(options.batching_parameters_file)
        if options.batching_parameters_file
        else BatchingParameters()
    )
    return BatchingPlan(
        enabled=options.enable_batching,
        parameters=parameters,
        per_model_files=options.enable_per_model_batching_parameters,
        default_threads=default_threads,
    )


def make_loader(
    settings: RuntimeSettings,
    batching: BatchingPlan | None = None,
    metrics: ServerMetrics | None = None,
    warmup: WarmupOptions | None = None,
) -> LoadFunction:
    """The manager's load function: pick the runtime from the config or the files, load, warm up (so
    the first request after a swap pays no first-call costs), and put the version behind a batcher when
    batching is on."""
    warmup_options = warmup or WarmupOptions()

    def load(config: ModelConfig, path: Path) -> Servable:
        platform = config.platform or detect_platform(path)
        if platform is None:
            raise FailedPrecondition(
                f"cannot tell which runtime serves {path}: expected saved_model.pb (TensorFlow) or "
                f"model.onnx (ONNX); set model_platform in the model config"
            )
        batching_options = batching.options_for(config, path) if batching is not None else None
        started = time.perf_counter()
        try:
            servable = get_runtime(platform).load(path, settings)
            try:
                # On the bare servable: warm-up calls stay out of the batcher's queue and statistics.
                report = warm_up(servable, path, warmup_options)
            except BaseException:
                servable.close()
                raise
        except BaseException:
            if metrics is not None:
                metrics.loads.version_loaded(
                    config.name, int(path.name), str(path), _since(started), ok=False
                )
            raise
        if metrics is not None:
            metrics.loads.version_loaded(config.name, int(path.name), str(path), _since(started), ok=True)
        log.info("warm-up model=%s version=%s: %s", config.name, path.name, report.describe())
        if batching_options is None:
            return servable
        log.info(
            "batching model=%s version=%s: %s", config.name, path.name, _describe_batching(batching_options)
        )
        observer = metrics.batch_observer(config.name, int(path.name)) if metrics is not None else None
        return BatchingServable(servable, batching_options, f"{config.name}/{path.name}", observer)

    return load


def _since(started: float) -> float:
    return time.perf_counter() - started


def _milliseconds(started: float) -> float:
    return round(_since(started) * 1000, 3)


def _describe_batching(options: BatchingOptions) -> str:
    policy = (
        "adaptive"
        if options.adaptive
        else f"batch_timeout_micros={round((options.timeout_seconds or 0) * 1e6)}"
    )
    return (
        f"{policy} max_batch_size={options.max_batch_size} "
        f"execution_batch_size={options.execution_batch_size} threads={options.threads} "
        f"max_enqueued_rows={options.max_enqueued_rows}"
    )


def _report_ignored_flags(options: ServerOptions) -> None:
    defaults = ServerOptions()
    for field in fields(ServerOptions):
        name = field.name
        if name not in _NOT_IMPLEMENTED:
            continue
        value = getattr(options, name)
        if value != getattr(defaults, name):
            log.warning("flag --%s=%s accepted: %s", name, value, _NOT_IMPLEMENTED[name])
    for flag in options.extra_flags_ignored:
        log.warning("unknown flag %s ignored", flag)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ModelServer:
    """One model server process: every front-end over one manager holding one copy of each version."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.config = serving_config_from_options(options)
        self.runtime_settings = runtime_settings_from_options(options)
        # One model call per core: each uses intra_op_threads cores.
        call_threads = max(1, available_cpus() // self.runtime_settings.intra_op_threads)
        self.batching = batching_plan_from_options(options, call_threads)
        self.monitoring = (
            read_monitoring_config(options.monitoring_config_file)
            if options.monitoring_config_file
            else MonitoringConfig()
        )
        self.metrics = ServerMetrics()
        budget = parse_memory_size(options.memory_budget) if options.memory_budget else None
        self.manager = ModelManager(
            make_loader(
                self.runtime_settings,
                self.batching,
                # Loads and batches are observed only where they can be scraped: no cost otherwise.
                self.metrics if self.monitoring.prometheus_enabled else None,
                WarmupOptions(
                    enabled=options.enable_model_warmup, iterations=options.num_request_iterations_for_warmup
                ),
            ),
            num_load_threads=options.num_load_threads or 2,
            num_unload_threads=options.num_unload_threads or 1,
            memory_guard=MemoryGuard(budget),
            allow_labels_for_unavailable_versions=options.allow_version_labels_for_unavailable_models,
            max_load_retries=options.max_num_load_retries,
            load_retry_interval=options.load_retry_interval_micros / 1e6,
        )
        self.metrics.watch_versions(self.manager.all_statuses, budget, self.manager.model_names)
        # Ready once the startup config's models are available; models added by a reload do not count.
        self.health = Health(self.manager, required=[model.name for model in self.config.models])
        timeout = options.rest_api_timeout_in_ms / 1000 if options.rest_api_timeout_in_ms else None
        self.service = InferenceService(
            self.manager,
            InferenceSettings(
                inline_threshold_seconds=options.inline_inference_threshold_us / 1e6,
                executor_threads=call_threads,
                timeout_seconds=timeout,
            ),
        )
        # Base paths that are URLs (s3://...) are listed remotely and loaded from a local cache.
        self.storage = StorageRepositories(options.storage_cache_dir, held_by(self.manager.all_statuses))
        self.source = FileSystemSource(
            self.config.models,
            self.manager.set_aspired_versions,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            settle_seconds=options.version_settle_seconds,
            open_repository=self.storage.open,
        )
        self._stop = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self._watcher: ConfigFileWatcher | None = None
        self._rest: HttpServer | None = None
        self._grpc: GrpcServer | None = None

    def request_stop(self) -> None:
        """Ask ``serve`` to shut down gracefully (safe to call from a signal handler on the loop)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    async def serve(self) -> None:
        try:
            ports = await self.startup()
        except StoppedWhileStarting:
            log.info("stop requested while starting: shutting down before serving")
            await self.shutdown()
            return
        grpc_addresses = [f"{self.options.grpc_host}:{ports.grpc_port}"] if ports.grpc_port else []
        if self._grpc is not None and self.options.grpc_socket_path:
            grpc_addresses.append(f"unix:{self.options.grpc_socket_path}")
        log.info(
            "ready: REST on %s, gRPC on %s",
            f"{self.options.rest_api_host}:{ports.rest_port}" if ports.rest_port else "off",
            " and ".join(grpc_addresses) or "off",
        )
        await self.serve_until_stopped()

    async def serve_until_stopped(self) -> None:
        """After ``startup``: wait for a stop request, then shut down gracefully."""
        await self._stop.wait()
        await self.shutdown()

    async def startup(self) -> BoundPorts:
        _report_ignored_flags(self.options)
        if self.manager.memory_guard.budget_bytes is not None:
            log.info(
                "memory budget for model versions: %s", format_bytes(self.manager.memory_guard.budget_bytes)
            )
        self.manager.set_models(self.config.models)
        # The first poll downloads the initial versions of URL base paths: off the event loop, so that
        # SIGTERM is handled meanwhile; it stops the source, which abandons the downloads.
        starting = asyncio.ensure_future(asyncio.to_thread(self.source.start))
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            await asyncio.to_thread(self.source.stop)
        await starting
        if self._stop.is_set():
            raise StoppedWhileStarting
        # Cached copies of models dropped from the config while the server was down.
        await asyncio.to_thread(self.storage.sweep_unused, self.config.models)
        # Loads run on loader threads; wait for them without blocking the event loop, or for a stop
        # (the shutdown closes the manager, which releases this wait).
        settling = asyncio.ensure_future(asyncio.to_thread(self.manager.wait_until_settled))
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((settling, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if self._stop.is_set():
            raise StoppedWhileStarting
        for status in self.manager.all_statuses():
            if status.error_message:
                log.error(
                    "model=%s version=%d failed to load: %s",
                    status.model,
                    status.version,
                    status.error_message,
                )
        # At startup every label is installed; one on a version that did not load is reported, and
        # answers NOT_FOUND until that version is available (other models serve regardless).
        for problem in self.manager.apply_routes(self.config.models, enforce=False):
            log.error("%s", problem)
        # Everything allocated so far (frameworks, models) lives for the whole process: move it out of
        # the cyclic collector's reach so full collections stay short and do not stall requests.
        gc.collect()
        gc.freeze()
        rest_port = await self._start_rest() if self.options.rest_api_port else None
        grpc_port = await self._start_grpc() if self.options.port or self.options.grpc_socket_path else None
        ports = BoundPorts(rest_port=rest_port, grpc_port=grpc_port)
        self._start_config_watcher()
        self._write_ready_file(ports)
        return ports

    def _start_config_watcher(self) -> None:
        path, poll = self.options.model_config_file, self.options.model_config_file_poll_wait_seconds
        if not path or poll <= 0:
            return
        self._watcher = ConfigFileWatcher(
            Path(path),
            poll,
            parse_config_file,
            self.reload_config,
            read_text_file(Path(path), "model config file"),
        )
        self._watcher.start()

    async def _start_rest(self) -> int:
        # --rest_api_port=0 turns REST off (TF Serving); --ephemeral_ports asks the OS for a free port.
        port = 0 if self.options.ephemeral_ports else self.options.rest_api_port
        sock = _bind(self.options.rest_api_host, port)
        handler = RestHandler(
            self.service,
            RestSettings(
                max_body_bytes=self.options.max_request_body_bytes,
                timeout_seconds=self.service.settings.timeout_seconds,
                cors=self.options.rest_api_enable_cors_support,
                metrics_path=self.monitoring.prometheus_path if self.monitoring.prometheus_enabled else None,
                access_log=self.options.access_log,
            ),
            metrics=self.metrics,
            health=self.health,
        )
        self._rest = HttpServer(handler, reply_coalescing_seconds=self.options.reply_coalescing_us / 1e6)
        await self._rest.start(sock)
        bound: int = sock.getsockname()[1]
        return bound

    async def _start_grpc(self) -> int | None:
        """TF Serving's gRPC services, V2's, health and reflection on --port and/or --grpc_socket_path."""
        # Imported here: a server with gRPC off never loads grpc.
        from modelserve.frontends.grpc.server import GrpcServer, GrpcSettings
        from modelserve.frontends.grpc.tfserving_servicer import tfserving_registrar
        from modelserve.frontends.grpc.v2_servicer import v2_registrar

        tcp_port: int | None = None
        if self.options.port:
            tcp_port = 0 if self.options.ephemeral_ports else self.options.port
        settings = GrpcSettings(
            host=self.options.grpc_host,
            port=tcp_port,
            socket_path=self.options.grpc_socket_path,
            channel_arguments=self.options.grpc_channel_arguments,
            health_service=self.options.enable_grpc_healthcheck_service,
            reply_coalescing_seconds=self.options.reply_coalescing_us / 1e6,
        )
        # Requests are counted only where they can be scraped (--monitoring_config_file).
        requests = self.metrics.requests if self.monitoring.prometheus_enabled else None
        registrars = [tfserving_registrar(self.reload_config, requests), v2_registrar(requests, self.health)]
        self._grpc = GrpcServer(self.service, registrars, settings, self.health)
        return await self._grpc.start()

    async def reload_config(self, config: ServingConfig) -> None:
        """Serve exactly ``config``'s models (HandleReloadConfigRequest and the config file watcher).

        Like TF Serving's ServerCore::ReloadConfig: versions are loaded first, then labels and splits are
        switched, all at once and only if each points at an AVAILABLE version (a version a route still
        points at stays loaded meanwhile, so no label is ever stranded). The reload runs as the server's
        own task: a caller that gives up (a gRPC deadline) does not leave it half done.
        """
        task = asyncio.get_running_loop().create_task(self._reload(config), name="modelserve-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        await asyncio.shield(task)

    async def _reload(self, config: ServingConfig) -> None:
        started = time.perf_counter()
        models = ",".join(m.name for m in config.models)
        logs.event(lifecycle, "config_reload_start", models=models)
        try:
            await self._apply_config(config)
        except ServingError as exc:
            logs.event(
                lifecycle,
                "config_reload_failed",
                logging.ERROR,
                models=models,
                error=exc.message,
                duration_ms=_milliseconds(started),
            )
            raise
        logs.event(lifecycle, "config_reload_done", models=models, duration_ms=_milliseconds(started))

    async def _apply_config(self, config: ServingConfig) -> None:
        async with self._reloading:
            added = {m.name for m in config.models} - {m.name for m in self.config.models}
            self.config = config
            self.health.configured(model.name for model in config.models)
            self.manager.set_models(config.models)
            await asyncio.to_thread(self.source.update_models, config.models)
            # Versions still being written when the reload came in are part of it: wait (bounded) until
            # they are complete, so "publish version 44, then point canary at it" works.
            await asyncio.to_thread(self.source.wait_until_complete, _RELOAD_WAIT_SECONDS)
            await asyncio.to_thread(self.manager.wait_until_settled, _RELOAD_WAIT_SECONDS)
            if self._grpc is not None:
                await self._grpc.update_health()
            self.manager.apply_routes(config.models, enforce=True)  # FailedPrecondition: routes refused
            missing = self._unavailable_models(config, added)
            if missing:
                # TF Serving's ServerCore::WaitUntilModelsAvailable answers UNKNOWN for new models.
                raise ServingError(
                    "Some models did not become available: {" + ", ".join(missing) + "}", code=Code.UNKNOWN
                )

    def _unavailable_models(self, config: ServingConfig, names: set[str]) -> list[str]:
        """Models among ``names`` with no AVAILABLE version, with the error of their failed loads."""
        problems = []
        for model in config.models:
            if model.name not in names:
                continue
            statuses = [s for s in self.manager.all_statuses() if s.model == model.name]
            if any(s.state is VersionState.AVAILABLE for s in statuses):
                continue
            errors = [f"version {s.version}: {s.error_message}" for s in statuses if s.error_message]
            problems.append(model.name + (f" ({'; '.join(errors)})" if errors else ""))
        return problems

    def _write_ready_file(self, ports: BoundPorts) -> None:
        if not self.options.ready_file:
            return
        state = {"rest_port": ports.rest_port, "grpc_port": ports.grpc_port, "pid": os.getpid()}
        write_atomically(self.options.ready_file, json.dumps(state))  # readers never see half a file

    async def shutdown(self) -> None:
        """Not ready → stop accepting → drain (bounded) → stop sources → unload; see the module docstring."""
        started = time.perf_counter()
        grace = self.options.drain_timeout_seconds
        logs.event(lifecycle, "shutdown_start", drain_timeout_s=grace, in_flight=self._in_flight())
        # 1. Readiness off first: /readyz, /v2/health/ready and gRPC health now say "not ready".
        self.health.start_draining()
        if self._grpc is not None:
            await self._grpc.report_not_serving()
        # No new versions or configs from here on; a reload in flight returns once the manager closes.
        if self._watcher is not None:
            await self._watcher.stop()
        await asyncio.to_thread(self.source.stop)  # abandons a download in progress; never blocks the loop

        # 2. Stop accepting on every front-end at once, then drain each within the grace period.
        draining = []
        if self._rest is not None:
            draining.append(self._rest.shutdown(timeout=grace))
        if self._grpc is not None:
            draining.append(self._grpc.stop(grace))
        await asyncio.gather(*draining)
        logs.event(lifecycle, "shutdown_drained", duration_ms=_milliseconds(started))
        # 3. Unload every version (each waits for the requests still holding it), stop the threads.
        await asyncio.to_thread(self.manager.close)
        self.service.close()
        logs.event(
            lifecycle, "shutdown_done", message="shutdown complete", duration_ms=_milliseconds(started)
        )

    def _in_flight(self) -> int:
        rest = len(self._rest.tasks) if self._rest is not None else 0
        return rest + self.metrics.requests.in_flight["grpc"]


def configure_logging(level: str, fmt: str = "text") -> None:
    logs.configure(level, fmt)


def run_server(options: ServerOptions) -> int:
    """Entry point of ``modelserve serve``: run until SIGTERM/SIGINT, then shut down and return 0.

    A second SIGTERM/SIGINT during the shutdown exits at once (status 128 + signal number).
    """
    configure_logging(options.log_level, options.log_format)
    server = ModelServer(options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_stop_signal, server, sig)
        await server.serve()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return 0


def _on_stop_signal(server: ModelServer, sig: signal.Signals) -> None:
    if server.stop_requested:
        logs.event(lifecycle, "shutdown_forced", logging.WARNING, signal=sig.name)
        logging.shutdown()
        os._exit(128 + sig)
    logs.event(lifecycle, "stop_signal", signal=sig.name)
    server.request_stop()
