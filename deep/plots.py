"""Learning-curve PNGs from a run's ``metrics.csv`` (matplotlib's object API, no pyplot).

:func:`plot_run` draws one run (losses, evaluation score, Q estimate vs Monte-Carlo return);
:func:`plot_comparison` overlays several runs, as the demo does for CQL, offline SAC and BC.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# Figures are drawn on a bare Figure (Agg canvas) rather than through pyplot, so writing PNGs
# neither needs a display nor changes the backend of a notebook or script that imports this.
from matplotlib.figure import Figure

from deep.layout import LEARNING_CURVES

COMPARISON = "comparison.png"


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a metrics.csv as float arrays, NaN where a row has no value."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns: dict[str, list[float]] = {k: [] for k in reader.fieldnames or []}
        for row in reader:
            for k in columns:
                v = row.get(k)
                columns[k].append(float(v) if v not in (None, "") else math.nan)
    return {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}


def _series(metrics: Mapping[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` where it is present."""
    if key not in metrics:
        return np.zeros(0), np.zeros(0)
    y = metrics[key]
    keep = np.isfinite(y)
    return metrics["step"][keep], y[keep]


def _score_key(metrics: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """Normalised score when the dataset has reference scores, else the raw return."""
    if np.isfinite(metrics.get("eval/normalized_score", np.zeros(0))).any():
        return "eval/normalized_score", "normalised score"
    return "eval/return_mean", "return"


def plot_run(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``<run_dir>/learning_curves.png`` from ``<run_dir>/metrics.csv``; returns its path.

    Panels: every ``loss/*`` metric (symlog scale: CQL terms can be negative); the evaluation
    score; the conservative-value diagnostic, Q(s₀, π(s₀)) against the discounted return
    actually obtained from s₀.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir / "metrics.csv")
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)

    ax = axes[0]
    for key in sorted(k for k in metrics if k.startswith("loss/")):
        x, y = _series(metrics, key)
        ax.plot(x, y, label=key.removeprefix("loss/"))
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set(title="training losses", xlabel="gradient step")
    if ax.lines:
        ax.legend(fontsize="small")

    ax = axes[1]
    key, label = _score_key(metrics)
    x, y = _series(metrics, key)
    ax.plot(x, y, marker="o")
    _, std = _series(metrics, "eval/return_std")
    if key == "eval/return_mean" and std.shape == y.shape:
        ax.fill_between(x, y - std, y + std, alpha=0.2)
    ax.set(title=f"evaluation {label}", xlabel="gradient step", ylabel=label)

    ax = axes[2]
    x, q = _series(metrics, "eval/q_estimate")
    ax.plot(x, q, marker="o", label="Q(s₀, π(s₀)) predicted")
    x, mc = _series(metrics, "eval/mc_return")
    ax.plot(x, mc, marker="s", linestyle="--", label="Σ γᵗ rₜ obtained (MC)")
    ax.set(title="value estimate vs Monte-Carlo return", xlabel="gradient step")
    ax.legend(fontsize="small")

    if title:
        fig.suptitle(title)
    out = run_dir / LEARNING_CURVES
    fig.savefig(out, dpi=100)
    return out


def plot_comparison(
    runs: Mapping[str, str | Path], out: str | Path, behaviour_score: float | None = None
) -> Path:
    """Overlay runs (label -> run dir): evaluation score, and the critic's over-estimation.

    Right panel: ``eval/q_estimate − eval/mc_return`` at each evaluation, the critic's
    prediction Q(s₀, π(s₀)) minus the discounted return the policy obtained from s₀ (above 0:
    over-estimation; below: conservative). Runs without a critic are left out of it.
    ``behaviour_score`` (the dataset's own score) is drawn as a horizontal line. Returns
    ``out``.
    """
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_score, ax_gap = fig.subplots(1, 2)
    score_label = "return"
    for i, (name, run_dir) in enumerate(runs.items()):
        color = f"C{i}"
        metrics = read_metrics(Path(run_dir) / "metrics.csv")
        key, score_label = _score_key(metrics)
        ax_score.plot(*_series(metrics, key), marker="o", color=color, label=name)
        x, q = _series(metrics, "eval/q_estimate")
        x_mc, mc = _series(metrics, "eval/mc_return")
        if q.size and np.array_equal(x, x_mc):
            ax_gap.plot(x, q - mc, marker="o", color=color, label=name)
    if behaviour_score is not None and math.isfinite(behaviour_score):
        ax_score.axhline(behaviour_score, color="grey", linestyle=":", label="dataset (behaviour)")
    ax_score.set(title=f"evaluation {score_label}", xlabel="gradient step", ylabel=score_label)
    ax_score.legend()
    ax_gap.axhline(0.0, color="black", linewidth=0.8)
    ax_gap.set(
        title="critic over-estimation: Q(s₀, π(s₀)) − discounted return obtained",
        xlabel="gradient step",
        ylabel="Q − MC  (> 0: over-estimates)",
    )
    if ax_gap.lines[1:]:
        ax_gap.legend()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
