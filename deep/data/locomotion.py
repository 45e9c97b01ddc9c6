"""Built-in D4RL-style locomotion datasets, no download: ``<env>-<level>`` for env in hopper,
halfcheetah, walker2d and level in random, medium, expert, medium-replay, medium-expert.

They are collected from the behaviour policies the project trains and ships
(:mod:`deep.policies.locomotion`, which documents the levels, the noise and the episode ends)
on Gymnasium's v5 MuJoCo environments, with D4RL's sizes (1M transitions; medium-expert 2M;
medium-replay whatever the behaviour policy's training collected), scored on D4RL's own
reference returns (``deep.envs.normalized_score("hopper-medium", ...)``). Generated on first
use and cached in :func:`deep.data.builtin.default_cache_dir` like the other built-ins: the
file name holds the name, size, seed, :data:`LOCOMOTION_VERSION` and a digest of the simulator
versions and of the shipped weights, so a new policy or simulator never reads a stale file.

Only environments whose weights are shipped are listed (:func:`locomotion_names`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from deep.data.builtin import cached, default_cache_dir, read_cache
from deep.data.dataset import OfflineDataset, validate_dataset
from deep.policies import locomotion as behaviour

__all__ = [
    "DEFAULT_LOCOMOTION_SEED",
    "LOCOMOTION_VERSION",
    "generate_locomotion",
    "is_locomotion_name",
    "load_locomotion",
    "locomotion_cache_path",
    "locomotion_names",
]

GENERATION_RATE = 10_000.0
"""Transitions a locomotion collection gathers per second on one core (MuJoCo and the linear
behaviour policy; for the time it announces)."""

LOCOMOTION_VERSION = 1
"""Bump when the collection changes: cached files then regenerate."""

DEFAULT_LOCOMOTION_SEED = 3_000_000
"""Base seed of the episodes' resets and action noise (``medium-replay`` is the recorded
training run and does not depend on it)."""


def locomotion_names() -> list[str]:
    """Every ``<env>-<level>`` whose behaviour policy is shipped, sorted."""
    shipped = [env for env in behaviour.ENVS if (behaviour.WEIGHTS_DIR / f"{env}.npz").is_file()]
    return sorted(f"{env}-{level}" for env in shipped for level in behaviour.LEVELS)


def _split(name: str) -> tuple[str, str]:
    for env in behaviour.ENVS:
        level = name[len(env) + 1 :]
        if name.startswith(env + "-") and level in behaviour.LEVELS:
            return env, level
    raise KeyError(f"unknown locomotion dataset {name!r}; known: {locomotion_names()}")


def is_locomotion_name(name: str) -> bool:
    """True for a name of :func:`locomotion_names`."""
    return name in locomotion_names()


def _resolve(name: str, n_transitions: int | None, seed: int | None) -> tuple[str, str, int, int]:
    env, level = _split(name)
    n = behaviour.default_size(env, level) if n_transitions is None else int(n_transitions)
    if n < 1:
        raise ValueError(f"n_transitions must be >= 1, got {n_transitions}")
    return env, level, n, DEFAULT_LOCOMOTION_SEED if seed is None else int(seed)


def generate_locomotion(
    name: str, n_transitions: int | None = None, seed: int | None = None
) -> OfflineDataset:
    """Collect ``name`` (no cache): whole episodes holding at least ``n_transitions``
    (default D4RL's size) transitions; same name, size and seed, same arrays."""
    env, level, n, seed = _resolve(name, n_transitions, seed)
    arrays = behaviour.collect(env, level, n, seed)
    act_dim = arrays["actions"].shape[1]
    return validate_dataset(
        OfflineDataset(
            observations=arrays["observations"],
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            next_observations=arrays["next_observations"],
            terminals=arrays["terminals"],
            timeouts=arrays["timeouts"],
            env_id=behaviour.GYM_IDS[env],
            name=name,
            action_low=np.full(act_dim, -1.0, dtype=np.float32),
            action_high=np.full(act_dim, 1.0, dtype=np.float32),
        )
    )


def _digest(env: str) -> str:
    import mujoco  # the simulator's version is part of a dataset's identity

    weights = (behaviour.WEIGHTS_DIR / f"{env}.npz").read_bytes()
    text = f"gymnasium={gym.__version__};mujoco={mujoco.__version__}"
    return hashlib.sha256(text.encode() + weights).hexdigest()[:10]


def locomotion_cache_path(
    name: str,
    n_transitions: int | None = None,
    seed: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """``<name>-l<LOCOMOTION_VERSION>-n<N>-s<seed>-<digest>.npz`` in the cache folder."""
    env, _, n, seed = _resolve(name, n_transitions, seed)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{name}-l{LOCOMOTION_VERSION}-n{n}-s{seed}-{_digest(env)}.npz"


def load_locomotion(
    name: str,
    *,
    n_transitions: int | None = None,
    seed: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> OfflineDataset:
    """``name`` from the cache, or generated, timed and cached (atomically) on first use; an
    unreadable cache file is regenerated."""
    if not use_cache:
        return generate_locomotion(name, n_transitions, seed)
    path = locomotion_cache_path(name, n_transitions, seed, cache_dir)
    env, _, n, _ = _resolve(name, n_transitions, seed)
    return cached(
        path,
        name,
        lambda: read_cache(path, name, behaviour.GYM_IDS[env]),
        lambda: generate_locomotion(name, n_transitions, seed),
        transitions=n,
        per_second=GENERATION_RATE,
    )
