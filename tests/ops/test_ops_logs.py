"""Structured logs: with ``--log_format=json`` every line is a JSON object, and a version's load, a
config reload and a shutdown each leave one line per lifecycle event with its fields."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from modelserve import logs


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_log_lines_carry_the_lifecycle_of_a_load_and_a_shutdown(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "tiny"
    shutil.copytree(tiny_repo / "1", base / "1")
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ config {{ name: 'tiny' base_path: '{base}' }} }}\n")
    server = start_server(f"--model_config_file={config}", "--log_format=json", "--access_log")
    body = {"instances": np.zeros((1, 64)).tolist()}
    assert requests.post(f"{server.url}/v1/models/tiny:predict", json=body, timeout=10).status_code == 200
    assert server.stop() == 0
    lines = json_lines(server.log())  # every line parses: nothing but JSON on the stream
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    events = [line for line in lines if "event" in line]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for line in events:
        by_name.setdefault(line["event"], []).append(line)
    loading = by_name["version_loading"][0]
    assert (loading["model"], loading["version"], loading["state"]) == ("tiny", 1, "LOADING")
    available = by_name["version_available"][0]
    assert available["state"] == "AVAILABLE" and available["duration_ms"] > 0
    unloaded = {line["version"] for line in by_name["version_unloaded"]}
    assert 1 in unloaded and all(line["state"] == "END" for line in by_name["version_unloaded"])
    assert [e["event"] for e in events if e["event"].startswith("shutdown_")] == [
        "shutdown_start", "shutdown_drained", "shutdown_done",
    ]  # fmt: skip
    access = by_name["request"][0]
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/models/tiny:predict", 200)
    assert access["bytes"] > 0 and access["duration_ms"] >= 0


def test_config_reload_logs_start_and_result(start_server: Any, tiny_repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ config {{ name: 'tiny' base_path: '{tiny_repo}' }} }}\n")
    server = start_server(
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1", "--log_format=json"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    config.write_text(
        f"model_config_list {{ config {{ name: 'tiny' base_path: '{tiny_repo}' }} "
        f"config {{ name: 'later' base_path: '{empty}' }} }}\n"
    )
    reloads: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(reloads) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        reloads = [
            line for line in json_lines(server.log()) if line.get("event", "").startswith("config_reload")
        ]
    start, result = reloads[:2]
    assert (start["event"], start["models"]) == ("config_reload_start", "tiny,later")
    assert result["event"] in ("config_reload_done", "config_reload_failed")
    assert result["duration_ms"] >= 0


def test_text_format_appends_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "text")
    try:
        logs.event(
            logging.getLogger("modelserve.lifecycle"), "version_failed", model="m", version=3, error="no file"
        )
        line = capsys.readouterr().err.strip()
        assert line.endswith('modelserve.lifecycle: version_failed model=m version=3 error="no file"')
        logs.configure("info", "json")
        logs.event(logging.getLogger("modelserve.lifecycle"), "version_failed", model="m", version=3)
        document = json.loads(capsys.readouterr().err)
        assert (document["event"], document["model"], document["version"]) == ("version_failed", "m", 3)
    finally:
        logging.getLogger().handlers.clear()
