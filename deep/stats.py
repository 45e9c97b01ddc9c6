"""Interval estimates of aggregate scores over runs and tasks (Agarwal et al. 2021, rliable).

Agarwal, Schwarzer, Castro, Courville, Bellemare, "Deep Reinforcement Learning at the Edge of
the Statistical Precipice", NeurIPS 2021 (arXiv 2108.13264); definitions as in their library
``rliable`` (``rliable/metrics.py``, ``rliable/library.py``), which does not import here
(rliable 1.2.0 with pandas 3 / arch 8), so this module re-states them on numpy and scipy.

Layout: ``scores`` holds the final (normalised) score of every run on every task, either a
2-D array ``x[m, t]`` of shape (runs, tasks) (rliable's layout) or a sequence of 1-D arrays,
one per task, whose lengths may differ (tasks with different numbers of seeds). A task here is
one dataset. Scores must be finite: a run without a score is the caller's to report.

Statistics (``N`` = all runs of all tasks, ``x̄_t`` = mean of task t's runs):

- IQM, interquartile mean: the mean of the middle 50% of the N flattened scores,
  ``scipy.stats.trim_mean(x, 0.25)`` (Sec. 4.3, ``aggregate_iqm``);
- mean: ``(1/T) Σ_t x̄_t`` (``aggregate_mean``); median: ``median_t x̄_t``, the median of
  the per-task means (``aggregate_median``);
- optimality gap: ``(1/N) Σ max(0, γ − x)``, how far the runs fall short of the target γ
  (rliable's ``γ − mean(min(x, γ))``; γ = 100 for D4RL-normalised scores, 1 in rliable);
- probability of improvement: ``P(X > Y) = (1/T) Σ_t (1/(m_t n_t)) Σ_i Σ_j
  [1(x_ti > y_tj) + ½ 1(x_ti = y_tj)]``, the Mann-Whitney U of each task over its m_t n_t
  pairs, averaged over tasks (Sec. 4.3, ``probability_of_improvement``);
- performance profile (run-score distribution): ``F̂(τ) = (1/N) Σ 1(x > τ)``, the fraction of
  runs scoring above τ (Sec. 4.2, ``run_score_deviation``).

Interval estimates: 95% percentile confidence intervals of the stratified bootstrap, which
resamples runs with replacement *within* each task, so every resample keeps each task's number
of runs and never moves a run to another task (Sec. 4.1, ``StratifiedBootstrap``). It is
``scipy.stats.bootstrap`` with each task passed as its own sample and ``paired=False``: scipy
resamples each sample independently, which is exactly the stratification. Two corner cases are
handled around scipy: a task with a single run is held fixed (its every resample is that run;
scipy needs two observations per sample), and when no task has two runs the interval is the
point itself. Probability of improvement resamples X's and Y's runs independently (rliable's
``StratifiedIndependentBootstrap``). Randomness is passed in as a seed or a
``np.random.Generator``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

Tasks = list[np.ndarray]
"""Scores of each task, ``tasks[t]`` of shape (..., runs_t); leading axes are resamples."""

Statistic = Callable[[Tasks], np.ndarray]
"""A vectorised statistic: tasks of shape (..., runs_t) -> values of shape (...) or (..., k)."""

Seed = int | np.random.Generator | None

CONFIDENCE = 0.95
REPS = 2000
"""Default bootstrap resamples (rliable uses 50 000 for aggregates, 2 000 for profiles)."""
OPTIMAL_SCORE = 100.0
"""Target γ of the optimality gap: an expert's D4RL-normalised score."""


def as_tasks(scores: ArrayLike | Sequence[ArrayLike]) -> Tasks:
    """Scores as a list of 1-D float arrays, one per task.

    A 2-D ``np.ndarray`` is read as (runs, tasks), rliable's layout; a 1-D array or a flat list
    of numbers as one task; any other sequence (of arrays or lists) as one entry per task,
    whose lengths may differ. Raises ValueError on an empty task or a non-finite score
    (naming the task and the run).
    """
    if isinstance(scores, np.ndarray) or (
        isinstance(scores, Sequence) and all(np.isscalar(s) for s in scores)
    ):
        array = np.asarray(scores, dtype=np.float64)
        if array.ndim == 1:
            tasks = [array]
        elif array.ndim == 2:
            tasks = [array[:, t] for t in range(array.shape[1])]
        else:
            raise ValueError(f"scores must be (runs, tasks) or a list of tasks; got {array.shape}")
    else:
        tasks = [np.asarray(t, dtype=np.float64).reshape(-1) for t in scores]  # type: ignore[union-attr]
    if not tasks:
        raise ValueError("scores hold no task")
    for t, x in enumerate(tasks):
        if x.size == 0:
            raise ValueError(f"task {t} has no run")
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise ValueError(f"task {t}, run {int(bad[0])}: score {x[bad[0]]} is not finite")
    return tasks


# ------------------------------------------------------------------ vectorised statistics
# Each takes tasks of shape (..., runs_t) and reduces the last axis, so one call evaluates
# every bootstrap resample at once.


def _flat(tasks: Tasks) -> np.ndarray:
    """(..., N): all runs side by side."""
    shape = np.broadcast_shapes(*(x.shape[:-1] for x in tasks))
    return np.concatenate([np.broadcast_to(x, (*shape, x.shape[-1])) for x in tasks], axis=-1)


def _task_means(tasks: Tasks) -> np.ndarray:
    """(..., T): x̄_t."""
    shape = np.broadcast_shapes(*(x.shape[:-1] for x in tasks))
    return np.stack([np.broadcast_to(x.mean(axis=-1), shape) for x in tasks], axis=-1)


def iqm_statistic(tasks: Tasks) -> np.ndarray:
    """IQM: ``trim_mean(x, 0.25)`` over the flattened runs × tasks. (...,)"""
    return np.asarray(scipy.stats.trim_mean(_flat(tasks), 0.25, axis=-1))


def mean_statistic(tasks: Tasks) -> np.ndarray:
    """Mean of the per-task means, ``(1/T) Σ_t x̄_t``. (...,)"""
    return _task_means(tasks).mean(axis=-1)


def median_statistic(tasks: Tasks) -> np.ndarray:
    """Median of the per-task means, ``median_t x̄_t``. (...,)"""
    return np.median(_task_means(tasks), axis=-1)


def optimality_gap_statistic(tasks: Tasks, target: float = OPTIMAL_SCORE) -> np.ndarray:
    """Optimality gap ``(1/N) Σ max(0, γ − x)`` with γ = ``target``. (...,)"""
    return np.maximum(0.0, target - _flat(tasks)).mean(axis=-1)


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(1/(m n)) Σ_i Σ_j [1(x_i > y_j) + ½ 1(x_i = y_j)]`` of x (..., m) and y (..., n)."""
    diff = x[..., :, None] - y[..., None, :]  # (..., m, n)
    return ((diff > 0).mean(axis=(-2, -1))) + 0.5 * (diff == 0).mean(axis=(-2, -1))


def improvement_statistic(x_tasks: Tasks, y_tasks: Tasks) -> np.ndarray:
    """Probability of improvement of X over Y, averaged over tasks. (...,)"""
    if len(x_tasks) != len(y_tasks):
        raise ValueError(f"X has {len(x_tasks)} tasks, Y has {len(y_tasks)}")
    per_task = [_improvement(x, y) for x, y in zip(x_tasks, y_tasks, strict=True)]
    return np.mean(np.stack(np.broadcast_arrays(*per_task), axis=-1), axis=-1)


def profile_statistic(tasks: Tasks, taus: np.ndarray) -> np.ndarray:
    """Run-score distribution ``F̂(τ) = (1/N) Σ 1(x > τ)`` at each τ. (..., len(taus))"""
    flat = _flat(tasks)
    return (flat[..., None, :] > np.asarray(taus, dtype=np.float64)[:, None]).mean(axis=-1)


AGGREGATES: dict[str, Statistic] = {
    "iqm": iqm_statistic,
    "mean": mean_statistic,
    "median": median_statistic,
    "optimality_gap": optimality_gap_statistic,
}
"""The four aggregate scores of rliable, by name."""


# ------------------------------------------------------------------ point estimates


def iqm(scores: ArrayLike | Sequence[ArrayLike]) -> float:
    """Interquartile mean, ``scipy.stats.trim_mean(x, 0.25)`` of all runs of all tasks.

    ``scores``: (runs, tasks) or one 1-D array per task. E.g. iqm([1, 2, 3, 4, 5, 6, 7, 8]) =
    mean(3, 4, 5, 6) = 4.5.
    """
    return float(iqm_statistic(as_tasks(scores)))


def mean_score(scores: ArrayLike | Sequence[ArrayLike]) -> float:
    """Mean over tasks of each task's mean score, ``(1/T) Σ_t x̄_t``."""
    return float(mean_statistic(as_tasks(scores)))


def median_score(scores: ArrayLike | Sequence[ArrayLike]) -> float:
    """Median over tasks of each task's mean score, ``median_t x̄_t`` (rliable's median)."""
    return float(median_statistic(as_tasks(scores)))


def optimality_gap(scores: ArrayLike | Sequence[ArrayLike], target: float = OPTIMAL_SCORE) -> float:
    """``(1/N) Σ max(0, target − x)`` over all N runs of all tasks (lower is better)."""
    return float(optimality_gap_statistic(as_tasks(scores), target))


def probability_of_improvement(
    x: ArrayLike | Sequence[ArrayLike], y: ArrayLike | Sequence[ArrayLike]
) -> float:
    """``P(X > Y) + ½ P(X = Y)``, per task over all pairs of X's and Y's runs, averaged.

    ``x``, ``y``: (runs, tasks) or one array per task, the same tasks in the same order (the
    numbers of runs may differ). Identical samples give exactly 0.5.
    """
    return float(improvement_statistic(as_tasks(x), as_tasks(y)))


# ------------------------------------------------------------------ interval estimates


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Profile:
    """A performance profile: ``fraction[i] = F̂(taus[i])`` with its CI band ``[low, high]``."""

    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _rng_kwarg(seed: Seed) -> dict[str, Any]:
    # scipy renamed random_state to rng in 1.15 (SPEC 7); either takes a Generator or a seed.
    rng = np.random.default_rng(seed)
    if "rng" in inspect.signature(scipy.stats.bootstrap).parameters:
        return {"rng": rng}
    return {"random_state": rng}


def stratified_bootstrap(
    tasks: Tasks,
    statistic: Statistic,
    seed: Seed,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point value and percentile CI of ``statistic`` under the stratified bootstrap.

    Each task's runs are resampled with replacement, ``runs_t`` draws from that task alone;
    ``statistic`` sees the resamples as tasks of shape (reps_batch, runs_t). Tasks with one run
    are held fixed. Returns ``(point, low, high)``, each of the statistic's output shape; the
    interval is the [(1−c)/2, (1+c)/2] quantiles of ``reps`` resampled values (percentile
    method, as rliable).
    """
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    point = np.asarray(statistic(tasks), dtype=np.float64)
    varied = [t for t, x in enumerate(tasks) if x.shape[-1] >= 2]
    if not varied:
        return point, point.copy(), point.copy()

    out_axes = point.ndim

    def scipy_statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        full = list(tasks)
        for t, x in zip(varied, samples, strict=True):
            full[t] = np.moveaxis(x, axis, -1)
        result = np.asarray(statistic(full))
        # The statistic returns (batch..., k...); scipy wants its own axes first: (k..., batch...).
        own = list(range(result.ndim - out_axes, result.ndim))
        return np.moveaxis(result, own, list(range(out_axes)))

    result = scipy.stats.bootstrap(
        [tasks[t] for t in varied],
        scipy_statistic,
        n_resamples=reps,
        vectorized=True,
        paired=False,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        **_rng_kwarg(seed),
    )
    low = np.asarray(result.confidence_interval.low, dtype=np.float64)
    high = np.asarray(result.confidence_interval.high, dtype=np.float64)
    return point, low, high


def interval_estimate(
    scores: ArrayLike | Sequence[ArrayLike],
    statistic: Statistic,
    seed: Seed,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
) -> Interval:
    """A scalar statistic (e.g. :data:`AGGREGATES` ``["iqm"]``) with its stratified CI."""
    point, low, high = stratified_bootstrap(as_tasks(scores), statistic, seed, reps, confidence)
    return Interval(float(point), float(low), float(high))


def aggregate_intervals(
    scores: ArrayLike | Sequence[ArrayLike],
    seed: Seed,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:
    """IQM, mean, median and optimality gap of ``scores``, each with its stratified CI.

    One generator drives the four bootstraps in turn, so a seed fixes all of them.
    """
    rng = np.random.default_rng(seed)
    return {
        name: interval_estimate(scores, statistic, rng, reps, confidence)
        for name, statistic in AGGREGATES.items()
    }


def improvement_interval(
    x: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | Sequence[ArrayLike],
    seed: Seed,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Probability of improvement of X over Y with its CI; X's and Y's runs are resampled
    independently, each within its task (rliable's ``StratifiedIndependentBootstrap``)."""
    x_tasks, y_tasks = as_tasks(x), as_tasks(y)
    if len(x_tasks) != len(y_tasks):
        raise ValueError(f"X has {len(x_tasks)} tasks, Y has {len(y_tasks)}")
    n = len(x_tasks)

    def statistic(tasks: Tasks) -> np.ndarray:
        return improvement_statistic(tasks[:n], tasks[n:])

    point, low, high = stratified_bootstrap(x_tasks + y_tasks, statistic, seed, reps, confidence)
    return Interval(float(point), float(low), float(high))


def performance_profile(
    scores: ArrayLike | Sequence[ArrayLike],
    taus: ArrayLike,
    seed: Seed,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
) -> Profile:
    """Fraction of runs scoring above each τ, ``F̂(τ) = (1/N) Σ 1(x > τ)``, with pointwise
    stratified-bootstrap CI bands. ``taus``: (K,); every field of the result is (K,)."""
    tau = np.asarray(taus, dtype=np.float64).reshape(-1)

    def statistic(tasks: Tasks) -> np.ndarray:
        return profile_statistic(tasks, tau)

    point, low, high = stratified_bootstrap(as_tasks(scores), statistic, seed, reps, confidence)
    return Profile(tau, point, low, high)
