"""The folders the project writes, declared once, and the one rule every tool writes by.

A **run folder** (``deep.train``) holds :data:`RUN_FILES`; a **report** (``deep.report``)
holds :data:`REPORT_FILES`, in ``DIR/report/`` by default; a **sweep folder** (``deep.sweep``)
holds its spec, its event log, its ``.sweep/`` meta folder, its report folder and one run
folder per trial; a **parity folder** (``deep.parity``) holds ``ours/`` and ``d3rlpy/`` with
one folder per seed and the parity tables; the **demo folder** (``deep.demo``) holds one run
folder per algorithm, its tables, its plots and its README.

The rule (:func:`claim`): a tool writes only into a folder that is new, empty, or already
holds nothing but its own kind of files. Anything else is refused before any work, naming
the folder and the files that are not the tool's. Every file is written atomically
(:mod:`deep.files`): a write replaces the name, so a symlink at that name is replaced, never
followed, and nothing outside the folder changes. A tool removes only files it wrote.
Concurrent tools are serialised per folder by :func:`folder_lock`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Collection, Iterator
from pathlib import Path

from deep.files import is_leftover

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LEARNING_CURVES",
    "LOCK_NAME",
    "METRICS_NAME",
    "REPORT_DIR",
    "REPORT_FILES",
    "RUN_FILES",
    "SUMMARY_NAME",
    "TENSORBOARD_DIR",
    "FolderError",
    "claim",
    "folder_lock",
    "foreign_entries",
]

# ------------------------------------------------------------------------ a run (deep.train)
CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
LEARNING_CURVES = "learning_curves.png"
TENSORBOARD_DIR = "tb"
RUN_FILES = frozenset(
    {CONFIG_NAME, CHECKPOINT_NAME, METRICS_NAME, SUMMARY_NAME, LEARNING_CURVES, TENSORBOARD_DIR}
)
"""Everything ``deep.train`` writes into a run folder."""

# --------------------------------------------------------------------- a report (deep.report)
RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
INTERVALS_PNG = "intervals.png"
PROFILES_PNG = "profiles.png"
TRAINING_PNG = "training.png"
VALUES_PNG = "values.png"
REPORT_FILES = frozenset(
    {RESULTS_MD, RESULTS_JSON, INTERVALS_PNG, PROFILES_PNG, TRAINING_PNG, VALUES_PNG}
)
"""Everything ``deep.report`` writes into its output folder."""
REPORT_DIR = "report"
"""The report's own subfolder of the folder it reports on (its default ``--out``)."""

# ------------------------------------------------------------------------------- a sweep
SWEEP_SPEC = "sweep.json"
SWEEP_EVENTS = "sweep.jsonl"
SWEEP_META = ".sweep"
"""Per trial, beside (not in) its run folder: ``<trial>.json`` (its definition, which the
report reads for its labels), ``<trial>.log`` (its output), ``<trial>.lock``."""

# ------------------------------------------------------------------------------- parity
PARITY_RESULT = "parity.json"
PARITY_SIDES = ("ours", "d3rlpy")

LOCK_NAME = ".lock"
"""The lock file :func:`folder_lock` holds in a folder (every tool counts it as its own)."""


_PROBE = ".write-probe-"
"""Prefix of the empty file :func:`claim` writes and removes to test that a folder is
writable (another process's probe is no foreign file)."""


class FolderError(ValueError):
    """A folder a tool may not write into; the message names it and what is in the way."""


def foreign_entries(folder: Path, own: Collection[str]) -> list[str]:
    """The entries of ``folder`` that are not in ``own`` (nor the lock, nor a leftover of a
    killed atomic write), sorted, folders with a trailing ``/``."""
    if not folder.is_dir():
        return []
    keep = set(own) | {LOCK_NAME}
    return sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in folder.iterdir()
        if p.name not in keep and not is_leftover(p) and not p.name.startswith(_PROBE)
    )


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def claim(folder: str | os.PathLike[str], own: Collection[str], tool: str) -> Path:
    """``folder``, created, once it is sure that ``tool`` may write there: it is new, empty,
    or holds only ``own`` entries, and it is writable. Otherwise :class:`FolderError` names
    the folder and the entries in the way, and nothing is written."""
    path = Path(folder)
    if str(path) in ("", "."):
        raise FolderError(f"{tool}: no folder named; give it a folder of its own (--out)")
    if path.exists() and not path.is_dir():
        raise FolderError(f"{tool}: {path} is a file, not a folder; choose another --out")
    foreign = foreign_entries(path, own)
    # An own name taken by a folder (a file's name, a folder in its place) cannot be written.
    foreign += sorted(f"{n}/" for n in own if "." in n.lstrip(".") and (path / n).is_dir())
    if foreign:
        raise FolderError(
            f"{tool}: {path} holds files {tool} did not write ({_listed(foreign)}); nothing "
            "was written there: choose a new or empty folder (--out)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f"{_PROBE}{secrets.token_hex(6)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise FolderError(
            f"{tool}: cannot write to {path} ({e.strerror or e}); choose a writable folder"
        ) from None
    return path


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` exclusively (``flock``, released when the process dies): the
    check of a folder's settings and the work in it happen for one process at a time, so of
    two tools racing for one folder the second sees what the first wrote."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
