"""Tabular MDPs and exact policy evaluation.

Layout (one layout across the project):

* ``P[s, a, s2]`` = T(s2 | s, a), shape (S, A, S), or a ``scipy.sparse`` array of shape
  (S*A, S) whose row ``s*A + a`` is T(. | s, a), for MDPs too large to hold densely.
* ``R[s, a]`` = r(s, a), shape (S, A).
* ``pi[s, a]`` = pi(a | s), row-stochastic, shape (S, A).

Exact policy evaluation solves the Bellman equation on *states*:

    V^pi = (I - gamma P_pi)^{-1} r_pi,   P_pi[s, s2] = sum_a pi(a|s) P(s2|s, a),   r_pi = sum_a pi R,
    Q^pi = R + gamma P V^pi,

which equals ``Q^pi = (I - gamma P^pi)^{-1} R`` on state-action pairs (P^pi = P[s,a,s'] pi[s',a'])
with |S| unknowns instead of |S||A|: substitute V = sum_a pi Q into Q = R + gamma P V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

PROB_ATOL = 1e-9
# Dense P with at most this fraction of non-zeros is solved with sparse linear algebra once
# the state space is large enough for it to pay off.
SPARSE_DENSITY = 0.1
SPARSE_MIN_STATES = 500
# Above this many states, a sparse system is solved with GMRES instead of a direct LU
# factorisation (random sparse transition graphs fill in catastrophically under LU).
DIRECT_MAX_STATES = 5000
# ... unless the transition graph is banded (|s - s2| <= bandwidth for every transition):
# then LU fill-in is at most S * bandwidth entries, and banded graphs (chains, grids) are
# exactly the ones on which GMRES converges slowly.
DIRECT_MAX_FILL = 20_000_000
# GMRES restarts every GMRES_RESTART iterations. method="gmres" allows GMRES_MAX_CYCLES
# restart cycles; "auto" allows AUTO_GMRES_CYCLES and then falls back to the direct solve
# (random transition graphs converge within a few dozen iterations).
GMRES_RESTART = 100
GMRES_MAX_CYCLES = 2000
AUTO_GMRES_CYCLES = 1
# random_mdp draws next-state subsets by an argsort of S*A*S uniforms up to this size.
ARGSORT_MAX_ENTRIES = 4_000_000

# A dense ndarray or any scipy.sparse matrix/array (scipy ships no precise stubs).
Matrix: TypeAlias = Any


class InvalidMDPError(ValueError):
    """An MDP, policy or dataset that violates the model's assumptions."""


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite discounted MDP (P, R, gamma, d0), validated when built.

    Args:
        P: transitions, dense (S, A, S) with ``P[s, a, s2] = T(s2|s, a)``, or sparse (S*A, S)
            with row ``s*A + a``.
        R: rewards ``R[s, a]``, shape (S, A), finite.
        gamma: discount, ``0 <= gamma < 1``.
        d0: initial-state distribution (S,); uniform when omitted.
    """

    P: Matrix
    R: np.ndarray
    gamma: float
    d0: np.ndarray = None  # type: ignore[assignment]  # filled in (uniform) by __post_init__

    def __post_init__(self) -> None:
        R = np.asarray(self.R, dtype=float)
        if R.ndim != 2:
            raise InvalidMDPError(f"R must have shape (S, A), got shape {R.shape}")
        S, A = R.shape
        if sp.issparse(self.P):
            if self.P.ndim != 2:
                raise InvalidMDPError(
                    f"sparse P must be 2-D with shape (S*A, S) = ({S * A}, {S}), got shape "
                    f"{self.P.shape}"
                )
            P: Matrix = sp.csr_array(self.P, dtype=float)
            if P.shape != (S * A, S):
                raise InvalidMDPError(
                    f"sparse P must have shape (S*A, S) = ({S * A}, {S}) to match R {R.shape}, "
                    f"got {P.shape}"
                )
            data = P.data
            sums = np.asarray(P.sum(axis=1)).ravel().reshape(S, A)
        else:
            P = np.asarray(self.P, dtype=float)
            if P.shape != (S, A, S):
                raise InvalidMDPError(
                    f"P must have shape (S, A, S) = ({S}, {A}, {S}) to match R {R.shape}, "
                    f"got {P.shape}"
                )
            data = P
            sums = P.sum(axis=2)
        bad_entry = ~np.isfinite(data) | (np.nan_to_num(data, nan=0.0) < 0)
        if bad_entry.any():
            s, a, s2, value = _first_bad_entry(P, bad_entry, A)
            what = "negative" if np.isfinite(value) else "not finite"
            raise InvalidMDPError(
                f"P[{s}, {a}, {s2}] = {value} is {what}: transition probabilities must be "
                "finite and >= 0"
            )
        bad = np.abs(sums - 1.0) > PROB_ATOL
        if bad.any():
            s, a = _first_pair(bad)
            raise InvalidMDPError(f"P[{s}, {a}] sums to {sums[s, a]:.12g}, not 1")
        if not np.all(np.isfinite(R)):
            s, a = _first_pair(~np.isfinite(R))
            raise InvalidMDPError(f"R[{s}, {a}] = {R[s, a]} is not finite")
        if not (0.0 <= float(self.gamma) < 1.0):
            raise InvalidMDPError(f"gamma must satisfy 0 <= gamma < 1, got {self.gamma}")
        if self.d0 is None:
            d0 = np.full(S, 1.0 / S)
        else:
            d0 = validate_distribution(np.asarray(self.d0, dtype=float), S, "d0")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "d0", d0)

    @property
    def n_states(self) -> int:
        return int(self.R.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.R.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.P)

    @property
    def P_flat(self) -> Matrix:
        """Transitions as a (S*A, S) matrix, row ``s*A + a`` (a view when dense)."""
        if sp.issparse(self.P):
            return self.P
        return self.P.reshape(self.n_states * self.n_actions, self.n_states)

    def dense_P(self) -> np.ndarray:
        """Transitions as a dense (S, A, S) array."""
        if sp.issparse(self.P):
            return np.asarray(self.P.toarray()).reshape(self.n_states, self.n_actions, -1)
        return self.P

    def expected_next(self, v: np.ndarray) -> np.ndarray:
        """``(P v)[s, a] = sum_s2 P[s, a, s2] v[s2]``; shape (S,) -> (S, A)."""
        return np.asarray(self.P_flat @ v).reshape(self.n_states, self.n_actions)


def _first_bad_entry(P: Matrix, bad_entry: Any, A: int) -> tuple[int, int, int, float]:
    """(s, a, s2, value) of the first flagged entry of P (dense (S, A, S) or CSR (S*A, S)).

    ``bad_entry`` flags ``P`` itself when dense and ``P.data`` when sparse (never densified).
    """
    if sp.issparse(P):
        idx = int(np.argmax(bad_entry))
        row = int(np.searchsorted(np.asarray(P.indptr), idx, side="right")) - 1
        return row // A, row % A, int(P.indices[idx]), float(P.data[idx])
    s, a, s2 = (int(i) for i in np.argwhere(bad_entry)[0])
    return s, a, s2, float(P[s, a, s2])


def _first_pair(mask: np.ndarray) -> tuple[int, int]:
    s, a = np.argwhere(mask)[0]
    return int(s), int(a)


def validate_distribution(p: np.ndarray, n: int, name: str) -> np.ndarray:
    """Check that ``p`` is a probability vector of length ``n``."""
    if p.shape != (n,):
        raise InvalidMDPError(f"{name} must have shape ({n},), got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        i = int(np.argwhere(~np.isfinite(p) | (p < 0))[0, 0])
        raise InvalidMDPError(f"{name}[{i}] = {p[i]} is not a probability")
    if abs(p.sum() - 1.0) > PROB_ATOL:
        raise InvalidMDPError(f"{name} sums to {p.sum():.12g}, not 1")
    return p


def validate_policy(pi: np.ndarray, n_states: int, n_actions: int, name: str = "pi") -> np.ndarray:
    """Check that ``pi`` is a row-stochastic (S, A) array; return it as float."""
    pi = np.asarray(pi, dtype=float)
    if pi.shape != (n_states, n_actions):
        raise InvalidMDPError(f"{name} must have shape ({n_states}, {n_actions}), got {pi.shape}")
    bad = ~np.isfinite(pi) | (pi < 0)
    if bad.any():
        s, a = _first_pair(bad)
        raise InvalidMDPError(f"{name}[{s}, {a}] = {pi[s, a]} is not a probability")
    sums = pi.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_ATOL
    if off.any():
        s = int(np.argmax(off))
        raise InvalidMDPError(f"{name}[{s}] sums to {sums[s]:.12g}, not 1")
    return pi


def policy_transition(mdp: TabularMDP, pi: np.ndarray) -> Matrix:
    """State-to-state transitions under pi: ``P_pi[s, s2] = sum_a pi(a|s) P(s2|s, a)``.

    Dense (S, S) for a dense MDP (``einsum('sat,sa->st')``), sparse CSR for a sparse one.
    """
    pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    if mdp.is_sparse:
        S, A = mdp.n_states, mdp.n_actions
        # Pi[s, s*A + a] = pi(a|s): a (S, S*A) block-diagonal selector, so P_pi = Pi @ P_flat.
        Pi = sp.csr_array(
            (pi.ravel(), np.arange(S * A), np.arange(0, S * A + 1, A)), shape=(S, S * A)
        )
        return sp.csr_array(Pi @ mdp.P_flat)
    return np.einsum("sat,sa->st", mdp.P, pi)


def bellman(mdp: TabularMDP, q: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """The Bellman operator ``(B^pi Q)(s, a) = R(s, a) + gamma sum_s2 P(s2|s,a) sum_a2 pi(a2|s2) Q(s2, a2)``.

    Shapes: q (S, A), pi (S, A) -> (S, A).
    """
    pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    return mdp.R + mdp.gamma * mdp.expected_next(np.sum(pi * q, axis=1))


SolveMethod = Literal["auto", "dense", "direct", "gmres"]


def solve_discounted(
    mdp: TabularMDP, pi: np.ndarray, r: np.ndarray, method: SolveMethod = "auto"
) -> np.ndarray:
    """Solve ``Q = r + gamma P (pi . Q)`` for Q, i.e. ``Q = (I - gamma P^pi)^{-1} r``.

    Works for any reward ``r`` of shape (S, A) (the CQL fixed points reuse it with a penalised
    reward). Solved in state space: ``V = (I - gamma P_pi)^{-1} r_pi``, ``Q = r + gamma P V``.
    ``method``: "dense" (LAPACK), "direct" (sparse LU), "gmres" (Krylov, for large sparse
    systems; raises RuntimeError if it does not converge), or "auto" (sparse solvers when P is
    sparse or a large dense P has few non-zeros; see :func:`auto_method`).
    Raises :class:`InvalidMDPError` for a bad ``pi`` (naming the row) or a non-finite ``r``.
    """
    if method not in ("auto", "dense", "direct", "gmres"):
        raise ValueError(f"unknown method {method!r}; use auto, dense, direct or gmres")
    pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    r = np.asarray(r, dtype=float)
    if r.shape != mdp.R.shape:
        raise InvalidMDPError(f"reward must have shape {mdp.R.shape}, got {r.shape}")
    if not np.all(np.isfinite(r)):
        # An infinite penalty (e.g. mu/pi_beta_hat off the support) would turn into nan here.
        s, a = _first_pair(~np.isfinite(r))
        raise InvalidMDPError(f"reward[{s}, {a}] = {r[s, a]} is not finite")
    S = mdp.n_states
    r_pi = np.sum(pi * r, axis=1)
    automatic = method == "auto"
    if automatic:
        method = auto_method(mdp)
    if method == "dense":
        P_pi = policy_transition(mdp, pi)
        P_pi = P_pi.toarray() if sp.issparse(P_pi) else P_pi
        # V = r_pi + gamma P_pi V  =>  (I - gamma P_pi) V = r_pi.
        v = np.linalg.solve(np.eye(S) - mdp.gamma * P_pi, r_pi)
    else:
        if mdp.is_sparse:
            P_pi_sparse = sp.csr_array(policy_transition(mdp, pi))
        else:
            P_pi_sparse = sp.csr_array(np.einsum("sat,sa->st", mdp.P, pi))
        M = sp.csr_array(sp.eye_array(S, format="csr") - mdp.gamma * P_pi_sparse)
        v_gmres = None
        if method == "gmres":
            cycles = AUTO_GMRES_CYCLES if automatic else GMRES_MAX_CYCLES
            v_gmres = _gmres(M, r_pi, mdp.gamma, cycles)
            if v_gmres is None and not automatic:
                raise RuntimeError(
                    f"GMRES did not converge in {cycles} cycles of {GMRES_RESTART} iterations; "
                    "use method='direct'"
                )
        if v_gmres is None:
            # SuperLU factorises CSC; GMRES only needs products, for which CSR is as fast.
            v = np.asarray(spla.spsolve(sp.csc_array(M), r_pi), dtype=float)
        else:
            v = v_gmres
    return r + mdp.gamma * mdp.expected_next(v)


def auto_method(mdp: TabularMDP) -> SolveMethod:
    """The solve method ``method="auto"`` uses for this MDP.

    "dense" for small or dense MDPs; for sparse storage (or a dense P with at most
    ``SPARSE_DENSITY`` non-zeros and at least ``SPARSE_MIN_STATES`` states): "direct" up to
    ``DIRECT_MAX_STATES`` states or while the LU factors stay banded (states x bandwidth at
    most ``DIRECT_MAX_FILL``, e.g. chains and grids numbered along the grid), "gmres" above.
    In "auto" mode GMRES gets a small budget (``AUTO_GMRES_CYCLES`` restart cycles) and the
    solve falls back to "direct" when that is not enough.
    """
    S = mdp.n_states
    if not mdp.is_sparse and (
        S < SPARSE_MIN_STATES or np.count_nonzero(mdp.P) > SPARSE_DENSITY * mdp.P.size
    ):
        return "dense"
    if S <= DIRECT_MAX_STATES or S * _bandwidth(mdp) <= DIRECT_MAX_FILL:
        return "direct"
    return "gmres"


def _bandwidth(mdp: TabularMDP) -> int:
    """``max |s - s2|`` over the transitions with ``P[s, a, s2] > 0``, in the given state order."""
    if mdp.is_sparse:
        P = mdp.P
        s = np.repeat(np.arange(P.shape[0]) // mdp.n_actions, np.diff(P.indptr))
        positive = P.data != 0  # explicitly stored zeros are no transition
        s, s2 = s[positive], P.indices[positive]
    else:
        s, _, s2 = np.nonzero(mdp.P)
    return int(np.max(np.abs(s - s2))) if len(s) else 0


def _gmres(M: sp.csr_array, b: np.ndarray, gamma: float, cycles: int) -> np.ndarray | None:
    """GMRES on ``M x = b`` with ``cycles`` restart cycles; None when it did not converge.

    I - gamma P_pi is strictly diagonally dominant, so GMRES converges eventually; the residual
    is checked here rather than trusted, and a poor solution is never returned.
    """
    x, info = spla.gmres(M, b, rtol=1e-13, atol=0.0, restart=GMRES_RESTART, maxiter=cycles)
    residual = float(np.max(np.abs(M @ x - b))) if b.size else 0.0
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    if info != 0 and residual > 1e-9 * scale / (1.0 - gamma):
        return None
    return np.asarray(x, dtype=float)


def policy_evaluation(mdp: TabularMDP, pi: np.ndarray, method: SolveMethod = "auto") -> np.ndarray:
    """Exact ``Q^pi = (I - gamma P^pi)^{-1} R``; (S, A).

    Solved in state space (|S| unknowns), never with a matrix inverse; see :func:`solve_discounted`.
    """
    return solve_discounted(mdp, pi, mdp.R, method=method)


def state_values(q: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """``V(s) = sum_a pi(a|s) Q(s, a)``; (S, A), (S, A) -> (S,)."""
    return np.sum(pi * q, axis=1)


def expected_return(mdp: TabularMDP, pi: np.ndarray) -> float:
    """``J(pi) = sum_s d0(s) V^pi(s)``, the discounted return from the initial distribution."""
    return float(mdp.d0 @ state_values(policy_evaluation(mdp, pi), pi))


def iterative_policy_evaluation(
    mdp: TabularMDP,
    pi: np.ndarray,
    tol: float = 1e-12,
    max_iter: int = 100_000,
) -> np.ndarray:
    """Apply ``B^pi`` from Q = 0 until ``max |Q_{k+1} - Q_k| < tol``: the cross-check of the solve.

    B^pi is a gamma-contraction in the sup norm, so the error after stopping is at most
    ``tol * gamma / (1 - gamma)``.
    """
    pi = validate_policy(pi, mdp.n_states, mdp.n_actions)
    q = np.zeros_like(mdp.R)
    for _ in range(max_iter):
        q_next = mdp.R + mdp.gamma * mdp.expected_next(np.sum(pi * q, axis=1))
        if np.max(np.abs(q_next - q)) < tol:
            return q_next
        q = q_next
    raise RuntimeError(f"policy evaluation did not reach tol={tol} in {max_iter} iterations")


def value_iteration(
    mdp: TabularMDP, tol: float = 1e-12, max_iter: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal ``Q*`` by value iteration, and a greedy deterministic policy (S, A) one-hot."""
    q = np.zeros_like(mdp.R)
    for _ in range(max_iter):
        q_next = mdp.R + mdp.gamma * mdp.expected_next(q.max(axis=1))
        if np.max(np.abs(q_next - q)) < tol:
            return q_next, greedy_policy(q_next)
        q = q_next
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iter} iterations")


def greedy_policy(q: np.ndarray) -> np.ndarray:
    """One-hot policy on ``argmax_a q[s, a]`` (lowest index on ties); (S, A) -> (S, A)."""
    pi = np.zeros_like(q, dtype=float)
    pi[np.arange(q.shape[0]), np.argmax(q, axis=1)] = 1.0
    return pi


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """``pi(a|s) = 1/A`` for every state; (S, A)."""
    return np.full((n_states, n_actions), 1.0 / n_actions)


def random_policy(
    n_states: int, n_actions: int, rng: np.random.Generator, concentration: float = 1.0
) -> np.ndarray:
    """Rows drawn from a symmetric Dirichlet(concentration); full support almost surely."""
    return rng.dirichlet(np.full(n_actions, concentration), size=n_states)


# --- MDP constructors -----------------------------------------------------------------------


def random_mdp(
    n_states: int,
    n_actions: int,
    rng: np.random.Generator,
    *,
    gamma: float = 0.9,
    n_next: int | None = None,
    reward_range: tuple[float, float] = (-1.0, 1.0),
    sparse: bool = False,
    concentration: float = 1.0,
) -> TabularMDP:
    """A random MDP: Dirichlet transition rows, uniform rewards in ``reward_range``.

    ``n_next`` limits each (s, a) to that many distinct next states (chosen uniformly), which
    makes P sparse; ``sparse=True`` stores it as a (S*A, S) CSR matrix (requires ``n_next``).
    """
    S, A = n_states, n_actions
    if S < 1 or A < 1:
        raise ValueError(f"need at least one state and one action, got S={S}, A={A}")
    lo, hi = reward_range
    R = rng.uniform(lo, hi, size=(S, A))
    if n_next is None:
        if sparse:
            raise ValueError("sparse=True needs n_next (the number of next states per pair)")
        P = rng.dirichlet(np.full(S, concentration), size=(S, A))
        return TabularMDP(P, R, gamma)
    if n_next < 1:
        raise ValueError(f"n_next must be >= 1, got {n_next}")
    k = min(n_next, S)
    # k distinct next states per pair: argsort of uniforms gives a random subset for each row
    # without a Python loop over S*A rows. That costs S*A*S uniforms, so a large MDP with few
    # next states per pair redraws duplicates instead (a row's k draws are all distinct with
    # probability >= e^{-1/2} when k^2 <= S, so few redraws are needed).
    if S * A * S <= ARGSORT_MAX_ENTRIES or k * k > S:
        cols = _random_subsets(rng, S * A, S, k)
    else:
        cols = _distinct_columns(rng, S * A, S, k)
    probs = rng.dirichlet(np.full(k, concentration), size=S * A)
    rows = np.repeat(np.arange(S * A), k)
    P_flat = sp.csr_array((probs.ravel(), (rows, cols.ravel())), shape=(S * A, S))
    if sparse:
        return TabularMDP(P_flat, R, gamma)
    return TabularMDP(P_flat.toarray().reshape(S, A, S), R, gamma)


def _random_subsets(rng: np.random.Generator, n_rows: int, n_cols: int, k: int) -> np.ndarray:
    # Row blocks bound the memory; Generator.random fills in order, so the draws are the same
    # as one (n_rows, n_cols) call.
    block = max(1, ARGSORT_MAX_ENTRIES // n_cols)
    return np.concatenate(
        [
            np.argsort(rng.random((min(block, n_rows - i), n_cols)), axis=1)[:, :k]
            for i in range(0, n_rows, block)
        ]
    )


def _distinct_columns(rng: np.random.Generator, n_rows: int, n_cols: int, k: int) -> np.ndarray:
    cols = rng.integers(0, n_cols, size=(n_rows, k))
    # Redraw rows with a repeated column until all are distinct (rare when k << n_cols).
    while True:
        srt = np.sort(cols, axis=1)
        dup = (np.diff(srt, axis=1) == 0).any(axis=1)
        if not dup.any():
            return cols
        cols[dup] = rng.integers(0, n_cols, size=(int(dup.sum()), k))


def two_state_mdp(gamma: float = 0.9) -> TabularMDP:
    """A 2-state, 2-action MDP small enough to evaluate by hand (see tests/theory/test_mdp.py).

    Action 0 stays, action 1 switches state; staying in state 1 pays 1, everything else 0.
    """
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[1, 0, 1] = 1.0  # stay
    P[0, 1, 1] = P[1, 1, 0] = 1.0  # switch
    R = np.array([[0.0, 0.0], [1.0, 0.0]])
    return TabularMDP(P, R, gamma, d0=np.array([1.0, 0.0]))


def chain_mdp(
    n_states: int = 6, gamma: float = 0.9, slip: float = 0.1, small_reward: float = 0.1
) -> TabularMDP:
    """A chain (RiverSwim-like): action 0 moves left, action 1 moves right and slips left w.p. slip.

    The left end pays ``small_reward`` for action 0; the right end pays 1 for action 1. A dataset
    collected near the left end leaves the right end's actions unseen, the setting in which naive
    offline Q-learning over-estimates.
    """
    if n_states < 2:
        raise ValueError(f"a chain needs at least 2 states, got {n_states}")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must be a probability in [0, 1], got {slip}")
    S = n_states
    P = np.zeros((S, 2, S))
    R = np.zeros((S, 2))
    for s in range(S):
        P[s, 0, max(s - 1, 0)] = 1.0
        P[s, 1, min(s + 1, S - 1)] += 1.0 - slip
        P[s, 1, max(s - 1, 0)] += slip
    R[0, 0] = small_reward
    R[S - 1, 1] = 1.0
    d0 = np.zeros(S)
    d0[0] = 1.0
    return TabularMDP(P, R, gamma, d0=d0)


GRID_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left


def gridworld(
    height: int = 4,
    width: int = 4,
    gamma: float = 0.9,
    slip: float = 0.1,
    goal: tuple[int, int] | None = None,
    pits: tuple[tuple[int, int], ...] = (),
    step_reward: float = 0.0,
) -> TabularMDP:
    """A slippery gridworld; state ``s = row * width + col``, actions up/right/down/left.

    The intended move happens w.p. ``1 - slip``, otherwise a uniformly random move; walls keep
    the agent in place. Acting in the goal pays 1 and in a pit pays -1; both then reset to the
    start (0, 0), so the chain is recurrent and every state keeps being visited.
    """
    if height < 1 or width < 1:
        raise ValueError(f"the grid needs height, width >= 1, got {height} x {width}")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must be a probability in [0, 1], got {slip}")
    goal = goal if goal is not None else (height - 1, width - 1)
    for name, (r, c) in [("goal", goal), *(("pit", pit) for pit in pits)]:
        if not (0 <= r < height and 0 <= c < width):
            raise ValueError(f"{name} {(r, c)} is outside the {height} x {width} grid")
    S, A = height * width, len(GRID_MOVES)
    P = np.zeros((S, A, S))
    R = np.full((S, A), step_reward)

    def move(r: int, c: int, d: int) -> int:
        dr, dc = GRID_MOVES[d]
        rr, cc = min(max(r + dr, 0), height - 1), min(max(c + dc, 0), width - 1)
        return rr * width + cc

    for r in range(height):
        for c in range(width):
            s = r * width + c
            if (r, c) == goal or (r, c) in pits:
                P[s, :, 0] = 1.0
                R[s, :] = 1.0 if (r, c) == goal else -1.0
                continue
            for a in range(A):
                P[s, a, move(r, c, a)] += 1.0 - slip
                for d in range(A):
                    P[s, a, move(r, c, d)] += slip / A
    d0 = np.zeros(S)
    d0[0] = 1.0
    return TabularMDP(P, R, gamma, d0=d0)
