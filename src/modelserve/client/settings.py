"""One frozen configuration per client: where the server is, which protocol, and the connection limits.

The URL's scheme picks the transport (``http``/``https``: REST; ``grpc``/``grpcs``: gRPC) and ``protocol``
the API spoken over it (``tfserving`` or ``v2``); `make_api` pairs them. Validated once, at construction,
with errors that name the option and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from modelserve.client.protocol import Api

Transport = Literal["rest", "grpc"]
Protocol = Literal["tfserving", "v2"]

_SCHEMES: dict[str, tuple[Transport, bool]] = {
    "http": ("rest", False),
    "https": ("rest", True),
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a client was configured with; shared by `Client` and `AsyncClient`."""

    transport: Transport
    target: str  # the base URL (REST) or host:port (gRPC)
    secure: bool  # https / grpcs (TLS with the system's root certificates)
    protocol: Protocol = "tfserving"
    timeout: float | None = None  # default per-call timeout; None: the server's own deadline applies
    connect_timeout: float = 10.0  # REST: time to open a connection
    retries: int = 0  # extra attempts for idempotent calls on UNAVAILABLE
    binary: bool = True  # V2 REST: binary tensor data extension (else JSON ``data``)
    max_connections: int = 100  # REST pool size; gRPC multiplexes every call on one connection
    max_keepalive_connections: int | None = None  # idle REST connections kept (None: max_connections)
    keepalive_expiry: float | None = 5.0  # seconds an idle REST connection is kept
    headers: tuple[tuple[str, str], ...] = ()  # sent with every call (HTTP headers / gRPC metadata)
    grpc_options: tuple[tuple[str, Any], ...] = ()  # extra gRPC channel arguments

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={(redact(value) if name == 'target' else value)!r}"
            for name, value in ((name, getattr(self, name)) for name in self.__dataclass_fields__)
        )
        return f"Settings({fields})"

    @classmethod
    def create(
        cls,
        url: str,
        *,
        protocol: str = "tfserving",
        headers: Mapping[str, str] | None = None,
        grpc_options: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        **options: Any,
    ) -> Settings:
        """Parse ``url`` and check every option; ValueError names the one that is wrong."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES or not parts.hostname:
            raise ValueError(
                f"url {url!r}: expected http://host:port or https://... (REST), grpc://host:port or "
                "grpcs://... (gRPC)"
            )
        transport, secure = _SCHEMES[scheme]
        if transport == "grpc":
            if parts.path not in ("", "/") or parts.query:
                raise ValueError(f"url {url!r}: a gRPC url is only grpc://host:port")
            target = parts.netloc if parts.port else f"{parts.netloc}:{443 if secure else 8500}"
        else:
            target = url.rstrip("/")
        if protocol not in ("tfserving", "v2"):
            raise ValueError(f"protocol {protocol!r}: expected 'tfserving' or 'v2'")
        options_items = grpc_options.items() if isinstance(grpc_options, Mapping) else grpc_options or ()
        settings = cls(
            transport,
            target,
            secure,
            protocol,  # type: ignore[arg-type]
            headers=tuple((headers or {}).items()),
            grpc_options=tuple(options_items),
            **options,
        )
        settings._check()
        return settings

    def _check(self) -> None:
        for name in ("timeout", "keepalive_expiry"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value!r}: must be positive or None")
        if self.connect_timeout <= 0:
            raise ValueError(f"connect_timeout={self.connect_timeout!r}: must be positive")
        if self.retries < 0:
            raise ValueError(f"retries={self.retries!r}: must be 0 or more")
        if self.max_connections < 1:
            raise ValueError(f"max_connections={self.max_connections!r}: must be 1 or more")
        if self.max_keepalive_connections is not None and self.max_keepalive_connections < 0:
            raise ValueError(
                f"max_keepalive_connections={self.max_keepalive_connections!r}: must be 0 or more"
            )


def redact(url: str) -> str:
    """``url`` for logs and reprs: a password in it (``http://user:secret@host``) shown as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def make_api(settings: Settings) -> Api:
    """The protocol implementation for a transport and protocol."""
    if settings.transport == "rest":
        if settings.protocol == "v2":
            from modelserve.client.v2_rest import V2Rest

            return V2Rest(binary=settings.binary)
        from modelserve.client.tfserving_rest import TfServingRest

        return TfServingRest()
    if settings.protocol == "v2":
        from modelserve.client.v2_grpc import V2Grpc

        return V2Grpc()
    from modelserve.client.tfserving_grpc import TfServingGrpc

    return TfServingGrpc()
