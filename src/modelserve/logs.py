"""Logging set-up: text or JSON lines on stderr, and structured events with named fields.

``configure(level, fmt)`` is called once by each process's entry point (``serve``, ``gateway``, ``stack``).
``event(logger, name, **fields)`` logs one line per lifecycle event (a version loading, available,
unloaded, failed; a config reload; shutdown steps) with its fields kept apart from the message, so the
JSON format emits them as keys a log pipeline can index, and the text format appends them as
``key=value``::

    2024-05-01 12:00:00,000 INFO modelserve.lifecycle: version_available model=tiny version=1 ...
    {"time": "2024-05-01T12:00:00.000+00:00", "level": "INFO", "logger": "modelserve.lifecycle",
     "message": "version_available model=tiny ...", "event": "version_available", "model": "tiny", ...}
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FIELDS = "modelserve_fields"  # the LogRecord attribute that carries an event's fields


def event(
    logger: logging.Logger, name: str, level: int = logging.INFO, message: str = "", **fields: Any
) -> None:
    """Log the event ``name`` with ``fields`` (None values are left out) as one line; ``message``, when
    given, leads the text (``"shutdown complete: shutdown_done duration_ms=..."``)."""
    if not logger.isEnabledFor(level):
        return
    kept = {key: value for key, value in fields.items() if value is not None}
    text = " ".join([name, *(f"{key}={_text(value)}" for key, value in kept.items())])
    if message:
        text = f"{message}: {text}"
    logger.log(level, "%s", text, extra={_FIELDS: {"event": name, **kept}})


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record logged with ``event`` (empty for plain log calls)."""
    found: dict[str, Any] = getattr(record, _FIELDS, {})
    return found


def _text(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event's fields, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(fields_of(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``--log_format`` / ``--log-format``: ``text`` or ``json``."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every ``modelserve`` log line to stderr in ``fmt``, at ``level`` and above (replaces any
    handler set before, so calling it again switches the format)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
