"""Timing of exact policy evaluation: ``python -m theory.bench``.

Three cases, each on one random MDP built once (only the solve is timed):

* dense: (S, A) = (2000, 8), every P[s, a] a full Dirichlet row; solved in state space.
* sparse: (S, A) = (50000, 8), 5 next states per pair, P stored as a (S*A, S) CSR matrix;
  target: under 3 s.
* speed-up: (S, A) = (400, 8), :func:`theory.mdp.policy_evaluation` against the naive dense
  solve of ``(I - gamma P^pi) Q = R`` on all S*A state-action pairs; target: >= 20x.

Each line reports the median of a few repeats (at least ``--repeats``, and more for solves
that take milliseconds) and the Bellman residual
``max |Q - (R + gamma P (pi . Q))|`` of the solution, so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from theory.mdp import (
    TabularMDP,
    auto_method,
    bellman,
    policy_evaluation,
    random_mdp,
    random_policy,
    validate_policy,
)

SPARSE_TARGET_SECONDS = 3.0
SPEEDUP_TARGET = 20.0
# Each timed function is called until at least this much time has been spent on it.
MIN_TOTAL_SECONDS = 0.5


@dataclass(frozen=True)
class CaseResult:
    """One benchmark line.

    Attributes:
        name: what was solved, e.g. "dense (2000, 8)".
        seconds: median wall-clock seconds of the timed solve.
        residual: Bellman residual ``max |Q - B^pi Q|`` of the timed solution.
        method: the solve method :func:`policy_evaluation` used ("dense", "direct", "gmres").
        target: the target in words, or "" when the case has none.
        met: whether the target is met; None when there is no target.
        baseline_seconds: median seconds of the naive solve (speed-up case only).
        baseline_residual: Bellman residual of the naive solution (speed-up case only).
        max_abs_diff: ``max |Q_naive - Q|`` (speed-up case only).
    """

    name: str
    seconds: float
    residual: float
    method: str
    target: str = ""
    met: bool | None = None
    baseline_seconds: float | None = None
    baseline_residual: float | None = None
    max_abs_diff: float | None = None

    @property
    def speedup(self) -> float | None:
        if self.baseline_seconds is None:
            return None
        return self.baseline_seconds / self.seconds


def naive_policy_evaluation(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """Q^pi by the textbook dense solve on state-action pairs, the baseline of the speed-up.

    ``P^pi[(s, a), (s2, a2)] = P[s, a, s2] pi[s2, a2]``, an (S*A, S*A) matrix built densely,
    then ``(I - gamma P^pi) Q = R`` is solved with LAPACK: O((S A)^3) work instead of O(S^3).
    Shapes: pi (S, A) -> Q (S, A).
    """
    S, A = mdp.n_states, mdp.n_actions
    pi = validate_policy(pi, S, A)
    P_flat = mdp.P_flat.toarray() if mdp.is_sparse else np.asarray(mdp.P_flat)
    P_pairs = (P_flat[:, :, None] * pi[None, :, :]).reshape(S * A, S * A)
    q = np.linalg.solve(np.eye(S * A) - mdp.gamma * P_pairs, mdp.R.ravel())
    return q.reshape(S, A)


def bellman_residual(mdp: TabularMDP, pi: np.ndarray, q: np.ndarray) -> float:
    """``max_{s,a} |Q(s, a) - (B^pi Q)(s, a)|``, zero exactly at Q^pi."""
    return float(np.max(np.abs(q - bellman(mdp, q, pi))))


def median_seconds(
    fn: Callable[[], np.ndarray], repeats: int, min_total: float = MIN_TOTAL_SECONDS
) -> tuple[float, np.ndarray]:
    """Median wall-clock seconds of calls of ``fn``, and the last call's result.

    Calls ``fn`` at least ``repeats`` times and until ``min_total`` seconds have been spent, so
    that a millisecond solve is timed over many calls (one preempted call on a busy machine
    then does not decide the median).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: list[float] = []
    out = np.empty(0)
    while len(times) < repeats or sum(times) < min_total:
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def _timed_case(
    mdp: TabularMDP, name: str, rng: np.random.Generator, repeats: int, min_total: float
) -> tuple[CaseResult, np.ndarray, np.ndarray]:
    """Median time of ``policy_evaluation`` for a random policy on ``mdp``: the result (no
    target yet), the policy and its Q."""
    pi = random_policy(mdp.n_states, mdp.n_actions, rng)
    seconds, q = median_seconds(lambda: policy_evaluation(mdp, pi), repeats, min_total)
    result = CaseResult(
        name=name, seconds=seconds, residual=bellman_residual(mdp, pi, q), method=auto_method(mdp)
    )
    return result, pi, q


def bench_dense(
    n_states: int, n_actions: int, seed: int, repeats: int, min_total: float = MIN_TOTAL_SECONDS
) -> CaseResult:
    """Exact evaluation on a dense random MDP (full Dirichlet transition rows)."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(n_states, n_actions, rng)
    return _timed_case(mdp, f"dense ({n_states}, {n_actions})", rng, repeats, min_total)[0]


def bench_sparse(
    n_states: int,
    n_actions: int,
    n_next: int,
    seed: int,
    repeats: int,
    min_total: float = MIN_TOTAL_SECONDS,
) -> CaseResult:
    """Exact evaluation on a sparse random MDP stored as CSR, ``n_next`` next states per pair."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(n_states, n_actions, rng, n_next=n_next, sparse=True)
    name = f"sparse ({n_states}, {n_actions}), {n_next} next states per pair"
    result = _timed_case(mdp, name, rng, repeats, min_total)[0]
    return replace(
        result,
        target=f"< {SPARSE_TARGET_SECONDS:g} s",
        met=result.seconds < SPARSE_TARGET_SECONDS,
    )


def bench_speedup(
    n_states: int, n_actions: int, seed: int, repeats: int, min_total: float = MIN_TOTAL_SECONDS
) -> CaseResult:
    """State-space solve against the naive (S*A) x (S*A) solve, on one dense random MDP."""
    rng = np.random.default_rng(seed)
    mdp = random_mdp(n_states, n_actions, rng)
    name = f"speed-up over naive (S*A)^2 solve at ({n_states}, {n_actions})"
    result, pi, q = _timed_case(mdp, name, rng, repeats, min_total)
    base_seconds, q_naive = median_seconds(
        lambda: naive_policy_evaluation(mdp, pi), repeats, min_total
    )
    return replace(
        result,
        target=f">= {SPEEDUP_TARGET:g}x",
        met=base_seconds / result.seconds >= SPEEDUP_TARGET,
        baseline_seconds=base_seconds,
        baseline_residual=bellman_residual(mdp, pi, q_naive),
        max_abs_diff=float(np.max(np.abs(q_naive - q))),
    )


def format_result(result: CaseResult) -> str:
    """One human-readable line per case."""
    line = (
        f"{result.name}: {result.seconds:.4f} s median [{result.method}], "
        f"residual {result.residual:.2e}"
    )
    if result.baseline_seconds is not None:
        line += (
            f"; naive {result.baseline_seconds:.4f} s, residual {result.baseline_residual:.2e}, "
            f"max |Q_naive - Q| {result.max_abs_diff:.2e}; speed-up {result.speedup:.1f}x"
        )
    if result.met is not None:
        line += f"; target {result.target}: {'met' if result.met else 'NOT met'}"
    return line


def main(argv: Sequence[str] | None = None) -> list[CaseResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random MDPs")
    args = parser.parse_args(argv)
    results = []
    for case in (
        lambda: bench_dense(2000, 8, args.seed, args.repeats),
        lambda: bench_sparse(50_000, 8, 5, args.seed, args.repeats),
        lambda: bench_speedup(400, 8, args.seed, args.repeats),
    ):
        result = case()
        print(format_result(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
