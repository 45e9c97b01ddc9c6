"""The minibatch every agent's ``update`` takes, in a module of its own so that the
algorithms (:mod:`deep.algos`) import it without the data package's loaders and environments."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Batch"]


class Batch(NamedTuple):
    """A batch of transitions, all tensors on one device.

    Shapes: ``observations`` (B, obs_dim) float32; ``actions`` (B, act_dim) float32 for
    continuous control or (B,) int64 for discrete actions; ``rewards`` (B,) float32;
    ``next_observations`` (B, obs_dim); ``terminals`` (B,) float32 in {0, 1} (1 means s' is
    terminal: no bootstrap; a time-limit truncation is *not* terminal). ``returns_to_go`` (B,)
    float32, the discounted Monte-Carlo return from each transition to the end of its
    trajectory (:func:`returns_to_go`), or None when the sampler was not asked for it.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    returns_to_go: torch.Tensor | None = None
