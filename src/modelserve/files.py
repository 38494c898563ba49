"""Small state files (ready files) written so readers never see half a file and no link is followed."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` through a fresh, exclusively created temporary file in the same folder.

    ``mkstemp`` opens with O_EXCL (a symlink planted at a predictable temporary name cannot redirect the
    write), and ``os.replace`` swaps the file in atomically, replacing any link at ``target`` itself.
    """
    target = Path(target)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
