"""Sources announce which versions of each model *should* be served; the manager makes it so.

A source never loads anything. It calls ``callback(model, versions)`` with the full list of aspired versions
for a model; a version missing from the list means "unload it" (TF Serving's aspired-versions contract).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelserve.config.model_config import ModelConfig

log = logging.getLogger("modelserve.source")


@dataclass(frozen=True, slots=True)
class AspiredVersion:
    """A version that should be served and the directory it is stored in."""

    version: int
    path: Path


class AspiredVersionsCallback(Protocol):
    """Receives the complete aspired set of one model; called from the source's thread."""

    def __call__(self, model: str, versions: Sequence[AspiredVersion]) -> None: ...


def list_versions(base_path: Path) -> dict[int, Path]:
    """Integer-named subdirectories of ``base_path`` (TF Serving's layout); other entries are ignored."""
    versions: dict[int, Path] = {}
    try:
        children = list(base_path.iterdir())
    except OSError:
        return versions
    for child in children:
        name = child.name
        if name.isdigit() and child.is_dir():
            versions[int(name)] = child
    return versions


class FileSystemSource:
    """Polls each model's ``base_path`` for version directories and applies the model's version policy.

    ``poll_wait_seconds <= 0`` scans once (at ``start``) and never again, like TF Serving's
    ``--file_system_poll_wait_seconds=0``.
    """

    def __init__(
        self,
        models: Sequence[ModelConfig],
        callback: AspiredVersionsCallback,
        poll_wait_seconds: float = 1.0,
    ) -> None:
        self._models = tuple(models)
        self._callback = callback
        self._poll_wait = poll_wait_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned_empty: set[str] = set()

    def update_models(self, models: Sequence[ModelConfig]) -> None:
        """Replace the monitored models; models no longer listed are announced with no versions."""
        with self._lock:
            removed = {m.name for m in self._models} - {m.name for m in models}
            self._models = tuple(models)
        for name in removed:
            self._callback(name, [])
        self.poll_once()

    def poll_once(self) -> None:
        """Scan every model once and announce its aspired versions."""
        with self._lock:
            models = self._models
        for model in models:
            on_disk = list_versions(Path(model.base_path))
            chosen = model.version_policy.select(set(on_disk))
            if not on_disk and model.name not in self._warned_empty:
                self._warned_empty.add(model.name)
                log.warning("no versions of model=%s found under base path %s", model.name, model.base_path)
            elif on_disk:
                self._warned_empty.discard(model.name)
            self._callback(model.name, [AspiredVersion(v, on_disk[v]) for v in chosen])

    def start(self) -> None:
        self.poll_once()
        if self._poll_wait > 0:
            self._thread = threading.Thread(target=self._run, name="modelserve-fs-source", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_wait):
            try:
                self.poll_once()
            except Exception:  # a poll must never kill the source
                log.exception("file system poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
