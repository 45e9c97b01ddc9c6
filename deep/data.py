"""Offline datasets: one in-memory container, device-resident batches, and the loaders.

An :class:`OfflineDataset` holds transitions ``(s, a, r, s', done)`` as numpy arrays. A
:class:`ReplaySampler` copies them once to the training device and samples batches there with
an explicit ``torch.Generator``, so the training loop never moves data from the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A batch of transitions, all tensors on one device.

    Shapes: ``observations`` (B, obs_dim) float32; ``actions`` (B, act_dim) float32 for
    continuous control or (B,) int64 for discrete actions; ``rewards`` (B,) float32;
    ``next_observations`` (B, obs_dim); ``terminals`` (B,) float32 in {0, 1} (1 means s' is
    terminal: no bootstrap; a time-limit truncation is *not* terminal).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor


@dataclass
class OfflineDataset:
    """Transitions of a dataset, as numpy arrays of equal length N.

    ``actions`` is (N, act_dim) float32 when ``discrete`` is False, else (N,) int64 with values
    in ``[0, n_actions)``. ``timeouts`` (N,) bool marks time-limit truncations where known.
    ``env_id`` names the gymnasium environment used to evaluate policies trained on it.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray | None = None
    discrete: bool = False
    n_actions: int | None = None
    env_id: str | None = None
    name: str = "dataset"

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        """Action dimension (continuous) or number of actions (discrete)."""
        if self.discrete:
            assert self.n_actions is not None
            return self.n_actions
        return int(self.actions.shape[1])


class ReplaySampler:
    """Uniform batches from an :class:`OfflineDataset`, sampled on ``device``.

    The arrays are copied to the device once; each :meth:`sample` draws indices with the given
    generator (on the same device), so sampling never synchronises with the host and its state
    can be checkpointed (``generator.get_state()``).
    """

    def __init__(
        self, dataset: OfflineDataset, device: torch.device | str, generator: torch.Generator
    ) -> None:
        self.device = torch.device(device)
        self.generator = generator
        act_dtype = torch.int64 if dataset.discrete else torch.float32
        self._obs = torch.as_tensor(dataset.observations, dtype=torch.float32, device=self.device)
        self._act = torch.as_tensor(dataset.actions, dtype=act_dtype, device=self.device)
        self._rew = torch.as_tensor(dataset.rewards, dtype=torch.float32, device=self.device)
        self._next = torch.as_tensor(
            dataset.next_observations, dtype=torch.float32, device=self.device
        )
        self._term = torch.as_tensor(dataset.terminals, dtype=torch.float32, device=self.device)
        self.size = len(dataset)

    def sample(self, batch_size: int) -> Batch:
        idx = torch.randint(
            self.size, (batch_size,), device=self.device, generator=self.generator
        )
        return Batch(self._obs[idx], self._act[idx], self._rew[idx], self._next[idx], self._term[idx])
