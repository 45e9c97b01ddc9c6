"""Built-in offline datasets: generated from gymnasium, cached as ``.npz``, no download.

Datasets
--------
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
4.0.0; undiscounted episode returns (``deep.data.episode_returns``), mean ± std over the
dataset's episodes, normalised with ``deep.envs.REFERENCE_SCORES``; generation took 1-9 s
each on one CPU core):

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
  (a tanh actor's range; ``action_low``/``action_high`` are -1/1), discrete actions as int64
  indices; ``deep.envs.make_env`` rescales them to the environment's units (Pendulum: torque
  ``u = 2a`` N·m; InvertedDoublePendulum already acts in [-1, 1]).
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
  versions, so changing the generator or the simulator regenerates. Files are written by
  :func:`deep.data.formats.save_npz` (atomic: temporary file then ``os.replace``) and read by
  :func:`deep.data.formats.read_npz`, like any exported ``.npz``.

The names, environments and reference scores of the tasks live in :mod:`deep.envs`
(``builtin_names``, ``BUILTIN_ENV_IDS``, ``REFERENCE_SCORES``); :func:`measure_reference_scores`
here is how the built-in reference scores were measured.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import gymnasium as gym
import numpy as np

from deep.data.dataset import OfflineDataset
from deep.data.formats import LoadOptions, read_npz, save_npz
from deep.envs import (
    BUILTIN_ENV_IDS,
    QUALITIES,
    REFERENCE_SEED,
    ReferenceScores,
    builtin_names,
    evaluate,
    make_vector_env,
    split_builtin_name,
)
from deep.policies.scripted import (
    BehaviourPolicy,
    CartPoleLinear,
    DoublePendulumLQR,
    PendulumSwingUp,
    UniformRandom,
    bind,
)

__all__ = [
    "DEFAULT_DATASET_SEED",
    "DEFAULT_TRANSITIONS",
    "GENERATOR_VERSION",
    "QUALITIES",
    "REFERENCE_SEED",
    "TASKS",
    "BuiltinSpec",
    "Task",
    "builtin_names",
    "builtin_spec",
    "cache_path",
    "default_cache_dir",
    "generate_builtin",
    "load_builtin",
    "measure_reference_scores",
]

log = logging.getLogger(__name__)

GENERATION_RATE = 15_000.0
"""Transitions a built-in's generation collects per second on one core (for the time it
announces; the slowest classic-control task, inverted double pendulum, runs near it)."""

GENERATOR_VERSION = 2
"""Bump when a behaviour policy or the collection changes: cached files then regenerate."""

DEFAULT_TRANSITIONS = 100_000
DEFAULT_DATASET_SEED = 1_000_000
"""Base seed of the built-in datasets, far from evaluation's default seeds (0, 1, ...)."""

_SEED_OFFSET = {"random": 0, "medium": 10_000, "expert": 20_000}
_COLLECT_ENVS = 10


# ----------------------------------------------------------------------------- registry
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
            BUILTIN_ENV_IDS["pendulum"],
            discrete=False,
            policies={
                "random": UniformRandom(act_dim=1),
                "medium": PendulumSwingUp(swing_torque=0.3, noise_std=0.3),
                "expert": PendulumSwingUp(),
            },
        ),
        Task(
            "cartpole",
            BUILTIN_ENV_IDS["cartpole"],
            discrete=True,
            policies={
                "random": UniformRandom(n_actions=2),
                "medium": CartPoleLinear(epsilon=0.4),
                "expert": CartPoleLinear(),
            },
        ),
        Task(
            "inverted-double-pendulum",
            BUILTIN_ENV_IDS["inverted-double-pendulum"],
            discrete=False,
            policies={
                "random": UniformRandom(act_dim=1),
                "medium": DoublePendulumLQR(noise_std=0.2),
                "expert": DoublePendulumLQR(),
            },
        ),
    )
}


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


def builtin_spec(name: str) -> BuiltinSpec:
    """The :class:`BuiltinSpec` of a built-in dataset name; ``ValueError`` if unknown."""
    parsed = split_builtin_name(name)
    if parsed is None:
        raise ValueError(
            f"unknown built-in dataset {name!r}; "
            f"built-in datasets are: {', '.join(builtin_names())}"
        )
    key, quality = parsed
    return BuiltinSpec(name, TASKS[key], quality, DEFAULT_TRANSITIONS, DEFAULT_DATASET_SEED)


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
    envs = make_vector_env(env_id, num_envs)
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


# What reading a damaged cache file can raise: read_npz turns read errors into DatasetError (a
# ValueError); the others are listed too, as a cache file must never stop a run.
_CACHE_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
)


def read_cache(path: Path, name: str, env_id: str, n_actions: int | None = None) -> OfflineDataset:
    """A cached dataset, read (and validated) by the one ``.npz`` reader of deep.data.formats."""
    ds = read_npz(path, LoadOptions(env_id=env_id, n_actions=n_actions, layout="transitions"))
    if ds.timeouts is None:
        raise ValueError(f"cached dataset {path} lacks arrays ['timeouts']")
    if ds.name != name:
        raise ValueError(f"cached dataset {path} holds {ds.name!r}, not {name!r}")
    return ds


def cached(
    path: Path,
    name: str,
    read: Callable[[], OfflineDataset],
    generate: Callable[[], OfflineDataset],
    *,
    transitions: int | None = None,
    per_second: float = GENERATION_RATE,
) -> OfflineDataset:
    """``read()`` the cache file ``path`` of ``name``, or ``generate()`` it and save it there
    atomically; a file that cannot be read is regenerated. Generating says on stderr what it
    generates, about how long it takes (``transitions`` at ``per_second`` on one core) and where
    it is cached, then how long it took."""
    if path.exists():
        try:
            return read()
        except _CACHE_READ_ERRORS as err:
            # A truncated or corrupt file (a killed copy, a full disk) is only a cache:
            # regenerate it; save_npz below replaces it atomically.
            log.warning("regenerating %s: cannot read its cache file %s (%s)", name, path, err)
    size = (
        f"{transitions:,} transitions, about {_duration(transitions / per_second)}, "
        if (transitions)
        else ""
    )
    print(
        f"generating the built-in dataset {name} ({size}first use only; cached in {path})",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    ds = generate()
    seconds = time.perf_counter() - start
    log.info("generated %s (%d transitions) in %.1f s", name, len(ds), seconds)
    save_npz(ds, path)
    print(f"generated {name} in {_duration(seconds)}", file=sys.stderr, flush=True)
    return ds


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


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
    task = spec.task
    return cached(
        path,
        name,
        lambda: read_cache(path, name, task.env_id, 2 if task.discrete else None),
        lambda: generate_builtin(name, n, seed),
        transitions=n,
    )
