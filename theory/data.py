"""Datasets of transitions and the empirical MDP built from their counts.

From a dataset D = {(s, a, r, s')} (CQL paper, Section 2):

    pi_beta_hat(a|s) = n(s, a) / n(s)
    T_hat(s'|s, a)   = n(s, a, s') / n(s, a)
    r_hat(s, a)      = (1 / n(s, a)) sum of the rewards observed at (s, a)   (a mean reward)

Convention for what D does not cover (documented once, used everywhere):

* A pair (s, a) with n(s, a) = 0 is *absorbing* in T_hat (a self-loop back to s) with reward
  ``unseen_reward``, by default ``-r_max`` (``r_max`` = the largest |reward| in D unless given),
  so ``Q_hat(s, a) = -r_max + gamma V_hat(s)``.
  At a state that is not in D every action is unseen, so the state keeps itself for ever and
  ``V_hat(s) = -r_max / (1 - gamma)`` under every policy, the lowest value possible: a T_hat
  that leads to a next state which never was a current state in D (the coverage gap) cannot
  make the empirical MDP *over*-estimate. At a state in D, an unseen action is worth
  ``-r_max / (1 - gamma)`` only for a policy that keeps taking it; a policy within the support
  of pi_beta_hat (see :meth:`EmpiricalMDP.check_support`) never takes it, so its values do
  not depend on the convention there.
* A state with n(s) = 0 has no behaviour policy; ``pi_beta[s]`` is set to uniform as a
  placeholder and ``seen_states[s]`` is False. Checks "for all s in D" use ``seen_states``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from theory.mdp import InvalidMDPError, TabularMDP, validate_distribution, validate_policy

# Above this many entries of (S, A, S), T_hat is stored sparse (S*A, S).
DENSE_MAX_ENTRIES = 4_000_000
# Categorical sampling gathers at most this many probabilities at a time.
SAMPLE_BLOCK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class Transitions:
    """A dataset of tabular transitions: four arrays of length n.

    ``s``, ``a``, ``s2`` are int64 indices, ``r`` float64 rewards.
    """

    s: np.ndarray
    a: np.ndarray
    r: np.ndarray
    s2: np.ndarray
    n_states: int
    n_actions: int

    def __post_init__(self) -> None:
        for name, n in (("n_states", self.n_states), ("n_actions", self.n_actions)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise InvalidMDPError(f"{name} must be a positive integer, got {n!r}")
        s, a, r, s2 = (np.asarray(x) for x in (self.s, self.a, self.r, self.s2))
        arrays = {"s": s, "a": a, "r": r, "s2": s2}
        for name, x in arrays.items():
            if x.ndim != 1:
                raise InvalidMDPError(f"{name} must be 1-D, got shape {x.shape}")
            # Booleans, strings and objects are not indices or rewards (and would be misread).
            if x.size and x.dtype.kind not in "iuf":
                raise InvalidMDPError(f"{name} must be numeric, got dtype {x.dtype}")
        lengths = {name: len(x) for name, x in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise InvalidMDPError(f"transition arrays have unequal lengths: {lengths}")
        for name, x, n in (
            ("s", s, self.n_states),
            ("a", a, self.n_actions),
            ("s2", s2, self.n_states),
        ):
            if x.size and x.dtype.kind == "f":
                finite = np.isfinite(x)
                bad_index = ~finite | (
                    np.where(finite, x, 0.0) != np.round(np.where(finite, x, 0.0))
                )
                if bad_index.any():
                    i = int(np.argmax(bad_index))
                    raise InvalidMDPError(f"row {i}: {name} = {x[i]} is not an integer index")
            bad = (x < 0) | (x >= n)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidMDPError(f"row {i}: {name} = {x[i]} is outside [0, {n})")
        bad_r = ~np.isfinite(r.astype(float))
        if bad_r.any():
            i = int(np.argmax(bad_r))
            raise InvalidMDPError(f"row {i}: reward r = {r[i]} is not finite")
        object.__setattr__(self, "s", s.astype(np.int64))
        object.__setattr__(self, "a", a.astype(np.int64))
        object.__setattr__(self, "r", r.astype(float))
        object.__setattr__(self, "s2", s2.astype(np.int64))

    def __len__(self) -> int:
        return int(self.s.shape[0])


def sample_dataset(
    mdp: TabularMDP,
    behavior: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    state_dist: np.ndarray | None = None,
    horizon: int | None = None,
    reward_noise: float = 0.0,
) -> Transitions:
    """Sample ``n`` transitions with the behaviour policy ``behavior`` (S, A).

    Two ways to pick states:

    * i.i.d. (default): ``s ~ state_dist`` (uniform when omitted, so every state is in D with
      high probability), ``a ~ behavior(.|s)``, ``s' ~ T(.|s, a)``.
    * trajectories (``horizon`` given): episodes of ``horizon`` steps from ``mdp.d0``.

    The reward is ``R[s, a]`` plus, if ``reward_noise > 0``, uniform noise on
    ``[-reward_noise, reward_noise]``, so rewards stay bounded (Hoeffding applies).
    Requires a dense P or a sparse one; next states are drawn row by row via inverse CDF.
    """
    S, A = mdp.n_states, mdp.n_actions
    behavior = validate_policy(behavior, S, A, "behavior")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not (np.isfinite(reward_noise) and reward_noise >= 0):
        raise ValueError(f"reward_noise must be finite and >= 0, got {reward_noise}")
    if horizon is None:
        p_s = (
            np.full(S, 1.0 / S)
            if state_dist is None
            else validate_distribution(np.asarray(state_dist, float), S, "state_dist")
        )
        s = rng.choice(S, size=n, p=p_s)
        a = _sample_rows(behavior, s, rng)
        s2 = _sample_next(mdp, s, a, rng)
    else:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        s = np.empty(n, dtype=np.int64)
        a = np.empty(n, dtype=np.int64)
        s2 = np.empty(n, dtype=np.int64)
        n_episodes = -(-n // horizon)
        cur = rng.choice(S, size=n_episodes, p=mdp.d0)
        for t in range(horizon):
            idx = np.arange(n_episodes) * horizon + t
            keep = idx < n
            act = _sample_rows(behavior, cur, rng)
            nxt = _sample_next(mdp, cur, act, rng)
            s[idx[keep]], a[idx[keep]], s2[idx[keep]] = cur[keep], act[keep], nxt[keep]
            cur = nxt
    r = mdp.R[s, a]
    if reward_noise > 0:
        r = r + rng.uniform(-reward_noise, reward_noise, size=n)
    return Transitions(s, a, r, s2, S, A)


def _sample_rows(probs: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row index, vectorised by inverse CDF; (K,) -> (K,).

    ``probs`` is (n_rows, n_outcomes); the K gathered rows are processed in blocks so that a
    wide ``probs`` (e.g. dense P with thousands of states) never needs a (K, n_outcomes) copy.
    """
    u = rng.random(len(rows))
    out = np.empty(len(rows), dtype=np.int64)
    block = max(1, SAMPLE_BLOCK_ENTRIES // max(1, probs.shape[1]))
    for i in range(0, len(rows), block):
        out[i : i + block] = _inverse_cdf(probs[rows[i : i + block]], u[i : i + block])
    return out


def _inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index k with cdf[k-1] <= u * total < cdf[k] in each row of ``probs`` (K, n); (K,) -> (K,)."""
    cdf = np.cumsum(probs, axis=1)
    # Counting the cdf values <= u skips zero-probability outcomes; min() guards rounding at
    # the top end.
    k = (u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1)
    return np.minimum(k, probs.shape[1] - 1).astype(np.int64)


def _sample_next(
    mdp: TabularMDP, s: np.ndarray, a: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    rows = s * mdp.n_actions + a
    if not mdp.is_sparse:
        return _sample_rows(np.asarray(mdp.P_flat), rows, rng)
    P = sp.csr_array(mdp.P_flat)
    u = rng.random(len(rows))
    out = np.empty(len(rows), dtype=np.int64)
    starts = P.indptr[rows]
    lengths = P.indptr[rows + 1] - starts
    # Rows with the same number of stored entries form a (K, k) block of probabilities.
    for k in np.unique(lengths):
        sel = np.flatnonzero(lengths == k)
        entries = starts[sel, None] + np.arange(k)
        out[sel] = P.indices[entries[np.arange(len(sel)), _inverse_cdf(P.data[entries], u[sel])]]
    return out


@dataclass(frozen=True, eq=False)
class EmpiricalMDP:
    """The empirical MDP of a dataset: counts, pi_beta_hat, and ``mdp`` = (T_hat, r_hat).

    Attributes:
        mdp: the :class:`TabularMDP` with T_hat and r_hat (usable wherever an MDP is expected).
        counts: n(s, a), (S, A) int.
        state_counts: n(s), (S,) int.
        pi_beta: pi_beta_hat(a|s) = n(s, a)/n(s), (S, A); uniform on states not in D.
        seen: n(s, a) > 0, (S, A) bool.
        seen_states: n(s) > 0, (S,) bool.
        unseen_reward: the reward given to unseen pairs (absorbing); see the module docstring.
    """

    mdp: TabularMDP
    counts: np.ndarray
    state_counts: np.ndarray
    pi_beta: np.ndarray
    seen: np.ndarray
    seen_states: np.ndarray
    unseen_reward: float

    @property
    def n_states(self) -> int:
        return self.mdp.n_states

    @property
    def n_actions(self) -> int:
        return self.mdp.n_actions

    @property
    def gamma(self) -> float:
        return self.mdp.gamma

    @property
    def P(self) -> np.ndarray | sp.sparray | sp.spmatrix:
        """T_hat, in the layout of :attr:`TabularMDP.P`."""
        return self.mdp.P

    @property
    def R(self) -> np.ndarray:
        """r_hat, (S, A)."""
        return self.mdp.R

    @classmethod
    def from_transitions(
        cls,
        n_states: int,
        n_actions: int,
        s: np.ndarray,
        a: np.ndarray,
        r: np.ndarray,
        s2: np.ndarray,
        gamma: float,
        *,
        unseen_reward: float | None = None,
        r_max: float | None = None,
        d0: np.ndarray | None = None,
    ) -> EmpiricalMDP:
        """Count a dataset into (pi_beta_hat, T_hat, r_hat).

        Unseen pairs are absorbing with reward ``unseen_reward`` (default ``-r_max``; ``r_max``
        defaults to the largest |r| in the data, or 1 for an empty dataset). Bad rows (index out
        of range, unequal lengths, non-finite reward) raise :class:`InvalidMDPError` naming the row.
        """
        data = Transitions(s, a, r, s2, n_states, n_actions)
        S, A = n_states, n_actions
        pair = data.s * A + data.a
        counts = np.bincount(pair, minlength=S * A).reshape(S, A)
        reward_sums = np.bincount(pair, weights=data.r, minlength=S * A).reshape(S, A)
        state_counts = counts.sum(axis=1)
        seen = counts > 0
        seen_states = state_counts > 0
        if r_max is None:
            r_max = float(np.max(np.abs(data.r))) if len(data) else 1.0
        elif not (np.isfinite(r_max) and r_max >= 0):
            raise InvalidMDPError(f"r_max must be finite and >= 0, got {r_max}")
        if unseen_reward is None:
            unseen_reward = -r_max
        # Duplicate (row, col) entries are summed by the COO -> CSR conversion: that is the count.
        trans = sp.csr_array((np.ones(len(data)), (pair, data.s2)), shape=(S * A, S), dtype=float)
        unseen_rows = np.flatnonzero(~seen.ravel())
        loops = sp.csr_array(
            (np.ones(len(unseen_rows)), (unseen_rows, unseen_rows // A)), shape=(S * A, S)
        )
        row_norm = sp.diags_array(1.0 / np.maximum(counts.ravel(), 1))
        T_hat = sp.csr_array(row_norm @ trans + loops)
        P: np.ndarray | sp.csr_array = T_hat
        if S * A * S <= DENSE_MAX_ENTRIES:
            P = T_hat.toarray().reshape(S, A, S)
        R_hat = np.where(seen, reward_sums / np.maximum(counts, 1), unseen_reward)
        pi_beta = np.where(
            seen_states[:, None], counts / np.maximum(state_counts, 1)[:, None], 1.0 / A
        )
        return cls(
            mdp=TabularMDP(P, R_hat, gamma, d0=d0),  # type: ignore[arg-type]
            counts=counts,
            state_counts=state_counts,
            pi_beta=pi_beta,
            seen=seen,
            seen_states=seen_states,
            unseen_reward=float(unseen_reward),
        )

    @classmethod
    def from_dataset(cls, data: Transitions, gamma: float, **kwargs: object) -> EmpiricalMDP:
        """:meth:`from_transitions` on a :class:`Transitions`."""
        return cls.from_transitions(
            data.n_states,
            data.n_actions,
            data.s,
            data.a,
            data.r,
            data.s2,
            gamma,
            **kwargs,  # type: ignore[arg-type]
        )

    def check_support(self, mu: np.ndarray, name: str = "mu") -> np.ndarray:
        """Require supp mu(.|s) within supp pi_beta_hat(.|s) on every state in D.

        Returns ``mu`` as float; raises :class:`InvalidMDPError` naming the first (s, a) where
        mu puts mass on an action D never took (mu/pi_beta_hat would be infinite there).
        """
        mu = validate_policy(mu, self.n_states, self.n_actions, name)
        bad = (mu > 0) & ~self.seen & self.seen_states[:, None]
        if bad.any():
            s, a = (int(x) for x in np.argwhere(bad)[0])
            raise InvalidMDPError(
                f"{name}[{s}, {a}] = {mu[s, a]:.6g} but action {a} never appears at state {s} in "
                f"the dataset (pi_beta_hat = 0): {name}/pi_beta_hat is unbounded"
            )
        return mu
