"""deep/files.py: atomic writes keep the usual permissions and leave nothing behind on failure."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from deep import checkpoint
from deep.files import atomic_write, atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_writes_replace_the_target_and_leave_only_it(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"  # the parent is created
    atomic_write_text(target, "first\n")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
    # deep.checkpoint re-exports the same helpers (deep.train writes run files through them).
    assert checkpoint.atomic_write_text is atomic_write_text
    assert checkpoint.atomic_write_bytes is atomic_write_bytes


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_files_get_0o666_filtered_by_the_umask(tmp_path: Path, umask_027: None) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"x")
    # 0o666 & ~0o027 = 0o640, what open(path, "w") gives; mkstemp alone would give 0o600.
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_removes_the_temporary_and_keeps_the_old_file(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")

    def failing(f: BinaryIO) -> None:
        f.write(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
