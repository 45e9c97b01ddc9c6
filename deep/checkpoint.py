"""Training checkpoints: atomic writes, and loading that never executes code from the file.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts, saved with
``torch.save`` and read back with ``torch.load(..., weights_only=True)``: PyTorch's restricted
unpickler refuses every other object, so a tampered or foreign file cannot run code on load.
Two keys mark the file as ours: ``format`` (:data:`FORMAT`) and ``version``
(:data:`VERSION`); a file without them is rejected with :class:`CheckpointError`.

A write goes through :func:`deep.files.atomic_write` (a temporary sibling file, flushed to
disk, then renamed over the target with ``os.replace``), so a process killed at any moment
leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# atomic_write_bytes / atomic_write_text are re-exported: run files are written through them.
from deep.files import atomic_write
from deep.files import atomic_write_bytes as atomic_write_bytes
from deep.files import atomic_write_text as atomic_write_text
from deep.layout import CHECKPOINT_NAME as CHECKPOINT_NAME

FORMAT = "cql-companion/checkpoint"
"""Value of the ``format`` key in every checkpoint this project writes."""

VERSION = 1
"""Layout version; bump it when a key changes meaning, and reject other versions on load."""


class CheckpointError(ValueError):
    """A file is not a readable checkpoint of this project (foreign, corrupt, or wrong version)."""


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Save ``payload`` (plus the format marker and version) atomically to ``path``."""
    for key in ("format", "version"):
        if key in payload:
            raise ValueError(f"payload must not set the reserved key {key!r}")
    data = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(data, f))


def resolve_checkpoint_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/checkpoint.pt`` for a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return p


def _reason(error: Exception) -> str:
    """The informative line of a weights_only refusal (torch prepends generic advice)."""
    text = " ".join(str(error).split())
    match = re.search(
        r"WeightsUnpickler error: (.*?)(?: Please use| Check the documentation|$)", text
    )
    if match:
        return match.group(1).strip()
    if len(text) <= 300:
        return text
    # Whole sentences only: a reason cut mid-sentence loses what it says.
    cut = text[:300].rfind(". ")
    return text[: cut + 1] if cut > 0 else text


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything else.

    ``path`` may be the file or a run directory holding ``checkpoint.pt``. Raises
    :class:`CheckpointError` when the file is not a torch file, holds objects other than
    tensors and plain containers (``weights_only`` refuses to unpickle them, so no code runs),
    lacks the format marker, or has another layout version.
    """
    p = resolve_checkpoint_path(path)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only's restricted unpickler raises this for any global or opcode it does not
        # allow, before anything from the file is called.
        raise CheckpointError(
            f"{p} is not a cql-companion checkpoint: safe loading (torch.load with "
            f"weights_only=True) refused it, so nothing in it was executed ({_reason(e)})"
        ) from None
    except Exception as e:  # torch raises many types for a non-torch file (EOF, OSError, ...)
        raise CheckpointError(
            f"{p} is not a readable torch checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{p} is not a cql-companion checkpoint: expected format marker {FORMAT!r}, "
            f"found {found!r}"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{p} is a cql-companion checkpoint of layout version {data.get('version')!r}; "
            f"this code reads version {VERSION}"
        )
    return data
