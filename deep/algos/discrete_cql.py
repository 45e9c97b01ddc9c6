"""Discrete-action CQL(H) (Kumar et al. 2020, Eq. 4): Double DQN plus the exact log-sum-exp
regulariser over the network's full output row, w·(T log Σ_a exp(Q(s,a)/T) − Q(s, a_D)).

Metric keys: ``loss/q<i>`` (TD error of each Q-network), ``loss/cql`` (the penalty),
``misc/cql_gap``, ``misc/cql_push_down``, ``misc/q_data``, ``misc/q_target``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deep.algos.base import AgentBase, Device, Seed, as_batch, check_positive, resolve_config
from deep.batch import Batch
from deep.losses import cql_regularizer, double_dqn_target, td_loss
from deep.nets import EnsembleDiscreteQ, polyak_update

__all__ = ["DiscreteCQL", "DiscreteCQLConfig"]


@dataclass
class DiscreteCQLConfig:
    """Discrete-action CQL(H): Double DQN with the exact log-sum-exp regulariser."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the Q-network (one output per action)."""
    n_critics: int = 1
    """Number of Q-networks; Double DQN uses one. With more, a* maximises their mean and the
    target takes their minimum at a*."""
    gamma: float = 0.99
    """Discount factor γ."""
    lr: float = 3e-4
    """Adam learning rate."""
    cql_weight: float = 1.0
    """Weight w of the gap in ``MSE_TD + w·gap`` (0 gives plain Double DQN)."""
    cql_temperature: float = 1.0
    """Temperature T of T log Σ_a exp(Q(s,a)/T)."""
    target_tau: float = 1.0
    """Rate of the target update θ̄ ← (1 − τ) θ̄ + τ θ; 1.0 is a hard copy."""
    target_update_period: int = 1000
    """Updates between target updates (1 with a small target_tau gives Polyak averaging)."""
    reward_scale: float = 1.0
    """Rewards enter the TD target as reward_scale · r + reward_bias."""
    reward_bias: float = 0.0
    """See reward_scale."""


class DiscreteCQL(AgentBase):
    """CQL(H) on discrete actions: Double DQN plus w·(T log Σ_a exp(Q(s,a)/T) − Q(s, a_D)),
    the exact log-sum-exp of Eq. 4 over the network's full output row."""

    has_critic = True

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        config: DiscreteCQLConfig | None = None,
        device: Device = "cpu",
        seed: Seed = 0,
    ) -> None:
        cfg = resolve_config("DiscreteCQL", config, DiscreteCQLConfig)
        for name in ("lr", "cql_temperature", "target_tau"):
            check_positive(name, getattr(cfg, name))
        if not 0 <= cfg.gamma < 1 or cfg.target_tau > 1 or cfg.target_update_period < 1:
            raise ValueError(
                "need gamma in [0, 1), target_tau in (0, 1], target_update_period >= 1; got "
                f"{cfg.gamma}, {cfg.target_tau}, {cfg.target_update_period}"
            )
        if cfg.cql_weight < 0:
            raise ValueError(f"cql_weight must be >= 0, got {cfg.cql_weight}")
        self.config = cfg
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        init_gen = self._init_state(device, seed)
        self.critic = EnsembleDiscreteQ(
            obs_dim, n_actions, cfg.n_critics, cfg.hidden, generator=init_gen
        ).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step of w·gap + MSE_TD on every critic; target update by schedule."""
        cfg = self.config
        obs, act, reward, next_obs, done = batch[:5]
        if act.dim() != 1 or act.dtype != torch.int64:
            raise ValueError(
                f"discrete batch actions must be (B,) int64, got {tuple(act.shape)} {act.dtype}"
            )
        reward = cfg.reward_scale * reward + cfg.reward_bias
        q_all = self.critic(obs)  # (E, B, A)
        index = act.view(1, -1, 1).expand(q_all.shape[0], -1, 1)
        q_data = q_all.gather(-1, index).squeeze(-1)  # (E, B)
        with torch.no_grad():
            y = double_dqn_target(
                reward, done, self.critic(next_obs), self.target_critic(next_obs), cfg.gamma
            )
        td = td_loss(q_data, y)
        reg = cql_regularizer(q_data, q_all, estimator="exact", temperature=cfg.cql_temperature)
        penalty = cfg.cql_weight * reg.gap.sum()
        loss = td.sum() + penalty
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.step += 1
        if self.step % cfg.target_update_period == 0:
            polyak_update(self.target_critic, self.critic, cfg.target_tau)

        metrics = {f"loss/q{i + 1}": td[i].detach() for i in range(td.shape[0])}
        metrics["loss/cql"] = penalty.detach()
        metrics["misc/cql_gap"] = reg.gap.detach().mean()
        metrics["misc/cql_push_down"] = reg.push_down.detach().mean()
        metrics["misc/q_data"] = q_data.detach().mean()
        metrics["misc/q_target"] = y.mean()
        return metrics

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """argmax_a of the critics' mean Q (deterministic), else a sample of the Boltzmann
        policy softmax(Q/T) (the maximiser μ of CQL(H)); int64, () or (B,)."""
        obs, single = as_batch(obs, self.obs_dim)
        q = self.critic(obs).mean(dim=0)  # (B, A)
        if deterministic:
            action = q.argmax(dim=-1)
        else:
            probs = torch.softmax(q / self.config.cql_temperature, dim=-1)
            action = torch.multinomial(probs, 1, generator=self.act_generator).squeeze(-1)
        return action[0] if single else action

    @torch.no_grad()
    def q_value(self, obs: Tensor, act: Tensor) -> Tensor:
        """min_i Q_i(s, a) for int64 actions (B,) -> (B,)."""
        obs, _ = as_batch(obs, self.obs_dim)
        q = self.critic(obs)
        index = act.view(1, -1, 1).expand(q.shape[0], -1, 1)
        out: Tensor = q.gather(-1, index).squeeze(-1).min(dim=0).values
        return out

    def _modules(self) -> dict[str, nn.Module]:
        return {"critic": self.critic, "target_critic": self.target_critic}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_optim": self.optim}
