"""Augmented random search, V2-t (Mania, Guy, Recht 2018, arXiv 1803.07055, Algorithm 2).

A linear policy over running-normalised observations,

    a = clip(M (s − μ) / σ, −1, 1),        M (act_dim, obs_dim), μ, σ (obs_dim,),

(``M`` is ``W`` in the code) trained by finite differences along random directions. One
iteration ``j`` (Algorithm 2, lines 4-8):

1. draw ``N`` directions ``δ_k`` (act_dim, obs_dim) with i.i.d. standard normal entries;
2. roll out ``π_{j,k,±}(s) = clip((M_j ± ν δ_k)(s − μ_j)/σ_j, −1, 1)`` for one episode each,
   returns ``r(π_{j,k,±})`` (the survival bonus ``shift`` subtracted per step, Section 4.1);
3. keep the ``b`` directions with the largest ``max(r(π_{j,k,+}), r(π_{j,k,−}))`` (V2-t);
4. ``M_{j+1} = M_j + α / (b σ_R) Σ_{k ≤ b} [r(π_{j,(k),+}) − r(π_{j,(k),−})] δ_(k)``, with
   ``σ_R`` the standard deviation of the ``2b`` kept returns;
5. ``μ_{j+1}, Σ_{j+1}`` = mean and diagonal covariance of every state seen so far in training
   (Welford / Chan et al. parallel update), ``σ = sqrt(diag Σ)``.

Everything here is deterministic for a seed: directions and env-reset seeds come from the
``np.random.Generator`` passed in, and both rollouts of a direction start from the same reset
seed (antithetic pair with common random numbers, which lowers the variance of
``r₊ − r₋``). No globals; the environment is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

#: Below this variance a coordinate is not rescaled (σ = 1), as in the ARS reference code:
#: a constant coordinate (or one seen once) would otherwise divide by ~0.
MIN_VARIANCE = 1e-8


@dataclass(frozen=True)
class ARSConfig:
    """Hyper-parameters of ARS V2-t (names of Algorithm 2)."""

    n_directions: int = 8
    """N: directions sampled per iteration (2N episodes)."""
    top_directions: int = 4
    """b: best directions used in the update (b ≤ N)."""
    step_size: float = 0.02
    """α: step size of the update of M."""
    noise: float = 0.03
    """ν: standard deviation of the exploration noise added to M."""
    reward_shift: float = 0.0
    """Subtracted from every training reward (the survival bonus, Section 4.1; 1 for Hopper and
    Walker2d). Recorded episodes keep the env's own rewards."""

    def __post_init__(self) -> None:
        if self.n_directions < 1:
            raise ValueError(f"n_directions must be >= 1, got {self.n_directions}")
        if not 1 <= self.top_directions <= self.n_directions:
            raise ValueError(
                f"top_directions must be in [1, n_directions={self.n_directions}], "
                f"got {self.top_directions}"
            )
        if self.step_size <= 0 or self.noise <= 0:
            raise ValueError(
                f"step_size and noise must be > 0, got {self.step_size} and {self.noise}"
            )


@dataclass(frozen=True, eq=False)
class RunningStats:
    """Mean and sum of squared deviations of every state seen (Welford, merged per batch).

    Shapes: ``mean``, ``m2`` (obs_dim,). Variance ``m2 / count``; ``σ`` floors to 1 where the
    variance is below :data:`MIN_VARIANCE` (and everywhere while ``count < 2``).
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @staticmethod
    def empty(obs_dim: int) -> RunningStats:
        return RunningStats(0, np.zeros(obs_dim), np.zeros(obs_dim))

    def merge(self, states: np.ndarray) -> RunningStats:
        """Chan, Golub, LeVeque (1979) parallel update with a batch ``states`` (n, obs_dim):
        ``δ = x̄_B − x̄_A``, ``x̄ = x̄_A + δ n_B/n``, ``M2 = M2_A + M2_B + δ² n_A n_B / n``."""
        states = np.asarray(states, dtype=np.float64)
        n_b = states.shape[0]
        if n_b == 0:
            return self
        mean_b = states.mean(axis=0)
        m2_b = ((states - mean_b) ** 2).sum(axis=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        mean = self.mean + delta * (n_b / n)
        m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / n)
        return RunningStats(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        if self.count < 2:
            return np.ones_like(self.mean)
        var = self.m2 / self.count
        return np.where(var < MIN_VARIANCE, 1.0, np.sqrt(var))


@dataclass(frozen=True, eq=False)
class LinearPolicy:
    """``a = clip(W (s − μ)/σ, −1, 1)``; ``W`` (act_dim, obs_dim), ``mu``, ``sigma`` (obs_dim,)."""

    W: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` (obs_dim,) or (n, obs_dim) -> actions (act_dim,) or (n, act_dim)."""
        z = (np.asarray(obs, dtype=np.float64) - self.mu) / self.sigma
        return np.clip(z @ self.W.T, -1.0, 1.0)


@dataclass(frozen=True, eq=False)
class Episode:
    """One rollout. Shapes: ``observations``, ``next_observations`` (T, obs_dim); ``actions``
    (T, act_dim); ``rewards``, ``terminated``, ``truncated`` (T,). ``next_observations[t]`` is
    the observation returned by step ``t`` (the true final one at the end)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    @property
    def length(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())


def rollout(
    env: gym.Env,
    act: Callable[[np.ndarray], np.ndarray],
    reset_seed: int,
) -> Episode:
    """Run one episode of ``act`` (obs (obs_dim,) -> action (act_dim,)) from
    ``env.reset(seed=reset_seed)`` until it terminates or is truncated (the env's time limit)."""
    obs, _ = env.reset(seed=int(reset_seed))
    observations, actions, rewards, nexts, terms, truncs = [], [], [], [], [], []
    while True:
        action = act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        nexts.append(next_obs)
        terms.append(bool(terminated))
        truncs.append(bool(truncated))
        if terminated or truncated:
            break
        obs = next_obs
    return Episode(
        observations=np.asarray(observations, dtype=np.float64),
        actions=np.asarray(actions, dtype=np.float64),
        rewards=np.asarray(rewards, dtype=np.float64),
        next_observations=np.asarray(nexts, dtype=np.float64),
        terminated=np.asarray(terms, dtype=bool),
        truncated=np.asarray(truncs, dtype=bool),
    )


@dataclass(frozen=True, eq=False)
class ARSState:
    """``W`` = M_j (act_dim, obs_dim), ``stats`` give μ_j, σ_j; ``iteration`` = j;
    ``env_steps``: training steps taken so far (evaluation excluded)."""

    W: np.ndarray
    stats: RunningStats
    iteration: int = 0
    env_steps: int = 0
    episodes: int = field(default=0)

    @staticmethod
    def initial(obs_dim: int, act_dim: int) -> ARSState:
        """M_0 = 0, μ_0 = 0, Σ_0 = I (Algorithm 2, line 1)."""
        return ARSState(np.zeros((act_dim, obs_dim)), RunningStats.empty(obs_dim))

    @property
    def policy(self) -> LinearPolicy:
        return LinearPolicy(self.W.copy(), self.stats.mean.copy(), self.stats.std.copy())


def ars_update(
    W: np.ndarray,
    deltas: np.ndarray,
    returns_plus: np.ndarray,
    returns_minus: np.ndarray,
    config: ARSConfig,
) -> np.ndarray:
    """Algorithm 2, lines 6-7 (V2-t): the new M from the 2N returns of one iteration.

    ``M' = M + α/(b σ_R) Σ_{k ≤ b} (r₊ − r₋)_(k) δ_(k)`` over the ``b`` directions with the
    largest ``max(r₊, r₋)``, ``σ_R`` = std of their ``2b`` returns (1 if it is 0: every kept
    rollout returned the same, so the step is 0 anyway). Shapes: ``W`` (act_dim, obs_dim),
    ``deltas`` (N, act_dim, obs_dim), returns (N,).
    """
    b = config.top_directions
    # Stable sort: ties keep the draw order, so the choice is deterministic.
    top = np.argsort(-np.maximum(returns_plus, returns_minus), kind="stable")[:b]
    kept = np.concatenate([returns_plus[top], returns_minus[top]])
    sigma_r = float(kept.std())
    if sigma_r == 0.0:
        sigma_r = 1.0
    diff = returns_plus[top] - returns_minus[top]  # (b,)
    step = np.einsum("k,kij->ij", diff, deltas[top])  # (b,) x (b, act, obs) -> (act, obs)
    return W + config.step_size / (b * sigma_r) * step


def ars_iteration(
    env: gym.Env,
    state: ARSState,
    config: ARSConfig,
    rng: np.random.Generator,
) -> tuple[ARSState, list[Episode]]:
    """One iteration of ARS V2-t (Algorithm 2, lines 4-8) -> (state j+1, its 2N episodes).

    Episodes are ordered (direction 1 +, direction 1 −, direction 2 +, ...). μ, σ stay fixed
    during the iteration and are then updated with every state of its 2N episodes.
    """
    n = config.n_directions
    deltas = rng.standard_normal((n, *state.W.shape))
    seeds = rng.integers(0, 2**31 - 1, size=n)
    mu, sigma = state.stats.mean, state.stats.std
    episodes: list[Episode] = []
    returns = np.zeros((n, 2))
    for k in range(n):
        for j, sign in enumerate((1.0, -1.0)):
            policy = LinearPolicy(state.W + sign * config.noise * deltas[k], mu, sigma)
            ep = rollout(env, policy, int(seeds[k]))
            episodes.append(ep)
            returns[k, j] = ep.total_reward - config.reward_shift * ep.length
    W = ars_update(state.W, deltas, returns[:, 0], returns[:, 1], config)
    stats = state.stats
    for ep in episodes:  # episode by episode: same floating-point order on every run
        stats = stats.merge(ep.observations)
    steps = sum(ep.length for ep in episodes)
    new = ARSState(W, stats, state.iteration + 1, state.env_steps + steps, state.episodes + 2 * n)
    return new, episodes


def ars(
    env: gym.Env,
    config: ARSConfig,
    seed: int,
) -> Iterator[tuple[ARSState, list[Episode]]]:
    """Endless ARS V2-t run from ``M_0 = 0``: yields (state after iteration j, its episodes)
    for j = 1, 2, ... The directions and reset seeds come from ``SeedSequence([seed, 0])``, so a
    run is a pure function of (env id, config, seed)."""
    space = env.observation_space
    act_space = env.action_space
    assert space.shape is not None and act_space.shape is not None
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    state = ARSState.initial(int(space.shape[0]), int(act_space.shape[0]))
    while True:
        state, episodes = ars_iteration(env, state, config, rng)
        yield state, episodes
