"""One client shared by many callers: 16 threads (sync) or 64 tasks (asyncio), each getting its own rows.

Plus the pre-fork pattern: a client used in a parent process keeps working in a forked child (which opens
its own connections) and in the parent afterwards.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelserve.client import AsyncClient, Client

COMBINATIONS = [("rest", "tfserving"), ("rest", "v2"), ("grpc", "tfserving"), ("grpc", "v2")]
IDS = ["-".join(pair) for pair in COMBINATIONS]
CALLS_EACH = 4


def caller_rows(caller: int, call: int) -> np.ndarray:
    """Rows no other caller sends: a different batch size and values per caller and call."""
    rng = np.random.default_rng(1000 * caller + call)
    return rng.standard_normal((1 + caller % 5, 64)).astype(np.float32)


@pytest.mark.parametrize(("transport", "protocol"), COMBINATIONS, ids=IDS)
def test_sync_client_shared_by_16_threads(
    server_url: Any, reference: Any, transport: str, protocol: str
) -> None:
    with Client(server_url(transport), protocol=protocol, max_connections=8) as client:

        def work(caller: int) -> list[tuple[np.ndarray, np.ndarray]]:
            out = []
            for call in range(CALLS_EACH):
                x = caller_rows(caller, call)
                out.append((x, client.predict("tiny", {"x": x})["y"]))
            return out

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(work, range(16)))
    for caller_results in results:
        for x, y in caller_results:
            np.testing.assert_allclose(y, reference("tiny", {"x": x})["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("transport", "protocol"), COMBINATIONS, ids=IDS)
def test_async_client_shared_by_64_tasks(
    server_url: Any, reference: Any, transport: str, protocol: str
) -> None:
    async def main() -> list[tuple[np.ndarray, np.ndarray]]:
        async with AsyncClient(server_url(transport), protocol=protocol) as client:

            async def work(caller: int) -> list[tuple[np.ndarray, np.ndarray]]:
                out = []
                for call in range(CALLS_EACH):
                    x = caller_rows(caller, call)
                    out.append((x, (await client.predict("tiny", {"x": x}))["y"]))
                return out

            batches = await asyncio.gather(*(work(caller) for caller in range(64)))
        return [pair for batch in batches for pair in batch]

    for x, y in asyncio.run(main()):
        np.testing.assert_allclose(y, reference("tiny", {"x": x})["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_an_async_client_serves_one_event_loop_after_another(
    server_url: Any, reference: Any, transport: str
) -> None:
    """Sequential ``asyncio.run`` calls (a CLI, a test suite) with one client: each loop gets connections
    of its own, as a forked child does."""
    client = AsyncClient(server_url(transport))
    x = caller_rows(7, 0)
    expected = reference("tiny", {"x": x})["y"]

    async def once() -> np.ndarray:
        return (await client.predict("tiny", {"x": x}))["y"]

    for _ in range(3):
        np.testing.assert_allclose(asyncio.run(once()), expected, rtol=1e-5, atol=1e-6)
    asyncio.run(client.close())


def _predict_in_child(client: Client, x: np.ndarray, queue: Any) -> None:
    queue.put(client.predict("tiny", {"x": x})["y"])


def test_a_rest_client_used_before_fork_works_in_the_child_and_the_parent(
    server_url: Any, reference: Any
) -> None:
    x = caller_rows(99, 0)
    expected = reference("tiny", {"x": x})["y"]
    with Client(server_url("rest")) as client:
        np.testing.assert_allclose(client.predict("tiny", {"x": x})["y"], expected, rtol=1e-5, atol=1e-6)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_predict_in_child, args=(client, x, queue))
        child.start()
        got = queue.get(timeout=60)
        child.join(60)
        assert child.exitcode == 0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(client.predict("tiny", {"x": x})["y"], expected, rtol=1e-5, atol=1e-6)
