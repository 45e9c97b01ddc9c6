"""Evaluating an agent in its environment: returns, normalised score, and the
conservative-value diagnostic (the critic's Q at the start states next to the Monte-Carlo
return the policy obtains from them). Used by training and by re-evaluation alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from deep import envs
from deep.algos.base import Agent

__all__ = ["check_environment", "critic_units_return", "eval_seed", "evaluate_agent"]


def check_environment(env: str, obs_dim: int, act_dim: int, discrete: bool, dataset: str) -> str:
    """The gymnasium id ``env`` resolves to, once it is known that a policy trained on
    ``dataset`` (observations of size ``obs_dim``; ``act_dim`` actions in [-1, 1], or
    ``act_dim`` discrete ones) can act in it; else an error naming both sides and the fix.

    Cheap (one ``gym.make``), so it runs before any training or evaluation.
    """
    try:
        env_id = envs.resolve_env_id(env)
        made = envs.make_env(env_id)
    except gym.error.DependencyNotInstalled as e:
        raise ImportError(
            f"environment {env!r} needs a package that is not installed ({e}); for MuJoCo "
            "tasks: pip install -e . (the main install includes gymnasium[mujoco])"
        ) from None
    except gym.error.Error as e:
        raise ValueError(f"environment {env!r} cannot be made: {e}") from None
    try:
        obs_space, act_space = made.observation_space, made.action_space
    finally:
        made.close()
    fix = "pass --env-id with the environment the data came from"
    if not isinstance(obs_space, gym.spaces.Box) or obs_space.shape != (obs_dim,):
        raise ValueError(
            f"dataset {dataset!r} has observations of size {obs_dim}, environment {env_id} "
            f"observes {obs_space}; {fix}"
        )
    if discrete:
        if not isinstance(act_space, gym.spaces.Discrete) or int(act_space.n) != act_dim:
            raise ValueError(
                f"dataset {dataset!r} has {act_dim} discrete actions, environment {env_id} "
                f"acts in {act_space}; {fix}"
            )
    elif not isinstance(act_space, gym.spaces.Box) or act_space.shape != (act_dim,):
        raise ValueError(
            f"dataset {dataset!r} has {act_dim}-dimensional actions, environment {env_id} "
            f"acts in {act_space}; {fix}"
        )
    return env_id


def eval_seed(seed: int, step: int) -> int:
    """Seed of the first evaluation episode at ``step``: a hash of ``(seed, step)``.

    Episode ``i`` then uses ``eval_seed + i`` (``deep.envs.evaluate``). Being a function of the
    step alone, the episodes do not change when a run is resumed. ``SeedSequence`` mixes the
    pair, so neighbouring steps or seeds do not share episodes; 31 bits keep gymnasium happy.
    """
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint32)[0] >> 1)


def critic_units_return(
    discounted: np.ndarray,
    lengths: np.ndarray,
    gamma: float,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
) -> np.ndarray:
    """Discounted returns in the units the critic learns, ``r' = reward_scale · r + reward_bias``.

    ``G' = Σ_{t<T} γ^t (c r_t + b) = c G + b (1 − γ^T) / (1 − γ)`` (the last factor is T when
    γ = 1). Shapes: ``discounted`` G (n,), ``lengths`` T (n,) -> (n,).
    """
    g = np.asarray(discounted, dtype=np.float64)
    t = np.asarray(lengths, dtype=np.float64)
    horizon = t if gamma == 1.0 else (1.0 - gamma**t) / (1.0 - gamma)
    out: np.ndarray = reward_scale * g + reward_bias * horizon
    return out


def evaluate_agent(
    agent: Agent,
    *,
    env: str,
    dataset_name: str,
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None,
    episodes: int,
    seed: int,
    gamma: float,
    device: torch.device,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
) -> dict[str, float]:
    """Run ``episodes`` deterministic-policy episodes and the conservative-value diagnostic.

    Returns ``eval/return_mean``, ``eval/return_std``, ``eval/length_mean`` (undiscounted
    environment returns), ``eval/normalized_score`` (NaN when the dataset has no reference
    scores) and the diagnostic: ``eval/q_estimate``, the mean over the episodes' start states
    s₀ of ``Q(s₀, π(s₀))`` (the critic at the policy's own action, on normalised observations
    when normalisation is on; NaN for agents without a critic), next to ``eval/mc_return``,
    the mean discounted return ``Σ_t γ^t r'_t`` actually obtained from those s₀, with the
    training γ and in the critic's reward units (:func:`critic_units_return`). A conservative
    critic has ``q_estimate`` below ``mc_return``.

    Caveat: at a time limit the critic bootstraps (a truncation is not terminal), so Q(s₀)
    estimates the value beyond the limit too, while the Monte-Carlo sum stops there; the
    missing tail is at most ``γ^T max|r'| / (1 − γ)`` (for Pendulum, T = 200 and γ = 0.99:
    ``0.134 · max|r'| / 0.01``).
    """

    def prepare(obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(obs, dtype=torch.float32, device=device)
        return normalizer(x) if normalizer is not None else x

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.act(prepare(obs), deterministic=True).cpu().numpy()

    result = envs.evaluate(policy, env, n_episodes=episodes, seed=seed, gamma=gamma)
    q_estimate = math.nan
    q_value = getattr(agent, "q_value", None) if agent.has_critic else None
    if q_value is not None:
        with torch.no_grad():
            s0 = prepare(result.start_observations)
            q_estimate = float(q_value(s0, agent.act(s0, deterministic=True)).mean())
    try:
        score = float(np.mean(envs.normalized_score(dataset_name, result.returns)))
    except ValueError:
        try:
            score = float(np.mean(envs.normalized_score(env, result.returns)))
        except ValueError:
            score = math.nan
    return {
        "eval/return_mean": float(result.returns.mean()),
        "eval/return_std": float(result.returns.std()),
        "eval/length_mean": float(result.lengths.mean()),
        "eval/normalized_score": score,
        "eval/q_estimate": q_estimate,
        "eval/mc_return": float(
            critic_units_return(
                result.discounted_returns, result.lengths, gamma, reward_scale, reward_bias
            ).mean()
        ),
    }
