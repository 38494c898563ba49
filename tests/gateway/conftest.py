"""Fixtures for the gateway tests: real model servers (from tests/conftest.py) and real gateways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import DIGITS_HANDLER, GatewayProcess, Reference, write_handler


def _gateway_factory(root: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(*args: str) -> GatewayProcess:
        workdir = root / f"gateway{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(list(args), workdir)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        code = gateway.stop()
        assert code == 0, f"gateway exited with {code}:\n{gateway.log()}"


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: ``start_gateway(HANDLER, *flags)``; every gateway is stopped and must exit 0."""
    yield from _gateway_factory(tmp_path)


@pytest.fixture(scope="session")
def digits_handler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_handler(tmp_path_factory.mktemp("handlers"), DIGITS_HANDLER, "digits_handler.py")


@pytest.fixture(scope="session")
def reference(digits_repo: Path) -> Reference:
    return Reference(digits_repo)


@pytest.fixture(scope="module")
def digits_server(start_module_server: Any, digits_repo: Path) -> Any:
    """One model server serving ``digits``, shared by the tests of a module (they only read)."""
    return start_module_server("--model_name=digits", f"--model_base_path={digits_repo}")
