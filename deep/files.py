"""Atomic file writes: readers see the previous file or the whole new one, never a torn file.

A write goes to a temporary sibling file (same directory, so the rename cannot cross file
systems), is flushed and fsync'ed, then renamed over the target with ``os.replace`` (atomic on
POSIX and Windows). The temporary file is created with mode ``0o666`` filtered by the umask,
as ``open(path, "w")`` would create the target, not ``tempfile.mkstemp``'s owner-only ``0o600``
(a dataset cache or a run directory may be shared). On any failure, including
``KeyboardInterrupt``, the temporary file is removed and the target is left untouched.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_leftover",
    "remove_leftovers",
]

# O_BINARY exists (and matters) on Windows only.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


_LEFTOVER = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def is_leftover(path: Path) -> bool:
    """True for a temporary file of :func:`atomic_write` (``.<name>.<12 hex>.tmp``), which a
    write killed before its rename leaves behind."""
    return path.is_file() and _LEFTOVER.match(path.name) is not None


def remove_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the leftovers of killed writes directly inside ``folder``; returns them."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = [p for p in root.iterdir() if is_leftover(p)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def _create_sibling(path: Path) -> tuple[int, Path]:
    """Open a new, uniquely named temporary file next to ``path`` (mode 0o666 & ~umask)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits collide about never
            continue


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` atomically with what ``write(file)`` writes to a binary file.

    The parent directory is created if needed. ``write`` must not close the file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_sibling(target)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            # fsync before the rename: otherwise a crash can leave the new name pointing at
            # data the kernel never wrote.
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
