"""Losses against hand-worked arrays, and the importance-sampled log-sum-exp against the exact
integral on a 1-D action grid."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.special import logsumexp

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
from deep.nets import tanh_gaussian_log_prob, tanh_gaussian_sample


def t(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# ----------------------------------------------------------------------------------------
# Backups
# ----------------------------------------------------------------------------------------


def test_td_target_by_hand() -> None:
    r, done, next_q = t([1.0, 2.0]), t([0.0, 1.0]), t([3.0, 5.0])
    # y = r + γ(1 − d) Q': 1 + 0.9·3 = 3.7; terminal: 2
    torch.testing.assert_close(td_target(r, done, next_q, 0.9), t([3.7, 2.0]))
    # with entropy: 1 + 0.9·(3 − 0.2·(−1)) = 3.88; terminal unchanged
    got = td_target(r, done, next_q, 0.9, next_log_prob=t([-1.0, 0.5]), entropy_alpha=0.2)
    torch.testing.assert_close(got, t([3.88, 2.0]))
    with pytest.raises(ValueError, match="same shape"):
        td_target(t([[1.0], [2.0]]), done, next_q, 0.9)


def test_max_q_backup_both_orders_by_hand() -> None:
    # critic 1, critic 2 at 3 sampled next actions, for 2 states
    next_q = t([[[1, 5, 2], [0, 1, 2]], [[3, 0, 4], [9, 8, 7]]])
    # state 0: min over critics [1, 0, 2] -> max 2 at j=2; state 1: min [0, 1, 2] -> 2 at j=2
    value, index = max_q_backup(next_q, "max-of-min")
    torch.testing.assert_close(value, t([2.0, 2.0]))
    assert index.tolist() == [2, 2]
    # state 0: per-critic max 5 (j=1), 4 (j=2) -> min 4 from critic 2 at j=2
    # state 1: per-critic max 2 (j=2), 9 (j=0) -> min 2 from critic 1 at j=2
    value, index = max_q_backup(next_q, "min-of-max")
    torch.testing.assert_close(value, t([4.0, 2.0]))
    assert index.tolist() == [2, 2]
    next_q2 = t([[[0, 7, 1]], [[6, 0, 2]]])  # max-of-min: min [0,0,1] -> j=2; min-of-max: 6, j=0
    assert max_q_backup(next_q2, "max-of-min")[1].tolist() == [2]
    assert max_q_backup(next_q2, "min-of-max")[1].tolist() == [0]


def test_double_dqn_target_uses_online_argmax_and_target_value() -> None:
    online = t([[[1.0, 3.0, 2.0]]])  # argmax a* = 1
    target = t([[[10.0, 4.0, 7.0]]])  # the target's own argmax (0) must not be used
    y = double_dqn_target(t([0.5]), t([0.0]), online, target, 0.9)
    torch.testing.assert_close(y, t([0.5 + 0.9 * 4.0]))
    # two critics: a* from the mean of online [[1,3,2],[5,0,0]] -> mean [3,1.5,1] -> a*=0;
    # target min over critics at a*=0: min(10, 6) = 6
    online2 = t([[[1.0, 3.0, 2.0]], [[5.0, 0.0, 0.0]]])
    target2 = t([[[10.0, 4.0, 7.0]], [[6.0, 0.0, 0.0]]])
    y2 = double_dqn_target(t([0.0]), t([1.0]), online2, target2, 0.9)
    torch.testing.assert_close(y2, t([0.0]))  # terminal
    y3 = double_dqn_target(t([0.0]), t([0.0]), online2, target2, 0.5)
    torch.testing.assert_close(y3, t([3.0]))


def test_td_loss_per_critic() -> None:
    q = t([[1.0, 2.0], [0.0, 0.0]])
    # critic 1: ((1−0)² + (2−1)²)/2 = 1; critic 2: (0 + 1)/2 = 0.5
    torch.testing.assert_close(td_loss(q, t([0.0, 1.0])), t([1.0, 0.5]))


# ----------------------------------------------------------------------------------------
# CQL regulariser
# ----------------------------------------------------------------------------------------


def test_exact_logsumexp_by_hand() -> None:
    # row [0, log 2, log 3]: Σ exp = 6, so push-down = log 6; data action Q = log 2
    q_row = t([[0.0, math.log(2), math.log(3)]])
    out = cql_regularizer(t([math.log(2)]), q_row, estimator="exact")
    torch.testing.assert_close(out.push_down, t(math.log(6)))
    torch.testing.assert_close(out.gap, t(math.log(3)))
    # temperature 2 on the row 2·[0, log 2, log 3]: 2 log Σ exp(Q/2) = 2 log 6
    out_t = cql_regularizer(t([0.0]), 2 * q_row, estimator="exact", temperature=2.0)
    torch.testing.assert_close(out_t.push_down, t(2 * math.log(6)))


def test_regularizer_per_critic_and_batch_mean() -> None:
    q_actions = t([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 2.0], [0.0, 0.0]]])  # (E=2, B=2, M=2)
    q_data = t([[0.0, 1.0], [1.0, 0.0]])
    out = cql_regularizer(q_data, q_actions, estimator="exact")
    # row [c, c] -> c + log 2; critic 1: mean(log 2, 1 + log 2) = 0.5 + log 2; push-up 0.5
    expected_down = t([0.5 + math.log(2), 1.0 + math.log(2)])
    torch.testing.assert_close(out.push_down, expected_down)
    torch.testing.assert_close(out.push_up, t([0.5, 0.5]))
    torch.testing.assert_close(out.gap, expected_down - 0.5)


def test_importance_and_rho_estimators_by_hand() -> None:
    q = np.array([[0.3, -1.2, 2.0, 0.5, 0.0, 1.1]])  # one state, M = 3N = 6 actions
    log_q = np.array([[-math.log(2)] * 2 + [0.4, -0.7] + [1.3, -2.0]])
    # importance: T [logsumexp(Q/T − log q) − log M], T = 1 and T = 0.5
    for temp in (1.0, 0.5):
        expected = temp * (logsumexp(q / temp - log_q) - math.log(6))
        out = cql_regularizer(
            t([0.25]), t(q), estimator="importance", log_density=t(log_q), temperature=temp
        )
        torch.testing.assert_close(out.push_down, t(expected))
        torch.testing.assert_close(out.gap, t(expected - 0.25))
    # rho: no weights, T [logsumexp(Q/T) − log M]
    out = cql_regularizer(t([0.25]), t(q), estimator="rho")
    torch.testing.assert_close(out.push_down, t(logsumexp(q) - math.log(6)))
    # rho with the data action inside: T [logsumexp([Q, Q_D]/T) − log(M + 1)]
    out = cql_regularizer(t([0.25]), t(q), estimator="rho", include_data=True)
    torch.testing.assert_close(out.push_down, t(logsumexp([*q[0], 0.25]) - math.log(7)))
    with pytest.raises(ValueError, match="include_data is only used by estimator='rho'"):
        cql_regularizer(t([0.25]), t(q), estimator="exact", include_data=True)


def test_expectation_estimator_is_cql2_push_down() -> None:
    # μ = [0.5, 0.25, 0.25], Q = [4, 8, 0]: E_μ Q = 2 + 2 + 0 = 4; data Q = 1 -> gap 3
    out = cql_regularizer(
        t([1.0]), t([[4.0, 8.0, 0.0]]), estimator="expectation", mu=t([[0.5, 0.25, 0.25]])
    )
    torch.testing.assert_close(out.gap, t(3.0))


def test_regularizer_input_errors() -> None:
    q_data, q_act = torch.zeros(4), torch.zeros(4, 3)
    with pytest.raises(ValueError, match="needs log_density"):
        cql_regularizer(q_data, q_act, estimator="importance")
    with pytest.raises(ValueError, match="needs mu"):
        cql_regularizer(q_data, q_act, estimator="expectation")
    with pytest.raises(ValueError, match="only used by estimator='expectation'"):
        cql_regularizer(q_data, q_act, estimator="exact", mu=torch.ones(4, 3) / 3)
    with pytest.raises(ValueError, match="trailing action axis"):
        cql_regularizer(torch.zeros(2, 4), q_act)
    with pytest.raises(ValueError, match="temperature"):
        cql_regularizer(q_data, q_act, temperature=0.0)
    with pytest.raises(ValueError, match="estimator must be"):
        cql_regularizer(q_data, q_act, estimator="bogus")  # type: ignore[arg-type]


def _q_of_a(a: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """A known critic on the 1-D action interval [−1, 1]."""
    if isinstance(a, np.ndarray):
        return 2.0 * a + np.sin(3.0 * a)
    return 2.0 * a + torch.sin(3.0 * a)


# Proposal groups: uniform on [−1, 1]; tanh-Gaussian "π(·|s)"; tanh-Gaussian "π(·|s')".
MEAN_S, LOG_STD_S = 0.5, -0.5
MEAN_S2, LOG_STD_S2 = -0.3, 0.0


def _sampled_push_down(
    n: int, repeats: int, temperature: float, estimator: str, seed: int, chunk: int = 5000
) -> float:
    """Average over ``repeats`` independent estimates of the push-down term at one state."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, repeats, chunk):
        r = min(chunk, repeats - start)
        uni = torch.rand(r, n, 1, generator=g, dtype=torch.float64) * 2 - 1
        ones = torch.ones(r, 1, dtype=torch.float64)
        a_s, lp_s = tanh_gaussian_sample(MEAN_S * ones, LOG_STD_S * ones, n, g)
        a_s2, lp_s2 = tanh_gaussian_sample(MEAN_S2 * ones, LOG_STD_S2 * ones, n, g)
        actions = torch.cat([uni, a_s, a_s2], dim=1)[..., 0]  # (r, 3N)
        log_density = torch.cat(
            [torch.full((r, n), uniform_log_density(1), dtype=torch.float64), lp_s, lp_s2], 1
        )
        q = _q_of_a(actions)
        assert isinstance(q, torch.Tensor)
        kwargs = {"log_density": log_density} if estimator == "importance" else {}
        # the batch mean over the r rows is the average of r independent estimates
        out = cql_regularizer(
            torch.zeros(r, dtype=torch.float64),
            q,
            estimator=estimator,  # type: ignore[arg-type]
            temperature=temperature,
            **kwargs,  # type: ignore[arg-type]
        )
        total += out.push_down.item() * r
    return total / repeats


def _grid() -> np.ndarray:
    return np.linspace(-1.0, 1.0, 200_001)


def test_importance_sampled_logsumexp_bias_shrinks_with_n() -> None:
    a = _grid()
    q = _q_of_a(a)
    # exact log ∫_{−1}^{1} exp Q(a) da by the trapezoid rule on a fine grid
    exact = math.log(trapezoid(np.exp(q), a))
    # The estimate is the log of an unbiased estimate of ∫ exp Q, biased low by Jensen. The
    # weights exp(Q)/π of the two policy groups have infinite variance (π vanishes faster than
    # any power at a = ±1), so the bias decays more slowly than O(1/N) and the average over
    # repeats is heavy-tailed: over 5 seeds, R = 10 000 gives biases ≈ 0.059 ± 0.002,
    # 0.015 ± 0.003, 0.0042 ± 0.0003, 0.0021 ± 0.0005 for N = 4, 16, 64, 256.
    biases = [
        abs(_sampled_push_down(n, 10_000, 1.0, "importance", seed=n) - exact)
        for n in (4, 16, 64, 256)
    ]
    assert all(b1 > b2 for b1, b2 in itertools.pairwise(biases)), biases
    assert biases[-1] < 0.005, biases
    assert biases[0] > 10 * biases[-1], biases


def test_importance_sampled_logsumexp_with_temperature() -> None:
    # T log ∫ exp(Q/T) da: temperature scales Q, not the log-density of the proposal
    a = _grid()
    temp = 0.5
    exact = temp * math.log(trapezoid(np.exp(_q_of_a(a) / temp), a))
    estimate = _sampled_push_down(256, 4000, temp, "importance", seed=1)
    assert abs(estimate - exact) < 0.005


def test_rho_estimator_targets_the_sampling_mixture() -> None:
    # CQL(ρ) estimates log E_{a~ρ} exp Q(a), ρ = ⅓ (uniform + π(·|s) + π(·|s')) — not log ∫ exp Q
    a = _grid()[1:-1]
    q = _q_of_a(a)
    a_t = torch.tensor(a, dtype=torch.float64).view(-1, 1)

    def density(mean: float, log_std: float) -> np.ndarray:
        m = torch.full_like(a_t, mean)
        lp = tanh_gaussian_log_prob(m, torch.full_like(a_t, log_std), a_t)
        return lp.exp().numpy()

    rho = (0.5 + density(MEAN_S, LOG_STD_S) + density(MEAN_S2, LOG_STD_S2)) / 3
    assert abs(trapezoid(rho, a) - 1.0) < 1e-4  # the mixture is a density on (−1, 1)
    exact_rho = math.log(trapezoid(rho * np.exp(q), a))
    exact_h = math.log(trapezoid(np.exp(q), a))
    estimate = _sampled_push_down(256, 3000, 1.0, "rho", seed=0)
    assert abs(estimate - exact_rho) < 0.01
    assert abs(exact_rho - exact_h) > 0.3  # the two targets really differ here


# ----------------------------------------------------------------------------------------
# Lagrange, actor, temperature, BC
# ----------------------------------------------------------------------------------------


def test_lagrange_loss_value_and_gradient() -> None:
    log_ap = torch.tensor(math.log(2.0), dtype=torch.float64, requires_grad=True)
    out = lagrange_loss(log_ap, t([3.0, 5.0]), tau=1.0)
    # α' = 2, mean(gap − τ) = 3 -> loss = −6; ∂/∂log α' = −α'·3 = −6
    torch.testing.assert_close(out.alpha_prime, t(2.0))
    torch.testing.assert_close(out.loss, t(-6.0))
    out.loss.backward()
    torch.testing.assert_close(log_ap.grad, t(-6.0))
    # above the clamp α' is constant: no gradient
    log_ap2 = torch.tensor(math.log(2.0), dtype=torch.float64, requires_grad=True)
    clamped = lagrange_loss(log_ap2, t([3.0]), tau=1.0, max_alpha=1.5)
    torch.testing.assert_close(clamped.alpha_prime, t(1.5))
    clamped.loss.backward()
    torch.testing.assert_close(log_ap2.grad, t(0.0))
    # the gap is detached: the dual loss never reaches the critic
    gap = t([3.0]).requires_grad_()
    log_ap3 = torch.zeros((), dtype=torch.float64, requires_grad=True)
    lagrange_loss(log_ap3, gap, 1.0).loss.backward()
    assert gap.grad is None and log_ap3.grad is not None


@pytest.mark.parametrize(("gap", "grows"), [(2.0, True), (0.2, False)])
def test_lagrange_multiplier_follows_the_constraint(gap: float, grows: bool) -> None:
    # Adam on log α' with the gap held fixed (τ = 1), as the agent's dual step
    tau = 1.0
    log_ap = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_ap], lr=0.01 if grows else 0.05)
    history = []
    for _ in range(200 if grows else 1000):
        out = lagrange_loss(log_ap, torch.tensor([gap, gap]), tau)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append(out.alpha_prime.item())
    if grows:  # gap > τ: α' increases at every step
        assert all(b > a for a, b in itertools.pairwise(history))
        assert history[-1] > 5.0
    else:  # gap < τ: α' decays towards 0
        assert all(b < a for a, b in itertools.pairwise(history))
        assert history[-1] < 1e-2


def test_actor_loss_by_hand() -> None:
    # min over critics of [[1, 4], [2, 3]] = [1, 3]; α = 0.5, log π = [−1, 0]
    # mean(0.5·(−1) − 1, 0 − 3) = (−1.5 − 3)/2 = −2.25
    loss = actor_loss(t([-1.0, 0.0]), t([[1.0, 4.0], [2.0, 3.0]]), 0.5)
    torch.testing.assert_close(loss, t(-2.25))


def test_entropy_temperature_loss_value_and_direction() -> None:
    log_alpha = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    log_prob = t([-1.0, -3.0])  # entropy estimate 2, target −2: α must shrink
    loss = entropy_temperature_loss(log_alpha, log_prob, target_entropy=-2.0)
    torch.testing.assert_close(loss, t(-0.1 * -4.0))  # −log α · mean(log π + H̄)
    loss.backward()
    assert log_alpha.grad is not None and log_alpha.grad.item() == pytest.approx(4.0)


def test_bc_losses_by_hand() -> None:
    torch.testing.assert_close(bc_nll_loss(t([-1.0, -3.0])), t(2.0))
    # with the entropy term: 2 + 0.5·mean(−2, 0) = 1.5
    torch.testing.assert_close(bc_nll_loss(t([-1.0, -3.0]), t([-2.0, 0.0]), 0.5), t(1.5))
    # ((0.5−0)² + (−1−(−0.5))² + 0 + (1−0)²)/4 = (0.25 + 0.25 + 1)/4
    got = bc_mse_loss(t([[0.5, -1.0], [0.2, 1.0]]), t([[0.0, -0.5], [0.2, 0.0]]))
    torch.testing.assert_close(got, t(1.5 / 4))
