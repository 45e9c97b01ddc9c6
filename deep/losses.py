"""Pure loss functions of deep CQL: (tensors, scalars) -> tensors.

No optimizer, no logging, no I/O, no randomness: callers sample actions and pass them in.
Equation numbers refer to Kumar, Zhou, Tucker, Levine, "Conservative Q-Learning for Offline
Reinforcement Learning", arXiv 2006.04779 (NeurIPS 2020).

Shapes: E = number of critics, B = batch, N = actions sampled per group, M = actions in the
push-down set (3N for the importance-sampled estimate, |A| for the exact one), d = action
dimension, A = number of discrete actions.

Scale convention. The paper writes the critic objective as ``α·gap + ½ E_D[(Q − B̂Q)²]``.
:func:`td_loss` returns the mean squared error *without* the ½, as the official code and CORL
do (``nn.MSELoss``), so an agent loss ``td_loss + w·gap`` is the paper's objective with
α = w/2. A caller after the paper's exact form writes ``0.5 * td_loss(...) + alpha * gap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "CQLGap",
    "LagrangeLoss",
    "actor_loss",
    "bc_mse_loss",
    "bc_nll_loss",
    "calibrated",
    "cql_regularizer",
    "double_dqn_target",
    "entropy_temperature_loss",
    "lagrange_loss",
    "max_q_backup",
    "td_loss",
    "td_target",
    "uniform_log_density",
]

Estimator = Literal["exact", "importance", "rho", "expectation"]


# ----------------------------------------------------------------------------------------
# Bellman backups
# ----------------------------------------------------------------------------------------


def td_target(
    reward: Tensor,
    done: Tensor,
    next_q: Tensor,
    gamma: float,
    next_log_prob: Tensor | None = None,
    entropy_alpha: float | Tensor = 0.0,
) -> Tensor:
    """Bootstrapped target of the policy-evaluation backup B̂^π Q (paper Eq. 1-4, last term).

    y = r + γ (1 − done) (Q̄(s', a') − α_ent log π(a'|s')),   a' ~ π(·|s')

    The entropy term is the soft (SAC) backup; CQL's default leaves it out
    (``next_log_prob=None``), as the official code's ``deterministic_backup=True``.
    reward, done, next_q, next_log_prob: (B,) -> (B,). ``next_q`` is already reduced over
    critics (min for clipped double Q, see :func:`max_q_backup` for the max-backup).
    The result carries gradients only if its inputs do; callers pass target-network values.
    """
    if reward.shape != next_q.shape or done.shape != next_q.shape:
        raise ValueError(
            f"reward {tuple(reward.shape)}, done {tuple(done.shape)} and next_q "
            f"{tuple(next_q.shape)} must have the same shape (B,)"
        )
    value = next_q
    if next_log_prob is not None:
        if next_log_prob.shape != next_q.shape:
            raise ValueError(
                f"next_log_prob {tuple(next_log_prob.shape)} must match next_q "
                f"{tuple(next_q.shape)}"
            )
        value = value - entropy_alpha * next_log_prob
    return reward + gamma * (1.0 - done) * value


def max_q_backup(
    next_q: Tensor, order: Literal["max-of-min", "min-of-max"] = "max-of-min"
) -> tuple[Tensor, Tensor]:
    """Max-backup value max_{a'} Q̄(s', a') over N actions a'_1..a'_N ~ π(·|s').

    CQL paper App. F ("max-backup"): back up the largest target value among N policy samples
    instead of one sample's value. Two ways to combine it with the critic ensemble:

    - ``"max-of-min"``: max_j min_i Q̄_i(s', a'_j), one action chosen for all critics (CORL).
    - ``"min-of-max"``: min_i max_j Q̄_i(s', a'_j), each critic takes its own maximum (the
      official rlkit code, ``_get_tensor_values(...).max(1)`` per critic, then ``torch.min``);
      it is never below ``"max-of-min"``.

    next_q (E, B, N) -> (value (B,), index (B,)). ``index`` is the chosen sample j (for
    ``"min-of-max"``: the argmax of the critic attaining the minimum), used to pick
    log π(a'_j|s') when the backup includes the entropy term.
    """
    if next_q.dim() != 3:
        raise ValueError(f"next_q must be (E, B, N), got {tuple(next_q.shape)}")
    if order == "max-of-min":
        value, index = next_q.min(dim=0).values.max(dim=-1)
    elif order == "min-of-max":
        per_critic, per_index = next_q.max(dim=-1)  # (E, B)
        value, critic = per_critic.min(dim=0)
        index = per_index.gather(0, critic.unsqueeze(0)).squeeze(0)
    else:
        raise ValueError(f"order must be 'max-of-min' or 'min-of-max', got {order!r}")
    return value, index


def double_dqn_target(
    reward: Tensor,
    done: Tensor,
    next_q_online: Tensor,
    next_q_target: Tensor,
    gamma: float,
) -> Tensor:
    """Double-DQN target (van Hasselt et al. 2016), the backup of discrete CQL.

    a* = argmax_a Q_online(s', a),   y = r + γ (1 − done) Q_target(s', a*)

    With an ensemble, a* maximises the mean over online critics and y takes the min over
    target critics at a*. reward, done (B,); next_q_online, next_q_target (E, B, A) -> (B,).
    """
    if next_q_online.dim() != 3 or next_q_online.shape[1:] != next_q_target.shape[1:]:
        raise ValueError(
            f"next_q_online {tuple(next_q_online.shape)} and next_q_target "
            f"{tuple(next_q_target.shape)} must be (E, B, A) with the same B and A"
        )
    best = next_q_online.mean(dim=0).argmax(dim=-1)  # (B,)
    index = best.view(1, -1, 1).expand(next_q_target.shape[0], -1, 1)
    next_v = next_q_target.gather(-1, index).squeeze(-1).min(dim=0).values
    return reward + gamma * (1.0 - done) * next_v


def td_loss(q: Tensor, target: Tensor) -> Tensor:
    """Mean squared TD error per critic, E_{(s,a)~D}[(Q_i(s,a) − y)²] (no ½: see the module
    docstring). q (E, B), target (B,) (detached by the caller) -> (E,).
    """
    if q.shape[-1:] != target.shape:
        raise ValueError(f"q {tuple(q.shape)} and target {tuple(target.shape)} disagree on B")
    return (q - target).square().mean(dim=-1)


# ----------------------------------------------------------------------------------------
# The conservative regulariser
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CQLGap:
    """What :func:`cql_regularizer` returns; every field has shape (E,).

    ``gap = push_down − push_up`` is the CQL regulariser (to be multiplied by α, or by α' in
    the Lagrange form); ``push_down`` the soft-maximum (or μ-expectation) term,
    ``push_up`` = E_{s,a~D}[Q(s, a)].
    """

    gap: Tensor
    push_down: Tensor
    push_up: Tensor


def uniform_log_density(act_dim: int) -> float:
    """log density of the uniform distribution on [−1, 1]^d: −d log 2."""
    return -act_dim * math.log(2.0)


def calibrated(q_actions: Tensor, returns_to_go: Tensor) -> Tensor:
    """Cal-QL's calibration (Nakamoto et al. 2023): every Q(s_i, a_j) of ``q_actions``
    (..., B, M), floored at row i's Monte-Carlo return-to-go ``returns_to_go`` (B,), the value
    of the behaviour policy's own trajectory from s_i. The floor is a constant: where it is
    above Q the pushed-down value carries no gradient, so the regulariser stops pushing a
    critic below the behaviour policy's value; where Q is above it, Q passes unchanged."""
    return torch.maximum(q_actions, returns_to_go.to(q_actions.dtype).unsqueeze(-1))


def cql_regularizer(
    q_data: Tensor,
    q_actions: Tensor,
    *,
    estimator: Estimator = "exact",
    log_density: Tensor | float | None = None,
    mu: Tensor | None = None,
    temperature: float = 1.0,
    include_data: bool = False,
) -> CQLGap:
    """The CQL regulariser E_{s~D}[push_down(s)] − E_{s,a~D}[Q(s, a)], per critic.

    ``q_data`` (E, B) or (B,) holds Q(s_i, a_i) at the dataset actions; ``q_actions``
    (E, B, M) or (B, M) holds Q(s_i, ·) at M actions **all evaluated at the same state s_i**.
    The batch mean over i is the expectation over s ~ D, a ~ π̂_β. Returns :class:`CQLGap`
    with fields of shape (E,) (or () for unbatched critics). The push-down term depends on
    ``estimator`` (T = ``temperature``):

    ``"exact"`` — CQL(H), Eq. 4, with a full row of a discrete / tabular Q (M = |A|):
        push_down(s) = T log Σ_a exp(Q(s, a)/T).

    ``"importance"`` — CQL(H) with the importance-sampled estimate of App. F for continuous
    actions. The M = 3N actions are N uniform on [−1, 1]^d (log density −d log 2, see
    :func:`uniform_log_density`), N from π(·|s) and N from π(·|s') — all three groups scored by
    Q at state **s** (the code of the blog post
    “CQL: Conservative Q-Learning for Offline Reinforcement Learning” scores
    the third group at s', a bug). Each group is an
    unbiased importance-sampling estimate of ∫ exp(Q(s,a)/T) da, so is their average:
        push_down(s) = T [log Σ_{j=1}^{M} exp(Q(s, a_j)/T − log q_j(a_j)) − log M],
    with ``log_density`` = log q_j(a_j), broadcastable to (B, M), detached by the caller.
    The −log M (log 3N) normalises the sum into a mean, so the estimate is consistent for
    T log ∫ exp(Q/T) da. The official code (rlkit ``min_q_version=3``) and CORL omit it:
    their gap is larger by T log(3N) (≈ 3.40 for N = 10, T = 1), a constant that leaves every
    gradient unchanged but shifts the Lagrange threshold τ by the same amount. They also
    divide log q by T (``logsumexp((Q − log q)/T)``); here T scales Q only, which is what
    T log ∫ exp(Q/T) da asks for. At the default T = 1 the two agree up to the constant.
    Being the log of an unbiased estimate, it is biased low (Jensen). The weights
    exp(Q/T)/π of the policy groups have infinite variance (a tanh-Gaussian density vanishes
    faster than any power at the box edges), so that bias shrinks more slowly than O(1/N).

    ``"rho"`` — CQL(ρ), no importance weights: the same sampled actions, each weighted equally,
        push_down(s) = T [log Σ_j exp(Q(s, a_j)/T) − log M] ≈ T log E_{a~ρ} exp(Q(s, a)/T),
    the closed form of max_μ E_μ[Q] − T·KL(μ‖ρ) (App. A with R(μ) = −KL(μ, ρ)), where ρ is the
    sampling mixture (uniform ∪ π(·|s) ∪ π(·|s')). With ``include_data=True`` Q(s, a_D) joins
    the M sampled values inside the log-sum-exp (M + 1 in all), as the official
    ``min_q_version=2`` and Unifloral's CQL do; then push_down ≥ Q(s, a_D) − T log(M + 1), so
    the gap is at least −T log(M + 1) at every state, however few actions are sampled.

    ``"expectation"`` — CQL(1)/CQL(2) push-down with a known distribution μ (Eq. 1 and 2):
        push_down(s) = Σ_a μ(a|s) Q(s, a),     ``mu`` (B, M) or (E, B, M), rows sum to one.
    With the push-up term this is Eq. 2 (CQL(2)); Eq. 1 (CQL(1)) is ``push_down`` alone.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q_actions.shape[:-1] != q_data.shape:
        raise ValueError(
            f"q_actions {tuple(q_actions.shape)} must be q_data {tuple(q_data.shape)} "
            "plus a trailing action axis M"
        )
    if estimator in ("importance", "rho", "exact") and mu is not None:
        raise ValueError(f"mu is only used by estimator='expectation', not {estimator!r}")
    if include_data and estimator != "rho":
        raise ValueError(
            f"include_data is only used by estimator='rho', not {estimator!r}: the dataset "
            "action has no proposal density to weight it by"
        )
    if include_data:
        q_actions = torch.cat([q_actions, q_data.unsqueeze(-1)], dim=-1)  # (..., M + 1)
    if estimator != "importance" and log_density is not None:
        raise ValueError(f"log_density is only used by estimator='importance', not {estimator!r}")
    m = q_actions.shape[-1]
    if estimator == "exact":
        push_down = temperature * torch.logsumexp(q_actions / temperature, dim=-1)
    elif estimator == "importance":
        if log_density is None:
            raise ValueError("estimator='importance' needs log_density (log q of each action)")
        logits = q_actions / temperature - log_density  # (E, B, M)
        push_down = temperature * (torch.logsumexp(logits, dim=-1) - math.log(m))
    elif estimator == "rho":
        push_down = temperature * (torch.logsumexp(q_actions / temperature, dim=-1) - math.log(m))
    elif estimator == "expectation":
        if mu is None:
            raise ValueError("estimator='expectation' needs mu (action probabilities, (B, M))")
        if mu.shape[-1] != m:
            raise ValueError(f"mu {tuple(mu.shape)} must have M = {m} actions in its last axis")
        push_down = (mu * q_actions).sum(dim=-1)
    else:
        raise ValueError(
            f"estimator must be 'exact', 'importance', 'rho' or 'expectation', got {estimator!r}"
        )
    push_down = push_down.mean(dim=-1)  # (E, B) -> (E,)
    push_up = q_data.mean(dim=-1)
    return CQLGap(gap=push_down - push_up, push_down=push_down, push_up=push_up)


@dataclass(frozen=True)
class LagrangeLoss:
    """What :func:`lagrange_loss` returns: ``alpha_prime`` (0-d, differentiable in
    log α') and the dual ``loss`` (0-d) to minimise over log α'."""

    alpha_prime: Tensor
    loss: Tensor


def lagrange_loss(
    log_alpha_prime: Tensor, gap: Tensor, tau: float, max_alpha: float = 1e6
) -> LagrangeLoss:
    """Dual loss of the Lagrange form of CQL (Eq. 5).

    min_Q max_{α' ≥ 0} α' (gap(Q) − τ) + TD.   With α' = clamp(exp(log α'), 0, max_alpha):

        loss = −α' · mean_i (gap_i − τ)      (gap detached: this loss moves only α')

    ∂loss/∂log α' = −α' (gap − τ): gradient descent raises α' while the gap exceeds τ and
    lowers it, towards 0, while gap < τ. The critic's side uses α' detached:
    ``α'·(gap − τ)`` added to its loss. gap (E,) (averaged over critics, as the official code's
    ``(−loss₁ − loss₂)/2``); log_alpha_prime 0-d.
    """
    alpha_prime = log_alpha_prime.exp().clamp(min=0.0, max=max_alpha)
    loss = -alpha_prime * (gap.detach() - tau).mean()
    return LagrangeLoss(alpha_prime=alpha_prime, loss=loss)


# ----------------------------------------------------------------------------------------
# Actor, temperature, behaviour cloning
# ----------------------------------------------------------------------------------------


def actor_loss(log_prob: Tensor, q_pi: Tensor, entropy_alpha: float | Tensor) -> Tensor:
    """SAC / CQL policy loss (paper Eq. 3's policy step; Haarnoja et al. 2018 Eq. 7).

    L(φ) = E_{s~D, a~π_φ(·|s)}[α log π_φ(a|s) − min_i Q_i(s, a)]

    log_prob (B,) of reparameterised actions; q_pi (E, B) from critics whose weights are
    detached (the gradient must reach the actor only) -> 0-d.
    """
    if q_pi.shape[-1:] != log_prob.shape:
        raise ValueError(f"q_pi {tuple(q_pi.shape)} and log_prob {tuple(log_prob.shape)} differ")
    min_q = q_pi.min(dim=0).values if q_pi.dim() == 2 else q_pi
    return (entropy_alpha * log_prob - min_q).mean()


def entropy_temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """Automatic entropy tuning (Haarnoja et al. 2018b, Eq. 18) in log space:

    L(log α) = −log α · E[log π(a|s) + H̄],    H̄ = target entropy (−|A| by default)

    log π detached: α grows while the policy entropy −E[log π] is below H̄. Parametrising by
    log α keeps α > 0 (the official code and CORL do the same). log_prob (B,) -> 0-d.
    """
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


def bc_nll_loss(
    log_prob_data: Tensor,
    log_prob_pi: Tensor | None = None,
    entropy_alpha: float | Tensor = 0.0,
) -> Tensor:
    """Behaviour cloning by maximum likelihood of the dataset actions (Gaussian NLL through
    the tanh): the CQL warm-start loss of the official code (``policy_eval_start``) and CORL:

    L(φ) = E_{(s,a)~D}[α log π_φ(ã|s) − log π_φ(a|s)],   ã ~ π_φ(·|s)

    With ``log_prob_pi=None`` it is the plain NLL −E log π(a_D|s). (B,) inputs -> 0-d.
    """
    loss = -log_prob_data.mean()
    if log_prob_pi is not None:
        loss = loss + (entropy_alpha * log_prob_pi).mean()
    return loss


def bc_mse_loss(action_pred: Tensor, action_data: Tensor) -> Tensor:
    """Behaviour cloning by regression of the deterministic action (TD3+BC / CORL's BC):

    L(φ) = E_{(s,a)~D} ‖tanh(m_φ(s)) − a‖² / d,  the mean over batch and action axes.
    (B, d), (B, d) -> 0-d.
    """
    if action_pred.shape != action_data.shape:
        raise ValueError(
            f"action_pred {tuple(action_pred.shape)} and action_data "
            f"{tuple(action_data.shape)} must have the same shape"
        )
    return (action_pred - action_data).square().mean()
