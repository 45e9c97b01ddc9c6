"""Offline agents: CQL (continuous, SAC-based), DiscreteCQL, and the baselines OfflineSAC, BC.

Every agent has a config dataclass (one docstring per field, read by the command line),
``update(batch) -> dict[str, Tensor]`` (detached 0-d tensors, no host synchronisation:
no ``.item()``, no Python branch on a tensor value), ``act(obs, deterministic=True)``,
``state_dict()`` / ``load_state_dict()`` (plain tensors and Python scalars only, so
``torch.load(..., weights_only=True)`` reads a checkpoint) and a ``step`` counter.
Agents with a critic (``has_critic = True``) also have ``q_value(obs, act)``.

All randomness comes from ``torch.Generator`` objects owned by the agent: one for network
initialisation (CPU), one for the training draws (on the device), one for ``act``, so
evaluating a policy in the middle of training does not change the training stream.

Metric keys (as many ``loss/q<i>`` as critics):

=====================  ==================================================================
``loss/q1``, ``q2``    mean squared TD error of each critic
``loss/cql``           conservative penalty added to the critic loss (sum over critics)
``loss/policy``        actor loss (BC loss during the warm-start, and for BC)
``loss/entropy``       entropy-temperature loss (when the temperature is learned)
``loss/lagrange``      dual loss of α' (Lagrange CQL only)
``misc/entropy_alpha`` SAC temperature α
``misc/lagrange_alpha`` multiplier α' on the gap (learned for Lagrange CQL, else fixed to 1)
``misc/cql_gap``       regulariser E[push-down] − E_D[Q], mean over critics
``misc/cql_push_down`` the push-down term (soft maximum of Q), mean over critics
``misc/q_data``        mean Q(s, a) at dataset actions, mean over critics
``misc/q_policy``      mean min_i Q_i(s, ã), ã ~ π(·|s)
``misc/q_target``      mean TD target
``misc/policy_entropy`` −E log π(ã|s) of the tanh-Gaussian actor
=====================  ==================================================================
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deep.data import Batch
from deep.losses import (
    actor_loss,
    bc_mse_loss,
    bc_nll_loss,
    cql_regularizer,
    double_dqn_target,
    entropy_temperature_loss,
    lagrange_loss,
    max_q_backup,
    td_loss,
    td_target,
    uniform_log_density,
)
from deep.nets import (
    MLP,
    EnsembleDiscreteQ,
    EnsembleQ,
    TanhGaussianActor,
    polyak_update,
    tanh_gaussian_from_noise,
    tanh_gaussian_log_prob,
)

__all__ = [
    "AGENT_NAMES",
    "BC",
    "CQL",
    "Agent",
    "BCConfig",
    "CQLConfig",
    "DiscreteBC",
    "DiscreteBCConfig",
    "DiscreteCQL",
    "DiscreteCQLConfig",
    "OfflineSAC",
    "SACConfig",
    "default_config",
    "make_agent",
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


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------


@dataclass
class SACConfig:
    """Offline soft actor-critic: the CQL agent with the conservative regulariser off."""

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
    precision: Literal["fp32", "bf16"] = "fp32"
    """"bf16": the networks' forward passes run under bfloat16 autocast (matmuls in bf16,
    weights, optimizer state, Q values and every loss reduction stay float32). Worth it on a
    CPU with AMX / AVX512-BF16 or an Ampere+ GPU; "fp32" everywhere else."""


@dataclass
class CQLConfig(SACConfig):
    """Continuous CQL(H) / CQL(ρ), optionally in Lagrange form (paper Eq. 4, 5, App. F)."""

    cql_weight: float = 5.0
    """Weight w of the gap in the critic loss ``MSE_TD + w·α'·gap`` (no ½ on the TD term, as
    the official code: the paper's α is w/2). gym-mujoco uses 5 or 10."""
    cql_n_actions: int = 10
    """N: actions per group (uniform, π(·|s), π(·|s')) of the push-down estimate, 3N in all."""
    cql_temperature: float = 1.0
    """Temperature T of the soft maximum T log ∫ exp(Q/T) da."""
    cql_estimator: Literal["importance", "rho"] = "importance"
    """"importance": CQL(H) with the importance-sampled log-sum-exp (App. F); "rho": CQL(ρ),
    the same samples without importance weights."""
    lagrange: bool = False
    """Learn α' ≥ 0 by dual gradient so that the gap meets ``lagrange_threshold`` (Eq. 5)."""
    lagrange_threshold: float = 5.0
    """τ of the Lagrange form, on this project's gap, which excludes the constant T log(3N)
    the official code keeps. The official code's penalty is α'(w·gap_off − τ_off): its τ_off
    corresponds to τ = τ_off / w − T log(3N) here (≈ τ_off / w − 3.40 for N = 10)."""
    lagrange_lr: float = 3e-4
    """Adam learning rate of log α' (official code: the critic's)."""
    lagrange_max: float = 1e6
    """Upper clamp of α'."""


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


# ----------------------------------------------------------------------------------------
# Shared machinery
# ----------------------------------------------------------------------------------------


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


def _resolve_config(agent: str, config: Any, config_type: type[_C]) -> _C:
    """``config``, or ``config_type()`` when it is None; a config of another type is an
    error naming both."""
    cfg = config if config is not None else config_type()
    if not isinstance(cfg, config_type):
        raise TypeError(f"{agent} needs a {config_type.__name__}, got {type(cfg).__name__}")
    return cfg


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all of a group's tensors; CPU and CUDA since
    torch 2.4), else the multi-tensor ``foreach`` implementation."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _as_batch(obs: Tensor, dim: int) -> tuple[Tensor, bool]:
    if obs.dim() == 1:
        obs = obs.unsqueeze(0)
        single = True
    else:
        single = False
    if obs.dim() != 2 or obs.shape[-1] != dim:
        raise ValueError(f"obs must be ({dim},) or (B, {dim}), got {tuple(obs.shape)}")
    return obs, single


class _AgentBase:
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


# ----------------------------------------------------------------------------------------
# Offline SAC and CQL
# ----------------------------------------------------------------------------------------


class OfflineSAC(_AgentBase):
    """Naive offline actor-critic: SAC trained on a fixed dataset (Haarnoja et al. 2018).

    Twin critics in one :class:`~deep.nets.EnsembleQ`, Polyak target critics, tanh-Gaussian
    actor, automatic entropy tuning. :class:`CQL` adds the conservative regulariser through
    :meth:`_regularizer`; everything else is this class.
    """

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
        cfg = _resolve_config(type(self).__name__, config, self._config_type)
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
        self.actor_optim = _adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_optim = _adam(self.critic.parameters(), cfg.critic_lr)
        self.entropy_optim = _adam([self.log_alpha], cfg.entropy_lr) if cfg.auto_entropy else None
        self._loss_fn = self._losses

    def _validate(self, cfg: SACConfig) -> None:
        for name in ("critic_lr", "actor_lr", "entropy_lr", "init_entropy_alpha", "target_tau"):
            _check_positive(name, getattr(cfg, name))
        if not 0 <= cfg.gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {cfg.gamma}")
        if cfg.target_tau > 1:
            raise ValueError(f"target_tau must be in (0, 1], got {cfg.target_tau}")
        if cfg.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {cfg.precision!r}")
        if cfg.n_critics < 1 or cfg.backup_n_actions < 1 or cfg.bc_steps < 0:
            raise ValueError(
                "n_critics and backup_n_actions must be >= 1 and bc_steps >= 0, got "
                f"{cfg.n_critics}, {cfg.backup_n_actions}, {cfg.bc_steps}"
            )

    # --- hooks for CQL -------------------------------------------------------------------

    def _n_regularizer_actions(self) -> int:
        """Policy actions per state the regulariser needs at s and at s' (0: none)."""
        return 0

    def _regularizer(
        self,
        obs: Tensor,
        q_data: Tensor,
        random_actions: Tensor | None,
        pi_actions: Tensor,
        pi_log_prob: Tensor,
        next_pi_actions: Tensor,
        next_pi_log_prob: Tensor,
        metrics: dict[str, Tensor],
    ) -> tuple[Tensor | None, Tensor | None]:
        """(penalty added to the critic loss, extra loss of other parameters) or Nones."""
        return None, None

    def _extra_optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    # --- training ------------------------------------------------------------------------

    def entropy_alpha(self) -> Tensor:
        """Current SAC temperature α (0-d, detached)."""
        return self.log_alpha.detach().exp()

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One gradient step on critics, actor, temperature (and α' for Lagrange CQL).

        All losses are built from the same pre-update parameters and minimised with one
        backward pass: each loss reaches only its own parameters (the actor's Q is computed
        with detached critic weights, targets under no_grad, log π detached in the
        temperature loss), so this equals stepping the optimizers one after another on
        losses computed before any step, as the official code and CORL do.

        The update's random draws come first (:meth:`_draw`), then the losses
        (:meth:`_losses`, a function of the batch, the draws and the parameters only, which
        :meth:`compile` hands to ``torch.compile``), then one backward pass and the steps.
        """
        cfg = self.config
        obs, act = batch.observations, batch.actions
        if act.dim() != 2 or act.shape[-1] != self.act_dim:
            raise ValueError(f"batch actions must be (B, {self.act_dim}), got {tuple(act.shape)}")
        draws = self._draw(obs.shape[0], obs.dtype)
        total, metrics = self._loss_fn(batch, draws, self.step < cfg.bc_steps)
        optimizers = [self.critic_optim, self.actor_optim, *self._extra_optimizers()]
        if self.entropy_optim is not None:
            optimizers.append(self.entropy_optim)
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

    def _draw(self, b: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
        """The update's random numbers, all from ``self.generator`` in a fixed order:
        N(0, I) noise for 1 + N actions at s (B, 1 + N, d), for n_backup + N actions at s'
        (B, n_backup + N, d), and (regulariser only) N uniform actions on [−1, 1]^d."""
        cfg = self.config
        n_reg = self._n_regularizer_actions()
        n_backup = cfg.backup_n_actions if cfg.max_q_backup else 1
        d, device, g = self.act_dim, self.device, self.generator
        noise = torch.randn((b, 1 + n_reg, d), generator=g, device=device, dtype=dtype)
        next_noise = torch.randn((b, n_backup + n_reg, d), generator=g, device=device, dtype=dtype)
        uniform = None
        if n_reg > 0:
            # uniform on [−1, 1]^d (peers drew from [0, 1] or a degenerate range)
            uniform = torch.rand((b, n_reg, d), generator=g, device=device, dtype=dtype)
            uniform = uniform * 2.0 - 1.0
        return noise, next_noise, uniform

    def _losses(
        self,
        batch: Batch,
        draws: tuple[Tensor, Tensor, Tensor | None],
        bc_phase: bool,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(sum of all losses, metrics) for one update; no side effects."""
        cfg = self.config
        obs, act, reward, next_obs, done = batch
        noise, next_noise, uniform = draws
        reward = cfg.reward_scale * reward + cfg.reward_bias
        n_backup = cfg.backup_n_actions if cfg.max_q_backup else 1
        alpha = self.entropy_alpha()
        metrics: dict[str, Tensor] = {}
        # bf16 autocast covers the networks; they return float32, so every loss below is
        # reduced in float32.
        autocast = torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"
        )
        with autocast:
            # Actor at s: one forward; sample 0 (with gradient) trains the actor, samples
            # 1..N (detached) feed the regulariser.
            mean, log_std = self.actor(obs)
            pi_all, logp_all = tanh_gaussian_from_noise(mean, log_std, noise)
            new_act, new_logp = pi_all[:, 0], logp_all[:, 0]

            with torch.no_grad():
                next_mean, next_log_std = self.actor(next_obs)
                next_all, next_logp_all = tanh_gaussian_from_noise(
                    next_mean, next_log_std, next_noise
                )
                target_q = self.target_critic(next_obs, next_all[:, :n_backup])  # (E, B, nb)
                if cfg.max_q_backup:
                    next_v, index = max_q_backup(target_q, cfg.max_q_backup_order)
                    next_logp = next_logp_all[:, :n_backup].gather(1, index.unsqueeze(1))
                    next_logp = next_logp.squeeze(1)
                else:
                    next_v, next_logp = target_q[..., 0].min(dim=0).values, next_logp_all[:, 0]
                y = td_target(
                    reward,
                    done,
                    next_v,
                    cfg.gamma,
                    next_logp if cfg.backup_entropy else None,
                    alpha,
                )

            q_data = self.critic(obs, act)  # (E, B)
            td = td_loss(q_data, y)  # (E,)
            critic_loss = td.sum()
            penalty, extra_loss = self._regularizer(
                obs,
                q_data,
                uniform,
                pi_all[:, 1:].detach(),
                logp_all[:, 1:].detach(),
                next_all[:, n_backup:],
                next_logp_all[:, n_backup:],
                metrics,
            )
            if penalty is not None:
                critic_loss = critic_loss + penalty

            q_pi = self.critic(obs, new_act, detach_params=True)  # (E, B), grad to actor only
        if bc_phase:
            policy_loss = bc_nll_loss(tanh_gaussian_log_prob(mean, log_std, act), new_logp, alpha)
        else:
            policy_loss = actor_loss(new_logp, q_pi, alpha)
        total = critic_loss + policy_loss
        if extra_loss is not None:
            total = total + extra_loss
        if cfg.auto_entropy:
            entropy_loss = entropy_temperature_loss(self.log_alpha, new_logp, self.target_entropy)
            total = total + entropy_loss
            metrics["loss/entropy"] = entropy_loss.detach()

        for i in range(td.shape[0]):
            metrics[f"loss/q{i + 1}"] = td[i].detach()
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
        obs, single = _as_batch(obs, self.obs_dim)
        if deterministic:
            action = self.actor.deterministic(obs)
        else:
            action, _ = self.actor.rsample(obs, self.act_generator)
        return action[0] if single else action

    @torch.no_grad()
    def q_value(self, obs: Tensor, act: Tensor) -> Tensor:
        """min_i Q_i(s, a), (B,): the value the conservative-value diagnostic compares."""
        obs, _ = _as_batch(obs, self.obs_dim)
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


class CQL(OfflineSAC):
    """Conservative Q-Learning on continuous actions (Kumar et al. 2020, App. F).

    Critic loss per critic i: MSE_TD,i + w·α'·(gap_i − τ·[lagrange]), where gap_i is
    :func:`~deep.losses.cql_regularizer` on 3N actions at state s (N uniform on [−1, 1]^d,
    N from π(·|s), N from π(·|s')), importance-weighted (CQL(H)) or not (CQL(ρ)).
    Everything else is :class:`OfflineSAC`.
    """

    config: CQLConfig
    _config_type = CQLConfig

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: CQLConfig | None = None,
        device: Device = "cpu",
        seed: Seed = 0,
    ) -> None:
        super().__init__(obs_dim, act_dim, config, device, seed)
        cfg = self.config
        # α' = exp(log α') starts at 1 (official code); only the Lagrange form learns it.
        self.log_alpha_prime = torch.zeros((), device=self.device, requires_grad=cfg.lagrange)
        self.lagrange_optim = (
            torch.optim.Adam([self.log_alpha_prime], lr=cfg.lagrange_lr) if cfg.lagrange else None
        )

    def _validate(self, cfg: SACConfig) -> None:
        super()._validate(cfg)
        assert isinstance(cfg, CQLConfig)
        if cfg.cql_n_actions < 1:
            raise ValueError(f"cql_n_actions must be >= 1, got {cfg.cql_n_actions}")
        if cfg.cql_weight < 0:
            raise ValueError(f"cql_weight must be >= 0, got {cfg.cql_weight}")
        for name in ("cql_temperature", "lagrange_lr", "lagrange_max"):
            _check_positive(name, getattr(cfg, name))
        if cfg.cql_estimator not in ("importance", "rho"):
            raise ValueError(
                f"cql_estimator must be 'importance' or 'rho', got {cfg.cql_estimator!r}"
            )

    def lagrange_alpha(self) -> Tensor:
        """Current multiplier α' (0-d, detached; 1 when not learned)."""
        return self.log_alpha_prime.detach().exp().clamp(0.0, self.config.lagrange_max)

    def _n_regularizer_actions(self) -> int:
        return self.config.cql_n_actions

    def _regularizer(
        self,
        obs: Tensor,
        q_data: Tensor,
        random_actions: Tensor | None,
        pi_actions: Tensor,
        pi_log_prob: Tensor,
        next_pi_actions: Tensor,
        next_pi_log_prob: Tensor,
        metrics: dict[str, Tensor],
    ) -> tuple[Tensor | None, Tensor | None]:
        cfg = self.config
        b, n, d = pi_actions.shape
        assert random_actions is not None  # drawn by _draw whenever N > 0
        actions = torch.cat([random_actions, pi_actions, next_pi_actions], dim=1)  # (B, 3N, d)
        q_ood = self.critic(obs, actions)  # (E, B, 3N): all three groups at state s
        if cfg.cql_estimator == "importance":
            log_density = torch.cat(
                [
                    pi_log_prob.new_full((b, n), uniform_log_density(d)),
                    pi_log_prob,
                    next_pi_log_prob,
                ],
                dim=1,
            )  # (B, 3N)
            reg = cql_regularizer(
                q_data,
                q_ood,
                estimator="importance",
                log_density=log_density,
                temperature=cfg.cql_temperature,
            )
        else:
            reg = cql_regularizer(q_data, q_ood, estimator="rho", temperature=cfg.cql_temperature)

        extra: Tensor | None = None
        if cfg.lagrange:
            dual = lagrange_loss(
                self.log_alpha_prime, reg.gap, cfg.lagrange_threshold, cfg.lagrange_max
            )
            alpha_prime = dual.alpha_prime.detach()
            penalty = cfg.cql_weight * alpha_prime * (reg.gap - cfg.lagrange_threshold).sum()
            extra = dual.loss
            metrics["loss/lagrange"] = dual.loss.detach()
        else:
            alpha_prime = self.lagrange_alpha()
            penalty = cfg.cql_weight * reg.gap.sum()
        metrics["loss/cql"] = penalty.detach()
        metrics["misc/lagrange_alpha"] = alpha_prime
        metrics["misc/cql_gap"] = reg.gap.detach().mean()
        metrics["misc/cql_push_down"] = reg.push_down.detach().mean()
        return penalty, extra

    def _extra_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.lagrange_optim] if self.lagrange_optim is not None else []

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optims = super()._optimizers()
        if self.lagrange_optim is not None:
            optims["lagrange_optim"] = self.lagrange_optim
        return optims

    def _scalars(self) -> dict[str, Tensor]:
        return {**super()._scalars(), "log_alpha_prime": self.log_alpha_prime}


# ----------------------------------------------------------------------------------------
# Discrete CQL
# ----------------------------------------------------------------------------------------


class DiscreteCQL(_AgentBase):
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
        cfg = _resolve_config("DiscreteCQL", config, DiscreteCQLConfig)
        for name in ("lr", "cql_temperature", "target_tau"):
            _check_positive(name, getattr(cfg, name))
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
        obs, act, reward, next_obs, done = batch
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
        obs, single = _as_batch(obs, self.obs_dim)
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
        obs, _ = _as_batch(obs, self.obs_dim)
        q = self.critic(obs)
        index = act.view(1, -1, 1).expand(q.shape[0], -1, 1)
        out: Tensor = q.gather(-1, index).squeeze(-1).min(dim=0).values
        return out

    def _modules(self) -> dict[str, nn.Module]:
        return {"critic": self.critic, "target_critic": self.target_critic}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_optim": self.optim}


# ----------------------------------------------------------------------------------------
# Behaviour cloning
# ----------------------------------------------------------------------------------------


class _Cloner(_AgentBase):
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
        cfg = _resolve_config("BC", config, BCConfig)
        _check_positive("lr", cfg.lr)
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
        obs, single = _as_batch(obs, self.obs_dim)
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
        cfg = _resolve_config("DiscreteBC", config, DiscreteBCConfig)
        _check_positive("lr", cfg.lr)
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
        obs, single = _as_batch(obs, self.obs_dim)
        logits = self.policy(obs)
        if deterministic:
            action = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1)
            action = torch.multinomial(probs, 1, generator=self.act_generator).squeeze(-1)
        return action[0] if single else action


# ----------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------

AGENT_NAMES = ("cql", "cql-lagrange", "cql-rho", "sac", "bc", "discrete-cql", "discrete-bc")

AnyConfig = SACConfig | DiscreteCQLConfig | BCConfig | DiscreteBCConfig


def default_config(name: str, discrete: bool = False) -> AnyConfig:
    """The default config of agent ``name`` (see :data:`AGENT_NAMES`); ``discrete=True``
    turns "bc" into "discrete-bc"."""
    if name == "bc" and discrete:
        name = "discrete-bc"
    if discrete and name not in ("discrete-cql", "discrete-bc"):
        raise ValueError(f"agent {name!r} is for continuous actions; use 'discrete-cql' or 'bc'")
    if name == "cql":
        return CQLConfig()
    if name == "cql-lagrange":
        return CQLConfig(lagrange=True)
    if name == "cql-rho":
        return CQLConfig(cql_estimator="rho")
    if name == "sac":
        return SACConfig()
    if name == "bc":
        return BCConfig()
    if name == "discrete-cql":
        return DiscreteCQLConfig()
    if name == "discrete-bc":
        return DiscreteBCConfig()
    raise ValueError(f"unknown agent {name!r}; choose one of {AGENT_NAMES}")


def make_agent(
    name: str,
    obs_dim: int,
    act_dim: int,
    *,
    config: AnyConfig | None = None,
    device: Device = "cpu",
    seed: Seed = 0,
    discrete: bool = False,
    **overrides: Any,
) -> Agent:
    """Build agent ``name`` (cql, cql-lagrange, cql-rho, sac, bc, discrete-cql, discrete-bc).

    ``act_dim`` is the number of actions for discrete agents. ``config`` defaults to
    :func:`default_config`; ``overrides`` replace config fields by name. A given config must
    agree with the name (e.g. "cql-lagrange" needs ``lagrange=True``).
    """
    if name == "bc" and discrete:
        name = "discrete-bc"
    cfg = config if config is not None else default_config(name, discrete)
    expected = type(default_config(name, discrete))
    if type(cfg) is not expected:
        raise TypeError(f"agent {name!r} needs a {expected.__name__}, got {type(cfg).__name__}")
    if overrides:
        fields = {f.name for f in dataclasses.fields(cfg)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown {expected.__name__} fields for {name!r}: {unknown}")
        cfg = dataclasses.replace(cfg, **overrides)
    if isinstance(cfg, CQLConfig):
        # The name's defining feature must survive the config; other fields are free
        # (e.g. "cql-rho" with lagrange=True is CQL(ρ) in Lagrange form).
        if name == "cql-lagrange" and not cfg.lagrange:
            raise ValueError("agent 'cql-lagrange' needs lagrange=True in its config")
        if name == "cql-rho" and cfg.cql_estimator != "rho":
            raise ValueError(
                f"agent 'cql-rho' needs cql_estimator='rho', got {cfg.cql_estimator!r}"
            )
        return CQL(obs_dim, act_dim, cfg, device, seed)
    if isinstance(cfg, SACConfig):
        return OfflineSAC(obs_dim, act_dim, cfg, device, seed)
    if isinstance(cfg, DiscreteCQLConfig):
        return DiscreteCQL(obs_dim, act_dim, cfg, device, seed)
    if isinstance(cfg, BCConfig):
        return BC(obs_dim, act_dim, cfg, device, seed)
    return DiscreteBC(obs_dim, act_dim, cfg, device, seed)
