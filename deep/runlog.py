"""What a run records while it trains: metric buffers read with one host copy per log step,
the non-finite check, the metric rows (``metrics.csv`` and TensorBoard), JSON files, and the
global RNG states a checkpoint saves.

Host synchronisation: ``agent.update`` returns 0-d tensors; they stay on the device in a
:class:`MetricBuffer` until a log step reads them all with one copy. The non-finite check runs
at the same time, so a NaN is reported at most ``--log-every`` steps late, naming the metric and
the exact step where it first appeared.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deep.checkpoint import atomic_write_text
from deep.layout import METRICS_NAME, TENSORBOARD_DIR

__all__ = [
    "METRICS_NAME",
    "TENSORBOARD_DIR",
    "MetricBuffer",
    "NonFiniteError",
    "RunLog",
    "finite_json",
    "first_nonfinite_tensor",
    "json_text",
    "last_value",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "write_json",
]


class NonFiniteError(RuntimeError):
    """Training produced a NaN or inf; the run stopped without writing a checkpoint."""


class MetricBuffer:
    """Per-step metric tensors kept on the device until :meth:`flush` reads them in one copy.

    Each :meth:`append` stacks the step's 0-d tensors into one (M,) tensor (no host sync);
    :meth:`flush` stacks the interval into (K, M) per key set, copies it to the host, checks
    every value for NaN/inf (naming the first bad metric and step) and returns the means.
    """

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._keys: list[tuple[str, ...]] = []
        self._values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._steps)

    def append(self, step: int, metrics: Mapping[str, torch.Tensor | float]) -> None:
        if not metrics:
            return
        values = [torch.as_tensor(v).detach().reshape(()).float() for v in metrics.values()]
        self._steps.append(step)
        self._keys.append(tuple(metrics))
        self._values.append(torch.stack(values))

    def flush(self) -> dict[str, float]:
        """Means over the buffered steps; raises :class:`NonFiniteError` on any NaN/inf."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        first_bad: tuple[int, str, float] | None = None
        i = 0
        while i < len(self._steps):
            # Consecutive steps with the same key set form one (K, M) block and one host copy.
            j = i
            while j < len(self._steps) and self._keys[j] == self._keys[i]:
                j += 1
            keys = self._keys[i]
            block = torch.stack(self._values[i:j]).cpu().double().numpy()
            bad = ~np.isfinite(block)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                candidate = (self._steps[i + int(r)], keys[int(c)], float(block[r, c]))
                if first_bad is None or candidate[0] < first_bad[0]:
                    first_bad = candidate
            for c, key in enumerate(keys):
                sums[key] = sums.get(key, 0.0) + float(block[:, c].sum())
                counts[key] = counts.get(key, 0) + (j - i)
            i = j
        self._steps.clear()
        self._keys.clear()
        self._values.clear()
        if first_bad is not None:
            step, key, value = first_bad
            raise NonFiniteError(f"metric {key!r} became {value} at step {step}")
        return {k: sums[k] / counts[k] for k in sums}


def first_nonfinite_tensor(state: Any, prefix: str = "") -> str | None:
    """Path of the first floating tensor in a nested state holding NaN/inf, else None."""
    tensors: list[tuple[str, torch.Tensor]] = []

    def walk(x: Any, path: str) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() or x.is_complex():
                tensors.append((path, x))
        elif isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(x, list | tuple):
            for k, v in enumerate(x):
                walk(v, f"{path}[{k}]")

    walk(state, prefix)
    # One host copy per device, not one per tensor.
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    finite = [True] * len(tensors)
    for indices in by_device.values():
        flags = torch.stack([tensors[i][1].detach().isfinite().all() for i in indices]).cpu()
        for i, ok in zip(indices, flags.tolist(), strict=True):
            finite[i] = bool(ok)
    bad = [path for (path, _), ok in zip(tensors, finite, strict=True) if not ok]
    return bad[0] if bad else None


class RunLog:
    """Metric rows of a run: metrics.csv (rewritten atomically) and TensorBoard scalars.

    Rows are kept in memory (and in every checkpoint), keyed by step; a log step and an
    evaluation step that coincide share one row. Rewriting the whole CSV from the rows makes a
    resumed run's file end exactly at the checkpoint's rows, with no duplicate steps.
    """

    def __init__(
        self, out: Path, rows: Sequence[Mapping[str, float]], tensorboard: bool, purge_step: int
    ) -> None:
        self.path = out / METRICS_NAME
        self.rows: list[dict[str, float]] = [dict(r) for r in rows]
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow to import; only if used

            # purge_step hides events a killed run wrote after its last checkpoint.
            self.writer = SummaryWriter(
                str(out / TENSORBOARD_DIR), purge_step=purge_step if purge_step > 0 else None
            )
        self.write_csv()

    def record(self, step: int, values: Mapping[str, float]) -> None:
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": step, **values})
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def write_csv(self) -> None:
        columns: dict[str, None] = {"step": None}
        for row in self.rows:
            columns.update(dict.fromkeys(row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(
                {k: (int(v) if k == "step" else repr(float(v))) for k, v in row.items()}
            )
        atomic_write_text(self.path, buf.getvalue())

    def flush(self) -> None:
        self.write_csv()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def last_value(rows: Sequence[Mapping[str, float]], key: str) -> float:
    """The value of ``key`` in the last row that has it (NaN if none)."""
    for row in reversed(rows):
        if key in row:
            return float(row[key])
    return math.nan


# ------------------------------------------------------------------------------ RNG states


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, python) as checkpoint-safe values.

    This project never draws from the global generators (agents own theirs, evaluation seeds
    its environments); saving them anyway keeps a resume exact if a library does.
    """
    np_state = np.random.get_state()  # noqa: NPY002
    assert isinstance(np_state, tuple)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's and python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


def finite_json(x: Any) -> Any:
    """JSON-ready data: NaN and inf become None, numpy scalars Python numbers, tuples lists,
    keys strings; recursively."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): finite_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite_json(v) for v in x]
    return x


def json_text(data: Mapping[str, Any]) -> str:
    """``data`` as indented, strict JSON (:func:`finite_json`: NaN and inf are ``null``)."""
    return json.dumps(finite_json(data), indent=2, allow_nan=False) + "\n"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write :func:`json_text` of ``data`` atomically."""
    atomic_write_text(path, json_text(data))
