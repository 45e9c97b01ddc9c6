"""Conservative Q-Learning on continuous actions (Kumar et al. 2020, Eq. 4, 5 and App. F).

CQL is offline SAC (:mod:`deep.algos.sac`) with another critic objective,
:meth:`CQL._critic_loss`, which reads top to bottom in the order of the paper:

1. its own draws: N actions uniform on [−1, 1]^d, N from π(·|s), N from π(·|s');
2. all 3N scored by every critic **at state s** (the blog's code scores the third group at s':
   a bug; the official code and OfflineRL-Kit issue 12 agree on s);
3. :func:`~deep.losses.cql_regularizer`: gap_i = T log ∫ exp(Q_i(s, a)/T) da − E_D[Q_i(s, a)],
   the integral importance-sampled over the 3N actions (CQL(H)) or not weighted (CQL(ρ));
4. the penalty w·α'·(gap − τ) (τ and a learned α' only in the Lagrange form, Eq. 5);
5. plus SAC's TD term.

Extra metric keys, beside SAC's:

=====================  ==================================================================
``loss/cql``           conservative penalty added to the critic loss (sum over critics)
``loss/lagrange``      dual loss of α' (Lagrange form only)
``misc/lagrange_alpha`` multiplier α' on the gap (learned in the Lagrange form, else 1)
``misc/cql_gap``       regulariser E[push-down] − E_D[Q], mean over critics
``misc/cql_push_down`` the push-down term (soft maximum of Q), mean over critics
=====================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from deep.algos.base import Device, Seed, check_positive
from deep.algos.sac import CriticLoss, OfflineSAC, PolicyAt, SACConfig, SACDraws
from deep.batch import Batch
from deep.losses import (
    calibrated,
    cql_regularizer,
    lagrange_loss,
    td_loss,
    uniform_log_density,
)
from deep.nets import tanh_gaussian_from_noise

__all__ = ["CQL", "CQLConfig", "CQLDraws"]


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
    calibrated: bool = False
    """Cal-QL (Nakamoto et al. 2023): inside the soft maximum, Q at the actions sampled from
    π(·|s) and π(·|s') becomes max(Q, G), G the minibatch's Monte-Carlo return-to-go of the
    transition's trajectory (the run puts it in every batch); the uniform group and the data
    term are unchanged. The critic then stops being pushed below the behaviour's return."""
    cql_data_in_push_down: bool = False
    """Put Q(s, a_D) at the dataset action inside the soft maximum beside the 3N sampled
    actions (CQL(ρ) only; the official ``min_q_version=2`` and Unifloral's CQL do). With few
    samples (N = 1: 3 actions) it bounds the gap below by −T log(3N + 1) at every state
    (``include_data`` of :func:`~deep.losses.cql_regularizer`)."""
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


@dataclass(frozen=True)
class CQLDraws(SACDraws):
    """SAC's draws plus the regulariser's own N actions per group, (B, N, d) each."""

    uniform: Tensor
    """Actions uniform on [−1, 1]^d (peers drew from [0, 1] or a degenerate range)."""
    pi_noise: Tensor
    """N(0, I) noise of the N samples of π(·|s)."""
    next_pi_noise: Tensor
    """N(0, I) noise of the N samples of π(·|s')."""


class CQL(OfflineSAC):
    """Conservative Q-Learning on continuous actions: offline SAC whose critics minimise
    MSE_TD,i + w·α'·(gap_i − τ·[lagrange]) (see the module docstring)."""

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
            check_positive(name, getattr(cfg, name))
        if cfg.cql_estimator not in ("importance", "rho"):
            raise ValueError(
                f"cql_estimator must be 'importance' or 'rho', got {cfg.cql_estimator!r}"
            )
        if cfg.cql_data_in_push_down and cfg.cql_estimator != "rho":
            raise ValueError(
                "cql_data_in_push_down needs cql_estimator='rho': the dataset action has no "
                "proposal density to importance-weight it by"
            )

    def lagrange_alpha(self) -> Tensor:
        """Current multiplier α' (0-d, detached; 1 when not learned)."""
        return self.log_alpha_prime.detach().exp().clamp(0.0, self.config.lagrange_max)

    def _draw(self, b: int, dtype: torch.dtype) -> CQLDraws:
        """SAC's draws and the regulariser's, from the agent's generator in one fixed order:
        the noise at s for 1 + N samples, at s' for n_b + N, then N uniform actions."""
        n, n_b = self.config.cql_n_actions, self.n_backup
        d, device, g = self.act_dim, self.device, self.generator
        noise = torch.randn((b, 1 + n, d), generator=g, device=device, dtype=dtype)
        next_noise = torch.randn((b, n_b + n, d), generator=g, device=device, dtype=dtype)
        uniform = torch.rand((b, n, d), generator=g, device=device, dtype=dtype) * 2.0 - 1.0
        return CQLDraws(
            noise=noise[:, :1],
            next_noise=next_noise[:, :n_b],
            uniform=uniform,
            pi_noise=noise[:, 1:],
            next_pi_noise=next_noise[:, n_b:],
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
        """Σ_i [MSE_TD,i + w·α'·(gap_i − τ)]: Eq. 4 with the App. F estimate, Eq. 5's α'.

        ``q_data`` = Q_i(s, a_D) (E, B); ``y`` the TD target (B,); ``policy`` the actor's
        Gaussian at s and s' (B, d); ``draws`` a :class:`CQLDraws`.
        """
        assert isinstance(draws, CQLDraws)
        cfg = self.config
        obs = batch.observations
        b, n, d = draws.uniform.shape

        # 1. The 3N actions and their proposal log-densities. The policy samples carry no
        # gradient: the regulariser trains the critics only.
        with torch.no_grad():
            pi_act, pi_logp = tanh_gaussian_from_noise(policy.mean, policy.log_std, draws.pi_noise)
            next_pi_act, next_pi_logp = tanh_gaussian_from_noise(
                policy.next_mean, policy.next_log_std, draws.next_pi_noise
            )  # (B, N, d), (B, N) each
        actions = torch.cat([draws.uniform, pi_act, next_pi_act], dim=1)  # (B, 3N, d)

        # 2. Every group scored at state s; Cal-QL floors the policy groups at the
        # return-to-go (a constant: the floor carries no gradient, the max passes Q's).
        q_ood = self.critic(obs, actions)  # (E, B, 3N)
        if cfg.calibrated:
            if batch.returns_to_go is None:
                raise ValueError(
                    "calibrated (Cal-QL) needs the minibatch's returns-to-go: train with "
                    "--returns-to-go (deep.train turns it on for cal-ql)"
                )
            q_ood = torch.cat(
                [q_ood[..., :n], calibrated(q_ood[..., n:], batch.returns_to_go)], dim=-1
            )

        # 3. The gap: soft maximum over the 3N actions minus Q at the dataset's action.
        if cfg.cql_estimator == "importance":
            log_density = torch.cat(
                [pi_logp.new_full((b, n), uniform_log_density(d)), pi_logp, next_pi_logp], dim=1
            )  # (B, 3N)
            reg = cql_regularizer(
                q_data,
                q_ood,
                estimator="importance",
                log_density=log_density,
                temperature=cfg.cql_temperature,
            )
        else:
            reg = cql_regularizer(
                q_data,
                q_ood,
                estimator="rho",
                temperature=cfg.cql_temperature,
                include_data=cfg.cql_data_in_push_down,
            )

        # 4. The penalty w·α'·(gap − τ), α' learned by dual descent in the Lagrange form.
        dual_loss: Tensor | None = None
        if cfg.lagrange:
            dual = lagrange_loss(
                self.log_alpha_prime, reg.gap, cfg.lagrange_threshold, cfg.lagrange_max
            )
            alpha_prime = dual.alpha_prime.detach()
            penalty = cfg.cql_weight * alpha_prime * (reg.gap - cfg.lagrange_threshold).sum()
            dual_loss = dual.loss
            metrics["loss/lagrange"] = dual.loss.detach()
        else:
            alpha_prime = self.lagrange_alpha()
            penalty = cfg.cql_weight * reg.gap.sum()
        metrics["loss/cql"] = penalty.detach()
        metrics["misc/lagrange_alpha"] = alpha_prime
        metrics["misc/cql_gap"] = reg.gap.detach().mean()
        metrics["misc/cql_push_down"] = reg.push_down.detach().mean()

        # 5. Plus the TD term.
        td = td_loss(q_data, y)  # (E,)
        return CriticLoss(td.sum() + penalty, td, dual_loss)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optims = super()._optimizers()
        if self.lagrange_optim is not None:
            optims["lagrange_optim"] = self.lagrange_optim
        return optims

    def _scalars(self) -> dict[str, Tensor]:
        return {**super()._scalars(), "log_alpha_prime": self.log_alpha_prime}
