"""``--model_config_file_poll_wait_seconds``: re-read the model config file and apply it when it changes.

The watcher runs on the server's event loop. It compares the file's text with the text it last applied,
so touching the file without changing it does nothing. A file that does not parse is logged and the
running config stays: a typo in the config file never takes models down. A config the server refuses
in part (a label on a version that is not loaded) is logged: its models and policies are applied, the
refused labels and splits keep their previous targets, which stay loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from modelserve.config.model_config import ServingConfig
from modelserve.errors import ServingError

log = logging.getLogger("modelserve.config")

ApplyConfig = Callable[[ServingConfig], Awaitable[None]]
ParseConfig = Callable[[str, Path], ServingConfig]


class ConfigFileWatcher:
    """Polls one file every ``poll_seconds`` and hands each new, valid version of it to ``apply``."""

    def __init__(
        self, path: Path, poll_seconds: float, parse: ParseConfig, apply: ApplyConfig, applied_text: str
    ) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._parse = parse
        self._apply = apply
        self._applied_text = applied_text
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="modelserve-config-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.check_once()
            except Exception:  # the watcher must outlive any one bad file or failed reload
                log.exception("checking model config file %s failed", self.path)

    async def check_once(self) -> bool:
        """Apply the file if it changed since the last applied text; True when a new config was applied."""
        try:
            text = await asyncio.to_thread(self.path.read_text)
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read model config file %s, keeping the current config: %s", self.path, exc)
            return False
        if text == self._applied_text:
            return False
        try:
            config = self._parse(text, self.path)
        except ServingError as exc:
            log.error(
                "model config file %s is invalid, keeping the current config: %s", self.path, exc.message
            )
            self._applied_text = text  # report each bad edit once, not on every poll
            return False
        self._applied_text = text
        log.info("model config file %s changed: applying it", self.path)
        try:
            await self._apply(config)
        except ServingError as exc:
            log.error("model config file %s was applied with errors: %s", self.path, exc.message)
        return True
