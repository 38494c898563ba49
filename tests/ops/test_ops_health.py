"""Liveness and readiness: ``/healthz`` and ``/readyz`` on the REST port next to V2's, reflecting the
manager's state, and turning not-ready first when shutdown begins."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import requests

from modelserve.config.options import ServerOptions
from modelserve.server import ModelServer


def test_ready_when_every_model_has_an_available_version(start_server: Any, tiny_repo: Path) -> None:
    server = start_server("--model_name=tiny", f"--model_base_path={tiny_repo}")
    live = requests.get(f"{server.url}/healthz", timeout=10)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_not_ready_names_the_model_without_a_version(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'later' base_path: '{empty}' }}\n"
        "}\n"
    )
    server = start_server(f"--model_config_file={config}")
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert set(ready.json()["not_ready"]) == {"later"}
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 400  # Triton's answer


def test_readiness_turns_off_first_when_shutdown_begins(tiny_repo: Path) -> None:
    """In process: after ``start_draining`` every readiness view says no, while liveness still says yes."""

    async def scenario() -> None:
        server = ModelServer(
            ServerOptions(model_name="tiny", model_base_path=str(tiny_repo), port=0, rest_api_port=0)
        )
        await server.startup()
        try:
            from modelserve.frontends.rest.handler import RestHandler

            handler = RestHandler(server.service, health=server.health)
            assert handler.handle("GET", "/readyz", b"")[0] == 200  # type: ignore[index]
            server.health.start_draining()
            not_ready = handler.handle("GET", "/readyz", b"")
            assert not_ready[:2] == (503, b'{"status":"not ready","not_ready":{"server":"shutting down"}}')  # type: ignore[index]
            assert handler.handle("GET", "/v2/health/ready", b"")[0] == 400  # type: ignore[index]
            assert handler.handle("GET", "/healthz", b"")[0] == 200  # type: ignore[index]
        finally:
            await server.shutdown()

    asyncio.run(scenario())
