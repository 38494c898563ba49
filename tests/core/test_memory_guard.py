"""The memory guard's accounting and its messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.core.memory_guard import MemoryGuard, files_bytes, format_bytes, parse_memory_size
from modelserve.errors import InvalidArgument, ResourceExhausted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("8GiB", 8 * 1024**3),
        ("500MB", 500 * 1000**2),
        ("1.5 KiB", 1536),
        ("50%", 500),
    ],
)
def test_parse_memory_size(text: str, expected: int) -> None:
    assert parse_memory_size(text, total=1000) == expected


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "0", "0%", "150%", "-3GB"])
def test_parse_memory_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid memory size"):
        parse_memory_size(text, total=1000)


def test_a_load_that_does_not_fit_is_refused_with_who_holds_what() -> None:
    guard = MemoryGuard(1000, check_available=False)
    guard.reserve("m/1", "m/1", 600)
    with pytest.raises(ResourceExhausted) as refused:
        guard.reserve("m/2", "m/2", 600)
    message = refused.value.message
    assert "loading m/2 needs about 600 B but only 400 B of the memory budget of 1000 B is free" in message
    assert "in use: m/1 600 B" in message
    assert guard.held() == {"m/1": 600}
    guard.release("m/1")
    guard.reserve("m/2", "m/2", 600)
    assert guard.used_bytes == 600


def test_settle_replaces_the_estimate_and_enforces_the_budget() -> None:
    guard = MemoryGuard(1000, check_available=False)
    guard.reserve("a/1", "a/1", 100)
    guard.settle("a/1", 300)
    assert guard.used_bytes == 300
    guard.reserve("b/1", "b/1", 500)
    with pytest.raises(ResourceExhausted, match="measured 900 B after loading"):
        guard.settle("b/1", 900)
    assert guard.held() == {"a/1": 300}


def test_no_budget_still_refuses_what_the_host_cannot_hold() -> None:
    guard = MemoryGuard(None)
    with pytest.raises(ResourceExhausted, match="the host has only"):
        guard.reserve("huge/1", "huge/1", 1 << 60)
    guard.reserve("small/1", "small/1", 1 << 20)
    assert guard.used_bytes == 1 << 20


def test_files_bytes_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "sub" / "b").write_bytes(b"x" * 23)
    assert files_bytes(tmp_path) == 123
    assert files_bytes(tmp_path / "missing") == 0


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_loads_in_progress_count_against_available_memory() -> None:
    import psutil

    guard = MemoryGuard(None)
    available = psutil.virtual_memory().available
    first, second = object(), object()
    guard.reserve(first, "a/1", int(available * 0.6))
    with pytest.raises(ResourceExhausted, match="promised to loads in progress"):
        guard.reserve(second, "b/1", int(available * 0.6))
    guard.settle(first, 10)  # allocated now: "available" would show it, the guard stops adding it
    guard.reserve(second, "b/1", int(available * 0.6))


def test_a_late_release_of_an_old_attempt_keeps_the_new_one() -> None:
    guard = MemoryGuard(1000, check_available=False)
    old, new = object(), object()
    guard.reserve(old, "m/1", 400)
    guard.reserve(new, "m/1", 400)  # the same version loaded again
    guard.settle(new, 400)
    guard.release(old)
    assert guard.held() == {"m/1": 400}
