"""The batcher with a real numpy model on real threads: exact per-request results, bounds, failures."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from modelserve.batching.batcher import Batcher
from modelserve.batching.options import BatchingOptions
from modelserve.batching.policy import AdaptivePolicy
from modelserve.errors import DeadlineExceeded, Internal, InvalidArgument, ResourceExhausted


class Model:
    """y = 2x + row-sum; refuses NaN like a framework would; can be held at a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()

    def __call__(
        self, signature: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        x = inputs["x"]
        self.batch_sizes.append(x.shape[0])
        if np.isnan(x).any():
            raise ValueError("NaN in input")
        return {"y": x * 2, "s": x.sum(axis=1)}


class Releases:
    """Counts handle releases per request: each must happen exactly once."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.lock = threading.Lock()

    def of(self, key: int) -> Callable[[], None]:
        def release() -> None:
            with self.lock:
                self.counts[key] += 1

        return release


def options(**overrides: object) -> BatchingOptions:
    base: dict[str, object] = {
        "max_batch_size": 64,
        "execution_batch_size": 64,
        "timeout_seconds": 0.0,
        "max_enqueued_rows": 1000,
        "threads": 1,
    }
    base.update(overrides)
    return BatchingOptions(**base)  # type: ignore[arg-type]


def request(i: int, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 4), i, dtype=np.float32) + np.arange(rows, dtype=np.float32)[:, None]}


async def wait_until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


def test_concurrent_requests_get_exactly_their_own_rows() -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(model, options(), "m")
    releases = Releases()

    async def main() -> None:
        first = batcher.submit("s", request(0), ["y", "s"], None, releases.of(0)).future
        await wait_until(model.entered)  # the first batch is running: the rest queue up behind it
        futures = [first] + [
            batcher.submit("s", request(i, rows=1 + i % 3), ["y", "s"], None, releases.of(i)).future
            for i in range(1, 64)
        ]
        gate.set()
        results = await asyncio.gather(*futures)
        for i, result in enumerate(results):
            x = request(i, rows=1 + i % 3)["x"] if i else request(0)["x"]
            np.testing.assert_array_equal(result["y"], x * 2)
            np.testing.assert_array_equal(result["s"], x.sum(axis=1))

    asyncio.run(main())
    batcher.close()
    assert model.batch_sizes[0] == 1 and max(model.batch_sizes) > 1
    assert sum(model.batch_sizes) == 1 + sum(1 + i % 3 for i in range(1, 64))
    assert all(size <= 64 for size in model.batch_sizes)
    assert releases.counts == Counter(range(64))


def test_large_requests_split_across_batches_and_reassembled_in_order() -> None:
    model = Model()
    batcher = Batcher(
        model, options(max_batch_size=100, execution_batch_size=8, split_large_batches=True), "m"
    )
    releases = Releases()

    async def main() -> None:
        x = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)
        result = await batcher.submit("s", {"x": x}, ["y"], None, releases.of(0)).future
        np.testing.assert_array_equal(result["y"], x * 2)

    asyncio.run(main())
    batcher.close()
    assert model.batch_sizes == [8, 8, 4]
    assert releases.counts == Counter({0: 1})


def test_request_larger_than_max_batch_size_without_splitting() -> None:
    batcher = Batcher(Model(), options(max_batch_size=8, execution_batch_size=8), "m")
    releases = Releases()

    async def main() -> None:
        with pytest.raises(InvalidArgument, match="Task size 9 is larger than maximum input batch size 8"):
            batcher.submit("s", request(0, rows=9), ["y"], None, releases.of(0))

    asyncio.run(main())
    batcher.close()
    assert releases.counts == Counter({0: 1})


def test_batches_padded_to_allowed_sizes_and_unpadded() -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(
        model, options(max_batch_size=8, execution_batch_size=8, allowed_batch_sizes=(2, 4, 8)), "m"
    )

    async def main() -> None:
        first = batcher.submit("s", request(0), ["y"], None, lambda: None).future
        await wait_until(model.entered)
        rest = [batcher.submit("s", request(i), ["y"], None, lambda: None).future for i in range(1, 4)]
        gate.set()
        results = await asyncio.gather(first, *rest)
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result["y"], request(i)["x"] * 2)

    asyncio.run(main())
    batcher.close()
    assert model.batch_sizes == [2, 4]  # 1 row padded to 2; 3 rows padded to 4


def test_full_queue_answers_resource_exhausted_at_once_and_recovers() -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(model, options(max_enqueued_rows=4), "m")
    releases = Releases()

    async def main() -> None:
        running = batcher.submit("s", request(0), ["y"], None, releases.of(0)).future
        await wait_until(model.entered)
        queued = [batcher.submit("s", request(i), ["y"], None, releases.of(i)).future for i in range(1, 5)]
        with pytest.raises(ResourceExhausted, match="queue to which this task was submitted is full"):
            batcher.submit("s", request(5), ["y"], None, releases.of(5))
        gate.set()
        for i, result in enumerate(await asyncio.gather(running, *queued)):
            np.testing.assert_array_equal(result["y"], request(i)["x"] * 2)
        after = await batcher.submit("s", request(6), ["y"], None, releases.of(6)).future
        np.testing.assert_array_equal(after["y"], request(6)["x"] * 2)

    asyncio.run(main())
    batcher.close()
    assert releases.counts == Counter(range(7))


def test_requests_whose_deadline_passed_in_the_queue_never_run() -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(model, options(), "m")
    releases = Releases()

    async def main() -> None:
        running = batcher.submit("s", request(0), ["y"], None, releases.of(0)).future
        await wait_until(model.entered)
        expiring = batcher.submit("s", request(1, rows=3), ["y"], 0.01, releases.of(1)).future
        await asyncio.sleep(0.05)
        gate.set()
        await running
        with pytest.raises(DeadlineExceeded, match="while queued"):
            await expiring

    asyncio.run(main())
    batcher.close()
    assert model.batch_sizes == [1]  # the expired request's 3 rows were dropped
    assert releases.counts == Counter({0: 1, 1: 1})


def test_a_failing_request_fails_only_itself() -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(model, options(), "m")
    releases = Releases()

    async def main() -> None:
        first = batcher.submit("s", request(0), ["y"], None, releases.of(0)).future
        await wait_until(model.entered)
        bad = {"x": np.full((1, 4), np.nan, dtype=np.float32)}
        good = [batcher.submit("s", request(i), ["y"], None, releases.of(i)).future for i in (1, 2)]
        poisoned = batcher.submit("s", bad, ["y"], None, releases.of(3)).future
        gate.set()
        await first
        for i, future in zip((1, 2), good, strict=True):
            np.testing.assert_array_equal((await future)["y"], request(i)["x"] * 2)
        with pytest.raises(Internal, match="NaN in input"):
            await poisoned

    asyncio.run(main())
    batcher.close()
    assert releases.counts == Counter(range(4))


def test_close_runs_what_is_queued_then_stops_the_threads() -> None:
    model = Model()
    batcher = Batcher(model, options(timeout_seconds=10.0, max_batch_size=64), "m")  # would wait 10 s

    async def main() -> None:
        future = batcher.submit("s", request(1), ["y"], None, lambda: None).future
        await asyncio.to_thread(batcher.close)
        np.testing.assert_array_equal((await future)["y"], request(1)["x"] * 2)

    asyncio.run(main())
    assert not any(t.is_alive() for t in batcher._threads)


def test_a_dropped_request_releases_its_handle_even_when_nothing_else_arrives() -> None:
    model = Model()
    batcher = Batcher(model, options(timeout_seconds=0.05), "m")
    releases = Releases()

    async def main() -> None:
        with pytest.raises(DeadlineExceeded):
            await batcher.submit("s", request(0), ["y"], 0.01, releases.of(0)).future
        for _ in range(200):  # the batch timeout (50 ms) passes, the thread drops the task
            if releases.counts[0]:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert releases.counts == Counter({0: 1})
    assert model.batch_sizes == []
    batcher.close()


def test_abandoned_requests_free_the_queue_at_once() -> None:
    gate = threading.Event()
    model = Model(gate)
    batcher = Batcher(model, options(max_enqueued_rows=2), "m")
    releases = Releases()

    async def main() -> None:
        running = batcher.submit("s", request(0), ["y"], None, releases.of(0)).future
        await wait_until(model.entered)
        ticket = batcher.submit("s", request(1, rows=2), ["y"], None, releases.of(1))
        ticket.abandon()  # the caller gave up (deadline, disconnect): rows and handle go at once
        ticket.abandon()
        assert releases.counts[1] == 1 and batcher.queued_rows() == 0
        queued = batcher.submit("s", request(2, rows=2), ["y"], None, releases.of(2)).future  # fits again
        gate.set()
        await running
        np.testing.assert_array_equal((await queued)["y"], request(2, rows=2)["x"] * 2)

    asyncio.run(main())
    batcher.close()
    assert model.batch_sizes == [1, 2]  # the abandoned rows never ran
    assert releases.counts == Counter({0: 1, 1: 1, 2: 1})


def test_a_runtime_bug_in_a_merged_batch_answers_every_request() -> None:
    gate = threading.Event()

    def broken(
        signature: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        gate.wait(10)
        return {"y": inputs["x"].tolist()}  # type: ignore[dict-item]  # not an array: split fails

    batcher = Batcher(broken, options(), "m")
    releases = Releases()

    async def main() -> None:
        futures = [batcher.submit("s", request(i), ["y"], None, releases.of(i)).future for i in range(3)]
        gate.set()
        # Splitting the merged batch fails on the non-array output; each request then runs alone, where
        # the output passes through untouched. What matters: nobody hangs, every handle is released.
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        assert [type(r) for r in results] == [dict, dict, dict]

    asyncio.run(main())
    batcher.close()
    assert releases.counts == Counter(range(3))


def test_empty_requests_are_not_batched() -> None:
    batcher = Batcher(Model(), options(), "m")
    assert not batcher.can_batch({"x": np.zeros((0, 4), np.float32)})
    assert batcher.can_batch({"x": np.zeros((1, 4), np.float32)})
    batcher.close()


def test_inline_runs_only_measured_sizes_within_max_batch_size() -> None:
    batcher = Batcher(Model(), options(timeout_seconds=None, max_batch_size=8, execution_batch_size=8), "m")
    assert not batcher.runs_inline(1, 1.0)  # nothing measured yet
    policy = batcher.policy
    assert isinstance(policy, AdaptivePolicy)
    policy.observe_batch(1, 0.00006)
    policy.observe_batch(2, 0.00005)  # noise: a larger batch measured faster
    assert batcher.runs_inline(1, 0.001) and batcher.runs_inline(2, 0.001)
    assert not batcher.runs_inline(3, 0.001)  # never extrapolated onto the event loop
    assert not batcher.runs_inline(100, 1.0)  # larger than max_batch_size
    assert not batcher.runs_inline(1, 0.00001)  # slower than the threshold
    batcher.close()


def test_adaptive_batcher_on_several_threads_returns_every_row() -> None:
    model = Model()
    batcher = Batcher(model, options(timeout_seconds=None, threads=3), "m")
    releases = Releases()

    async def main() -> None:
        for round_ in range(5):
            futures = [
                batcher.submit(
                    "s", request(i, rows=1 + i % 4), ["y", "s"], None, releases.of(round_ * 100 + i)
                ).future
                for i in range(40)
            ]
            for i, result in enumerate(await asyncio.gather(*futures)):
                np.testing.assert_array_equal(result["y"], request(i, rows=1 + i % 4)["x"] * 2)

    asyncio.run(main())
    batcher.close()
    assert sum(model.batch_sizes) == 5 * sum(1 + i % 4 for i in range(40))
    assert len(releases.counts) == 200 and set(releases.counts.values()) == {1}
