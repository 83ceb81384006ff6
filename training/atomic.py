"""Atomic file writes: the one way fgssl writes results, records and cards.

    atomic_write_text(path, text)     a temporary file in the same folder, then `os.replace`
    atomic_write_json(path, value)    the same for `json.dumps(value, indent=2)` and a final newline

A crash or a full disk never leaves half a results file: readers see the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace` (atomic on POSIX and
    Windows): readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with ignore_errors():
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path, value, **kwargs) -> Path:
    """`atomic_write_text` of `json.dumps(value, indent=2)` plus a final newline."""
    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(value, **kwargs) + "\n")


class ignore_errors:
    """`with ignore_errors():` a clean-up step whose failure must not hide the error being handled."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


__all__ = ["atomic_write_text", "atomic_write_json", "ignore_errors"]
