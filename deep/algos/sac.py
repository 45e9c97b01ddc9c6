"""Naive offline SAC (Haarnoja et al. 2018) on a fixed dataset: the baseline CQL improves on.

Twin critics in one :class:`~deep.nets.EnsembleQ`, Polyak target critics, a tanh-Gaussian
actor and automatic entropy tuning. One update (:meth:`OfflineSAC.update`):

1. :meth:`~OfflineSAC._draw`: the update's random numbers, from the agent's generator;
2. :meth:`~OfflineSAC._losses`: a pure function of the batch, the draws and the parameters:
   the actor's Gaussian at s and s', the TD target, :meth:`~OfflineSAC._critic_loss` (here
   the TD error alone), the actor loss and the temperature loss, summed;
3. one backward pass and one step of every optimizer, then the Polyak update.

An algorithm with another critic objective (CQL) subclasses it and overrides
:meth:`~OfflineSAC._draw` and :meth:`~OfflineSAC._critic_loss`.

Metric keys (as many ``loss/q<i>`` as critics):

=====================  ==================================================================
``loss/q1``, ``q2``    mean squared TD error of each critic
``loss/policy``        actor loss (BC loss during the warm-start)
``loss/entropy``       entropy-temperature loss (when the temperature is learned)
``misc/entropy_alpha`` SAC temperature α
``misc/q_data``        mean Q(s, a) at dataset actions, mean over critics
``misc/q_policy``      mean min_i Q_i(s, ã), ã ~ π(·|s)
``misc/q_target``      mean TD target
``misc/policy_entropy`` −E log π(ã|s) of the tanh-Gaussian actor
=====================  ==================================================================
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from deep.algos.base import (
    AgentBase,
    Device,
    Seed,
    adam,
    as_batch,
    check_positive,
    resolve_config,
)
from deep.batch import Batch
from deep.losses import (
    actor_loss,
    bc_nll_loss,
    entropy_temperature_loss,
    max_q_backup,
    td_loss,
    td_target,
)
from deep.nets import (
    EnsembleQ,
    TanhGaussianActor,
    polyak_update,
    tanh_gaussian_from_noise,
    tanh_gaussian_log_prob,
)

__all__ = ["CriticLoss", "OfflineSAC", "PolicyAt", "SACConfig", "SACDraws"]


@dataclass
class SACConfig:
    """Naive offline SAC: soft actor-critic trained on a fixed dataset, no conservative term."""

    actor_hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the actor MLP (3×256 on gym-mujoco)."""
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of every critic; all critics share them (one batched ensemble)."""
    n_critics: int = 2
    """Number of critics; targets and the actor use the minimum over them (clipped double Q)."""
    gamma: float = 0.99
    """Discount factor γ."""
    target_tau: float = 5e-3
    """Polyak rate of the target critics, θ̄ ← (1 − τ) θ̄ + τ θ after every update."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (official CQL code 1e-4; CORL 3e-5)."""
    entropy_lr: float = 1e-4
    """Adam learning rate of log α, the entropy temperature (official code: the actor's)."""
    auto_entropy: bool = True
    """Learn the entropy temperature α towards ``target_entropy`` (else α stays fixed)."""
    init_entropy_alpha: float = 1.0
    """Initial (or, without auto_entropy, fixed) entropy temperature α."""
    target_entropy: float | None = None
    """Target entropy H̄ of the automatic tuning; None means −|A| (−act_dim)."""
    backup_entropy: bool = False
    """Include −α log π(a'|s') in the TD target (soft backup). CQL's default leaves it out."""
    backup_action: Literal["sample", "mean"] = "sample"
    """The action a' at which the TD target reads Q̄(s', a'): "sample", one a' ~ π(·|s') (the
    official CQL code, CORL); "mean", the policy's mean action tanh(μ(s')) (d3rlpy's CQL
    without soft backup). "mean" takes no entropy term and no max-Q backup.

    Measured with CQL (``python -m deep.parity --backup-action {mean,sample} --peer none``):
    on pendulum-medium at the demo's settings, seeds 200-203, 200 final episodes, "mean"
    scored 65.9 ± 7.8 vs 62.5 ± 7.4, ahead on all 4 paired seeds (paired difference +3.4,
    95% bootstrap CI [1.9, 4.9]), and its Q(s₀) − MC was −3.9 vs −7.3. With the ``cql-fast``
    settings on hopper-medium-replay, hopper-medium and halfcheetah-medium (10k updates,
    seeds 3-5, docs/results.md, "Fresh seeds, paired"), "mean" was at least as good as
    "sample" on every dataset and its critic 40-130 closer to the Monte-Carlo return, so the
    ``cql-fast`` preset uses it. The default here stays "sample": it is what the official
    code, CORL and D4RL's CQL numbers use."""
    max_q_backup: bool = False
    """Back up the max of the target Q over ``backup_n_actions`` policy samples at s'."""
    backup_n_actions: int = 10
    """Policy samples at s' for the max-Q backup."""
    max_q_backup_order: Literal["max-of-min", "min-of-max"] = "max-of-min"
    """How the max-backup combines critics: max_j min_i (CORL) or min_i max_j (official)."""
    bc_steps: int = 0
    """Updates at the start during which the actor is trained by behaviour cloning
    (NLL of the dataset actions plus the entropy term); the official script uses 40 000."""
    reward_scale: float = 1.0
    """Rewards enter the TD target as reward_scale · r + reward_bias."""
    reward_bias: float = 0.0
    """See reward_scale."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation."""
    precision: Literal["fp32", "bf16", "bf16-td32"] = "fp32"
    """"bf16": the networks' forward passes run under bfloat16 autocast (matmuls in bf16,
    weights, optimizer state, Q values and every loss reduction stay float32). Worth it on a
    CPU with AMX / AVX512-BF16 or an Ampere+ GPU; "fp32" everywhere else. "bf16-td32": as
    "bf16", but the two critic evaluations of the TD error, Q(s, a_D) and the target
    Q̄(s', a'), run in float32: their difference is a few units on values of hundreds, and the
    bf16 rounding of the critics' hidden layers moves the TD gradient by ~14 %
    (docs/results/bf16-gradients.json)."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass(frozen=True)
class SACDraws:
    """The random numbers of one SAC update, all N(0, I)."""

    noise: Tensor
    """(B, 1, d): the actor's sample ã ~ π(·|s) that trains the actor."""
    next_noise: Tensor
    """(B, n_b, d): the samples a' ~ π(·|s') of the backup (n_b = backup_n_actions with the
    max-Q backup, else 1)."""


@dataclass(frozen=True)
class PolicyAt:
    """The actor's pre-tanh Gaussian at s (with gradient) and at s' (without), (B, d) each."""

    mean: Tensor
    log_std: Tensor
    next_mean: Tensor
    next_log_std: Tensor


@dataclass(frozen=True)
class CriticLoss:
    """What a critic objective returns to the update."""

    total: Tensor
    """0-d loss of the critic parameters (TD term plus any regulariser)."""
    td: Tensor
    """(E,): mean squared TD error of each critic (reported as ``loss/q<i>``)."""
    extra: Tensor | None = None
    """0-d loss of other parameters the objective owns (e.g. a Lagrange multiplier)."""


class OfflineSAC(AgentBase):
    """Naive offline actor-critic: SAC trained on a fixed dataset (Haarnoja et al. 2018)."""

    has_critic = True
    config: SACConfig
    _config_type: type[SACConfig] = SACConfig

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: SACConfig | None = None,
        device: Device = "cpu",
        seed: Seed = 0,
    ) -> None:
        cfg = resolve_config(type(self).__name__, config, self._config_type)
        self._validate(cfg)
        self.config = cfg
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        init_gen = self._init_state(device, seed)
        self.actor = TanhGaussianActor(
            obs_dim,
            act_dim,
            cfg.actor_hidden,
            cfg.log_std_min,
            cfg.log_std_max,
            generator=init_gen,
        ).to(self.device)
        self.critic = EnsembleQ(
            obs_dim, act_dim, cfg.n_critics, cfg.critic_hidden, generator=init_gen
        ).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(
            math.log(cfg.init_entropy_alpha), device=self.device, requires_grad=cfg.auto_entropy
        )
        self.target_entropy = (
            float(cfg.target_entropy) if cfg.target_entropy is not None else -float(act_dim)
        )
        self.actor_optim = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_optim = adam(self.critic.parameters(), cfg.critic_lr)
        self.entropy_optim = adam([self.log_alpha], cfg.entropy_lr) if cfg.auto_entropy else None
        self._loss_fn = self._losses
        if cfg.precision != "fp32" and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(
                f"precision={cfg.precision!r} on a CPU without native bfloat16 matmuls (torch "
                f"sees {torch.backends.cpu.get_cpu_capability()}): they are emulated, and the "
                "update runs many times slower than in fp32 (17x measured on an AVX2 CPU); "
                "use precision='fp32' here",
                stacklevel=2,
            )

    def _validate(self, cfg: SACConfig) -> None:
        for name in ("critic_lr", "actor_lr", "entropy_lr", "init_entropy_alpha", "target_tau"):
            check_positive(name, getattr(cfg, name))
        if not 0 <= cfg.gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {cfg.gamma}")
        if cfg.target_tau > 1:
            raise ValueError(f"target_tau must be in (0, 1], got {cfg.target_tau}")
        if cfg.precision not in ("fp32", "bf16", "bf16-td32"):
            raise ValueError(
                f"precision must be 'fp32', 'bf16' or 'bf16-td32', got {cfg.precision!r}"
            )
        if cfg.backup_action not in ("sample", "mean"):
            raise ValueError(f"backup_action must be 'sample' or 'mean', got {cfg.backup_action!r}")
        if cfg.backup_action == "mean" and (cfg.backup_entropy or cfg.max_q_backup):
            raise ValueError(
                "backup_action='mean' backs up one deterministic action: it has no log π for "
                "backup_entropy and no samples for max_q_backup; turn those off or use 'sample'"
            )
        if cfg.n_critics < 1 or cfg.backup_n_actions < 1 or cfg.bc_steps < 0:
            raise ValueError(
                "n_critics and backup_n_actions must be >= 1 and bc_steps >= 0, got "
                f"{cfg.n_critics}, {cfg.backup_n_actions}, {cfg.bc_steps}"
            )

    @property
    def n_backup(self) -> int:
        """Policy samples at s' the TD target uses: backup_n_actions with the max-Q backup."""
        return self.config.backup_n_actions if self.config.max_q_backup else 1

    def entropy_alpha(self) -> Tensor:
        """Current SAC temperature α (0-d, detached)."""
        return self.log_alpha.detach().exp()

    # --- training ------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step on the critics, the actor and the temperature (and whatever
        else a subclass's critic objective owns).

        All losses are built from the same pre-update parameters and minimised with one
        backward pass: each loss reaches only its own parameters (the actor's Q is computed
        with detached critic weights, targets under no_grad, log π detached in the
        temperature loss), so this equals stepping the optimizers one after another on
        losses computed before any step, as the official code and CORL do.
        """
        cfg = self.config
        obs, act = batch.observations, batch.actions
        if act.dim() != 2 or act.shape[-1] != self.act_dim:
            raise ValueError(f"batch actions must be (B, {self.act_dim}), got {tuple(act.shape)}")
        draws = self._draw(obs.shape[0], obs.dtype)
        total, metrics = self._loss_fn(batch, draws, self.step < cfg.bc_steps)
        optimizers = list(self._optimizers().values())
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in optimizers:
            opt.step()
        polyak_update(self.target_critic, self.critic, cfg.target_tau)
        self.step += 1
        return metrics

    def compile(self, **options: Any) -> None:
        """Run the loss computation (forward passes and their backward) through
        ``torch.compile(**options)``; the optimizer steps stay eager (fused Adam already is
        one kernel per parameter group). Numerically the same update up to float rounding.
        On a GPU ``mode="max-autotune-no-cudagraphs"`` or ``"reduce-overhead"`` are worth
        trying; the first updates pay the compilation."""
        self._loss_fn = torch.compile(self._losses, **options)

    def _draw(self, b: int, dtype: torch.dtype) -> SACDraws:
        """N(0, I) noise for the actor's sample at s, then for the backup's samples at s'."""
        d, device, g = self.act_dim, self.device, self.generator
        noise = torch.randn((b, 1, d), generator=g, device=device, dtype=dtype)
        next_noise = torch.randn((b, self.n_backup, d), generator=g, device=device, dtype=dtype)
        return SACDraws(noise, next_noise)

    def _td_target(self, batch: Batch, policy: PolicyAt, draws: SACDraws) -> Tensor:
        """y = r' + γ (1 − done) [Q̄(s', a') − α log π(a'|s')·backup_entropy], (B,), no grad.

        Q̄ is the minimum over the target critics at one a' ~ π(·|s') (at tanh(μ(s')) with
        ``backup_action="mean"``), or with the max-Q backup the maximum over n_b samples
        (:func:`~deep.losses.max_q_backup`). The backup noise is drawn either way, so both
        backups see the same random numbers everywhere else."""
        cfg = self.config
        reward = cfg.reward_scale * batch.rewards + cfg.reward_bias
        with torch.no_grad():
            noise = draws.next_noise
            if cfg.backup_action == "mean":
                noise = torch.zeros_like(noise)
            next_act, next_logp = tanh_gaussian_from_noise(
                policy.next_mean, policy.next_log_std, noise
            )  # (B, n_b, d), (B, n_b)
            target_q = self.target_critic(batch.next_observations, next_act)  # (E, B, n_b)
            if cfg.max_q_backup:
                next_v, index = max_q_backup(target_q, cfg.max_q_backup_order)
                next_logp = next_logp.gather(1, index.unsqueeze(1)).squeeze(1)
            else:
                next_v, next_logp = target_q[..., 0].min(dim=0).values, next_logp[:, 0]
            return td_target(
                reward,
                batch.terminals,
                next_v,
                cfg.gamma,
                next_logp if cfg.backup_entropy else None,
                self.entropy_alpha(),
            )

    def _critic_loss(
        self,
        batch: Batch,
        q_data: Tensor,
        y: Tensor,
        policy: PolicyAt,
        draws: SACDraws,
        metrics: dict[str, Tensor],
    ) -> CriticLoss:
        """SAC's critic objective: Σ_i E_D[(Q_i(s, a) − y)²]. ``q_data`` (E, B), ``y`` (B,)."""
        td = td_loss(q_data, y)  # (E,)
        return CriticLoss(td.sum(), td)

    def _losses(
        self, batch: Batch, draws: SACDraws, bc_phase: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(sum of all losses, metrics) for one update; no side effects."""
        cfg = self.config
        obs, act = batch.observations, batch.actions
        alpha = self.entropy_alpha()
        metrics: dict[str, Tensor] = {}
        # bf16 autocast covers the networks; they return float32, so every loss below is
        # reduced in float32.
        autocast = torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.precision != "fp32"
        )
        # "bf16-td32": the TD error's two critic evaluations leave the bf16 region.
        td_precision = (
            torch.autocast(device_type=self.device.type, enabled=False)
            if cfg.precision == "bf16-td32"
            else contextlib.nullcontext()
        )
        with autocast:
            mean, log_std = self.actor(obs)  # (B, d) each, with gradient
            with torch.no_grad():
                next_mean, next_log_std = self.actor(batch.next_observations)
            policy = PolicyAt(mean, log_std, next_mean, next_log_std)
            new_act, new_logp = tanh_gaussian_from_noise(mean, log_std, draws.noise)
            new_act, new_logp = new_act[:, 0], new_logp[:, 0]  # (B, d), (B,)
            with td_precision:
                y = self._td_target(batch, policy, draws)
                q_data = self.critic(obs, act)  # (E, B)
            critic = self._critic_loss(batch, q_data, y, policy, draws, metrics)
            q_pi = self.critic(obs, new_act, detach_params=True)  # (E, B), grad to actor only
        if bc_phase:
            policy_loss = bc_nll_loss(tanh_gaussian_log_prob(mean, log_std, act), new_logp, alpha)
        else:
            policy_loss = actor_loss(new_logp, q_pi, alpha)
        total = critic.total + policy_loss
        if critic.extra is not None:
            total = total + critic.extra
        if cfg.auto_entropy:
            entropy_loss = entropy_temperature_loss(self.log_alpha, new_logp, self.target_entropy)
            total = total + entropy_loss
            metrics["loss/entropy"] = entropy_loss.detach()

        for i in range(critic.td.shape[0]):
            metrics[f"loss/q{i + 1}"] = critic.td[i].detach()
        metrics["loss/policy"] = policy_loss.detach()
        metrics["misc/entropy_alpha"] = alpha
        metrics["misc/q_data"] = q_data.detach().mean()
        metrics["misc/q_policy"] = q_pi.detach().min(dim=0).values.mean()
        metrics["misc/q_target"] = y.mean()
        metrics["misc/policy_entropy"] = -new_logp.detach().mean()
        return total, metrics

    # --- inference -----------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Action tanh(m(s)) (deterministic) or a sample of π(·|s); (obs_dim,) -> (d,),
        (B, obs_dim) -> (B, d)."""
        obs, single = as_batch(obs, self.obs_dim)
        if deterministic:
            action = self.actor.deterministic(obs)
        else:
            action, _ = self.actor.rsample(obs, self.act_generator)
        return action[0] if single else action

    @torch.no_grad()
    def q_value(self, obs: Tensor, act: Tensor) -> Tensor:
        """min_i Q_i(s, a), (B,): the value the conservative-value diagnostic compares."""
        obs, _ = as_batch(obs, self.obs_dim)
        q: Tensor = self.critic(obs, act).min(dim=0).values
        return q

    # --- checkpoints ---------------------------------------------------------------------

    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "target_critic": self.target_critic}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optims: dict[str, torch.optim.Optimizer] = {
            "actor_optim": self.actor_optim,
            "critic_optim": self.critic_optim,
        }
        if self.entropy_optim is not None:
            optims["entropy_optim"] = self.entropy_optim
        return optims

    def _scalars(self) -> dict[str, Tensor]:
        return {"log_alpha": self.log_alpha}
