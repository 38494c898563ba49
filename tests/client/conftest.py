"""One real server for the client tests, and every client flavour over it.

The server (module-scoped) serves ``tiny`` (the shared tiny_repo), ``versioned`` (two tiny MLPs with
different weights as versions 1 and 2, labels ``stable``/``canary``) and ``digits`` (two outputs of two
dtypes). The ``client`` fixture runs each test over REST and gRPC, TF Serving and V2, sync and asyncio:
the asyncio client is driven through a small facade so one test body covers all eight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelserve.client import AsyncClient, Client

TRANSPORTS = ["rest", "grpc"]
PROTOCOLS = ["tfserving", "v2"]
COMBINATIONS = [(t, p) for t in TRANSPORTS for p in PROTOCOLS]


@pytest.fixture(scope="session")
def versioned_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelserve.demo.models import write_tiny_mlp

    base = tmp_path_factory.mktemp("models") / "versioned"
    write_tiny_mlp(base, version=1, seed=1)
    write_tiny_mlp(base, version=2, seed=2)
    return base


@pytest.fixture(scope="module")
def server(
    start_module_server: Any,
    tiny_repo: Path,
    versioned_repo: Path,
    digits_repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    config = tmp_path_factory.mktemp("client_config") / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'versioned' base_path: '{versioned_repo}'\n"
        "    model_version_policy { all {} }\n"
        "    version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } }\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' }}\n"
        "}\n"
    )
    return start_module_server(f"--model_config_file={config}")


def url(server: Any, transport: str) -> str:
    return server.url if transport == "rest" else f"grpc://{server.grpc_target}"


@pytest.fixture(scope="module")
def server_url(server: Any) -> Callable[[str], str]:
    """``server_url("rest")`` / ``server_url("grpc")``: the client URL of the module's server."""
    return lambda transport: url(server, transport)


class Reference:
    """The models run in-process by ONNX Runtime: what every client must return."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self._repos = repos
        self._sessions: dict[tuple[str, int], ort.InferenceSession] = {}

    def __call__(self, model: str, feeds: dict[str, np.ndarray], version: int = 1) -> dict[str, np.ndarray]:
        key = (model, version)
        if key not in self._sessions:
            path = self._repos[model] / str(version) / "model.onnx"
            self._sessions[key] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session = self._sessions[key]
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture(scope="session")
def reference(tiny_repo: Path, versioned_repo: Path, digits_repo: Path) -> Reference:
    return Reference({"tiny": tiny_repo, "versioned": versioned_repo, "digits": digits_repo})


class AsyncFacade:
    """An AsyncClient called like a Client: each call runs to completion on the facade's own loop."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.client.close())
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make_client(url, **options)``: a Client, or a facaded AsyncClient; all closed after the test."""
    made: list[Any] = []

    def make(url: str, **options: Any) -> Any:
        client = (
            Client(url, **options) if request.param == "sync" else AsyncFacade(AsyncClient(url, **options))
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(
    scope="module",
    params=[(t, p, mode) for t, p in COMBINATIONS for mode in ("sync", "async")],
    ids=lambda param: "-".join(param),
)
def client(request: pytest.FixtureRequest, server: Any) -> Iterator[Any]:
    """A Client or (facaded) AsyncClient for one transport and protocol, shared by the module's tests."""
    transport, protocol, mode = request.param
    if mode == "sync":
        made: Any = Client(url(server, transport), protocol=protocol)
    else:
        made = AsyncFacade(AsyncClient(url(server, transport), protocol=protocol))
    made.transport, made.protocol = transport, protocol
    yield made
    made.close()
