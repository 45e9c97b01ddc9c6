"""What every agent shares: the :class:`Agent` protocol the training loop relies on, and the
machinery behind it (seeded generators, checkpoint state, Adam, config checks).

Every agent has a config dataclass (one docstring per field, read by the command line),
``update(batch) -> dict[str, Tensor]`` (detached 0-d tensors, no host synchronisation:
no ``.item()``, no Python branch on a tensor value), ``act(obs, deterministic=True)``,
``state_dict()`` / ``load_state_dict()`` (plain tensors and Python scalars only, so
``torch.load(..., weights_only=True)`` reads a checkpoint) and a ``step`` counter.
Agents with a critic (``has_critic = True``) also have ``q_value(obs, act)``.

All randomness comes from ``torch.Generator`` objects owned by the agent: one for network
initialisation (CPU), one for the training draws (on the device), one for ``act``, so
evaluating a policy in the middle of training does not change the training stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from deep.batch import Batch

__all__ = [
    "Agent",
    "AgentBase",
    "Device",
    "Seed",
    "adam",
    "as_batch",
    "check_positive",
    "resolve_config",
]

Device = str | torch.device
Seed = int | torch.Generator


@runtime_checkable
class Agent(Protocol):
    """What the training loop relies on."""

    step: int
    has_critic: bool

    def update(self, batch: Batch) -> dict[str, Tensor]: ...

    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def _generators(seed: Seed, device: torch.device) -> tuple[torch.Generator, ...]:
    """Three independent generators: init (CPU), training draws and acting (on device)."""
    if isinstance(seed, torch.Generator):
        # Drawn once at construction: a host read here is outside the training loop.
        seeds = torch.randint(0, 2**62, (3,), generator=seed, device=seed.device).tolist()
    elif isinstance(seed, int | np.integer):
        seeds = [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(3, np.uint64)]
    else:
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    init = torch.Generator("cpu").manual_seed(seeds[0])
    train = torch.Generator(device).manual_seed(seeds[1])
    acting = torch.Generator(device).manual_seed(seeds[2])
    return init, train, acting


_C = TypeVar("_C")


def resolve_config(agent: str, config: Any, config_type: type[_C]) -> _C:
    """``config``, or ``config_type()`` when it is None; a config of another type is an
    error naming both."""
    cfg = config if config is not None else config_type()
    if not isinstance(cfg, config_type):
        raise TypeError(f"{agent} needs a {config_type.__name__}, got {type(cfg).__name__}")
    return cfg


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def adam(params: Iterable[Any], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all of a group's tensors; CPU and CUDA since
    torch 2.4), else the multi-tensor ``foreach`` implementation."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def as_batch(obs: Tensor, dim: int) -> tuple[Tensor, bool]:
    if obs.dim() == 1:
        obs = obs.unsqueeze(0)
        single = True
    else:
        single = False
    if obs.dim() != 2 or obs.shape[-1] != dim:
        raise ValueError(f"obs must be ({dim},) or (B, {dim}), got {tuple(obs.shape)}")
    return obs, single


class AgentBase:
    """state_dict / load_state_dict over named modules, optimizers and parameters."""

    has_critic = False
    step: int
    device: torch.device
    generator: torch.Generator
    act_generator: torch.Generator

    def _init_state(self, device: Device, seed: Seed) -> torch.Generator:
        """Device, the training and acting generators, step 0; returns the generator that
        initialises the networks."""
        self.device = torch.device(device)
        init_gen, self.generator, self.act_generator = _generators(seed, self.device)
        self.step = 0
        return init_gen

    def _modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _scalars(self) -> dict[str, Tensor]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Networks, target networks, optimizers, log-temperatures, step, generator states."""
        state: dict[str, Any] = {k: m.state_dict() for k, m in self._modules().items()}
        state.update({k: o.state_dict() for k, o in self._optimizers().items()})
        state.update({k: t.detach().clone() for k, t in self._scalars().items()})
        state["step"] = self.step
        state["generator"] = self.generator.get_state()
        state["act_generator"] = self.act_generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = (
            set(self._modules())
            | set(self._optimizers())
            | set(self._scalars())
            | {"step", "generator", "act_generator"}
        )
        missing, extra = expected - set(state), set(state) - expected
        if missing or extra:
            raise KeyError(
                f"{type(self).__name__} state_dict mismatch: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(extra)}"
            )
        for k, m in self._modules().items():
            m.load_state_dict(state[k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state[k])
        with torch.no_grad():
            for k, t in self._scalars().items():
                t.copy_(state[k])
        self.step = int(state["step"])
        # Generator states are CPU byte tensors, whatever map_location moved them to.
        self.generator.set_state(state["generator"].cpu())
        self.act_generator.set_state(state["act_generator"].cpu())
