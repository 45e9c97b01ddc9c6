"""Behaviour cloning, the supervised baseline: continuous (MSE of a tanh policy, or the
likelihood of a tanh-Gaussian) and discrete (cross-entropy). Metric key: ``loss/policy``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deep.algos.base import AgentBase, Device, Seed, as_batch, check_positive, resolve_config
from deep.batch import Batch
from deep.losses import bc_mse_loss, bc_nll_loss
from deep.nets import MLP, TanhGaussianActor

__all__ = ["BC", "BCConfig", "DiscreteBC", "DiscreteBCConfig"]


@dataclass
class BCConfig:
    """Behaviour cloning on continuous actions."""

    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the policy MLP."""
    lr: float = 3e-4
    """Adam learning rate."""
    loss: Literal["mse", "nll"] = "mse"
    """"mse": deterministic policy tanh(f(s)) regressed on the dataset actions (CORL's BC);
    "nll": tanh-Gaussian policy fitted by maximum likelihood."""
    log_std_min: float = -20.0
    """Lower clamp of the log standard deviation (loss="nll")."""
    log_std_max: float = 2.0
    """Upper clamp of the log standard deviation (loss="nll")."""


@dataclass
class DiscreteBCConfig:
    """Behaviour cloning on discrete actions (cross-entropy)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the policy MLP (one logit per action)."""
    lr: float = 3e-4
    """Adam learning rate."""


class _Cloner(AgentBase):
    """A policy network and its Adam optimizer, trained on a supervised loss."""

    policy: nn.Module
    optim: torch.optim.Optimizer

    def _fit(self, loss: Tensor) -> dict[str, Tensor]:
        """One optimizer step on ``loss``; the metrics of :meth:`update`."""
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.step += 1
        return {"loss/policy": loss.detach()}

    def _modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy_optim": self.optim}


class BC(_Cloner):
    """Behaviour cloning on continuous actions: a deterministic tanh policy regressed on the
    dataset actions (``loss="mse"``) or a tanh-Gaussian fitted by likelihood (``"nll"``)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: BCConfig | None = None,
        device: Device = "cpu",
        seed: Seed = 0,
    ) -> None:
        cfg = resolve_config("BC", config, BCConfig)
        check_positive("lr", cfg.lr)
        if cfg.loss not in ("mse", "nll"):
            raise ValueError(f"BC loss must be 'mse' or 'nll', got {cfg.loss!r}")
        self.config = cfg
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        init_gen = self._init_state(device, seed)
        if cfg.loss == "mse":
            self.policy = MLP(obs_dim, act_dim, cfg.hidden, generator=init_gen)
        else:
            self.policy = TanhGaussianActor(
                obs_dim, act_dim, cfg.hidden, cfg.log_std_min, cfg.log_std_max, generator=init_gen
            )
        self.policy.to(self.device)
        self.optim = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step of the BC loss (:func:`~deep.losses.bc_mse_loss` or
        :func:`~deep.losses.bc_nll_loss`)."""
        obs, act = batch.observations, batch.actions
        if act.dim() != 2 or act.shape[-1] != self.act_dim:
            raise ValueError(f"batch actions must be (B, {self.act_dim}), got {tuple(act.shape)}")
        if isinstance(self.policy, TanhGaussianActor):
            loss = bc_nll_loss(self.policy.log_prob(obs, act))
        else:
            loss = bc_mse_loss(torch.tanh(self.policy(obs)), act)
        return self._fit(loss)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """tanh(f(s)) (the mean action for "nll"); stochastic only for "nll"."""
        obs, single = as_batch(obs, self.obs_dim)
        if isinstance(self.policy, TanhGaussianActor):
            if deterministic:
                action = self.policy.deterministic(obs)
            else:
                action, _ = self.policy.rsample(obs, self.act_generator)
        else:
            action = torch.tanh(self.policy(obs))
        return action[0] if single else action


class DiscreteBC(_Cloner):
    """Behaviour cloning on discrete actions: softmax policy, cross-entropy on a_D."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        config: DiscreteBCConfig | None = None,
        device: Device = "cpu",
        seed: Seed = 0,
    ) -> None:
        cfg = resolve_config("DiscreteBC", config, DiscreteBCConfig)
        check_positive("lr", cfg.lr)
        self.config = cfg
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        init_gen = self._init_state(device, seed)
        self.policy = MLP(obs_dim, n_actions, cfg.hidden, generator=init_gen).to(self.device)
        self.optim = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step of −E_D log π(a|s)."""
        obs, act = batch.observations, batch.actions
        if act.dim() != 1 or act.dtype != torch.int64:
            raise ValueError(
                f"discrete batch actions must be (B,) int64, got {tuple(act.shape)} {act.dtype}"
            )
        return self._fit(F.cross_entropy(self.policy(obs), act))

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Most likely action, or a sample of π(·|s); int64, () or (B,)."""
        obs, single = as_batch(obs, self.obs_dim)
        logits = self.policy(obs)
        if deterministic:
            action = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1)
            action = torch.multinomial(probs, 1, generator=self.act_generator).squeeze(-1)
        return action[0] if single else action
