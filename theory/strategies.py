"""Hypothesis strategies for property tests of the theorems on your own random MDPs.

::

    from hypothesis import given
    from theory.bounds import theorem_3_1
    from theory.strategies import offline_problems, policies, supported_policies

    @given(offline_problems(), st.data())
    def test_cql1_is_a_lower_bound(problem, data):
        pi = data.draw(policies(problem.n_states, problem.n_actions))
        mu = data.draw(supported_policies(problem.emp))
        r = theorem_3_1(problem.emp, problem.mdp, pi, 0.0, r_max=problem.r_max, mu=mu)
        ...

What each strategy guarantees is in its docstring; what a theorem's result guarantees (always,
given its premise, or only with probability 1 - delta over datasets) is in the result's
``guarantees`` and checked by its ``check()``. Arguments that size a problem take an ``int`` or
a strategy of ints (``n_states=st.integers(2, 6)``); the defaults keep every example small
enough for exact linear algebra in well under a millisecond.

Randomness: each example draws one 32-bit seed and builds its arrays from
``numpy.random.default_rng(seed)``, so a failing example is reproduced by the seed hypothesis
prints (its shrinking then works on sizes and the seed, not on single entries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from theory.data import EmpiricalMDP, Transitions, sample_dataset
from theory.mdp import TabularMDP, random_mdp, random_policy

T = TypeVar("T")

__all__ = [
    "OfflineProblem",
    "behaviour_policies",
    "exact_problem",
    "exact_problems",
    "mdps",
    "offline_problem",
    "offline_problems",
    "policies",
    "seeds",
    "supported_policies",
    "supported_policy",
]

seeds: SearchStrategy[int] = st.integers(0, 2**32 - 1)
"""The seed of one example's ``numpy.random.Generator``."""

# The default ranges (module constants, so a test can reuse or narrow them).
STATES: SearchStrategy[int] = st.integers(1, 4)
ACTIONS: SearchStrategy[int] = st.integers(1, 3)
GAMMAS: SearchStrategy[float] = st.floats(0.0, 0.95)
"""gamma in [0, 0.95]: the bandit (0) up to long horizons."""
LONG_GAMMAS: SearchStrategy[float] = st.floats(0.5, 0.95)
TRANSITIONS_PER_PAIR: SearchStrategy[int] = st.integers(1, 30)
REWARD_DENSITIES: SearchStrategy[float] = st.sampled_from([1.0, 1.0, 0.3])
"""Mostly dense rewards, a third of draws with 30% of pairs rewarded."""
NEXT_STATE_COUNTS: SearchStrategy[int | None] = st.sampled_from([None, None, 1, 2])
"""None: dense transition rows; k: k distinct next states per pair."""
CONCENTRATIONS: SearchStrategy[float] = st.sampled_from([0.3, 1.0, 5.0])
BEHAVIOUR_CONCENTRATIONS: SearchStrategy[float] = st.sampled_from([0.5, 2.0, 10.0])
_BOOLS: SearchStrategy[bool] = st.booleans()


def _strategy(value: T | SearchStrategy[T]) -> SearchStrategy[T]:
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _mdp(
    rng: np.random.Generator,
    n_states: int,
    n_actions: int,
    gamma: float,
    r_max: float,
    reward_density: float,
    n_next: int | None,
) -> TabularMDP:
    if not 0.0 <= reward_density <= 1.0:
        raise ValueError(f"reward_density must be in [0, 1], got {reward_density}")
    mdp = random_mdp(
        n_states, n_actions, rng, gamma=gamma, n_next=n_next, reward_range=(-r_max, r_max)
    )
    if reward_density < 1.0:
        # Sparse rewards: each pair keeps its reward with probability `reward_density`, else 0.
        keep = rng.random(mdp.R.shape) < reward_density
        mdp = TabularMDP(mdp.P, np.where(keep, mdp.R, 0.0), gamma, d0=mdp.d0)
    return mdp


@st.composite
def mdps(
    draw: st.DrawFn,
    *,
    n_states: int | SearchStrategy[int] = STATES,
    n_actions: int | SearchStrategy[int] = ACTIONS,
    gamma: float | SearchStrategy[float] = GAMMAS,
    r_max: float = 1.0,
    reward_density: float | SearchStrategy[float] = REWARD_DENSITIES,
    n_next: int | SearchStrategy[int | None] | None = NEXT_STATE_COUNTS,
) -> TabularMDP:
    """A random tabular MDP (:func:`theory.mdp.random_mdp`).

    Guarantees: every reward in [-r_max, r_max]; ``gamma`` < 1 as drawn (the default range
    [0, 0.95] includes the bandit, gamma = 0); transition rows are Dirichlet(1), dense, or with
    ``n_next`` distinct next states per pair (some states then unreachable from others);
    with ``reward_density`` < 1 each reward is 0 with probability 1 - density (sparse rewards).
    """
    rng = np.random.default_rng(draw(seeds))
    S, A = draw(_strategy(n_states)), draw(_strategy(n_actions))
    density, k = draw(_strategy(reward_density)), draw(_strategy(n_next))
    return _mdp(rng, S, A, draw(_strategy(gamma)), r_max, density, k)


@st.composite
def policies(
    draw: st.DrawFn,
    n_states: int,
    n_actions: int,
    *,
    concentration: float | SearchStrategy[float] = CONCENTRATIONS,
    deterministic: bool | SearchStrategy[bool] = _BOOLS,
) -> np.ndarray:
    """A policy, (S, A) rows on the simplex: Dirichlet(concentration) rows (full support
    almost surely), or one action per state when ``deterministic`` is drawn True."""
    rng = np.random.default_rng(draw(seeds))
    if draw(_strategy(deterministic)):
        return np.eye(n_actions)[rng.integers(0, n_actions, size=n_states)]
    return random_policy(n_states, n_actions, rng, concentration=draw(_strategy(concentration)))


@st.composite
def behaviour_policies(
    draw: st.DrawFn,
    n_states: int,
    n_actions: int,
    *,
    concentration: float | SearchStrategy[float] = BEHAVIOUR_CONCENTRATIONS,
    min_prob: float = 0.0,
) -> np.ndarray:
    """A behaviour policy pi_beta with full support: Dirichlet(concentration) rows, each entry
    at least ``min_prob`` (< 1/A) after mixing with the uniform policy. Small concentrations give
    peaked behaviour (some actions rarely in the data), large ones near-uniform behaviour."""
    if not 0.0 <= min_prob < 1.0 / n_actions:
        raise ValueError(f"min_prob must be in [0, 1/n_actions), got {min_prob}")
    rng = np.random.default_rng(draw(seeds))
    p = random_policy(n_states, n_actions, rng, concentration=draw(_strategy(concentration)))
    return (1.0 - min_prob * n_actions) * p + min_prob


@dataclass(frozen=True, eq=False)
class OfflineProblem:
    """A true MDP, the behaviour policy, a dataset drawn from them, and its empirical MDP.

    ``emp`` is built from the dataset's counts (``emp.counts`` = n(s, a)); ``r_max`` bounds every reward in the
    data, the ``r_max`` the theorems need.
    """

    mdp: TabularMDP
    behaviour: np.ndarray
    data: Transitions | None
    emp: EmpiricalMDP
    r_max: float

    @property
    def n_states(self) -> int:
        return self.mdp.n_states

    @property
    def n_actions(self) -> int:
        return self.mdp.n_actions


def offline_problem(
    rng: np.random.Generator,
    n_states: int,
    n_actions: int,
    transitions_per_pair: int,
    *,
    gamma: float = 0.9,
    r_max: float = 1.0,
    reward_noise: float = 0.0,
    reward_density: float = 1.0,
    n_next: int | None = None,
    behaviour_concentration: float = 2.0,
) -> OfflineProblem:
    """One :func:`offline_problems` example from ``rng`` (for a named instance in a test or a
    notebook: the same seed gives the same problem)."""
    if not 0.0 <= reward_noise < r_max:
        raise ValueError(f"reward_noise must be in [0, r_max), got {reward_noise}")
    S, A = n_states, n_actions
    mdp = _mdp(rng, S, A, gamma, r_max - reward_noise, reward_density, n_next)
    beta = random_policy(S, A, rng, concentration=behaviour_concentration)
    data = sample_dataset(mdp, beta, transitions_per_pair * S * A, rng, reward_noise=reward_noise)
    return OfflineProblem(mdp, beta, data, EmpiricalMDP.from_dataset(data, gamma), r_max)


@st.composite
def offline_problems(
    draw: st.DrawFn,
    *,
    n_states: int | SearchStrategy[int] = STATES,
    n_actions: int | SearchStrategy[int] = ACTIONS,
    transitions_per_pair: int | SearchStrategy[int] = TRANSITIONS_PER_PAIR,
    gamma: float | SearchStrategy[float] = LONG_GAMMAS,
    r_max: float = 1.0,
    reward_noise: float = 0.1,
    reward_density: float | SearchStrategy[float] = 1.0,
    n_next: int | SearchStrategy[int | None] | None = None,
    behaviour_concentration: float | SearchStrategy[float] = 2.0,
) -> OfflineProblem:
    """A random MDP, a behaviour policy and ``transitions_per_pair * S * A`` i.i.d. transitions
    (states uniform, ``a ~ pi_beta``, rewards ``R(s, a)`` plus uniform noise in
    [-reward_noise, reward_noise]).

    Guarantees: every observed reward is in [-r_max, r_max] (the MDP's rewards are drawn in
    [-(r_max - reward_noise), r_max - reward_noise]); the dataset is a sample, so some pairs, or
    whole states, may be missing (``emp.seen``, ``emp.seen_states``) and T_hat, r_hat differ from
    T, r: the theorems' sampling terms are in play, and their conclusions hold with probability
    >= 1 - delta, not always.
    """
    rng = np.random.default_rng(draw(seeds))
    return offline_problem(
        rng,
        draw(_strategy(n_states)),
        draw(_strategy(n_actions)),
        draw(_strategy(transitions_per_pair)),
        gamma=draw(_strategy(gamma)),
        r_max=r_max,
        reward_noise=reward_noise,
        reward_density=draw(_strategy(reward_density)),
        n_next=draw(_strategy(n_next)),
        behaviour_concentration=draw(_strategy(behaviour_concentration)),
    )


@st.composite
def exact_problems(
    draw: st.DrawFn,
    *,
    n_states: int | SearchStrategy[int] = STATES,
    n_actions: int | SearchStrategy[int] = ACTIONS,
    gamma: float | SearchStrategy[float] = GAMMAS,
    r_max: float = 1.0,
    max_count: int = 4,
) -> OfflineProblem:
    """A dataset with no sampling error: counts n(s, a, s') drawn in [0, max_count] (at least one
    per pair), and the true MDP defined from them, so T_hat = T, r_hat = r, B_hat = B exactly.

    Guarantees: every pair of every state is in the data (``emp.seen`` all True); the sampling
    terms' premises hold for free, so a theorem's "with probability >= 1 - delta" conclusion
    becomes exact (e.g. Theorem 3.1: any alpha > 0 gives Q_hat < Q^pi at every pair).
    ``data`` is None (the counts are the dataset); ``behaviour`` is pi_beta_hat.
    """
    rng = np.random.default_rng(draw(seeds))
    S, A = draw(_strategy(n_states)), draw(_strategy(n_actions))
    g = draw(_strategy(gamma))
    counts = rng.integers(0, max_count + 1, size=(S, A, S))
    counts[np.arange(S)[:, None], np.arange(A)[None, :], rng.integers(0, S, size=(S, A))] += 1
    return exact_problem(counts, rng.uniform(-r_max, r_max, size=(S, A)), g, r_max=r_max)


def exact_problem(
    counts: np.ndarray, rewards: np.ndarray, gamma: float, *, r_max: float = 1.0
) -> OfflineProblem:
    """The dataset with exactly ``counts`` n(s, a, s') (S, A, S), rewards ``rewards[s, a]``
    (S, A), and the true MDP T = counts / n(s, a), R = rewards: no sampling error (see
    :func:`exact_problems`). Every pair needs at least one count."""
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[0] != counts.shape[2] or np.any(counts < 0):
        raise ValueError(f"counts must be non-negative, shape (S, A, S), got {counts.shape}")
    if np.any(counts.sum(axis=2) == 0):
        raise ValueError("every pair (s, a) needs at least one transition in counts")
    S, A, _ = counts.shape
    P = counts / counts.sum(axis=2, keepdims=True)
    idx = np.repeat(np.arange(counts.size), counts.ravel())
    s, a, s2 = np.unravel_index(idx, counts.shape)
    emp = EmpiricalMDP.from_transitions(S, A, s, a, rewards[s, a], s2, gamma, r_max=r_max)
    return OfflineProblem(TabularMDP(P, rewards, gamma), emp.pi_beta, None, emp, r_max)


def supported_policy(
    emp: EmpiricalMDP, rng: np.random.Generator, concentration: float = 1.0
) -> np.ndarray:
    """One :func:`supported_policies` example from ``rng``."""
    p = random_policy(emp.n_states, emp.n_actions, rng, concentration=concentration)
    p = np.where(emp.seen | ~emp.seen_states[:, None], p, 0.0)
    return p / p.sum(axis=1, keepdims=True)


@st.composite
def supported_policies(
    draw: st.DrawFn,
    emp: EmpiricalMDP,
    *,
    concentration: float | SearchStrategy[float] = CONCENTRATIONS,
) -> np.ndarray:
    """A policy supported by the dataset: on every state of D it puts mass only on actions seen
    there (supp mu within supp pi_beta_hat, the ``mu`` Theorems 3.1 and 3.4 need, and the
    ``pi`` of Theorem 3.2); on states outside D it is unrestricted."""
    rng = np.random.default_rng(draw(seeds))
    return supported_policy(emp, rng, draw(_strategy(concentration)))
