"""The model config file watcher: applies changed, valid files once; keeps the running config otherwise."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from modelserve.config.model_config import ServingConfig
from modelserve.config.text_files import parse_model_server_config
from modelserve.config.watcher import ConfigFileWatcher
from modelserve.errors import FailedPrecondition

ONE = "model_config_list { config { name: 'a' base_path: '/m/a' } }"
TWO = "model_config_list { config { name: 'a' base_path: '/m/a' } config { name: 'b' base_path: '/m/b' } }"


def parse(text: str, path: Path) -> ServingConfig:
    return parse_model_server_config(text, path)


def test_applies_changes_once_and_ignores_bad_edits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "models.config"
    path.write_text(ONE)
    applied: list[list[str]] = []

    async def apply(config: ServingConfig) -> None:
        applied.append([m.name for m in config.models])

    async def scenario() -> None:
        watcher = ConfigFileWatcher(path, 0.01, parse, apply, ONE)
        assert not await watcher.check_once()  # unchanged
        path.write_text(TWO)
        assert await watcher.check_once()
        assert not await watcher.check_once()  # applied once only
        path.write_text("model_config_list { config { name: ")
        with caplog.at_level(logging.ERROR):
            assert not await watcher.check_once()
            assert not await watcher.check_once()
        path.write_text(ONE)
        assert await watcher.check_once()
        path.unlink()
        assert not await watcher.check_once()

    asyncio.run(scenario())
    assert applied == [["a", "b"], ["a"]]
    invalid = [r for r in caplog.records if "is invalid, keeping the current config" in r.getMessage()]
    assert len(invalid) == 1, "a bad edit is reported once, not on every poll"


def test_a_refused_config_is_logged_and_the_watcher_keeps_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "models.config"
    path.write_text(ONE)

    async def apply(config: ServingConfig) -> None:
        raise FailedPrecondition("Request to assign label to version 9 of model a")

    async def scenario() -> None:
        watcher = ConfigFileWatcher(path, 0.01, parse, apply, "")
        watcher.start()
        await asyncio.sleep(0.1)
        await watcher.stop()

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert any("applied with errors: Request to assign label" in r.getMessage() for r in caplog.records)
