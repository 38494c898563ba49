"""The version collector (state, failure and memory per version, read from the manager at scrape time)
and the request counts, exported under our names and TF Serving's."""

from __future__ import annotations

from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.errors import Code
from modelserve.metrics import MAX_REQUEST_SERIES, OTHER_SERIES, UNKNOWN_MODEL, RequestMetrics, ServerMetrics


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


def test_requests_are_exported_under_our_names_and_tf_servings() -> None:
    metrics = ServerMetrics()
    requests: RequestMetrics = metrics.requests
    requests.observe("m", "1", "Predict", "rest", "200", 0.000015)  # 15 µs: TF Serving's second bucket
    requests.observe("m", "2", "Predict", "grpc", "OK", 0.5)
    requests.observe("m", "", "Predict", "rest", "404", 0.0001)
    text = metrics.render().decode()
    assert (
        'modelserve_requests_total{api="Predict",code="200",model="m",protocol="rest",version="1"} 1.0'
        in text
    )
    assert (
        'modelserve_requests_total{api="Predict",code="OK",model="m",protocol="grpc",version="2"} 1.0' in text
    )
    # TF Serving's status is the canonical code, whatever the protocol; its latency is in microseconds.
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2.0' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1.0' in text
    assert "# TYPE :tensorflow:serving:request_count untyped" in text
    rest = 'API="Predict",entrypoint="REST"'
    assert f':tensorflow:serving:request_latency_bucket{{{rest},le="10",model_name="m"}} 0.0' in text
    assert f':tensorflow:serving:request_latency_bucket{{{rest},le="18",model_name="m"}} 1.0' in text
    assert f':tensorflow:serving:request_latency_count{{{rest},model_name="m"}} 2.0' in text
    assert f':tensorflow:serving:request_latency_sum{{{rest},model_name="m"}} 115.0' in text


def test_request_label_sets_are_bounded() -> None:
    """Unknown models share one label; past MAX_REQUEST_SERIES label sets, new ones share another."""
    requests = RequestMetrics(known_models=lambda: [f"m{i}" for i in range(2 * MAX_REQUEST_SERIES)])
    for i in range(100):
        requests.observe(f"made-up-{i}", str(i), "Predict", "rest", "404", 0.001)
    for i in range(2 * MAX_REQUEST_SERIES):
        requests.observe(f"m{i}", "1", "Predict", "rest", "200", 0.001)
    (family,) = [f for f in requests.collect() if f.name == "modelserve_requests"]
    models = [sample.labels["model"] for sample in family.samples]
    assert len(models) == MAX_REQUEST_SERIES + 1
    assert models.count(UNKNOWN_MODEL) == 1 and models.count(OTHER_SERIES) == 1
    counts = {sample.labels["model"]: sample.value for sample in family.samples}
    assert counts[UNKNOWN_MODEL] == 100
    assert counts[OTHER_SERIES] == 2 * MAX_REQUEST_SERIES - (MAX_REQUEST_SERIES - 1)
