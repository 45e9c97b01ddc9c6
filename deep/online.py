"""Offline-to-online fine-tuning: after its offline updates, a run goes on training while its
policy acts in the dataset's environment (``--online-steps``).

Each online step takes one environment step with the agent's stochastic policy
(``act(obs, deterministic=False)``), then one gradient step on a batch that mixes the dataset
with the transitions collected so far: ``--online-ratio`` of the batch comes from the online
transitions once there are any, the rest from the dataset (the symmetric sampling of Cal-QL,
Nakamoto et al. 2023, is a ratio of 0.5). A finished episode enters the online buffer whole,
with its discounted returns-to-go (:func:`deep.data.discounted_returns`, on the agent's scaled
rewards), which is what Cal-QL's calibration needs for online data, as the official code does.

Resume: the buffer and the unfinished episode (its actions, observations, rewards) are part of
the checkpoint. An episode is reset with a seed that is a function of the run's seed and the
episode's index (:func:`episode_seed`), so resuming resets the unfinished episode and replays
its saved actions; the environments of gymnasium's MuJoCo and classic-control suites are
deterministic given the seed and the actions, so the replay reaches the very state the run was
stopped in, and a resumed run ends with the same numbers as an uninterrupted one. A replay
that does not reproduce the saved observations is an error (:class:`ReplayError`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from deep import envs
from deep.algos.base import Agent
from deep.batch import Batch
from deep.data import discounted_returns

__all__ = ["Collector", "OnlineBuffer", "ReplayError", "episode_seed", "mixed_batch"]


class ReplayError(RuntimeError):
    """A resumed online phase could not rebuild the unfinished episode it was stopped in."""


def episode_seed(seed: int, episode: int) -> int:
    """Reset seed of online episode ``episode`` of a run seeded ``seed``: a hash of the pair,
    kept apart from the evaluation seeds (:func:`deep.evaluation.eval_seed`) by a third word."""
    words = np.random.SeedSequence([seed, episode, 1]).generate_state(1, np.uint32)
    return int(words[0] >> 1)


class OnlineBuffer:
    """The transitions collected online, on the training device, an episode at a time.

    Holds at most ``capacity`` transitions (a run's ``--online-steps``: nothing is evicted).
    With ``returns_to_go_gamma`` each transition also keeps its discounted return-to-go in the
    critic's reward units (``reward_scale * r + reward_bias``).
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        discrete: bool,
        device: torch.device,
        *,
        returns_to_go_gamma: float | None = None,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ) -> None:
        self.capacity, self.device = capacity, device
        self.gamma = returns_to_go_gamma
        self.reward_scale, self.reward_bias = reward_scale, reward_bias

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float32, device=device)

        self.obs, self.next_obs = zeros(capacity, obs_dim), zeros(capacity, obs_dim)
        self.act = (
            torch.zeros(capacity, dtype=torch.int64, device=device)
            if discrete
            else zeros(capacity, act_dim)
        )
        self.rew, self.term = zeros(capacity), zeros(capacity)
        self.rtg = zeros(capacity) if returns_to_go_gamma is not None else None
        self.size = 0

    def add(self, episode: Mapping[str, np.ndarray]) -> None:
        """Append one finished episode: arrays ``obs``, ``act``, ``rew``, ``next_obs`` and
        ``term`` of equal length (its transitions in order)."""
        n = len(episode["rew"])
        if self.size + n > self.capacity:
            raise ValueError(f"online buffer full: {self.size} + {n} > {self.capacity}")
        part = slice(self.size, self.size + n)
        for name in ("obs", "act", "rew", "next_obs", "term"):
            target: torch.Tensor = getattr(self, name)
            target[part] = torch.as_tensor(episode[name], dtype=target.dtype, device=self.device)
        if self.rtg is not None:
            assert self.gamma is not None
            scaled = self.reward_scale * np.asarray(episode["rew"], np.float64) + self.reward_bias
            returns = discounted_returns(scaled, self.gamma)
            self.rtg[part] = torch.as_tensor(returns, dtype=torch.float32, device=self.device)
        self.size += n

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` transitions drawn uniformly with replacement."""
        idx = torch.randint(self.size, (n,), device=self.device, generator=generator)
        return Batch(
            self.obs[idx],
            self.act[idx],
            self.rew[idx],
            self.next_obs[idx],
            self.term[idx],
            None if self.rtg is None else self.rtg[idx],
        )

    def state_dict(self) -> dict[str, Any]:
        names = ["obs", "act", "rew", "next_obs", "term"] + ([] if self.rtg is None else ["rtg"])
        state: dict[str, Any] = {k: getattr(self, k)[: self.size].cpu().clone() for k in names}
        state["size"] = self.size
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.size = int(state["size"])
        for name, value in state.items():
            if name != "size" and getattr(self, name, None) is not None:
                getattr(self, name)[: self.size] = value.to(self.device)


def mixed_batch(
    offline: Callable[[int], Batch],
    online: OnlineBuffer,
    batch_size: int,
    ratio: float,
    generator: torch.Generator,
) -> Batch:
    """A batch of ``batch_size``: ``round(ratio * batch_size)`` transitions from ``online`` (none
    while it is empty), the rest from ``offline`` (a sampler's ``sample``)."""
    n_online = round(ratio * batch_size) if online.size else 0
    if n_online == 0:
        return offline(batch_size)
    fresh = online.sample(n_online, generator)
    if n_online == batch_size:
        return fresh
    old = offline(batch_size - n_online)
    both = (
        None
        if old.returns_to_go is None or fresh.returns_to_go is None
        else torch.cat([old.returns_to_go, fresh.returns_to_go])
    )
    cat = [torch.cat([a, b]) for a, b in zip(old[:5], fresh[:5], strict=True)]
    return Batch(cat[0], cat[1], cat[2], cat[3], cat[4], both)


class Collector:
    """One environment stepped by an agent's stochastic policy, episode by episode.

    :meth:`step` takes one environment step and returns the finished episode's arrays (for
    :meth:`OnlineBuffer.add`) and its undiscounted return when that step ended it, else None.
    Observations are stored as the agent sees them (``normalizer`` applied).
    """

    def __init__(
        self,
        env_id: str,
        seed: int,
        agent: Agent,
        normalizer: Callable[[np.ndarray], np.ndarray] | None,
        device: torch.device,
    ) -> None:
        self.env_id, self.seed, self.agent = env_id, seed, agent
        self.normalizer, self.device = normalizer, device
        self.env = envs.make_env(env_id)
        space = self.env.action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        self.low: np.ndarray | None = getattr(space, "low", None)
        self.high: np.ndarray | None = getattr(space, "high", None)
        self.episode = 0
        self._reset()

    def _see(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        return self.normalizer(x) if self.normalizer is not None else x

    def _reset(self) -> None:
        obs, _ = self.env.reset(seed=episode_seed(self.seed, self.episode))
        self.obs = self._see(obs)
        self.pending: dict[str, list[Any]] = {k: [] for k in ("act", "rew", "next_obs", "term")}
        self.first_obs = self.obs

    def _take(self, action: np.ndarray) -> tuple[bool, bool]:
        """Step the environment with ``action`` and record the transition in the episode."""
        env_action = int(action) if self.discrete else np.clip(action, self.low, self.high)
        obs, reward, terminated, truncated, _ = self.env.step(env_action)
        self.obs = self._see(obs)
        for key, value in zip(
            ("act", "rew", "next_obs", "term"),
            (action, float(reward), self.obs, bool(terminated)),
            strict=True,
        ):
            self.pending[key].append(value)
        return bool(terminated), bool(truncated)

    def step(self) -> tuple[dict[str, np.ndarray], float] | None:
        with torch.no_grad():
            x = torch.as_tensor(self.obs, dtype=torch.float32, device=self.device)
            action = self.agent.act(x, deterministic=False).cpu().numpy()
        if self.discrete:
            action = action.astype(np.int64)
        terminated, truncated = self._take(action)
        if not (terminated or truncated):
            return None
        episode = self._episode()
        self.episode += 1
        self._reset()
        return episode, float(episode["rew"].sum())

    def _episode(self) -> dict[str, np.ndarray]:
        next_obs = np.asarray(self.pending["next_obs"], dtype=np.float32)
        return {
            "obs": np.concatenate([self.first_obs[None], next_obs[:-1]]),
            "act": np.asarray(self.pending["act"]),
            "rew": np.asarray(self.pending["rew"], dtype=np.float64),
            "next_obs": next_obs,
            "term": np.asarray(self.pending["term"], dtype=np.float32),
        }

    def state_dict(self) -> dict[str, Any]:
        """The episode index and the unfinished episode's actions and what they led to."""
        state: dict[str, Any] = {"episode": self.episode, "steps": len(self.pending["rew"])}
        if self.pending["rew"]:
            part = self._episode()
            state.update({k: torch.as_tensor(part[k]) for k in ("act", "rew", "next_obs")})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Reset the saved episode and replay its actions, checking every observation."""
        self.episode = int(state["episode"])
        self._reset()
        for t in range(int(state["steps"])):
            terminated, truncated = self._take(state["act"][t].numpy())
            reward = self.pending["rew"][-1]
            saved = state["next_obs"][t].numpy()
            if not np.array_equal(self.obs, saved) or reward != float(state["rew"][t]):
                raise ReplayError(
                    f"cannot resume the online phase: {self.env_id}, reset with the saved seed "
                    f"and given the saved actions, reached another state at step {t} of episode "
                    f"{self.episode} (the environment is not deterministic, or another version "
                    "of it is installed); the run can only be restarted in a new folder"
                )
            if terminated or truncated:  # the episode ended at the stop: not a stop mid-episode
                raise ReplayError(f"saved online episode {self.episode} ended before its end")

    def close(self) -> None:
        self.env.close()
