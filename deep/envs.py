"""Gymnasium evaluation, normalised scores and the built-in offline datasets.

Built-in datasets (no download)
-------------------------------
D4RL-style datasets generated on first use from gymnasium environments by the scripted
behaviour policies of :mod:`deep.policies.scripted`, then cached as ``.npz``:

- ``pendulum-*``: Pendulum-v1 (continuous torque; 200-step episodes that end by truncation
  only). random: uniform in [-1, 1]; medium: the swing-up controller with its swing torque
  capped at 0.3 N·m and Gaussian noise of std 0.3; expert: energy swing-up + LQR balance
  (:class:`~deep.policies.scripted.PendulumSwingUp`).
- ``cartpole-*``: CartPole-v1 (2 actions; a pole fall is a terminal, 500-step limit).
  random: uniform over {0, 1}; medium: the linear rule with epsilon = 0.4; expert: the linear
  rule (:class:`~deep.policies.scripted.CartPoleLinear`).
- ``inverted-double-pendulum-*``: InvertedDoublePendulum-v5 (MuJoCo; a fall is a terminal,
  1000-step limit). random: uniform in [-1, 1]; medium: LQR plus Gaussian action noise of std
  0.2; expert: LQR (:class:`~deep.policies.scripted.DoublePendulumLQR`).

Every task also has ``<task>-medium-expert``: the medium and the expert datasets
concatenated, as in D4RL. Each dataset holds ``DEFAULT_TRANSITIONS`` = 100,000 transitions
(``medium-expert`` twice that), rounded *up* to whole episodes: collection stops after the
first complete episode that reaches the count, so every episode in a dataset is complete.

Behaviour returns of the default datasets (``GENERATOR_VERSION`` 2, gymnasium 1.4.0, mujoco
4.0.0; undiscounted episode returns, mean ± std over the dataset's episodes, normalised with
the reference scores below; generation took 1-9 s each on one CPU core):

================================  ===========  ========  =================  ============
dataset                           transitions  episodes  return             normalised
================================  ===========  ========  =================  ============
pendulum-random                   100,000      500       -1229.7 ± 300.6    -2.1 ± 28.3
pendulum-medium                   100,000      500       -582.1 ± 486.9     58.9 ± 45.9
pendulum-expert                   100,000      500       -152.0 ± 91.7      99.4 ± 8.6
cartpole-random                   100,006      4511      22.2 ± 11.9        -0.3 ± 2.5
cartpole-medium                   100,049      357       280.3 ± 171.5      53.9 ± 36.0
cartpole-expert                   100,000      200       500.0 ± 0.0        100.0 ± 0.0
inverted-double-pendulum-random   100,003      15825     47.5 ± 17.7        0.0 ± 0.2
inverted-double-pendulum-medium   100,182      181       5160.8 ± 3359.2    54.9 ± 36.1
inverted-double-pendulum-expert   100,000      100       9359.9 ± 0.2       100.0 ± 0.0
================================  ===========  ========  =================  ============

Why InvertedDoublePendulum and not Hopper: Hopper's D4RL datasets come from SAC policies
trained for ~1M steps, hours of CPU time that a "no download" product cannot ask for, and no
simple scripted controller hops well. The double pendulum on a cart is underactuated and
unstable, has termination (falls) like Hopper, and a linear-quadratic regulator, derived here
from MuJoCo's own dynamics, balances it perfectly; Gaussian action noise degrades it to a
medium level.

Conventions
-----------
- **Actions** are stored in the agent's convention: continuous actions normalised to [-1, 1]
  (a tanh actor's range), discrete actions as int64 indices. The environment action is
  ``u = low + (a + 1)(high - low)/2`` (:func:`to_env_action`; inverse :func:`from_env_action`),
  applied by the ``gymnasium.wrappers.RescaleAction`` that :func:`make_env` adds whenever the
  action bounds are not already [-1, 1]. Pendulum: torque ``u = 2a`` N·m.
  InvertedDoublePendulum's actuator range is already [-1, 1] (no wrapper).
- **terminals** (bool) mark true MDP terminations (``terminated`` from gymnasium:
  a CartPole pole fall, a double-pendulum fall): no bootstrapping from ``s'``. **timeouts**
  (bool) mark time-limit truncations that are not terminations (``truncated and not
  terminated``): every Pendulum episode ends in a timeout, never a terminal. Unlike d4rl's
  ``qlearning_dataset``, the transition at a timeout is kept: ``next_observations`` holds the
  true final observation (gymnasium 1.x returns it from ``step`` under next-step autoreset).
- Observations, rewards and next observations are float32.
- Determinism: episode starts are seeded (``base seed + quality offset + env index``) and the
  policy noise comes from its own ``SeedSequence``; the same name, size and seed give identical
  arrays on every run.
- Cache: ``$CQL_COMPANION_DATA`` (default ``~/.cache/cql-companion/datasets``); the file name
  holds the name, size, seed, ``GENERATOR_VERSION`` and a digest of the gymnasium (and mujoco)
  versions, so changing the generator or the simulator regenerates. Writes are atomic
  (temporary file then ``os.replace``).

Reference scores
----------------
``normalized_score = 100 (R - R_min) / (R_max - R_min)``. For the built-in tasks, ``R_min`` is
the mean return of the uniform random policy and ``R_max`` of the noise-free expert
controller, each measured with :func:`measure_reference_scores` (``evaluate``, 100 episodes,
episode seeds ``REFERENCE_SEED + i``; continuous actions clipped to [-1, 1]):

==========================  ===============================  ================================
task (env)                  R_min = random, mean ± std       R_max = expert, mean ± std
==========================  ===============================  ================================
pendulum (Pendulum-v1)      -1206.913 ± 291.338              -145.976 ± 85.485
cartpole (CartPole-v1)      23.52 ± 12.186                   500.0 ± 0.0
inverted-double-pendulum    45.240 ± 18.051                  9359.865 ± 0.147
==========================  ===============================  ================================

D4RL's own reference scores (``d4rl/infos.py``) are used for D4RL-style names
(``hopper-medium-v2``), Minari ids (``mujoco/hopper/medium-v0``) and the gymnasium ids
(``Hopper-v5``): hopper -20.272305 / 3234.3, halfcheetah -280.178953 / 12135.0, walker2d
1.629008 / 4592.3. (Minari datasets also carry their own ``ref_min_score``/``ref_max_score``;
use those when comparing with Minari's published numbers.)

Evaluation
----------
:func:`evaluate` runs a batch policy ``obs (n, obs_dim) -> actions`` on a
``gymnasium.vector.SyncVectorEnv`` in next-step autoreset mode, one episode per sub-env per
wave, episode ``i`` seeded with ``seed + i``, and returns an :class:`EvalResult`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import RescaleAction

from deep.policies.scripted import (
    BehaviourPolicy,
    CartPoleLinear,
    DoublePendulumLQR,
    PendulumSwingUp,
    UniformRandom,
    bind,
)

if TYPE_CHECKING:
    # deep.data imports this module to load built-ins; importing it lazily here keeps either
    # import order working.
    from deep.data import OfflineDataset

__all__ = [
    "DEFAULT_TRANSITIONS",
    "GENERATOR_VERSION",
    "QUALITIES",
    "REFERENCE_SCORES",
    "TASKS",
    "BuiltinSpec",
    "EvalResult",
    "ReferenceScores",
    "Task",
    "builtin_names",
    "builtin_spec",
    "cache_path",
    "default_cache_dir",
    "episode_returns",
    "evaluate",
    "from_env_action",
    "generate_builtin",
    "load_builtin",
    "make_env",
    "measure_reference_scores",
    "normalized_score",
    "reference_scores",
    "resolve_env_id",
    "to_env_action",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
"""Bump when a behaviour policy or the collection changes: cached files then regenerate."""

DEFAULT_TRANSITIONS = 100_000
DEFAULT_DATASET_SEED = 1_000_000
"""Base seed of the built-in datasets, far from evaluation's default seeds (0, 1, ...)."""
REFERENCE_SEED = 2_000_000
"""Episode seeds ``REFERENCE_SEED + i`` measured the reference scores in the table above."""

QUALITIES = ("random", "medium", "expert", "medium-expert")
_SEED_OFFSET = {"random": 0, "medium": 10_000, "expert": 20_000}
_COLLECT_ENVS = 10


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ReferenceScores:
    """Returns that map to normalised scores 0 (``min``) and 100 (``max``).

    ``min_std``/``max_std``/``n_episodes`` describe how a built-in entry was measured (the
    spread of single-episode returns), ``None`` for entries copied from D4RL.
    """

    min: float
    max: float
    source: str
    min_std: float | None = None
    max_std: float | None = None
    n_episodes: int | None = None


@dataclass(frozen=True)
class Task:
    """A built-in task: its environment and its behaviour policy for each quality."""

    key: str
    env_id: str
    discrete: bool
    policies: Mapping[str, BehaviourPolicy]
    """quality ("random", "medium", "expert") -> behaviour policy; "expert" sets R_max."""


TASKS: dict[str, Task] = {
    t.key: t
    for t in (
        Task(
            "pendulum",
            "Pendulum-v1",
            discrete=False,
            policies={
                "random": UniformRandom(act_dim=1),
                "medium": PendulumSwingUp(swing_torque=0.3, noise_std=0.3),
                "expert": PendulumSwingUp(),
            },
        ),
        Task(
            "cartpole",
            "CartPole-v1",
            discrete=True,
            policies={
                "random": UniformRandom(n_actions=2),
                "medium": CartPoleLinear(epsilon=0.4),
                "expert": CartPoleLinear(),
            },
        ),
        Task(
            "inverted-double-pendulum",
            "InvertedDoublePendulum-v5",
            discrete=False,
            policies={
                "random": UniformRandom(act_dim=1),
                "medium": DoublePendulumLQR(noise_std=0.2),
                "expert": DoublePendulumLQR(),
            },
        ),
    )
}

_D4RL_SOURCE = "D4RL d4rl/infos.py (REF_MIN_SCORE / REF_MAX_SCORE)"
_MEASURED = f"measure_reference_scores(n_episodes=100, seed={REFERENCE_SEED})"

REFERENCE_SCORES: dict[str, ReferenceScores] = {
    # Measured here; see the module docstring for how.
    "pendulum": ReferenceScores(-1206.913, -145.976, _MEASURED, 291.338, 85.485, 100),
    "cartpole": ReferenceScores(23.52, 500.0, _MEASURED, 12.186, 0.0, 100),
    "inverted-double-pendulum": ReferenceScores(45.240, 9359.865, _MEASURED, 18.051, 0.147, 100),
    # D4RL's (one pair per environment, shared by all its datasets and versions).
    "hopper": ReferenceScores(-20.272305, 3234.3, _D4RL_SOURCE),
    "halfcheetah": ReferenceScores(-280.178953, 12135.0, _D4RL_SOURCE),
    "walker2d": ReferenceScores(1.629008, 4592.3, _D4RL_SOURCE),
}

# D4RL locomotion environment -> the gymnasium id evaluation uses (D4RL v2 ran gym's v3
# MuJoCo envs; v5 has the same observation and action layouts and is what Minari uses).
_D4RL_ENV_IDS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
_D4RL_GYM_PREFIX = {"hopper": "Hopper-v", "halfcheetah": "HalfCheetah-v", "walker2d": "Walker2d-v"}
_D4RL_NAME = re.compile(r"^(hopper|halfcheetah|walker2d)(-[a-z-]+)?(-v\d+)?$")
_MINARI_NAME = re.compile(r"^mujoco/(hopper|halfcheetah|walker2d)/[a-z-]+-v\d+$")


@dataclass(frozen=True)
class BuiltinSpec:
    """What a built-in name means: task, quality, default size and seed."""

    name: str
    task: Task
    quality: str
    n_transitions: int
    seed: int
    """Base seed; the collection of ``quality`` seeds its sub-envs ``seed + offset + i``."""

    @property
    def env_id(self) -> str:
        return self.task.env_id

    @property
    def collection_seed(self) -> int:
        """Sub-env ``i`` of this quality's collection is reset with ``collection_seed + i``."""
        if self.quality == "medium-expert":
            raise ValueError(f"{self.name} is two collections: use its medium and expert parts")
        return self.seed + _SEED_OFFSET[self.quality]


def builtin_names() -> list[str]:
    """All built-in dataset names, ``<task>-<quality>``, sorted."""
    return sorted(f"{task}-{quality}" for task in TASKS for quality in QUALITIES)


def _split_builtin(name: str) -> tuple[Task, str] | None:
    for key, task in TASKS.items():
        if name.startswith(key + "-") and name[len(key) + 1 :] in QUALITIES:
            return task, name[len(key) + 1 :]
    return None


def builtin_spec(name: str) -> BuiltinSpec:
    """The :class:`BuiltinSpec` of a built-in dataset name; ``ValueError`` if unknown."""
    parsed = _split_builtin(name)
    if parsed is None:
        raise ValueError(
            f"unknown built-in dataset {name!r}; "
            f"built-in datasets are: {', '.join(builtin_names())}"
        )
    task, quality = parsed
    return BuiltinSpec(name, task, quality, DEFAULT_TRANSITIONS, DEFAULT_DATASET_SEED)


def _reference_key(name: str) -> str | None:
    parsed = _split_builtin(name)
    if parsed is not None:
        return parsed[0].key
    if name in TASKS:
        return name
    for key, task in TASKS.items():
        if name == task.env_id:
            return key
    lowered = name.lower()
    for pattern in (_D4RL_NAME, _MINARI_NAME):
        match = pattern.match(lowered)
        if match:
            return match.group(1)
    for key, prefix in _D4RL_GYM_PREFIX.items():
        if re.fullmatch(re.escape(prefix) + r"\d+", name):
            return key
    return None


def reference_scores(name: str) -> ReferenceScores:
    """Reference (min, max) returns for a built-in name, task, env id, or D4RL/Minari name.

    Raises ``ValueError`` naming the unknown ``name`` and the accepted forms.
    """
    key = _reference_key(name)
    if key is None:
        raise ValueError(
            f"no reference scores for {name!r}: expected a built-in dataset "
            f"({', '.join(builtin_names())}), a built-in task or its env id "
            f"({', '.join(f'{k} / {t.env_id}' for k, t in TASKS.items())}), or a D4RL-style "
            "name for hopper / halfcheetah / walker2d (e.g. 'hopper-medium-v2', "
            "'mujoco/hopper/medium-v0', 'Hopper-v5')"
        )
    return REFERENCE_SCORES[key]


def normalized_score(name_or_env: str, returns: npt.ArrayLike) -> np.ndarray:
    """D4RL's normalised score ``100 (R - R_min) / (R_max - R_min)``, elementwise.

    ``returns`` is a scalar or an array of undiscounted episode returns; the result has the
    same shape (float64). ``R_min``/``R_max`` come from :func:`reference_scores`.
    """
    ref = reference_scores(name_or_env)
    r = np.asarray(returns, dtype=np.float64)
    return 100.0 * (r - ref.min) / (ref.max - ref.min)


def resolve_env_id(name: str) -> str:
    """The gymnasium id to evaluate ``name`` on.

    Accepts a built-in dataset name or task (``pendulum-medium`` -> ``Pendulum-v1``), a D4RL
    or Minari locomotion name (``hopper-medium-v2``, ``mujoco/hopper/medium-v0`` ->
    ``Hopper-v5``), or any registered gymnasium id (returned unchanged).
    """
    key = _reference_key(name)
    if key in TASKS:
        return TASKS[key].env_id
    if name in gym.registry:
        return name
    if key in _D4RL_ENV_IDS:
        return _D4RL_ENV_IDS[key]
    raise ValueError(
        f"cannot map {name!r} to a gymnasium environment: not a built-in dataset "
        f"({', '.join(builtin_names())}), not a D4RL/Minari locomotion name, and not a "
        "registered gymnasium id"
    )


# ----------------------------------------------------------------------- action scaling
def to_env_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Agent action ``a ∈ [-1, 1]`` -> environment action ``u = low + (a + 1)(high - low)/2``.

    Shapes: ``action`` (..., act_dim), ``low``/``high`` (act_dim,). Same map as
    ``gymnasium.wrappers.RescaleAction(env, -1, 1)``.
    """
    a = np.asarray(action, dtype=np.float64)
    return low + (a + 1.0) * (high - low) / 2.0


def from_env_action(env_action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_env_action`: ``a = 2 (u - low)/(high - low) - 1``."""
    u = np.asarray(env_action, dtype=np.float64)
    return 2.0 * (u - low) / (high - low) - 1.0


def make_env(name: str, **kwargs: object) -> gym.Env:
    """``gym.make`` for ``name`` (see :func:`resolve_env_id`), with actions rescaled to [-1, 1].

    A ``Box`` action space with bounds other than [-1, 1] is wrapped in ``RescaleAction`` so a
    policy trained on the built-in (normalised) actions acts in the env's own units;
    ``kwargs`` go to ``gym.make``.
    """
    env = gym.make(resolve_env_id(name), **kwargs)  # type: ignore[arg-type]
    space = env.action_space
    if isinstance(space, gym.spaces.Box) and not (
        np.all(space.low == -1.0) and np.all(space.high == 1.0)
    ):
        env = RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    return env


def _make_vector_env(env_id: str, num_envs: int) -> SyncVectorEnv:
    # Next-step autoreset (gymnasium 1.x default, made explicit): the step that ends an
    # episode returns its true final observation; the *following* step of that sub-env resets
    # it, ignores the action and returns the new start observation with reward 0.
    return SyncVectorEnv(
        [partial(make_env, env_id) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


# ----------------------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False)
class EvalResult:
    """Episodes of one :func:`evaluate` call, episode ``i`` started from seed ``seeds[i]``.

    Shapes: ``returns``, ``discounted_returns`` (n,) float64; ``lengths`` (n,) int64;
    ``terminated`` (n,) bool (False: ended by the time limit); ``start_observations``
    (n, obs_dim) float32; ``seeds`` (n,) int64. ``discounted_returns[i] = Σ_t γ^t r_t`` is the
    Monte-Carlo estimate of ``V^π(s_0)`` at ``start_observations[i]`` (compare with a critic's
    ``Q(s_0, π(s_0))`` to measure over- or under-estimation).
    """

    env_id: str
    gamma: float
    returns: np.ndarray
    discounted_returns: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    start_observations: np.ndarray
    seeds: np.ndarray

    @property
    def n_episodes(self) -> int:
        return int(self.returns.shape[0])

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def std_return(self) -> float:
        return float(self.returns.std())

    def normalized(self, name: str | None = None) -> np.ndarray:
        """Per-episode normalised scores against ``name`` (default: this ``env_id``)."""
        return normalized_score(name or self.env_id, self.returns)


def _check_actions(actions: np.ndarray, space: gym.Space, n: int) -> np.ndarray:
    """Validate a policy's batch of actions for ``space``; clip continuous ones to its bounds."""
    if isinstance(space, gym.spaces.Discrete):
        a = np.asarray(actions)
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"policy must return ({n},) integer actions for a Discrete({space.n}) space, "
                f"got shape {a.shape} dtype {a.dtype}"
            )
        bad = np.flatnonzero((a < space.start) | (a >= space.start + space.n))
        if bad.size:
            raise ValueError(
                f"policy returned actions outside [{space.start}, {space.start + space.n}) in "
                f"rows {bad[:10].tolist()}: {a[bad[:10]].tolist()}"
            )
        return a.astype(np.int64)
    if isinstance(space, gym.spaces.Box):
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != (n, *space.shape):
            raise ValueError(
                f"policy must return actions of shape ({n}, {', '.join(map(str, space.shape))}) "
                f"for this Box space, got {a.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(a).all(axis=tuple(range(1, a.ndim))))
        if bad.size:
            raise ValueError(f"policy returned non-finite actions in rows {bad[:10].tolist()}")
        # A tanh policy can overshoot ±1 by rounding; the simulators clip anyway.
        return np.clip(a, space.low, space.high)
    raise TypeError(f"unsupported action space {space}")


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env: str,
    n_episodes: int = 10,
    seed: int = 0,
    gamma: float = 0.99,
    num_envs: int | None = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes of ``policy`` and return an :class:`EvalResult`.

    ``policy`` maps float32 observations (k, obs_dim) to actions (k, act_dim) in [-1, 1]
    (clipped there) or (k,) integers; ``env`` is anything :func:`make_env` accepts. Episodes
    run in waves of ``num_envs`` (default ``min(n_episodes, 16)``) sub-envs, so the policy sees
    a batch; episode ``i`` is reset with seed ``seed + i``, which makes the result independent
    of ``num_envs`` for a deterministic policy. The discounted return is
    ``Σ_{t=0}^{T-1} γ^t r_t`` from the start state (no bootstrap after a truncation).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    env_id = resolve_env_id(env)
    width = min(n_episodes, num_envs or 16)
    returns = np.zeros(n_episodes)
    discounted = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    terminated = np.zeros(n_episodes, dtype=bool)
    starts: list[np.ndarray] = []
    envs = _make_vector_env(env_id, width)
    try:
        space = envs.single_action_space
        for first in range(0, n_episodes, width):
            k = min(width, n_episodes - first)
            # Sub-envs past k (last wave) run spare episodes that are not recorded.
            obs, _ = envs.reset(seed=[seed + first + j for j in range(width)])
            starts.append(np.asarray(obs[:k], dtype=np.float32))
            active = np.arange(width) < k
            episode = first + np.arange(width)
            discount = 1.0
            while active.any():
                actions = _check_actions(policy(np.asarray(obs, dtype=np.float32)), space, width)
                obs, reward, term, trunc, _ = envs.step(actions)
                idx = episode[active]
                returns[idx] += reward[active]
                discounted[idx] += discount * reward[active]
                lengths[idx] += 1
                ended = active & (term | trunc)
                terminated[episode[ended]] = term[ended]
                # An ended sub-env is reset by its next step (next-step autoreset); it stays
                # inactive, so neither that step nor the episode after it is recorded.
                active &= ~ended
                discount *= gamma
    finally:
        envs.close()
    return EvalResult(
        env_id=env_id,
        gamma=float(gamma),
        returns=returns,
        discounted_returns=discounted,
        lengths=lengths,
        terminated=terminated,
        start_observations=np.concatenate(starts),
        seeds=seed + np.arange(n_episodes, dtype=np.int64),
    )


def measure_reference_scores(
    task: str, n_episodes: int = 100, seed: int = REFERENCE_SEED
) -> ReferenceScores:
    """Measure a built-in task's reference scores: mean returns of random and expert policies.

    Both run through :func:`evaluate` with episode seeds ``seed + i``; the random policy's
    noise comes from ``np.random.default_rng(seed)``. This is how ``REFERENCE_SCORES`` was made.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)}")
    spec = TASKS[task]
    rng = np.random.default_rng(seed)
    lo = evaluate(bind(spec.policies["random"], rng), spec.env_id, n_episodes, seed)
    hi = evaluate(bind(spec.policies["expert"], rng), spec.env_id, n_episodes, seed)
    return ReferenceScores(
        lo.mean_return,
        hi.mean_return,
        f"measure_reference_scores(n_episodes={n_episodes}, seed={seed})",
        lo.std_return,
        hi.std_return,
        n_episodes,
    )


# ----------------------------------------------------------------------- data collection
@dataclass
class _Trajectories:
    """Whole episodes of one collection, concatenated in order of completion."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_lengths: list[int] = field(default_factory=list)


def _collect(
    env_id: str,
    policy: BehaviourPolicy,
    n_transitions: int,
    seed: int,
    num_envs: int = _COLLECT_ENVS,
) -> _Trajectories:
    """Roll ``policy`` on ``num_envs`` sub-envs until complete episodes hold >= n transitions.

    Sub-env ``i`` is reset with seed ``seed + i`` (later episodes continue its RNG through
    autoreset); the policy's noise uses ``SeedSequence([seed, 1])``, so it never shares a
    stream with an env. Episodes are ordered by the step they ended at, then sub-env index;
    the shortest prefix with at least ``n_transitions`` transitions is kept.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    envs = _make_vector_env(env_id, num_envs)
    steps: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "act", "rew", "next", "term", "trunc", "valid")
    }
    ended: list[tuple[int, int, int]] = []  # (end step, sub-env, length)
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(num_envs)])
        resetting = np.zeros(num_envs, dtype=bool)
        running_len = np.zeros(num_envs, dtype=np.int64)
        complete = 0
        t = 0
        while complete < n_transitions:
            actions = policy(obs, rng)
            next_obs, reward, term, trunc, _ = envs.step(actions)
            valid = ~resetting  # a resetting sub-env ignored its action: not a transition
            for k, v in (
                ("obs", obs),
                ("act", actions),
                ("rew", reward),
                ("next", next_obs),
                ("term", term),
                ("trunc", trunc),
                ("valid", valid),
            ):
                steps[k].append(np.asarray(v))
            running_len += valid
            done = valid & (term | trunc)
            for i in np.flatnonzero(done):
                ended.append((t, int(i), int(running_len[i])))
                complete += int(running_len[i])
            running_len[done] = 0
            resetting = done
            obs = next_obs
            t += 1
    finally:
        envs.close()

    arr = {k: np.stack(v) for k, v in steps.items()}  # (T, num_envs, ...)
    ended.sort()
    keep: list[tuple[int, int, int]] = []
    total = 0
    for item in ended:
        if total >= n_transitions:
            break
        keep.append(item)
        total += item[2]
    # Rows of an episode are consecutive steps of one sub-env, ending at its end step.
    rows = np.concatenate([np.arange(end - length + 1, end + 1) for end, _, length in keep])
    cols = np.concatenate([np.full(length, i) for _, i, length in keep])
    assert arr["valid"][rows, cols].all(), "an episode spans an autoreset step"
    return _Trajectories(
        observations=arr["obs"][rows, cols],
        actions=arr["act"][rows, cols],
        rewards=arr["rew"][rows, cols],
        next_observations=arr["next"][rows, cols],
        terminated=arr["term"][rows, cols].astype(bool),
        truncated=arr["trunc"][rows, cols].astype(bool),
        episode_lengths=[length for _, _, length in keep],
    )


def _dataset_from(name: str, task: Task, traj: _Trajectories) -> OfflineDataset:
    from deep.data import OfflineDataset

    low, high = _action_bounds(task, traj.actions)
    return OfflineDataset(
        observations=traj.observations.astype(np.float32),
        actions=traj.actions.astype(np.int64 if task.discrete else np.float32),
        rewards=traj.rewards.astype(np.float32),
        next_observations=traj.next_observations.astype(np.float32),
        terminals=traj.terminated.astype(bool),
        timeouts=traj.truncated & ~traj.terminated,
        discrete=task.discrete,
        n_actions=2 if task.discrete else None,
        env_id=task.env_id,
        name=name,
        action_low=low,
        action_high=high,
    )


def _action_bounds(task: Task, actions: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Stored continuous actions live in [-1, 1] whatever the env's own bounds (see make_env)."""
    if task.discrete:
        return None, None
    act_dim = actions.shape[1]
    return np.full(act_dim, -1.0, dtype=np.float32), np.full(act_dim, 1.0, dtype=np.float32)


def _concat(name: str, parts: list[OfflineDataset]) -> OfflineDataset:
    from deep.data import OfflineDataset

    first = parts[0]
    timeouts = [p.timeouts for p in parts if p.timeouts is not None]
    return OfflineDataset(
        observations=np.concatenate([p.observations for p in parts]),
        actions=np.concatenate([p.actions for p in parts]),
        rewards=np.concatenate([p.rewards for p in parts]),
        next_observations=np.concatenate([p.next_observations for p in parts]),
        terminals=np.concatenate([p.terminals for p in parts]),
        timeouts=np.concatenate(timeouts) if len(timeouts) == len(parts) else None,
        discrete=first.discrete,
        n_actions=first.n_actions,
        env_id=first.env_id,
        name=name,
        action_low=first.action_low,
        action_high=first.action_high,
    )


def _resolve(
    name: str, n_transitions: int | None, seed: int | None
) -> tuple[BuiltinSpec, int, int]:
    spec = builtin_spec(name)
    n = spec.n_transitions if n_transitions is None else int(n_transitions)
    if n < 1:
        raise ValueError(f"n_transitions must be >= 1, got {n_transitions}")
    return spec, n, spec.seed if seed is None else int(seed)


def generate_builtin(
    name: str, n_transitions: int | None = None, seed: int | None = None
) -> OfflineDataset:
    """Generate a built-in dataset (no cache). See the module docstring for what each holds.

    ``n_transitions`` (default ``DEFAULT_TRANSITIONS``) is per collection, rounded up to whole
    episodes; ``medium-expert`` holds a medium and an expert collection of that size.
    ``seed`` is the base seed (default ``DEFAULT_DATASET_SEED``); the quality's collection
    seeds its sub-envs ``seed + offset + i`` (offsets: random 0, medium 10,000, expert 20,000).
    """
    spec, n, seed = _resolve(name, n_transitions, seed)
    if spec.quality == "medium-expert":
        return _concat(
            name,
            [generate_builtin(f"{spec.task.key}-{q}", n, seed) for q in ("medium", "expert")],
        )
    spec = replace(spec, seed=seed)
    traj = _collect(spec.env_id, spec.task.policies[spec.quality], n, spec.collection_seed)
    return _dataset_from(name, spec.task, traj)


def default_cache_dir() -> Path:
    """``$CQL_COMPANION_DATA`` if set, else ``~/.cache/cql-companion/datasets``."""
    env = os.environ.get("CQL_COMPANION_DATA")
    return Path(env) if env else Path.home() / ".cache" / "cql-companion" / "datasets"


def _simulator_versions(task: Task) -> str:
    versions = f"gymnasium={gym.__version__}"
    if task.env_id.endswith("-v5"):  # the MuJoCo task: its dynamics come from the mujoco wheel
        import mujoco

        versions += f";mujoco={mujoco.__version__}"
    return versions


def cache_path(
    name: str,
    n_transitions: int | None = None,
    seed: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where :func:`load_builtin` caches ``name`` at this size and seed.

    ``<name>-g<GENERATOR_VERSION>-n<N>-s<seed>-<digest>.npz``, the digest covering the
    simulator versions, so a new generator or simulator never reads a stale file.
    """
    spec, n, seed = _resolve(name, n_transitions, seed)
    digest = hashlib.sha256(_simulator_versions(spec.task).encode()).hexdigest()[:10]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{name}-g{GENERATOR_VERSION}-n{n}-s{seed}-{digest}.npz"


_ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def _write_atomic(path: Path, ds: OfflineDataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: getattr(ds, k) for k in _ARRAYS}, name=np.str_(ds.name))
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a cache may be shared
        # Readers see either no file or the whole file, even with concurrent writers.
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: Path, name: str, task: Task) -> OfflineDataset:
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in (*_ARRAYS, "name") if k not in f.files]
        if missing:
            raise ValueError(f"cached dataset {path} lacks arrays {missing}")
        if str(f["name"]) != name:
            raise ValueError(f"cached dataset {path} holds {str(f['name'])!r}, not {name!r}")
        arrays = {k: f[k] for k in _ARRAYS}
    from deep.data import OfflineDataset

    low, high = _action_bounds(task, arrays["actions"])
    return OfflineDataset(
        observations=arrays["observations"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        next_observations=arrays["next_observations"],
        terminals=arrays["terminals"],
        timeouts=arrays["timeouts"],
        discrete=task.discrete,
        n_actions=2 if task.discrete else None,
        env_id=task.env_id,
        name=name,
        action_low=low,
        action_high=high,
    )


def load_builtin(
    name: str,
    *,
    n_transitions: int | None = None,
    seed: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> OfflineDataset:
    """A built-in dataset, generated on first use and read from the cache afterwards.

    Arguments as in :func:`generate_builtin`; ``cache_dir`` overrides :func:`default_cache_dir`;
    ``use_cache=False`` generates without reading or writing files. A cached file that cannot
    be read is regenerated. ``medium-expert`` is assembled from the cached medium and expert.
    """
    spec, n, seed = _resolve(name, n_transitions, seed)
    if spec.quality == "medium-expert":
        parts = [
            load_builtin(
                f"{spec.task.key}-{q}",
                n_transitions=n,
                seed=seed,
                cache_dir=cache_dir,
                use_cache=use_cache,
            )
            for q in ("medium", "expert")
        ]
        return _concat(name, parts)
    if not use_cache:
        return generate_builtin(name, n, seed)
    path = cache_path(name, n, seed, cache_dir)
    if path.exists():
        try:
            return _read(path, name, spec.task)
        except (OSError, ValueError) as err:
            log.warning("regenerating %s: cannot read %s (%s)", name, path, err)
    start = time.perf_counter()
    ds = generate_builtin(name, n, seed)
    log.info("generated %s (%d transitions) in %.1f s", name, len(ds), time.perf_counter() - start)
    _write_atomic(path, ds)
    return ds


def episode_returns(
    rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray | None
) -> np.ndarray:
    """Undiscounted return of every complete episode, splitting after terminals or timeouts.

    Shapes: (N,) each -> (n_episodes,). Rows after the last episode end (a cut-off episode)
    are not counted.
    """
    ends = np.asarray(terminals, dtype=bool)
    if timeouts is not None:
        ends = ends | np.asarray(timeouts, dtype=bool)
    end_rows = np.flatnonzero(ends)
    if end_rows.size == 0:
        return np.zeros(0)
    cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(rewards, dtype=np.float64))])
    bounds = np.concatenate([[0], end_rows + 1])
    return cumulative[bounds[1:]] - cumulative[bounds[:-1]]
