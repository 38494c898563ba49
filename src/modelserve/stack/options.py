"""StackOptions: the one frozen object ``modelserve stack`` is configured by, validated when built.

Model server flags keep ``tensorflow_model_server``'s spelling (``--model_base_path``, ``--rest_api_port``);
the stack's own flags use dashes, like ``modelserve gateway``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKER_CLASSES = ("sync", "gthread", "gevent", "asyncio")
UPSTREAMS = ("rest", "grpc")
PROTOCOLS = ("tfserving", "v2")
LOG_FORMATS = ("text", "json")
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # modelserve gateway's default --max-body-bytes


class OptionsError(ValueError):
    """A flag value the stack cannot run with; the message names the flag."""


@dataclass(frozen=True, slots=True)
class StackOptions:
    """Everything ``modelserve stack`` starts, and how."""

    handler: str  # the gateway's handler module: a file path or a dotted module name
    # -- model server (modelserve serve)
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    rest_api_port: int = 8501  # 0 (or --grpc_port 0): the model server picks free ports for both
    grpc_port: int = 8500
    serve_args: tuple[str, ...] = ()  # passed to modelserve serve unchanged, after the stack's own flags
    # -- gateway (modelserve gateway)
    host: str = "127.0.0.1"  # where the gateway and nginx listen
    port: int = 8000
    workers: int = 2
    worker_class: str = "sync"
    threads: int = 4
    upstream: str = "rest"  # how the gateway calls the model server
    protocol: str = "tfserving"
    timeout: float = 30.0  # the gateway's request timeout; nginx waits 5 s more
    gateway_args: tuple[str, ...] = ()  # passed to modelserve gateway unchanged
    # -- nginx (optional)
    nginx: bool = False
    nginx_port: int = 8080  # 0: a free port, picked at startup
    nginx_binary: str = "nginx"
    nginx_workers: str = "1"
    # -- the stack itself
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # the gateway and nginx refuse larger request bodies
    graceful_timeout: float = 30.0  # each child gets this long to drain before SIGKILL
    startup_timeout: float = 300.0  # each child gets this long to become ready
    ready_file: str = ""
    log_dir: str = ""  # default: a new temporary folder (kept after exit, printed)
    log_format: str = "text"  # the children's log lines: text or json

    def __post_init__(self) -> None:
        if bool(self.model_base_path) == bool(self.model_config_file):
            raise OptionsError("give either --model_base_path (with --model_name) or --model_config_file")
        for name in ("rest_api_port", "grpc_port", "port", "nginx_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise OptionsError(f"--{_flag(name)} must be between 0 and 65535, got {value}")
        fixed = [p for p in (self.rest_api_port, self.grpc_port, self.port) if p]
        if self.nginx and self.nginx_port:
            fixed.append(self.nginx_port)
        if len(set(fixed)) != len(fixed):
            raise OptionsError(f"the stack's ports must differ, got {sorted(fixed)}")
        for name, allowed in (
            ("worker_class", WORKER_CLASSES),
            ("upstream", UPSTREAMS),
            ("protocol", PROTOCOLS),
            ("log_format", LOG_FORMATS),
        ):
            if getattr(self, name) not in allowed:
                raise OptionsError(f"--{_flag(name)} must be one of {', '.join(allowed)}")
        for name in ("workers", "threads", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise OptionsError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout", "graceful_timeout", "startup_timeout"):
            if getattr(self, name) <= 0:
                raise OptionsError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        if self.nginx_workers != "auto" and not (
            self.nginx_workers.isdigit() and int(self.nginx_workers) > 0
        ):
            raise OptionsError(
                f"--nginx-workers must be 'auto' or a positive number, got {self.nginx_workers!r}"
            )

    @property
    def ephemeral_model_ports(self) -> bool:
        """Port 0 for the model server: it binds OS-assigned ports (serve's --ephemeral_ports)."""
        return self.rest_api_port == 0 or self.grpc_port == 0


def _flag(name: str) -> str:
    """The flag spelling of a field: the model server's keep underscores, the stack's use dashes."""
    return name if name in ("rest_api_port", "grpc_port", "model_base_path") else name.replace("_", "-")
