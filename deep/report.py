"""Tables and plots of many runs with interval estimates: ``python -m deep.report DIR``.

::

    python -m deep.report runs/sweep                  # every run folder below runs/sweep
    python -m deep.report runs/sweep --reps 10000 --out runs/sweep-report

A run folder is any folder holding a ``summary.json`` (found recursively), as
``python -m deep.train`` and ``python -m deep.sweep`` write them. Runs are grouped into cells,
dataset × algorithm, where "algorithm" is the ``algo`` plus every train setting that differs
between that algo's runs (``cql cql_weight=1`` vs ``cql cql_weight=5``; the settings a sweep
gave the run, from its ``.sweep/<run>.json``, else those of its ``config.json``). A cell's seeds
are its runs; the score of a run is its final ``normalized_score``.

Written to ``--out`` (default: ``DIR/report``, the report's own folder, so it never meets a
run's or the demo's files; an ``--out`` holding other files is refused):

- ``results.md`` and ``results.json`` (strict JSON: a missing or non-finite value is ``null``):
  per cell the number of runs, of scored runs and of evaluation episodes, the mean ± std of
  the final score over seeds, its IQM and mean with 95% stratified-bootstrap CIs, the
  return, and the final critic estimate minus Monte-Carlo return (mean with its CI, and the
  number of runs that over-estimate); per pair of cells of one algo on one dataset whose
  settings differ in one (an ablation), the score difference seed by seed on their common
  seeds, its mean with a bootstrap CI over seeds and how many seeds the first is ahead on; per
  algorithm, over datasets (a task = a dataset, :mod:`deep.stats`): IQM, mean, median and
  optimality gap with CIs; the probability that each algorithm improves on each other one (on
  the datasets both have scores for); the conservative-value diagnostic
  ``Q(s₀, π(s₀)) − Σ γᵗ rₜ`` (critic estimate minus Monte-Carlo return, ``> 0``:
  over-estimation) per algorithm, mean over datasets with its CI;
- ``intervals.png`` (aggregate scores with CIs), ``profiles.png`` (fraction of runs above τ,
  with CI bands), ``training.png`` (mean score over training per dataset, CI band over seeds),
  ``values.png`` (per dataset, each algorithm's critic estimate and the Monte-Carlo return of
  its policy over training).

Runs whose score is null (a dataset without reference scores, or a run that never evaluated)
stay in the tables: counted per cell as ``null`` and listed, never averaged in.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from deep import stats
from deep.cli import main_guard
from deep.files import atomic_write_text
from deep.layout import (
    CONFIG_NAME,
    INTERVALS_PNG,
    METRICS_NAME,
    PROFILES_PNG,
    REPORT_DIR,
    REPORT_FILES,
    RESULTS_JSON,
    RESULTS_MD,
    SUMMARY_NAME,
    SWEEP_META,
    TRAINING_PNG,
    VALUES_PNG,
    claim,
)
from deep.plots import read_metrics
from deep.runlog import finite_json, write_json

__all__ = ["REPORT_FILES", "Run", "find_runs", "main", "report", "summarize", "to_markdown"]

SCORE_KEY = "eval/normalized_score"
Q_KEY = "eval/q_estimate"
MC_KEY = "eval/mc_return"

# Train options that say where or how a run ran, not what it computed: never part of a label.
_NOT_SETTINGS = frozenset(
    {
        "algo",
        "dataset",
        "seed",
        "out",
        "resume",
        "device",
        "threads",
        "progress",
        "plots",
        "tensorboard",
    }
)


@dataclass
class Run:
    """One run folder's final numbers."""

    path: Path
    algo: str
    dataset: str
    seed: int | None
    score: float | None
    """Final normalised score; None when the run has none."""
    return_mean: float | None
    q_minus_mc: float | None
    """Final ``q_estimate_mean − mc_return_mean``; None without a critic estimate."""
    eval_episodes: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    """Algorithm label: algo plus the settings that vary between this algo's runs."""


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _settings(run_dir: Path) -> dict[str, Any]:
    """The run's settings: those of its ``config.json`` (the agent's config, and the run
    options it does not have), with those a sweep gave it (``../.sweep/<run>.json``) on top.
    So a setting one sweep set and another left at its default reads as that default in both,
    and runs of different sweeps compare."""
    out: dict[str, Any] = {}
    try:
        config = _read_json(run_dir / CONFIG_NAME)
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict):
        for key in ("agent", "train"):
            section = config.get(key)
            if isinstance(section, dict):
                for k, v in section.items():
                    if k not in _NOT_SETTINGS:
                        out.setdefault(k, v)
    try:
        trial = _read_json(run_dir.parent / SWEEP_META / f"{run_dir.name}.json")
    except (OSError, ValueError):
        trial = None
    if isinstance(trial, dict) and isinstance(trial.get("settings"), dict):
        out.update({k: v for k, v in trial["settings"].items() if k not in _NOT_SETTINGS})
    return out


def _format_value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(_format_value(x) for x in v)
    return json.dumps(v) if not isinstance(v, str) else v


def find_runs(root: str | Path) -> list[Run]:
    """Every run folder below ``root`` (one with a ``summary.json``), sorted by path, labelled.

    Raises ValueError when a summary is not a JSON object with ``algo`` and ``dataset``.
    """
    root = Path(root)
    runs: list[Run] = []
    for path in sorted(root.rglob(SUMMARY_NAME)):
        try:
            s = _read_json(path)
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(s, dict) or "algo" not in s or "dataset" not in s:
            raise ValueError(f"{path} is not a run summary (no algo / dataset)")
        q, mc = _finite(s.get("q_estimate_mean")), _finite(s.get("mc_return_mean"))
        seed = s.get("seed")
        episodes = s.get("eval_episodes")
        runs.append(
            Run(
                path=path.parent,
                algo=str(s["algo"]),
                dataset=str(s["dataset"]),
                seed=int(seed) if isinstance(seed, int) else None,
                score=_finite(s.get("normalized_score")),
                return_mean=_finite(s.get("return_mean")),
                q_minus_mc=q - mc if q is not None and mc is not None else None,
                eval_episodes=int(episodes) if isinstance(episodes, int) else None,
                settings=_settings(path.parent),
            )
        )
    _label(runs)
    return runs


def _canonical(value: Any) -> str:
    """One string per setting value, so two runs' values compare whatever their key order."""
    return json.dumps(value, sort_keys=True)


def _label(runs: Sequence[Run]) -> None:
    """``algo`` plus ``key=value`` for each setting that differs between that algo's runs.

    A setting missing from a run (its config was written before the setting existed) is no
    difference: it counts only among the runs that have it, and is left out of that run's label.
    """
    by_algo: dict[str, list[Run]] = {}
    for r in runs:
        by_algo.setdefault(r.algo, []).append(r)
    for algo, group in by_algo.items():
        keys = sorted({k for r in group for k in r.settings})
        varying = [
            k
            for k in keys
            if len({_canonical(r.settings[k]) for r in group if k in r.settings}) > 1
        ]
        for r in group:
            parts = [f"{k}={_format_value(r.settings[k])}" for k in varying if k in r.settings]
            r.label = " ".join([algo, *parts])


# ------------------------------------------------------------------------------ the numbers


def _interval(est: stats.Interval | None) -> dict[str, float | None] | None:
    return None if est is None else {k: _finite(v) for k, v in est.to_dict().items()}


def _std(x: np.ndarray) -> float | None:
    return float(np.std(x, ddof=1)) if x.size >= 2 else None


def _cells(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    cells: dict[tuple[str, str], list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.dataset, r.label, r.seed if r.seed is not None else -1)):
        cells.setdefault((r.dataset, r.label), []).append(r)
    return cells


def _scores(group: Sequence[Run]) -> np.ndarray:
    return np.array([r.score for r in group if r.score is not None], dtype=np.float64)


def _paired(
    x: Sequence[Run], y: Sequence[Run], rng: np.random.Generator, reps: int, confidence: float
) -> dict[str, Any] | None:
    """X − Y seed by seed, for two cells of one algo on one dataset whose settings differ in
    exactly one (an ablation: the same seed draws the same initialisation and batches, so the
    pairing removes most of the seed's variance). None for cells of different algos, cells
    that differ in more than one setting, or fewer than two scored seeds in common."""
    if x[0].algo != y[0].algo:
        return None
    sx, sy = x[0].settings, y[0].settings
    differ = [k for k in sorted(set(sx) & set(sy)) if _canonical(sx[k]) != _canonical(sy[k])]
    if len(differ) != 1:
        return None
    xs = {r.seed: r.score for r in x if r.seed is not None and r.score is not None}
    ys = {r.seed: r.score for r in y if r.seed is not None and r.score is not None}
    seeds = sorted(set(xs) & set(ys))
    if len(seeds) < 2:
        return None
    d = np.array([xs[s] - ys[s] for s in seeds], dtype=np.float64)
    est = stats.interval_estimate(d, stats.mean_statistic, rng, reps, confidence)
    return {
        "setting": differ[0],
        "seeds": seeds,
        "differences": d.tolist(),
        "difference": _interval(est),
        "x_ahead": int((d > 0).sum()),
    }


def _estimate(
    x: np.ndarray, statistic: Any, rng: np.random.Generator, reps: int, confidence: float
) -> dict[str, float | None] | None:
    """The interval estimate of ``statistic`` over ``x``; None below two values, where a
    bootstrap interval would have zero width and say nothing of the spread."""
    if x.size < 2:
        return None
    return _interval(stats.interval_estimate(x, statistic, rng, reps, confidence))


def cell_rows(
    cells: Mapping[tuple[str, str], Sequence[Run]],
    rng: np.random.Generator,
    reps: int,
    confidence: float,
) -> list[dict[str, Any]]:
    """Per cell (dataset × algorithm): its runs, the score over seeds (mean ± std, IQM and
    mean with CIs), the return, and the critic's estimate minus the Monte-Carlo return."""
    rows: list[dict[str, Any]] = []
    for (dataset, label), group in cells.items():
        x = _scores(group)
        returns = np.array([r.return_mean for r in group if r.return_mean is not None])
        gaps = np.array([r.q_minus_mc for r in group if r.q_minus_mc is not None])
        episodes = sorted({r.eval_episodes for r in group if r.eval_episodes is not None})
        rows.append(
            {
                "dataset": dataset,
                "algorithm": label,
                "algo": group[0].algo,
                "runs": len(group),
                "scored": int(x.size),
                "null": len(group) - int(x.size),
                "seeds": [r.seed for r in group],
                "eval_episodes": episodes[0] if len(episodes) == 1 else episodes,
                "score_mean": float(x.mean()) if x.size else None,
                "score_std": _std(x),
                "return_mean": float(returns.mean()) if returns.size else None,
                "return_std": _std(returns),
                "q_above_mc": int((gaps > 0).sum()),
                "q_minus_mc_runs": int(gaps.size),
                "q_minus_mc": _estimate(gaps, stats.mean_statistic, rng, reps, confidence),
                "score_iqm": _estimate(x, stats.iqm_statistic, rng, reps, confidence),
                "score_mean_ci": _estimate(x, stats.mean_statistic, rng, reps, confidence),
            }
        )
    return rows


def _tasks(
    cells: Mapping[tuple[str, str], Sequence[Run]], label: str, datasets: Sequence[str]
) -> dict[str, np.ndarray]:
    """The scores of ``label`` per dataset (a task), for the datasets where it has some."""
    out = {}
    for d in datasets:
        x = _scores(cells.get((d, label), []))
        if x.size:
            out[d] = x
    return out


def aggregate_rows(
    cells: Mapping[tuple[str, str], Sequence[Run]],
    rng: np.random.Generator,
    reps: int,
    confidence: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per algorithm over datasets: IQM, mean, median and optimality gap with CIs; and the
    probability that each algorithm improves on each other one, on their common datasets."""
    labels = sorted({lab for _, lab in cells})
    datasets = sorted({d for d, _ in cells})
    tasks_of = {label: _tasks(cells, label, datasets) for label in labels}
    aggregates: dict[str, Any] = {}
    for label in labels:
        tasks = tasks_of[label]
        entry: dict[str, Any] = {
            "datasets": sorted(tasks),
            "runs": sum(len(g) for (_, lab), g in cells.items() if lab == label),
            "scored": sum(int(x.size) for x in tasks.values()),
        }
        # One score in all has no spread to bootstrap: no interval rather than a point.
        intervals = (
            stats.aggregate_intervals(list(tasks.values()), rng, reps, confidence)
            if entry["scored"] >= 2
            else {}
        )
        for name in stats.AGGREGATES:
            entry[name] = _interval(intervals.get(name))
        aggregates[label] = entry
    improvement: list[dict[str, Any]] = []
    for a in labels:
        for b in labels:
            if a == b:
                continue
            common = sorted(set(tasks_of[a]) & set(tasks_of[b]))
            est = None
            if common:
                xa, xb = tasks_of[a], tasks_of[b]
                est = stats.improvement_interval(
                    [xa[d] for d in common], [xb[d] for d in common], rng, reps, confidence
                )
            improvement.append({"x": a, "y": b, "datasets": common, **(_interval(est) or {})})
    return aggregates, improvement


def paired_rows(
    cells: Mapping[tuple[str, str], Sequence[Run]],
    rng: np.random.Generator,
    reps: int,
    confidence: float,
) -> list[dict[str, Any]]:
    """Per dataset, every pair of cells of one algo whose settings differ in one: the score
    difference seed by seed (:func:`_paired`)."""
    rows: list[dict[str, Any]] = []
    for dataset in sorted({d for d, _ in cells}):
        in_dataset = sorted(lab for d, lab in cells if d == dataset)
        for i, a in enumerate(in_dataset):
            for b in in_dataset[i + 1 :]:
                row_ab = _paired(cells[(dataset, a)], cells[(dataset, b)], rng, reps, confidence)
                if row_ab is not None:
                    rows.append({"dataset": dataset, "x": a, "y": b, **row_ab})
    return rows


def value_gap_rows(
    cells: Mapping[tuple[str, str], Sequence[Run]],
    rng: np.random.Generator,
    reps: int,
    confidence: float,
) -> dict[str, Any]:
    """Per algorithm, the critic's estimate minus the Monte-Carlo return of its policy
    (``> 0``: over-estimation), mean over datasets with its CI."""
    datasets = sorted({d for d, _ in cells})
    diagnostic: dict[str, Any] = {}
    for label in sorted({lab for _, lab in cells}):
        per_dataset = {}
        for d in datasets:
            found = [r.q_minus_mc for r in cells.get((d, label), []) if r.q_minus_mc is not None]
            if found:
                per_dataset[d] = np.array(found)
        est = (
            stats.interval_estimate(
                list(per_dataset.values()), stats.mean_statistic, rng, reps, confidence
            )
            if sum(v.size for v in per_dataset.values()) >= 2
            else None
        )
        diagnostic[label] = {
            "datasets": sorted(per_dataset),
            "runs": sum(int(v.size) for v in per_dataset.values()),
            "q_minus_mc": _interval(est),
        }
    return diagnostic


# The share of the online phase over which a fine-tuning run's initial dip is measured.
DIP_WINDOW = 0.1


def fine_tuning(run: Run) -> dict[str, float] | None:
    """A fine-tuning run's numbers (None for an offline run, or one without the evaluations):
    ``offline``, the score at the end of pre-training; ``dip``, that score minus the lowest
    one over the first :data:`DIP_WINDOW` of the online steps, or the first online evaluation
    when none falls in it (> 0: the policy unlearned);
    ``final``, the last score; ``gain``, final − offline; ``regret``, the mean over the online
    evaluations of (100 − score) / 100 (Cal-QL's cumulative regret; 0 is expert throughout)."""
    offline_steps, online_steps = run.settings.get("steps"), run.settings.get("online_steps")
    if not isinstance(offline_steps, int) or not isinstance(online_steps, int) or not online_steps:
        return None
    steps, scores = run_curve(run, SCORE_KEY)
    at_end = scores[steps == offline_steps]
    window = (steps > offline_steps) & (steps <= offline_steps + DIP_WINDOW * online_steps)
    online = scores[steps > offline_steps]
    if at_end.size == 0 or online.size == 0:
        return None
    if not window.any():  # evaluations sparser than the window: the first online one
        window = steps == steps[steps > offline_steps][0]
    offline = float(at_end[-1])
    return {
        "offline": offline,
        "dip": offline - float(scores[window].min()),
        "final": float(online[-1]),
        "gain": float(online[-1]) - offline,
        "regret": float(np.mean((100.0 - online) / 100.0)),
    }


FINE_TUNING_KEYS = ("offline", "dip", "final", "gain", "regret")


def fine_tuning_rows(
    cells: Mapping[tuple[str, str], Sequence[Run]],
    rng: np.random.Generator,
    reps: int,
    confidence: float,
) -> list[dict[str, Any]]:
    """Per cell of fine-tuning runs: each of :data:`FINE_TUNING_KEYS` over seeds, as mean ±
    std with the mean's and the IQM's CIs, and every run's values."""
    rows: list[dict[str, Any]] = []
    for (dataset, label), group in cells.items():
        tuned = [(r.seed, f) for r in group if (f := fine_tuning(r)) is not None]
        if not tuned:
            continue
        row: dict[str, Any] = {
            "dataset": dataset,
            "algorithm": label,
            "runs": len(tuned),
            "seeds": [seed for seed, _ in tuned],
            "online_steps": group[0].settings.get("online_steps"),
            "online_ratio": group[0].settings.get("online_ratio"),
            "eval_episodes": group[0].eval_episodes,
        }
        for key in FINE_TUNING_KEYS:
            x = np.array([f[key] for _, f in tuned], dtype=np.float64)
            row[key] = {
                "values": x.tolist(),
                "mean": float(x.mean()),
                "std": _std(x),
                "mean_ci": _estimate(x, stats.mean_statistic, rng, reps, confidence),
                "iqm": _estimate(x, stats.iqm_statistic, rng, reps, confidence),
            }
        rows.append(row)
    return rows


def summarize(
    runs: Sequence[Run], seed: int = 0, reps: int = stats.REPS, confidence: float = stats.CONFIDENCE
) -> dict[str, Any]:
    """Everything ``results.json`` holds (see the module docstring), as plain JSON data: the
    four analyses on one bootstrap generator, and the runs."""
    rng = np.random.default_rng(seed)
    cells = _cells(runs)
    per_cell = cell_rows(cells, rng, reps, confidence)
    aggregates, improvement = aggregate_rows(cells, rng, reps, confidence)
    paired = paired_rows(cells, rng, reps, confidence)
    diagnostic = value_gap_rows(cells, rng, reps, confidence)
    tuned = fine_tuning_rows(cells, rng, reps, confidence)
    return {
        "settings": {"seed": seed, "reps": reps, "confidence": confidence},
        "score": "final normalized_score of each run (100 = expert, 0 = random)",
        "datasets": sorted({r.dataset for r in runs}),
        "algorithms": sorted({r.label for r in runs}),
        "cells": per_cell,
        "aggregates": aggregates,
        "probability_of_improvement": improvement,
        "paired": paired,
        "q_minus_mc": diagnostic,
        "fine_tuning": tuned,
        "null_runs": [
            {"path": str(r.path), "algorithm": r.label, "dataset": r.dataset, "seed": r.seed}
            for r in runs
            if r.score is None
        ],
        "runs": [
            {
                "path": str(r.path),
                "algorithm": r.label,
                "algo": r.algo,
                "dataset": r.dataset,
                "seed": r.seed,
                "score": r.score,
                "return_mean": r.return_mean,
                "q_minus_mc": r.q_minus_mc,
                "eval_episodes": r.eval_episodes,
                "settings": r.settings,
            }
            for r in runs
        ],
    }


# ------------------------------------------------------------------------------ markdown


def _num(x: float | None, digits: int = 1) -> str:
    return "null" if x is None else f"{x:.{digits}f}"


def _ci(est: Mapping[str, float | None] | None, digits: int = 1) -> str:
    if est is None:
        return "null"
    return f"{_num(est['point'], digits)} [{_num(est['low'], digits)}, {_num(est['high'], digits)}]"


def _spread(est: Mapping[str, Any], digits: int) -> str:
    """``mean ± std [low, high]`` (the mean's CI) of one fine-tuning quantity."""
    ci = est["mean_ci"]
    interval = f" [{_num(ci['low'], digits)}, {_num(ci['high'], digits)}]" if ci else ""
    return f"{_num(est['mean'], digits)} ± {_num(est['std'], digits)}{interval}"


def to_markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: the tables of :func:`summarize`'s output."""
    c = results["settings"]["confidence"]
    pct = f"{100 * c:g}%"
    lines = [
        "# Results",
        "",
        f"Score: {results['score']}. Intervals: {pct} stratified-bootstrap percentile CIs "
        f"({results['settings']['reps']} resamples, seed {results['settings']['seed']}; "
        "Agarwal et al. 2021). std: over seeds (ddof 1).",
        "",
        "## Per dataset and algorithm (final score over seeds)",
        "",
        f"| dataset | algorithm | runs | null | eval episodes | mean ± std | IQM [{pct} CI] "
        f"| mean [{pct} CI] | return mean ± std | Q − MC [{pct} CI] | runs with Q > MC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["cells"]:
        ms = f"{_num(row['score_mean'])} ± {_num(row['score_std'])}"
        rs = f"{_num(row['return_mean'])} ± {_num(row['return_std'])}"
        above = f"{row['q_above_mc']}/{row['q_minus_mc_runs']}" if row["q_minus_mc_runs"] else "–"
        lines.append(
            f"| {row['dataset']} | {row['algorithm']} | {row['runs']} | {row['null']} "
            f"| {row['eval_episodes']} | {ms} | {_ci(row['score_iqm'])} "
            f"| {_ci(row['score_mean_ci'])} | {rs} | {_ci(row['q_minus_mc'])} | {above} |"
        )
    lines += [
        "",
        "## Aggregated over datasets",
        "",
        "| algorithm | datasets | scored runs | IQM | mean | median | optimality gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, a in results["aggregates"].items():
        lines.append(
            f"| {label} | {len(a['datasets'])} | {a['scored']}/{a['runs']} | {_ci(a['iqm'])} "
            f"| {_ci(a['mean'])} | {_ci(a['median'])} | {_ci(a['optimality_gap'])} |"
        )
    if results["probability_of_improvement"]:
        lines += [
            "",
            "## Probability of improvement P(X > Y)",
            "",
            "| X | Y | datasets | P(X > Y) |",
            "|---|---|---|---|",
        ]
        for p in results["probability_of_improvement"]:
            lines.append(
                f"| {p['x']} | {p['y']} | {len(p['datasets'])} "
                f"| {_ci(p if p['datasets'] else None, 2)} |"
            )
    if results["paired"]:
        lines += [
            "",
            "## Paired by seed: one algorithm's settings against another's, X − Y",
            "",
            f"| dataset | X | Y | seeds | X − Y per seed | mean X − Y [{pct} CI] | X ahead |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in results["paired"]:
            per_seed = ", ".join(f"{v:+.1f}" for v in p["differences"])
            lines.append(
                f"| {p['dataset']} | {p['x']} | {p['y']} | {len(p['seeds'])} | {per_seed} "
                f"| {_ci(p['difference'])} | {p['x_ahead']}/{len(p['seeds'])} |"
            )
    lines += [
        "",
        "## Critic estimate minus Monte-Carlo return, Q(s₀, π(s₀)) − Σ γᵗ rₜ (> 0: over-estimates)",
        "",
        "| algorithm | runs | Q − MC, mean over datasets |",
        "|---|---|---|",
    ]
    for label, d in results["q_minus_mc"].items():
        lines.append(f"| {label} | {d['runs']} | {_ci(d['q_minus_mc'], 2)} |")
    if results.get("fine_tuning"):
        lines += [
            "",
            f"## Offline-to-online fine-tuning (over seeds: mean ± std, and the mean's {pct} CI)",
            "",
            f"Dip: score at the end of pre-training minus the lowest over the first "
            f"{DIP_WINDOW:.0%} of the online steps. Regret: mean of (100 − score)/100 over the "
            "online evaluations.",
            "",
            "| dataset | algorithm | runs | online steps | pre-trained | dip | final | gain "
            "| regret |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["fine_tuning"]:
            cells_text = " | ".join(
                _spread(row[k], 2 if k == "regret" else 1) for k in FINE_TUNING_KEYS
            )
            lines.append(
                f"| {row['dataset']} | {row['algorithm']} | {row['runs']} "
                f"| {row['online_steps']} | {cells_text} |"
            )
    if results["null_runs"]:
        lines += ["", "## Runs without a score", ""]
        lines += [
            f"- {r['path']} ({r['algorithm']}, {r['dataset']}, seed {r['seed']})"
            for r in results["null_runs"]
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ plots


def _plot_intervals(results: Mapping[str, Any], out: Path) -> Path | None:
    from matplotlib.figure import Figure

    labels = [k for k, a in results["aggregates"].items() if a["iqm"] is not None]
    if not labels:
        return None
    names = {"iqm": "IQM", "mean": "mean", "median": "median", "optimality_gap": "optimality gap"}
    fig = Figure(figsize=(3.2 * len(names), 0.6 * len(labels) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(names), sharey=True)
    for ax, (key, title) in zip(axes, names.items(), strict=True):
        for i, label in enumerate(labels):
            est = results["aggregates"][label][key]
            lo, hi = est["low"], est["high"]
            ax.barh(i, hi - lo, left=lo, height=0.6, color=f"C{i}", alpha=0.6)
            ax.plot([est["point"]] * 2, [i - 0.3, i + 0.3], color="black", linewidth=2)
        ax.set(title=title, xlabel="normalised score")
        ax.set_yticks(range(len(labels)), labels)
    fig.suptitle(f"{100 * results['settings']['confidence']:g}% stratified-bootstrap CIs")
    fig.savefig(out, dpi=100)
    return out


def _plot_profiles(runs: Sequence[Run], results: Mapping[str, Any], out: Path) -> Path | None:
    from matplotlib.figure import Figure

    scored = [r for r in runs if r.score is not None]
    if not scored:
        return None
    all_scores = np.array([r.score for r in scored])
    taus = np.linspace(min(0.0, all_scores.min()), max(100.0, all_scores.max()), 101)
    rng = np.random.default_rng(results["settings"]["seed"])
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, label in enumerate(results["algorithms"]):
        tasks = [
            _scores([r for r in scored if r.label == label and r.dataset == d])
            for d in results["datasets"]
        ]
        tasks = [t for t in tasks if t.size]
        if not tasks:
            continue
        prof = stats.performance_profile(
            tasks, taus, rng, results["settings"]["reps"], results["settings"]["confidence"]
        )
        ax.plot(prof.taus, prof.fraction, color=f"C{i}", label=label)
        ax.fill_between(prof.taus, prof.low, prof.high, color=f"C{i}", alpha=0.2)
    ax.set(
        title="performance profile (CI bands: stratified bootstrap)",
        xlabel="normalised score τ",
        ylabel="fraction of runs with score > τ",
        ylim=(-0.02, 1.02),
    )
    ax.legend()
    fig.savefig(out, dpi=100)
    return out


def run_curve(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's logged ``key`` over its steps, where it is finite: (steps, values)."""
    path = run.path / METRICS_NAME
    if not path.exists():
        return np.zeros(0), np.zeros(0)
    metrics = read_metrics(path)
    if key not in metrics or "step" not in metrics:
        return np.zeros(0), np.zeros(0)
    y = metrics[key]
    keep = np.isfinite(y)
    return metrics["step"][keep], y[keep]


def training_curves(
    runs: Sequence[Run],
    seed: int = 0,
    reps: int = stats.REPS,
    confidence: float = stats.CONFIDENCE,
    key: str = SCORE_KEY,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Per cell: evaluation steps and the mean of metric ``key`` (default: the score) over
    seeds with its bootstrap CI there.

    Returns (dataset, label) -> {"step", "mean", "low", "high", "runs"} arrays of one length;
    a cell none of whose runs logged ``key`` is left out.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for cell, group in _cells(runs).items():
        curves = [run_curve(r, key) for r in group]
        steps = np.unique(np.concatenate([s for s, _ in curves])) if curves else np.zeros(0)
        rows: dict[str, list[float]] = {k: [] for k in ("step", "mean", "low", "high", "runs")}
        for step in steps:
            x = np.array([y[s == step][-1] for s, y in curves if (s == step).any()])
            est = stats.interval_estimate(x, stats.mean_statistic, rng, reps, confidence)
            for k, v in zip(rows, (step, est.point, est.low, est.high, x.size), strict=True):
                rows[k].append(float(v))
        if rows["step"]:
            out[cell] = {k: np.array(v) for k, v in rows.items()}
    return out


def _dataset_panels(curves: Mapping[tuple[str, str], Any]) -> tuple[Any, dict[str, Any]] | None:
    """A figure with one panel per dataset of ``curves`` (dataset -> axes); None without any."""
    from matplotlib.figure import Figure

    datasets = sorted({d for d, _ in curves})
    if not datasets:
        return None
    fig = Figure(figsize=(max(7.0, 5.0 * len(datasets)), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)[0])
    return fig, dict(zip(datasets, axes, strict=True))


def _plot_training(
    curves: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    labels: Sequence[str],
    out: Path,
) -> Path | None:
    panels = _dataset_panels(curves)
    if panels is None:
        return None
    fig, axes = panels
    for d, ax in axes.items():
        for i, label in enumerate(labels):
            c = curves.get((d, label))
            if c is None:
                continue
            ax.plot(c["step"], c["mean"], marker="o", color=f"C{i}", label=label)
            ax.fill_between(c["step"], c["low"], c["high"], color=f"C{i}", alpha=0.2)
        ax.set(title=d, xlabel="gradient step", ylabel="normalised score (mean over seeds)")
        ax.legend(fontsize="small")
    fig.suptitle("evaluation score over training: mean over seeds, bootstrap CI band")
    fig.savefig(out, dpi=100)
    return out


def _plot_values(
    q: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    mc: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    labels: Sequence[str],
    out: Path,
) -> Path | None:
    """Per dataset: each algorithm's critic estimate Q(s₀, π(s₀)) (solid) and the Monte-Carlo
    return of its policy from the same start states (dashed) over training."""
    panels = _dataset_panels(q)
    if panels is None:
        return None
    fig, axes = panels
    for d, ax in axes.items():
        for i, label in enumerate(labels):
            for curves, style, name in ((q, "-", "Q"), (mc, "--", "MC")):
                c = curves.get((d, label))
                if c is None or (d, label) not in q:
                    continue
                ax.plot(
                    c["step"],
                    c["mean"],
                    style,
                    marker="o",
                    ms=3,
                    color=f"C{i}",
                    label=f"{label} {name}",
                )
                ax.fill_between(c["step"], c["low"], c["high"], color=f"C{i}", alpha=0.15)
        ax.set(title=d, xlabel="gradient step", ylabel="discounted return from s₀")
        returns = [np.abs(c["mean"]).max() for (dd, _), c in mc.items() if dd == d]
        estimates = [np.abs(c["high"]).max() for (dd, _), c in q.items() if dd == d]
        scale = max(returns, default=1.0) or 1.0
        if max(estimates, default=0.0) > 10 * scale:  # a diverging critic: keep MC readable
            ax.set_yscale("symlog", linthresh=scale)
        ax.legend(fontsize="small")
    fig.suptitle("Q(s₀, π(s₀)) solid, Monte-Carlo return dashed (mean over seeds, CI band)")
    fig.savefig(out, dpi=100)
    return out


# ------------------------------------------------------------------------------ entry points


def report(
    root: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    reps: int = stats.REPS,
    confidence: float = stats.CONFIDENCE,
    plots: bool = True,
) -> dict[str, Any]:
    """Find the runs below ``root``, write results.md / results.json (and PNGs) to ``out``
    (default ``root/report``, a folder that holds nothing else), and return the results.
    Raises FileNotFoundError when there is no run, :class:`~deep.layout.FolderError` when
    ``out`` holds files the report did not write."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if reps < 1:
        raise ValueError(f"--reps must be >= 1, got {reps}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run folder (with {SUMMARY_NAME}) below {root}")
    out_dir = claim(
        Path(out) if out is not None else root / REPORT_DIR, REPORT_FILES, "deep.report"
    )
    results = finite_json(summarize(runs, seed, reps, confidence))
    results["root"] = str(root)
    if plots:
        written = [
            _plot_intervals(results, out_dir / INTERVALS_PNG),
            _plot_profiles(runs, results, out_dir / PROFILES_PNG),
            _plot_training(
                training_curves(runs, seed, reps, confidence),
                results["algorithms"],
                out_dir / TRAINING_PNG,
            ),
            _plot_values(
                training_curves(runs, seed, reps, confidence, key=Q_KEY),
                training_curves(runs, seed, reps, confidence, key=MC_KEY),
                results["algorithms"],
                out_dir / VALUES_PNG,
            ),
        ]
        results["plots"] = [p.name for p in written if p is not None]
    write_json(out_dir / RESULTS_JSON, results)
    atomic_write_text(out_dir / RESULTS_MD, to_markdown(results))
    return results


@dataclass
class ReportConfig:
    """Interval-estimate tables and plots of every run folder below a folder."""

    root: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="DIR")]
    """Folder holding run folders (searched recursively for summary.json)."""

    out: str | None = None
    """Where to write results.md, results.json and the PNGs (a new folder, or one holding
    only an earlier report); default: DIR/report."""

    reps: int = stats.REPS
    """Bootstrap resamples per interval."""

    confidence: float = stats.CONFIDENCE
    """Confidence level of the intervals."""

    seed: int = 0
    """Seed of the bootstrap."""

    plots: bool = True
    """Write the PNGs."""


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m deep.report DIR``); exit 2 and one line on bad
    input (see :mod:`deep.cli`)."""

    def body(args: list[str]) -> int:
        config = tyro.cli(
            ReportConfig,
            args=args,
            prog="python -m deep.report",
            description=(__doc__ or "").split("\n\n")[0],
        )
        results = report(
            config.root, config.out, config.seed, config.reps, config.confidence, config.plots
        )
        out = Path(config.out) if config.out is not None else Path(config.root) / REPORT_DIR
        print(to_markdown(results), end="")
        print(f"wrote {out / RESULTS_MD}, {out / RESULTS_JSON}", file=sys.stderr)
        return 0

    return main_guard(body, argv)


if __name__ == "__main__":
    sys.exit(main())
