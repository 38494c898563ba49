"""The stack: a model server, the gateway in front of it, and optionally nginx in front of that.

``Stack.run`` reads as startup → main loop → shutdown:

- startup, each step waiting until the previous one is ready: the model server (its ready file, then
  every model AVAILABLE), the gateway (its ready file, then ``/healthz``), nginx (``nginx -t``, then
  ``/healthz`` through the proxy); then the stack's own ready file and the summary (URLs, memory table);
- main loop: watch the children until SIGINT/SIGTERM, or until one of them exits (a failure);
- shutdown, front to back so no request is cut off: nginx (SIGQUIT: finish in-flight requests), the
  gateway (SIGTERM: the workers take what the kernel queued, then finish their requests), the model
  server (SIGTERM: not ready, drain within ``--drain_timeout_seconds`` = ``graceful_timeout``, unload),
  each with ``graceful_timeout`` plus a margin before SIGKILL. The children log in ``--log-format``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from modelserve.files import write_atomically
from modelserve.stack import probes
from modelserve.stack.nginx import (
    NginxBuild,
    NginxFiles,
    NginxSettings,
    check_config,
    connect_host,
    find_nginx,
    nginx_command,
    url_host,
    write_config,
)
from modelserve.stack.options import StackOptions
from modelserve.stack.processes import (
    ChildExited,
    ChildProcess,
    StackError,
    StopRequested,
    Supervisor,
)
from modelserve.stack.report import Reporter

_STOP_MARGIN_SECONDS = 10.0  # beyond a child's own drain timeout, before SIGKILL


@dataclass
class Endpoints:
    """Where the stack's parts answer, and their pids: what the ready file holds."""

    model_server_url: str = ""
    model_server_grpc: str | None = None
    gateway_url: str = ""
    nginx_url: str | None = None
    log_dir: str = ""
    pids: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The front door: nginx when it runs, else the gateway."""
        return self.nginx_url or self.gateway_url


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (nginx cannot report a port the OS picked for it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """One run of ``modelserve stack``: starts, watches and stops the children."""

    def __init__(self, options: StackOptions, reporter: Reporter) -> None:
        self.options = options
        self.reporter = reporter
        self.supervisor = Supervisor()
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="modelserve-stack-run-"))
        # Traversable by nginx's workers, which run as another user when the stack runs as root (they buffer
        # large bodies under it); listing stays private.
        self.runtime_dir.chmod(0o711)
        self.log_dir = Path(options.log_dir or tempfile.mkdtemp(prefix="modelserve-stack-logs-")).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.endpoints = Endpoints(log_dir=str(self.log_dir))
        self._roles: dict[str, int] = {}  # role -> pid, for the memory table
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self.supervisor.request_stop()

    def run(self) -> int:
        """Start, serve until a stop request or a child's death, stop; 0 after a requested stop."""
        self.reporter.info(f"logs of every process: {self.log_dir}")
        try:
            self.startup()
            exited = self.supervisor.watch()
            if exited is not None:
                raise ChildExited(exited, "unexpectedly")
            return 0
        except StopRequested:
            return 0
        except StackError as exc:
            self.reporter.error(exc.message)
            return 1
        finally:
            self.shutdown()

    # -- startup

    def startup(self) -> None:
        nginx = find_nginx(self.options.nginx_binary) if self.options.nginx else None  # fail fast
        self._start_model_server()
        self._start_gateway()
        if nginx is not None:
            self._start_nginx(nginx)
        self.reporter.summary(self.endpoints, self._roles)
        self._write_ready_file()  # last: whoever waits on it also finds the summary printed

    def _start_model_server(self) -> None:
        options = self.options
        ready = self.runtime_dir / "model-server.ready.json"
        argv = [
            sys.executable, "-m", "modelserve", "serve",
            "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1",
            # serve's port 0 turns that API off; --ephemeral_ports (below) binds free ports instead.
            f"--rest_api_port={options.rest_api_port or 8501}", f"--port={options.grpc_port or 8500}",
            f"--ready_file={ready}", f"--drain_timeout_seconds={options.graceful_timeout:g}",
            f"--log_format={options.log_format}",
        ]  # fmt: skip
        if options.ephemeral_model_ports:
            argv.append("--ephemeral_ports")
        if options.model_config_file:
            argv.append(f"--model_config_file={options.model_config_file}")
        else:
            argv += [f"--model_name={options.model_name}", f"--model_base_path={options.model_base_path}"]
        child = ChildProcess(
            "model server",
            [*argv, *options.serve_args],
            self.log_dir / "model-server.log",
            stop_timeout=options.graceful_timeout + _STOP_MARGIN_SECONDS,
        )
        self.reporter.info("starting the model server ...")
        self.supervisor.start(child, self._env)
        state = self.supervisor.wait_until(
            "the model server's ready file", lambda: probes.ready_file(ready), options.startup_timeout
        )
        if not state.get("rest_port"):
            raise StackError("the model server runs without REST (--rest_api_port=0?): the stack needs it")
        url = f"http://127.0.0.1:{state['rest_port']}"
        self.endpoints.model_server_url = url
        self.endpoints.model_server_grpc = (
            f"127.0.0.1:{state['grpc_port']}" if state.get("grpc_port") else None
        )
        self.endpoints.pids["model_server"] = child.pid
        self._roles["model server"] = child.pid
        names = (
            [options.model_name]
            if options.model_base_path
            else self.supervisor.wait_until("the model list", lambda: probes.served_models(url), 30.0)
        )
        self.supervisor.wait_until(
            f"models {', '.join(names)} AVAILABLE",
            lambda: probes.models_available(url, names),
            options.startup_timeout,
        )
        self.reporter.info(f"model server ready: {url} (models: {', '.join(names) or 'none'})")

    def _start_gateway(self) -> None:
        options = self.options
        rest = self.endpoints.model_server_url
        upstream = ["--model-server", rest]
        if options.upstream == "grpc":
            if self.endpoints.model_server_grpc is None:
                raise StackError("--upstream=grpc but the model server runs without gRPC")
            # REST too: the gateway's /stats reads the model server's memory there.
            upstream = [
                "--model-server",
                f"grpc://{self.endpoints.model_server_grpc}",
                "--model-server-rest",
                rest,
            ]
        ready = self.runtime_dir / "gateway.ready.json"
        # Behind nginx the gateway listens on loopback only: clients cannot bypass nginx's buffering and
        # limits to reach the workers directly.
        gateway_host = "127.0.0.1" if options.nginx else options.host
        argv = [
            sys.executable, "-m", "modelserve.gateway", options.handler,
            "--bind", f"{url_host(gateway_host)}:{options.port}",
            "--workers", str(options.workers), "--worker-class", options.worker_class,
            "--threads", str(options.threads),
            *upstream, "--protocol", options.protocol, "--max-body-bytes", str(options.max_body_bytes),
            "--timeout", f"{options.timeout:g}", "--graceful-timeout", f"{options.graceful_timeout:g}",
            "--ready-file", str(ready), "--log-format", options.log_format,
        ]  # fmt: skip
        child = ChildProcess(
            "gateway",
            [*argv, *options.gateway_args],
            self.log_dir / "gateway.log",
            stop_timeout=options.graceful_timeout + _STOP_MARGIN_SECONDS,
        )
        self.reporter.info(f"starting the gateway ({options.workers} {options.worker_class} workers) ...")
        self.supervisor.start(child, self._env)
        state = self.supervisor.wait_until(
            "the gateway's ready file", lambda: probes.ready_file(ready), options.startup_timeout
        )
        url = str(state["url"]).rstrip("/")
        self.supervisor.wait_until("the gateway's /healthz", lambda: probes.http_ok(f"{url}/healthz"), 30.0)
        self.endpoints.gateway_url = url
        # The gateway runs Gunicorn's master in its own process: the ready file's pid is the child's.
        self.endpoints.pids["gateway"] = child.pid
        self._roles["gateway"] = child.pid
        if probes.http_ok(f"{url}/readyz") is None:
            self.reporter.warning(
                f"the gateway's {url}/readyz does not answer 200: is the handler's MODEL served? "
                f"(models are named with --model_name or in --model_config_file)"
            )
        self.reporter.info(f"gateway ready: {url}")

    def _start_nginx(self, build: NginxBuild) -> None:
        options = self.options
        gateway = self.endpoints.gateway_url.removeprefix("http://")
        gateway_host, _, gateway_port = gateway.rpartition(":")
        settings = NginxSettings(
            listen_host=options.host,
            listen_port=options.nginx_port or free_port(options.host),
            gateway_host=gateway_host.strip("[]"),
            gateway_port=int(gateway_port),
            workers=options.nginx_workers,
            max_body_bytes=options.max_body_bytes,
            timeout_seconds=options.timeout,
            shutdown_timeout_seconds=options.graceful_timeout,
        )
        files = NginxFiles(runtime_dir=self.runtime_dir / "nginx", log_dir=self.log_dir)
        write_config(settings, files, build)
        check_config(build, files)
        child = ChildProcess(
            "nginx",
            nginx_command(build, files),
            files.error_log,
            stop_signal=signal.SIGQUIT,  # graceful: finish the requests in flight, then exit
            stop_timeout=options.graceful_timeout + _STOP_MARGIN_SECONDS,
        )
        self.reporter.info(f"starting nginx ({build.binary}, config {files.config}) ...")
        self.supervisor.start(child, self._env)
        url = f"http://{url_host(connect_host(options.host))}:{settings.listen_port}"
        self.supervisor.wait_until("nginx /healthz", lambda: probes.http_ok(f"{url}/healthz"), 30.0)
        self.endpoints.nginx_url = url
        self.endpoints.pids["nginx"] = child.pid
        self._roles["nginx"] = child.pid
        self.reporter.info(f"nginx ready: {url}")

    def _write_ready_file(self) -> None:
        if not self.options.ready_file:
            return
        for role, key in (("gateway", "gateway_workers"), ("nginx", "nginx_workers")):
            if role in self._roles:
                self.endpoints.pids[key] = _children(self._roles[role])
        state = {"url": self.endpoints.url, "pid": os.getpid(), **asdict(self.endpoints)}
        write_atomically(self.options.ready_file, json.dumps(state, indent=1))

    # -- shutdown

    def shutdown(self) -> None:
        """Stop every child, front to back; remove the ready file and the runtime folder. Idempotent."""
        if self.options.ready_file:
            Path(self.options.ready_file).unlink(missing_ok=True)

        def announce(child: ChildProcess) -> None:
            self.reporter.info(f"stopping {child.name} ({child.stop_signal.name}) ...")

        self.supervisor.stop_all(announce)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.reporter.info("stopped")


def _children(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
