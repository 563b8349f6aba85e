"""Files the guard writes that may hold personal data, created readable by their owner only.

Why: a decrypted audit export holds redacted inputs, outputs, subjects' pseudonyms and, above all, protected
attributes in clear; the keyring and the database it came from are 0600, and a copy made world-readable by the
process's umask would undo that. An existing file is narrowed to 0600 too before anything is written to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any


def open_private(path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``), the file created or truncated with mode 0600."""
    if mode not in ("w", "wb"):
        raise ValueError("open_private writes: mode 'w' or 'wb'")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode applies to a new file only
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
