"""The version collector: state, failure and memory per version, read from the manager at scrape time."""

from __future__ import annotations

from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.errors import Code
from modelserve.metrics import ServerMetrics


def test_versions_are_exported_at_scrape_time() -> None:
    statuses = [
        VersionStatus("m", 2, VersionState.END, Code.RESOURCE_EXHAUSTED, "over the memory budget"),
        VersionStatus("m", 1, VersionState.AVAILABLE, memory_bytes=4096),
    ]
    metrics = ServerMetrics()
    metrics.watch_versions(lambda: list(statuses), budget_bytes=10_000)
    text = metrics.render().decode()
    assert 'modelserve_model_version_state{model="m",state="AVAILABLE",version="1"} 1.0' in text
    assert 'modelserve_model_version_state{model="m",state="END",version="2"} 1.0' in text
    assert 'modelserve_model_version_failed{model="m",version="2"} 1.0' in text
    assert 'modelserve_model_memory_bytes{model="m",version="1"} 4096.0' in text
    assert "modelserve_model_memory_used_bytes 4096.0" in text
    assert "modelserve_memory_budget_bytes 10000.0" in text
    statuses.pop()  # version 1 unloaded and forgotten: its series go with it
    assert 'version="1"' not in metrics.render().decode()
