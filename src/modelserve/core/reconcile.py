"""The manager's decision rule as a pure function: aspired versions + held versions → what to do next.

Kept apart from the manager's threads and locks so every case is a row in a table test. The rules:

- an aspired version that is not held, or that ended cleanly (unloaded earlier), is loaded;
- an aspired version whose load failed is loaded again only when ``retry`` says its cause may have gone
  (its files changed on disk, or memory was freed since a memory-budget refusal); otherwise it stays
  failed, with its error visible in status;
- a held version that is no longer aspired is unloaded once some aspired version is AVAILABLE — so a
  model never goes dark while its replacement loads or after the replacement failed — or at once when
  nothing at all is aspired (the model was removed, or its versions were deleted from disk);
- except a *pinned* version: one a label or traffic split routes to stays loaded until the route moves,
  so a config reload that changes the policy before its labels never strands a label;
- a held version that is no longer aspired and has not started loading is cancelled.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from modelserve.core.version_state import VersionState


@dataclass(frozen=True, slots=True)
class Held:
    """What the decision needs to know about one version the manager holds."""

    state: VersionState
    failed: bool = False  # ended with a load error
    retry: bool = False  # a failed load whose cause may have gone


@dataclass(frozen=True, slots=True)
class Actions:
    load: tuple[int, ...] = ()
    cancel: tuple[int, ...] = ()
    unload: tuple[int, ...] = ()


def next_actions(aspired: Collection[int], held: Mapping[int, Held], pinned: Collection[int] = ()) -> Actions:
    """The actions to take now; applying them and asking again converges (see the module docstring)."""
    load = tuple(
        sorted(
            v
            for v in aspired
            if v not in held or (held[v].state is VersionState.END and (not held[v].failed or held[v].retry))
        )
    )
    aspired_available = any(held[v].state is VersionState.AVAILABLE for v in aspired if v in held)
    cancel: list[int] = []
    unload: list[int] = []
    for version, current in sorted(held.items()):
        if version in aspired or (version in pinned and current.state is not VersionState.START):
            continue
        if current.state is VersionState.START:
            cancel.append(version)
        elif current.state is VersionState.AVAILABLE and (aspired_available or not aspired):
            unload.append(version)
    return Actions(load=load, cancel=tuple(cancel), unload=tuple(unload))
