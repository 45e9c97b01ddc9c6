"""D4RL-style MuJoCo locomotion datasets generated offline (hopper, halfcheetah, walker2d).

The behaviour policies are linear ARS policies (:mod:`deep.policies.ars`) shipped as weights
in ``deep/policies/weights/<env>.npz`` and trained by ``python -m deep.policies.train <env>``
(the command, seed, versions and scores are recorded beside them in ``<env>.json``).

Levels, with D4RL's meanings (Fu et al. 2020, arXiv 2004.07219, Section 5):

- ``random``: actions uniform in [−1, 1]^|A| (the envs' own action box).
- ``medium``: the *medium snapshot*, the first ARS iterate whose noisy evaluation scored
  within :data:`MEDIUM_BAND` on D4RL's normalised scale (D4RL's medium datasets score
  about 40-60: a policy at one third to one half of the expert's return).
- ``expert``: the most robust of the best evaluated iterates of the full training run
  (``deep.policies.train``).
- ``medium-replay``: every rollout ARS collected up to the medium snapshot, as D4RL's replay
  buffers: ARS is re-run deterministically from the recorded seed and configuration and
  each training episode (both perturbations ``M ± ν δ`` of every direction) is recorded, in
  order, until the iteration that produced the medium snapshot. The re-run is checked against
  the shipped medium weights. Its size is whatever training produced (:func:`default_size`).
- ``medium-expert``: a medium collection then an expert collection, concatenated.

Exploration noise of ``medium`` and ``expert``: Gaussian action noise,
``a = clip(π(s) + σ_a ε, −1, 1)``, ``ε ~ N(0, I)``, ``σ_a =`` :data:`ACTION_NOISE`. D4RL
sampled its SAC policies, which are stochastic at every step; per-step noise gives the
behaviour policy a density with full support on every visited state (what CQL's
``μ/π_β`` and behaviour cloning's likelihood assume), while ARS's own parameter noise would
perturb a whole episode and leave the actions a deterministic function of the state within
it. The value was measured on the shipped policies (``python -m deep.policies.locomotion
noise``): linear policies are brittle under per-step noise, and at σ_a = 0.1 the Hopper expert
fell in 3 of 10 episodes (86.5 ± 28.8 normalised, against 101.2 ± 0.7 without noise), while at
σ_a = 0.05 it kept 101.0 ± 1.6; the training run selects its snapshots under this same noise.

Episodes end as in D4RL: Hopper and Walker2d terminate on a fall (``terminals``),
HalfCheetah never terminates; the 1000-step time limit sets ``timeouts`` (truncated and not
terminated). ``next_observations[i]`` is the observation returned by step ``i`` (the true final
one at an episode's end), so ``next_observations[i] == observations[i + 1]`` inside an episode.
Whole episodes are collected until they hold at least ``n_transitions`` transitions.

Determinism: a collection of (env, level, n_transitions, seed) is one array whatever the run:
episode ``i`` resets from a seed drawn from ``SeedSequence([seed, level index])``'s first
child, the action noise comes from its second child. (``medium-replay`` is the recorded
training run: ``seed`` does not change it.)

This module never imports ``deep.data``, ``deep.envs``, ``deep.agents`` or ``deep.train``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from deep.cli import main_guard
from deep.policies.ars import ARSConfig, Episode, LinearPolicy, ars, rollout

#: Short names -> gymnasium ids.
GYM_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
}
ENVS: tuple[str, ...] = tuple(GYM_IDS)
#: Observation and action dimensions of the v5 envs.
OBS_DIMS: dict[str, int] = {"hopper": 11, "halfcheetah": 17, "walker2d": 17}
ACT_DIMS: dict[str, int] = {"hopper": 3, "halfcheetah": 6, "walker2d": 6}
LEVELS: tuple[str, ...] = ("random", "medium", "expert", "medium-replay", "medium-expert")
#: D4RL's reference returns (d4rl/infos.py): (random, expert).
REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}
#: D4RL's dataset sizes: 1M transitions per collection, medium-expert two of them.
DEFAULT_TRANSITIONS = 1_000_000
#: σ_a of the Gaussian action noise of ``medium`` and ``expert`` (actions in [−1, 1]).
ACTION_NOISE = 0.05
#: Normalised score band the medium snapshot's noisy evaluation must fall in. D4RL's medium
#: datasets score about 44 (hopper), 41 (halfcheetah), 62 (walker2d); HalfCheetah's lower edge
#: is lower because a linear policy trained for minutes returns far less than D4RL's expert.
MEDIUM_BAND: dict[str, tuple[float, float]] = {
    "hopper": (42.0, 58.0),
    "halfcheetah": (36.0, 58.0),
    "walker2d": (42.0, 58.0),
}

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_LEVEL_INDEX = {level: i for i, level in enumerate(LEVELS)}
_ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def _check_env(env: str) -> str:
    if env not in GYM_IDS:
        raise ValueError(f"unknown env {env!r}; expected one of {', '.join(ENVS)}")
    return GYM_IDS[env]


def _check_level(level: str) -> None:
    if level not in _LEVEL_INDEX:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")


def normalized_score(env: str, returns: np.ndarray | float) -> np.ndarray:
    """D4RL's ``100 (R − R_random) / (R_expert − R_random)`` with :data:`REFERENCE_RETURNS`."""
    _check_env(env)
    lo, hi = REFERENCE_RETURNS[env]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


# ----------------------------------------------------------------------------- weights
def metadata(env: str, weights_dir: Path | None = None) -> dict[str, Any]:
    """The training record ``<env>.json`` (command, seed, ARS config, versions, scores)."""
    _check_env(env)
    path = (weights_dir or WEIGHTS_DIR) / f"{env}.json"
    if not path.exists():
        raise FileNotFoundError(f"no behaviour policy for {env}: {path} is missing")
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def load_policy(
    env: str, snapshot: Literal["medium", "expert"], weights_dir: Path | None = None
) -> LinearPolicy:
    """The shipped ``medium`` or ``expert`` linear policy of ``env`` (``<env>.npz``)."""
    _check_env(env)
    if snapshot not in ("medium", "expert"):
        raise ValueError(f"unknown snapshot {snapshot!r}; expected 'medium' or 'expert'")
    path = (weights_dir or WEIGHTS_DIR) / f"{env}.npz"
    if not path.exists():
        raise FileNotFoundError(f"no behaviour policy for {env}: {path} is missing")
    with np.load(path, allow_pickle=False) as f:
        return LinearPolicy(
            W=f[f"{snapshot}_W"].astype(np.float64),
            mu=f[f"{snapshot}_mu"].astype(np.float64),
            sigma=f[f"{snapshot}_sigma"].astype(np.float64),
        )


def default_size(env: str, level: str) -> int:
    """D4RL's sizes: 1M per collection, 2M for medium-expert, the recorded replay's size for
    medium-replay."""
    _check_env(env)
    _check_level(level)
    if level == "medium-replay":
        return int(metadata(env)["replay"]["transitions"])
    return 2 * DEFAULT_TRANSITIONS if level == "medium-expert" else DEFAULT_TRANSITIONS


# ----------------------------------------------------------------------------- behaviour
def noisy(
    policy: Callable[[np.ndarray], np.ndarray], sigma: float, rng: np.random.Generator
) -> Callable[[np.ndarray], np.ndarray]:
    """``s -> clip(π(s) + σ ε, −1, 1)``, ``ε ~ N(0, I)`` drawn from ``rng`` (σ = 0: π itself)."""
    if sigma == 0.0:
        return policy

    def act(obs: np.ndarray) -> np.ndarray:
        a = policy(obs)
        return np.clip(a + sigma * rng.standard_normal(a.shape), -1.0, 1.0)

    return act


def uniform(act_dim: int, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """``s -> a ~ U([−1, 1]^act_dim)`` (D4RL's random level)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=act_dim)

    return act


def run_episodes(
    env_id: str,
    make_act: Callable[[np.random.Generator], Callable[[np.ndarray], np.ndarray]],
    seed_sequence: np.random.SeedSequence,
    *,
    n_transitions: int | None = None,
    n_episodes: int | None = None,
) -> list[Episode]:
    """Whole episodes until they hold ``>= n_transitions`` steps (or ``n_episodes`` of them).

    Reset seeds come from ``seed_sequence``'s first child, the policy's randomness (its
    generator is passed to ``make_act``) from the second.
    """
    if (n_transitions is None) == (n_episodes is None):
        raise ValueError("give exactly one of n_transitions and n_episodes")
    reset_ss, act_ss = seed_sequence.spawn(2)
    reset_rng = np.random.default_rng(reset_ss)
    act = make_act(np.random.default_rng(act_ss))
    env = gym.make(env_id)
    episodes: list[Episode] = []
    total = 0
    try:
        while (n_transitions is not None and total < n_transitions) or (
            n_episodes is not None and len(episodes) < n_episodes
        ):
            ep = rollout(env, act, int(reset_rng.integers(0, 2**31 - 1)))
            episodes.append(ep)
            total += ep.length
    finally:
        env.close()
    return episodes


def evaluate(
    env: str,
    policy: Callable[[np.ndarray], np.ndarray],
    n_episodes: int,
    seed: int,
    action_noise: float = ACTION_NOISE,
) -> np.ndarray:
    """Undiscounted returns (n_episodes,) of ``policy`` with Gaussian action noise σ_a."""
    env_id = _check_env(env)
    episodes = run_episodes(
        env_id,
        lambda rng: noisy(policy, action_noise, rng),
        np.random.SeedSequence([seed, 99]),
        n_episodes=n_episodes,
    )
    return np.array([ep.total_reward for ep in episodes])


def _to_arrays(episodes: Sequence[Episode]) -> dict[str, np.ndarray]:
    terminated = np.concatenate([ep.terminated for ep in episodes])
    truncated = np.concatenate([ep.truncated for ep in episodes])
    return {
        "observations": np.concatenate([ep.observations for ep in episodes]).astype(np.float32),
        "actions": np.concatenate([ep.actions for ep in episodes]).astype(np.float32),
        "rewards": np.concatenate([ep.rewards for ep in episodes]).astype(np.float32),
        "next_observations": np.concatenate([ep.next_observations for ep in episodes]).astype(
            np.float32
        ),
        "terminals": terminated.astype(bool),
        "timeouts": truncated & ~terminated,
    }


def replay_episodes(env: str, n_transitions: int | None = None) -> list[Episode]:
    """ARS's training rollouts up to the medium snapshot, re-run from ``<env>.json``.

    Stops early, at whole episodes, once ``n_transitions`` are held (None: the whole replay).
    Raises if the re-run does not land on the shipped medium weights (another simulator).
    """
    env_id = _check_env(env)
    record = metadata(env)
    config = ARSConfig(**record["ars_config"])
    last = int(record["medium"]["iteration"])
    replay = record["replay"]
    if n_transitions is not None and n_transitions > int(replay["transitions"]):
        raise ValueError(
            f"{env}-medium-replay holds {replay['transitions']} transitions, "
            f"asked for {n_transitions}"
        )
    episodes: list[Episode] = []
    total = 0
    gym_env = gym.make(env_id)
    try:
        for state, batch in ars(gym_env, config, int(record["seed"])):
            for ep in batch:
                if n_transitions is None or total < n_transitions:
                    episodes.append(ep)
                    total += ep.length
            if state.iteration == last:
                shipped = load_policy(env, "medium")
                if not np.allclose(state.W, shipped.W, rtol=1e-5, atol=1e-8):
                    raise RuntimeError(
                        f"re-running ARS for {env} did not reproduce the shipped medium weights "
                        f"(max |ΔW| {np.abs(state.W - shipped.W).max():.3g}): another simulator?"
                    )
                break
            if n_transitions is not None and total >= n_transitions:
                break
    finally:
        gym_env.close()
    return episodes


def collect_episodes(env: str, level: str, n_transitions: int, seed: int) -> list[Episode]:
    """The episodes behind :func:`collect` (same arguments)."""
    env_id = _check_env(env)
    _check_level(level)
    if int(n_transitions) < 1:
        raise ValueError(f"n_transitions must be >= 1, got {n_transitions}")
    n = int(n_transitions)
    if level == "medium-replay":
        return replay_episodes(env, n)
    if level == "medium-expert":
        half = (n + 1) // 2
        return collect_episodes(env, "medium", half, seed) + collect_episodes(
            env, "expert", max(n - half, 1), seed
        )
    ss = np.random.SeedSequence([seed, _LEVEL_INDEX[level]])
    if level == "random":
        act_dim = ACT_DIMS[env]
        return run_episodes(env_id, lambda rng: uniform(act_dim, rng), ss, n_transitions=n)
    policy = load_policy(env, "medium" if level == "medium" else "expert")
    return run_episodes(env_id, lambda rng: noisy(policy, ACTION_NOISE, rng), ss, n_transitions=n)


def collect(env: str, level: str, n_transitions: int, seed: int) -> dict[str, np.ndarray]:
    """A D4RL-style dataset of whole episodes holding ``>= n_transitions`` transitions.

    Returns ``observations``, ``next_observations`` (n, obs_dim) float32, ``actions``
    (n, act_dim) float32 in [−1, 1], ``rewards`` (n,) float32, ``terminals``, ``timeouts``
    (n,) bool. ``env`` in :data:`ENVS` (obs/act dims: hopper 11/3, halfcheetah 17/6,
    walker2d 17/6), ``level`` in :data:`LEVELS` (see the module docstring). Same arguments,
    same arrays.
    """
    return _to_arrays(collect_episodes(env, level, n_transitions, seed))


# ----------------------------------------------------------------------------- reporting
@dataclass(frozen=True)
class BehaviourRow:
    """One dataset's behaviour: transitions, episodes, returns and D4RL-normalised scores."""

    dataset: str
    transitions: int
    episodes: int
    return_mean: float
    return_std: float
    score_mean: float
    score_std: float
    seconds: float
    cpu_seconds: float


def _row(
    env: str, level: str, episodes: Sequence[Episode], seconds: float, cpu_seconds: float
) -> BehaviourRow:
    returns = np.array([ep.total_reward for ep in episodes])
    scores = normalized_score(env, returns)
    return BehaviourRow(
        dataset=f"{env}-{level}",
        transitions=sum(ep.length for ep in episodes),
        episodes=len(episodes),
        return_mean=float(returns.mean()),
        return_std=float(returns.std()),
        score_mean=float(scores.mean()),
        score_std=float(scores.std()),
        seconds=seconds,
        cpu_seconds=cpu_seconds,
    )


def behaviour_table(
    envs: Sequence[str] = ENVS,
    levels: Sequence[str] = LEVELS,
    n_transitions: int | None = None,
    seed: int = 0,
) -> list[BehaviourRow]:
    """Collect each (env, level) dataset (default sizes unless ``n_transitions``) and summarise
    its episodes. ``medium-expert`` reuses the medium and expert collections when both are in
    ``levels`` (its ``seconds`` is then the sum of theirs, what a direct collection costs).
    Each row is also printed to stderr as it is ready."""
    rows: list[BehaviourRow] = []
    for env in envs:
        cache: dict[str, tuple[list[Episode], float, float]] = {}
        for level in levels:
            n = default_size(env, level) if n_transitions is None else n_transitions
            if level == "medium-expert" and "medium" in cache and "expert" in cache:
                half = (n + 1) // 2
                same = n_transitions is None or half == n_transitions
                if same and max(n - half, 1) == half:
                    eps = cache["medium"][0] + cache["expert"][0]
                    med, exp = cache["medium"], cache["expert"]
                    rows.append(_row(env, level, eps, med[1] + exp[1], med[2] + exp[2]))
                    continue
            start, cpu = time.perf_counter(), time.process_time()
            eps = collect_episodes(env, level, n, seed)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            cache[level] = (eps, seconds, cpu)
            rows.append(_row(env, level, eps, seconds, cpu))
            print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def format_table(rows: Sequence[BehaviourRow]) -> str:
    """Markdown table of :func:`behaviour_table`'s rows."""
    lines = [
        "| dataset | transitions | episodes | return | normalised | seconds | CPU seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.dataset} | {r.transitions} | {r.episodes} | "
            f"{r.return_mean:.1f} ± {r.return_std:.1f} | {r.score_mean:.1f} ± {r.score_std:.1f} | "
            f"{r.seconds:.0f} | {r.cpu_seconds:.0f} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Info:
    """Print the behaviour table of the datasets (collects them: minutes at full size)."""

    envs: tuple[str, ...] = ENVS
    """Environments (short names)."""
    levels: tuple[str, ...] = LEVELS
    """Levels."""
    n_transitions: int | None = None
    """Transitions per dataset (default: D4RL's sizes)."""
    seed: int = 0
    """Collection seed."""


@dataclass(frozen=True)
class Noise:
    """Returns of the shipped policies under several action-noise levels σ_a."""

    envs: tuple[str, ...] = ENVS
    """Environments (short names)."""
    sigmas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    """Noise standard deviations."""
    episodes: int = 10
    """Episodes per (policy, σ_a)."""
    seed: int = 0
    """Evaluation seed."""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deep.policies.locomotion {info,noise} [options]``; bad input ends in one
    line and exit 2 (:mod:`deep.cli`)."""
    return main_guard(_main, argv)


def _check(cmd: Info | Noise) -> None:
    """Every option checked before any episode runs."""
    for env in cmd.envs:
        if env not in ENVS:
            raise ValueError(f"--envs: unknown env {env!r}; expected one of {', '.join(ENVS)}")
    if isinstance(cmd, Info):
        for level in cmd.levels:
            if level not in LEVELS:
                raise ValueError(
                    f"--levels: unknown level {level!r}; expected one of {', '.join(LEVELS)}"
                )
        if cmd.n_transitions is not None and cmd.n_transitions < 1:
            raise ValueError(f"--n-transitions must be >= 1, got {cmd.n_transitions}")
        return
    if cmd.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {cmd.episodes}")
    bad = [s for s in cmd.sigmas if not s >= 0.0]
    if bad:
        raise ValueError(f"--sigmas are noise standard deviations, so >= 0; got {bad[0]}")


def _main(argv: list[str]) -> int:
    import tyro

    cmd = tyro.extras.subcommand_cli_from_dict(
        {"info": Info, "noise": Noise}, args=argv, prog="python -m deep.policies.locomotion"
    )
    _check(cmd)
    if isinstance(cmd, Info):
        print(format_table(behaviour_table(cmd.envs, cmd.levels, cmd.n_transitions, cmd.seed)))
        return 0
    print("| policy | σ_a | return | normalised |\n|---|---:|---:|---:|")
    for env in cmd.envs:
        for snapshot in ("medium", "expert"):
            policy = load_policy(env, snapshot)
            for sigma in cmd.sigmas:
                ret = evaluate(env, policy, cmd.episodes, cmd.seed, sigma)
                score = normalized_score(env, ret)
                print(
                    f"| {env}-{snapshot} | {sigma} | {ret.mean():.0f} ± {ret.std():.0f} | "
                    f"{score.mean():.1f} ± {score.std():.1f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
