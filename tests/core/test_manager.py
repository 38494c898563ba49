"""The manager with an in-memory runtime: loads, failures, unloads that wait, labels, status messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from modelserve.config.model_config import ModelConfig, VersionPolicy
from modelserve.core.manager import ModelManager
from modelserve.core.signature import Signature, TensorSpec
from modelserve.core.source import AspiredVersion
from modelserve.core.version_state import VersionState
from modelserve.errors import Code, InvalidArgument, NotFound

SIGNATURE = Signature(
    name="serving_default",
    inputs={"x": TensorSpec("x", np.dtype(np.float32), (None, 1))},
    outputs={"y": TensorSpec("y", np.dtype(np.float32), (None, 1))},
)


class FakeServable:
    """Multiplies by its version number; records whether it was closed."""

    platform = "fake"

    def __init__(self, version: int) -> None:
        self.version = version
        self.closed = False

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return {"serving_default": SIGNATURE}

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * self.version}

    def memory_bytes(self) -> int:
        return 1000 * self.version

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads FakeServables; versions listed in ``broken`` fail; ``gate`` can hold a load mid-way."""

    def __init__(self, broken: set[int] | None = None) -> None:
        self.broken = broken or set()
        self.loaded: dict[int, FakeServable] = {}
        self.gate: threading.Event | None = None
        self.calls = 0

    def __call__(self, config: ModelConfig, path: Path) -> FakeServable:
        version = int(path.name)
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if version in self.broken:
            raise InvalidArgument(f"corrupt model file in {path}")
        servable = FakeServable(version)
        self.loaded[version] = servable
        return servable


def aspired(*versions: int) -> list[AspiredVersion]:
    return [AspiredVersion(v, Path(f"/models/m/{v}")) for v in versions]


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


CONFIG = ModelConfig(name="m", base_path="/models/m", version_labels={"stable": 1})


@pytest.fixture
def manager(loader: FakeLoader) -> ModelManager:
    manager = ModelManager(loader)
    manager.set_models([CONFIG])
    yield manager
    manager.close()


def states(manager: ModelManager) -> dict[int, VersionState]:
    return {s.version: s.state for s in manager.statuses("m")}


def test_loads_aspired_versions_and_serves_the_latest(manager: ModelManager) -> None:
    manager.set_aspired_versions("m", aspired(1, 2))
    assert manager.wait_until_settled(10)
    assert states(manager) == {1: VersionState.AVAILABLE, 2: VersionState.AVAILABLE}
    assert manager.apply_routes([CONFIG]) == []
    with manager.get_handle("m") as handle:
        assert handle.version == 2
    with manager.get_handle("m", version=1) as handle:
        assert handle.version == 1
    with manager.get_handle("m", label="stable") as handle:
        assert handle.version == 1


def test_not_found_messages_match_tf_serving(manager: ModelManager) -> None:
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    with pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(other\)$"):
        manager.get_handle("other")
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(m, 9\)$"):
        manager.get_handle("m", version=9)
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: canary"):
        manager.get_handle("m", label="canary")
    with pytest.raises(NotFound, match="Could not find any versions of model other"):
        manager.statuses("other")


def test_failed_load_reports_error_and_keeps_the_old_version(
    loader: FakeLoader, manager: ModelManager
) -> None:
    loader.broken = {2}
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    manager.set_aspired_versions("m", aspired(2))  # "latest" moved to a broken version
    manager.wait_until_settled(10)
    (failed,) = manager.statuses("m", version=2)
    assert failed.state is VersionState.END
    assert failed.error_code is Code.INVALID_ARGUMENT
    assert "corrupt model file" in failed.error_message
    with manager.get_handle("m") as handle:  # version 1 keeps serving
        assert handle.version == 1


def test_old_version_unloads_after_new_one_is_available(loader: FakeLoader, manager: ModelManager) -> None:
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    manager.set_aspired_versions("m", aspired(2))
    manager.wait_until_settled(10)
    assert states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.END}
    assert loader.loaded[1].closed and not loader.loaded[2].closed


def test_unload_waits_for_in_flight_requests(loader: FakeLoader, manager: ModelManager) -> None:
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    handle = manager.get_handle("m")
    manager.set_aspired_versions("m", [])  # nothing aspired: unload version 1
    # The unload is blocked by our handle: the version is UNLOADING, and not closed.
    assert not manager.wait_until_settled(0.3)
    assert states(manager)[1] is VersionState.UNLOADING
    assert not loader.loaded[1].closed
    result = handle.servable.predict("serving_default", {"x": np.ones((1, 1), np.float32)}, ["y"])
    assert result["y"][0, 0] == 1.0
    handle.close()
    assert manager.wait_until_settled(10)
    assert states(manager)[1] is VersionState.END
    assert loader.loaded[1].closed


def test_status_transitions_are_observable(loader: FakeLoader, manager: ModelManager) -> None:
    loader.gate = threading.Event()
    manager.set_aspired_versions("m", aspired(1))
    assert states(manager)[1] in (VersionState.START, VersionState.LOADING)
    with pytest.raises(NotFound):  # not available while loading
        manager.get_handle("m")
    loader.gate.set()
    manager.wait_until_settled(10)
    assert states(manager)[1] is VersionState.AVAILABLE


def test_one_broken_model_does_not_stop_the_others() -> None:
    loader = FakeLoader(broken={1})
    manager = ModelManager(loader)
    manager.set_models([ModelConfig(name="bad", base_path="/b"), ModelConfig(name="good", base_path="/g")])
    manager.set_aspired_versions("bad", aspired(1))
    manager.set_aspired_versions("good", [AspiredVersion(2, Path("/g/2"))])
    assert manager.wait_until_settled(10)
    with manager.get_handle("good") as handle:
        assert handle.version == 2
    assert manager.statuses("bad")[0].error_message
    assert not manager.is_ready()
    manager.close()


def test_removed_model_is_unloaded_and_forgotten(loader: FakeLoader, manager: ModelManager) -> None:
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    manager.set_models([])
    manager.wait_until_settled(10)
    assert loader.loaded[1].closed
    assert manager.model_names() == []


def test_close_unloads_everything(loader: FakeLoader) -> None:
    manager = ModelManager(loader)
    manager.set_models([ModelConfig(name="m", base_path="/m", version_policy=VersionPolicy(kind="all"))])
    manager.set_aspired_versions("m", aspired(1, 2))
    manager.wait_until_settled(10)
    manager.close()
    assert all(s.closed for s in loader.loaded.values())


# -- routes: labels and A/B splits ----------------------------------------------------------------------


def split_config(*weights: tuple[int, int], label: str = "") -> ModelConfig:
    from modelserve.config.model_config import TrafficSplit

    return ModelConfig(
        name="m",
        base_path="/models/m",
        version_policy=VersionPolicy(kind="all"),
        traffic_splits={label: TrafficSplit(label=label, weights=weights)},
    )


def test_default_split_spreads_requests_and_falls_back(loader: FakeLoader) -> None:
    manager = ModelManager(loader)
    loader.broken = {3}
    config = split_config((1, 50), (2, 50), (3, 1000))
    manager.set_models([config])
    manager.set_aspired_versions("m", aspired(1, 2, 3))
    manager.wait_until_settled(10)
    assert manager.apply_routes([config], enforce=False) != []  # version 3 failed to load
    seen = set()
    for _ in range(200):
        with manager.get_handle("m") as handle:  # 3 is drawn almost always, and falls back
            seen.add(handle.version)
    assert seen == {1, 2}
    with manager.get_handle("m", routing_key="user-7") as first:
        sticky = first.version
    for _ in range(20):
        with manager.get_handle("m", routing_key="user-7") as handle:
            assert handle.version == sticky
    manager.set_aspired_versions("m", aspired(1))  # 2 leaves the policy but the split pins it
    manager.wait_until_settled(10)
    assert states(manager)[2] is VersionState.AVAILABLE
    manager.set_models([])  # removed: routes go, every version unloads
    manager.wait_until_settled(10)
    with pytest.raises(NotFound, match=r"Latest\(m\)"):
        manager.get_handle("m")
    manager.close()


def test_a_version_a_route_points_at_stays_until_the_route_moves(loader: FakeLoader) -> None:
    manager = ModelManager(loader)
    labelled = ModelConfig(name="m", base_path="/models/m", version_labels={"stable": 1})
    manager.set_models([labelled])
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    manager.apply_routes([labelled])
    manager.set_aspired_versions("m", aspired(2))  # the policy moves on before the label does
    manager.wait_until_settled(10)
    assert states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.AVAILABLE}
    with manager.get_handle("m", label="stable") as handle:
        assert handle.version == 1
    moved = ModelConfig(name="m", base_path="/models/m", version_labels={"stable": 2})
    manager.apply_routes([moved])
    manager.wait_until_settled(10)
    assert states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.END}
    manager.close()


def test_a_queued_unload_that_is_no_longer_wanted_does_not_run(loader: FakeLoader) -> None:
    other = ModelConfig(name="other", base_path="/models/other")
    manager = ModelManager(loader)  # one unloader thread
    manager.set_models([CONFIG, other])
    manager.set_aspired_versions("other", [AspiredVersion(5, Path("/models/other/5"))])
    manager.set_aspired_versions("m", aspired(1))
    assert manager.wait_until_settled(10)
    first = loader.loaded[1]
    blocker = manager.get_handle("other")
    manager.set_models([CONFIG])  # other/5 unloads, and drains the request above: the unloader is busy
    manager.set_aspired_versions("m", aspired(2))  # 2 loads; the unload of 1 is queued behind
    deadline = time.monotonic() + 5
    while states(manager).get(2) is not VersionState.AVAILABLE and time.monotonic() < deadline:
        time.sleep(0.01)
    manager.set_aspired_versions("m", aspired(1))  # rollback: 1 is wanted again while its unload waits
    blocker.close()
    assert manager.wait_until_settled(10)
    assert not first.closed, "the queued unload of version 1 ran although version 1 was wanted again"
    assert states(manager) == {2: VersionState.END, 1: VersionState.AVAILABLE}
    manager.close()


def test_labelled_split_and_status_by_label(loader: FakeLoader) -> None:
    manager = ModelManager(loader)
    config = split_config((1, 1), (2, 3), label="ab")
    manager.set_models([config])
    manager.set_aspired_versions("m", aspired(1, 2))
    manager.wait_until_settled(10)
    manager.apply_routes([config])
    with manager.get_handle("m") as handle:
        assert handle.version == 2  # no default split: the latest
    versions = set()
    for _ in range(100):
        with manager.get_handle("m", label="ab") as handle:
            versions.add(handle.version)
    assert versions == {1, 2}
    assert [s.version for s in manager.statuses("m", label="ab")] == [1, 2]
    manager.close()


def test_reload_refuses_labels_on_unavailable_versions_and_keeps_the_old_ones(manager: ModelManager) -> None:
    from modelserve.errors import FailedPrecondition

    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    manager.apply_routes([CONFIG])
    moved = ModelConfig(name="m", base_path="/models/m", version_labels={"stable": 5})
    with pytest.raises(FailedPrecondition, match="version 5 of model m, which is not currently available"):
        manager.apply_routes([moved])
    with manager.get_handle("m", label="stable") as handle:
        assert handle.version == 1
    assert manager.apply_routes([moved], enforce=False) != []  # startup: installed, reported
    with pytest.raises(NotFound):
        manager.get_handle("m", label="stable")


def test_new_labels_on_unavailable_versions_with_the_flag(loader: FakeLoader) -> None:
    manager = ModelManager(loader, allow_labels_for_unavailable_versions=True)
    manager.set_models([CONFIG])
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    later = ModelConfig(name="m", base_path="/models/m", version_labels={"stable": 1, "canary": 2})
    assert manager.apply_routes([later]) == []
    manager.set_aspired_versions("m", aspired(1, 2))
    manager.wait_until_settled(10)
    with manager.get_handle("m", label="canary") as handle:
        assert handle.version == 2
    manager.close()


# -- retries and the memory guard -------------------------------------------------------------------


def test_failed_version_is_retried_when_its_files_change(loader: FakeLoader, manager: ModelManager) -> None:
    loader.broken = {2}
    manager.set_aspired_versions("m", aspired(1))
    manager.wait_until_settled(10)
    manager.set_aspired_versions("m", [AspiredVersion(2, Path("/models/m/2"), "digest-a")])
    manager.wait_until_settled(10)
    assert states(manager)[2] is VersionState.END
    manager.set_aspired_versions("m", [AspiredVersion(2, Path("/models/m/2"), "digest-a")])  # same files
    manager.wait_until_settled(10)
    assert states(manager)[2] is VersionState.END
    loader.broken = set()
    manager.set_aspired_versions("m", [AspiredVersion(2, Path("/models/m/2"), "digest-b")])  # fixed on disk
    manager.wait_until_settled(10)
    assert states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.END}


def test_memory_budget_refuses_a_second_copy_and_keeps_the_first(loader: FakeLoader) -> None:
    from modelserve.core.memory_guard import MemoryGuard

    manager = ModelManager(loader, memory_guard=MemoryGuard(1500, check_available=False))
    manager.set_models([CONFIG])
    manager.set_aspired_versions("m", aspired(1))  # FakeServable(1) reports 1000 bytes
    manager.wait_until_settled(10)
    assert manager.statuses("m")[0].memory_bytes == 1000
    manager.set_aspired_versions("m", aspired(2))  # sized like its sibling: 1000 more does not fit
    manager.wait_until_settled(10)
    refused, serving = manager.statuses("m")
    assert refused.version == 2 and refused.state is VersionState.END
    assert refused.error_code is Code.RESOURCE_EXHAUSTED
    assert "memory budget of 1.5 KiB" in refused.error_message and "m/1" in refused.error_message
    assert serving.state is VersionState.AVAILABLE
    with manager.get_handle("m") as handle:
        assert handle.version == 1
    manager.close()


def test_a_refused_version_loads_once_memory_is_freed(loader: FakeLoader) -> None:
    from modelserve.core.memory_guard import MemoryGuard

    other = ModelConfig(name="other", base_path="/models/other")
    manager = ModelManager(loader, memory_guard=MemoryGuard(2500, check_available=False))
    manager.set_models([CONFIG, other])
    manager.set_aspired_versions("m", [])
    manager.set_aspired_versions("other", [AspiredVersion(2, Path("/models/other/2"))])  # 2000 bytes
    assert manager.wait_until_settled(10)
    manager.set_aspired_versions("m", aspired(1))  # 1000 more: over budget
    manager.wait_until_settled(10)
    assert manager.statuses("m")[0].error_code is Code.RESOURCE_EXHAUSTED
    manager.set_models([CONFIG])  # "other" goes away and frees its memory
    manager.wait_until_settled(10)
    assert states(manager) == {1: VersionState.AVAILABLE}
    manager.close()


def test_a_failed_load_is_retried_on_a_timer_a_bounded_number_of_times(loader: FakeLoader) -> None:
    loader.broken = {1}
    manager = ModelManager(loader, max_load_retries=2, load_retry_interval=0.05)
    manager.set_models([CONFIG])
    for _ in range(8):  # the source announces every poll; retries happen on those announcements
        manager.set_aspired_versions("m", aspired(1))
        manager.wait_until_settled(10)
        time.sleep(0.06)
    assert loader.calls == 3, "one load and two retries (--max_num_load_retries=2)"
    loader.broken = set()
    manager.set_aspired_versions("m", [AspiredVersion(1, Path("/models/m/1"), "fixed")])  # files changed
    manager.wait_until_settled(10)
    assert states(manager) == {1: VersionState.AVAILABLE}
    manager.close()


def test_a_version_over_budget_after_loading_is_refused_before_loading_next_time(loader: FakeLoader) -> None:
    from modelserve.core.memory_guard import MemoryGuard

    other = ModelConfig(name="other", base_path="/models/other")
    small = ModelConfig(name="small", base_path="/models/small")
    manager = ModelManager(loader, memory_guard=MemoryGuard(2500, check_available=False))
    manager.set_models([CONFIG, other, small])
    manager.set_aspired_versions("m", [])
    manager.set_aspired_versions("small", [AspiredVersion(0, Path("/models/small/0"))])  # 0 B
    manager.set_aspired_versions("other", [AspiredVersion(1, Path("/models/other/1"))])  # 1000 B
    assert manager.wait_until_settled(10)
    manager.set_aspired_versions("m", [AspiredVersion(2, Path("/models/m/2"))])  # 2000 B, known once loaded
    assert manager.wait_until_settled(10)
    (refused,) = manager.statuses("m")
    assert "measured 2.0 KiB after loading" in refused.error_message
    calls = loader.calls
    manager.set_models([CONFIG, other])  # unloading "small" frees nothing that helps
    assert manager.wait_until_settled(10)
    (again,) = manager.statuses("m")
    assert "needs about 2.0 KiB" in again.error_message
    assert loader.calls == calls, "the retry must be refused before loading, from what it measured"
    manager.close()
