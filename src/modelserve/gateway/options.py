"""GatewayOptions: the one frozen object that ``modelserve gateway`` is configured by.

Built from the command line in the Gunicorn master and inherited by every worker through ``fork``, so a
worker reads its settings without parsing anything. Validated once, at construction: a ValueError names
the option and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

# --worker-class -> Gunicorn's worker_class. The asyncio worker is uvicorn's, running the ASGI app.
WORKER_CLASSES: dict[str, str] = {
    "sync": "sync",
    "gthread": "gthread",
    "gevent": "gevent",
    "asyncio": "uvicorn_worker.UvicornWorker",
}

# What a worker class needs beyond Gunicorn, with the one-line install hint shown when it is missing.
WORKER_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "gevent": ("gevent",),
    "asyncio": ("uvicorn", "uvicorn_worker"),
}
INSTALL_HINT = "pip install 'modelserve[gateway]'"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """Every setting of the gateway; the defaults are the CLI's."""

    handler: str  # a handler file path or dotted module name
    bind: str = "127.0.0.1:8000"  # host:port (port 0: the OS picks one; see ready_file) or unix:PATH
    workers: int = 2
    worker_class: str = "sync"  # a key of WORKER_CLASSES
    threads: int = 4  # gthread only: request threads per worker
    model_server: str = "http://127.0.0.1:8501"  # http:// (REST) or grpc:// (gRPC)
    model_server_rest: str | None = None  # REST URL for /stats (the model server's memory) under gRPC
    protocol: str = "tfserving"  # or "v2"
    timeout: float = 30.0  # seconds per model-server call
    retries: int = 2  # extra attempts of a call that could not reach the model server
    ready_file: str | None = None  # written (atomically) with {"url", "pid"} once every worker booted
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413
    graceful_timeout: float = 30.0  # seconds a stopping worker may finish its requests
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object per log line

    def __post_init__(self) -> None:
        if self.worker_class not in WORKER_CLASSES:
            raise ValueError(
                f"worker_class={self.worker_class!r}: expected one of {', '.join(WORKER_CLASSES)}"
            )
        for name in ("workers", "threads", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be 1 or more")
        if self.retries < 0:
            raise ValueError(f"retries={self.retries!r}: must be 0 or more")
        for name in ("timeout", "graceful_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be positive")
        if self.protocol not in ("tfserving", "v2"):
            raise ValueError(f"protocol={self.protocol!r}: expected 'tfserving' or 'v2'")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format={self.log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        if _scheme(self.model_server) not in ("http", "https", "grpc", "grpcs"):
            raise ValueError(
                f"model_server={self.model_server!r}: expected http://host:port (REST) or "
                "grpc://host:port (gRPC)"
            )
        if self.model_server_rest is not None and _scheme(self.model_server_rest) not in ("http", "https"):
            raise ValueError(f"model_server_rest={self.model_server_rest!r}: expected http://host:port")
        if not self.bind.startswith("unix:") and ":" not in self.bind:
            raise ValueError(f"bind={self.bind!r}: expected HOST:PORT or unix:PATH")

    @property
    def transport(self) -> str:
        """``rest`` or ``grpc``: how predictions reach the model server."""
        return "grpc" if _scheme(self.model_server).startswith("grpc") else "rest"

    @property
    def status_url(self) -> str | None:
        """The model server's REST base URL, for ``/modelserve/status``; None when only gRPC is known."""
        if self.model_server_rest is not None:
            return self.model_server_rest.rstrip("/")
        return self.model_server.rstrip("/") if self.transport == "rest" else None


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()
