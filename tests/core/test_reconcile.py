"""The manager's decision rule, one row per situation: aspired versions + held versions → actions."""

from __future__ import annotations

import pytest

from modelserve.core.reconcile import Actions, Held, next_actions
from modelserve.core.version_state import VersionState

START, LOADING, AVAILABLE, UNLOADING, END = (
    VersionState.START,
    VersionState.LOADING,
    VersionState.AVAILABLE,
    VersionState.UNLOADING,
    VersionState.END,
)
FAILED = Held(END, failed=True)
FAILED_RETRY = Held(END, failed=True, retry=True)

CASES = [
    # (description, aspired, held, expected)
    ("first version appears", {1}, {}, Actions(load=(1,))),
    ("two versions appear", {1, 2}, {}, Actions(load=(1, 2))),
    ("loading: nothing to do", {1}, {1: Held(LOADING)}, Actions()),
    ("available: nothing to do", {1}, {1: Held(AVAILABLE)}, Actions()),
    ("new version: load it, keep the old one", {2}, {1: Held(AVAILABLE)}, Actions(load=(2,))),
    ("new version still loading: old keeps serving", {2}, {1: Held(AVAILABLE), 2: Held(LOADING)}, Actions()),
    (
        "new version available: unload the old",
        {2},
        {1: Held(AVAILABLE), 2: Held(AVAILABLE)},
        Actions(unload=(1,)),
    ),
    ("new version failed: old keeps serving", {2}, {1: Held(AVAILABLE), 2: FAILED}, Actions()),
    (
        "failed version whose files changed: load again",
        {2},
        {1: Held(AVAILABLE), 2: FAILED_RETRY},
        Actions(load=(2,)),
    ),
    ("cleanly unloaded version aspired again: reload", {1}, {1: Held(END)}, Actions(load=(1,))),
    (
        "nothing aspired (deleted from disk): unload at once",
        set(),
        {1: Held(AVAILABLE)},
        Actions(unload=(1,)),
    ),
    ("nothing aspired: a queued load is cancelled", set(), {1: Held(START)}, Actions(cancel=(1,))),
    (
        "dropped before it started loading: cancel",
        {2},
        {1: Held(START), 2: Held(AVAILABLE)},
        Actions(cancel=(1,)),
    ),
    ("unloading: wait for it", {2}, {1: Held(UNLOADING), 2: Held(AVAILABLE)}, Actions()),
    (
        "latest{2} moves on: load 3, unload 1 only once an aspired version serves",
        {2, 3},
        {1: Held(AVAILABLE), 2: Held(AVAILABLE)},
        Actions(load=(3,), unload=(1,)),
    ),
    (
        "rollback to an older version on disk: load it, keep the newer until it serves",
        {1},
        {1: Held(END), 2: Held(AVAILABLE)},
        Actions(load=(1,)),
    ),
    ("all aspired failed and nothing else held: nothing to do", {1}, {1: FAILED}, Actions()),
]


@pytest.mark.parametrize(("aspired", "held", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_next_actions(aspired: set[int], held: dict[int, Held], expected: Actions) -> None:
    assert next_actions(aspired, held) == expected


def test_applying_the_actions_converges() -> None:
    """Simulate the manager: apply actions (loads succeed) until nothing is left to do."""
    held: dict[int, Held] = {1: Held(AVAILABLE), 2: Held(AVAILABLE)}
    aspired = {3, 4}
    for _ in range(5):
        actions = next_actions(aspired, held)
        if actions == Actions():
            break
        for version in actions.load:
            held[version] = Held(AVAILABLE)
        for version in actions.unload:
            held[version] = Held(END)
        for version in actions.cancel:
            held[version] = Held(END)
    assert {v for v, h in held.items() if h.state is AVAILABLE} == {3, 4}
    assert next_actions(aspired, held) == Actions()


def test_a_pinned_version_stays_until_its_route_moves() -> None:
    held = {1: Held(AVAILABLE), 2: Held(AVAILABLE)}
    assert next_actions({2}, held, pinned={1}) == Actions()
    assert next_actions({2}, held, pinned=()) == Actions(unload=(1,))
    assert next_actions(set(), held, pinned={1}) == Actions(unload=(2,))
    # A pinned version that never started loading is still cancelled: pinning keeps, it does not load.
    assert next_actions({2}, {1: Held(START), 2: Held(AVAILABLE)}, pinned={1}) == Actions(cancel=(1,))
