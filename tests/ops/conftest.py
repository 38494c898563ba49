"""Fixtures of the operations tests: the gateway harness of tests/gateway, and a slow-to-answer model
server (batching with a long batch timeout: every request waits a known time, no Python model needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

BATCH_WAIT_SECONDS = 0.3


@pytest.fixture
def slow_server_flags(tmp_path: Path, tiny_repo: Path) -> list[str]:
    """Flags of a server whose every request waits BATCH_WAIT_SECONDS in the batch queue."""
    parameters = tmp_path / "batching.config"
    parameters.write_text(
        f"max_batch_size {{ value: 256 }} batch_timeout_micros {{ value: {int(BATCH_WAIT_SECONDS * 1e6)} }} "
        "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 }"
    )
    return [
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--enable_batching",
        f"--batching_parameters_file={parameters}",
    ]  # fmt: skip


@pytest.fixture
def monitoring_flag(tmp_path: Path) -> str:
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: true }")
    return f"--monitoring_config_file={config}"
