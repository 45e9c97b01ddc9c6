"""Tests of theory/cql.py: CQL(1), CQL(2), CQL(H) in the table and the tabular control loop.

Oracles are computed here independently of the code under test: the (S*A, S*A) matrix
``I - gamma P^pi`` is built densely with einsum and solved with ``np.linalg.solve``, softmax and
log-sum-exp come from scipy.special, and minimisers from scipy.optimize.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as opt
import scipy.special as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.cql import (
    behaviour_reference,
    cal_ql_evaluate,
    cal_ql_step,
    cql_control,
    cql_evaluate,
    cql_h_argmin,
    cql_h_evaluate,
    cql_h_iterate,
    cql_h_objective,
    cql_iterate,
    cql_objective,
    cql_penalty,
    linear_cql_evaluate,
    linear_cql_iterate,
)
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import (
    InvalidMDPError,
    TabularMDP,
    bellman,
    chain_mdp,
    greedy_policy,
    policy_evaluation,
    random_mdp,
    random_policy,
    value_iteration,
)
from theory.strategies import (
    OfflineProblem,
    exact_problem,
    exact_problems,
    offline_problem,
    offline_problems,
    supported_policies,
    supported_policy,
)

# --- instances and independent oracles ------------------------------------------------------


def full_coverage_data(
    mdp: TabularMDP, rng: np.random.Generator, n_extra: int, behavior: np.ndarray | None = None
) -> EmpiricalMDP:
    """Every (s, a) once (s' ~ T), plus ``n_extra`` i.i.d. transitions: n(s, a) >= 1 everywhere."""
    S, A = mdp.n_states, mdp.n_actions
    beh = random_policy(S, A, rng) if behavior is None else behavior
    extra = sample_dataset(mdp, beh, n_extra, rng)
    s0 = np.repeat(np.arange(S), A)
    a0 = np.tile(np.arange(A), S)
    P = mdp.dense_P()
    s2_0 = np.array([rng.choice(S, p=P[s, a]) for s, a in zip(s0, a0, strict=True)])
    s = np.concatenate([s0, extra.s])
    a = np.concatenate([a0, extra.a])
    s2 = np.concatenate([s2_0, extra.s2])
    return EmpiricalMDP.from_transitions(S, A, s, a, mdp.R[s, a], s2, mdp.gamma)


def from_lists(
    S: int, A: int, s: list[int], a: list[int], r: list[float], s2: list[int], gamma: float
) -> EmpiricalMDP:
    """A hand-written dataset, one list per column."""
    return EmpiricalMDP.from_transitions(
        S, A, np.array(s), np.array(a), np.array(r, dtype=float), np.array(s2), gamma
    )


def pair_matrix(emp: EmpiricalMDP, pi: np.ndarray) -> np.ndarray:
    """Dense ``I - gamma P^pi`` on state-action pairs, P^pi[(s,a),(t,b)] = T_hat(t|s,a) pi(b|t)."""
    S, A = emp.n_states, emp.n_actions
    P_pi = np.einsum("sat,tb->satb", emp.mdp.dense_P(), pi).reshape(S * A, S * A)
    return np.eye(S * A) - emp.gamma * P_pi


def backup(emp: EmpiricalMDP, q: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """``B_hat^pi Q`` written out with einsum (independent of theory.mdp.bellman)."""
    return emp.R + emp.gamma * np.einsum("sat,t->sa", emp.mdp.dense_P(), np.sum(pi * q, axis=1))


def instance(seed: int, S: int, A: int, gamma: float, n_extra: int = 30) -> EmpiricalMDP:
    rng = np.random.default_rng(seed)
    return full_coverage_data(random_mdp(S, A, rng, gamma=gamma), rng, n_extra)


small = {
    "seed": st.integers(0, 2**32 - 1),
    "S": st.integers(1, 4),
    "A": st.integers(1, 3),
    "gamma": st.sampled_from([0.0, 0.5, 0.9, 0.95]),
    "alpha": st.floats(0.0, 10.0),
}


# --- 1. exact identities in the empirical MDP (Theorems 3.1 / 3.2 with equality) -------------


@settings(max_examples=200)
@given(**small)
def test_cql1_identity_q(seed: int, S: int, A: int, gamma: float, alpha: float) -> None:
    # Q_hat = Q_hat^pi - alpha (I - gamma P_hat^pi)^{-1} (mu / pi_beta_hat), solved on pairs.
    emp = instance(seed, S, A, gamma)
    rng = np.random.default_rng(seed + 1)
    pi, mu = random_policy(S, A, rng), random_policy(S, A, rng)
    got = cql_evaluate(emp, pi, alpha, mu=mu, variant="cql1")
    shift = np.linalg.solve(pair_matrix(emp, pi), (mu / emp.pi_beta).ravel()).reshape(S, A)
    expected = policy_evaluation(emp.mdp, pi) - alpha * shift
    assert np.max(np.abs(got.q - expected)) <= 1e-10 * max(1.0, np.max(np.abs(expected)))
    assert np.allclose(got.penalty, mu / emp.pi_beta, rtol=1e-14, atol=0)
    # Theorem 3.1 in the empirical MDP: a pointwise lower bound, strict where alpha > 0.
    assert np.all(got.q <= policy_evaluation(emp.mdp, pi) + 1e-9)


@settings(max_examples=200)
@given(**small)
def test_cql2_identity_value(seed: int, S: int, A: int, gamma: float, alpha: float) -> None:
    # V_hat = V_hat^pi - alpha (I - gamma P_hat_pi)^{-1} D_CQL, D_CQL = E_pi[pi/pi_beta_hat - 1],
    # solved on states with the (S, S) matrix P_hat_pi = sum_a pi T_hat.
    emp = instance(seed, S, A, gamma)
    pi = random_policy(S, A, np.random.default_rng(seed + 1), concentration=0.5)
    got = cql_evaluate(emp, pi, alpha, variant="cql2")
    P_pi = np.einsum("sat,sa->st", emp.mdp.dense_P(), pi)
    d_cql = np.sum(pi * (pi / emp.pi_beta - 1.0), axis=1)
    v_pi = np.sum(pi * policy_evaluation(emp.mdp, pi), axis=1)
    expected = v_pi - alpha * np.linalg.solve(np.eye(S) - gamma * P_pi, d_cql)
    assert np.max(np.abs(got.v - expected)) <= 1e-10 * max(1.0, np.max(np.abs(expected)))
    # Theorem 3.2 in the empirical MDP: D_CQL >= 0, so the value (not Q) is a lower bound.
    assert np.all(got.v <= v_pi + 1e-9)


def test_cql2_q_is_not_a_pointwise_lower_bound() -> None:
    # Thm 3.2 bounds the value only: where pi(a|s) < pi_beta_hat(a|s) the CQL(2) penalty is
    # negative and Q_hat(s, a) rises above Q_hat^pi(s, a). One state, gamma = 0, so
    # Q = r - alpha (pi/pi_beta_hat - 1) by hand: pi = (0.2, 0.8), pi_beta_hat = (1/2, 1/2),
    # alpha = 1 gives Q = r + (0.6, -0.6).
    emp = from_lists(1, 2, [0, 0], [0, 1], [1.0, 0.0], [0, 0], gamma=0.0)
    pi = np.array([[0.2, 0.8]])
    got = cql_evaluate(emp, pi, 1.0, variant="cql2")
    np.testing.assert_allclose(got.q, [[1.6, -0.6]], atol=1e-15)
    np.testing.assert_allclose(got.v, [0.2 * 1.6 - 0.8 * 0.6], atol=1e-15)


def test_penalty_is_zero_where_the_objective_has_no_data_term() -> None:
    # State 2 never appears as a current state; action 1 never at state 0.
    emp = from_lists(3, 2, [0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0.0] * 5, [1, 2, 0, 2, 1], 0.9)
    mu = np.array([[1.0, 0.0], [0.5, 0.5], [0.3, 0.7]])
    for variant, seen_value in (("cql1", [1.5, 0.75]), ("cql2", [0.5, -0.25])):
        pen = cql_penalty(emp, mu, variant)  # type: ignore[arg-type]
        # By hand: pi_beta_hat(.|0) = (1, 0), pi_beta_hat(.|1) = (1/3, 2/3).
        np.testing.assert_allclose(pen[1], seen_value, atol=1e-15)
        assert pen[0, 1] == 0.0 and np.all(pen[2] == 0.0)
        assert pen[0, 0] == (1.0 if variant == "cql1" else 0.0)


# --- 2. closed form and iteration ------------------------------------------------------------


@pytest.mark.parametrize("variant", ["cql1", "cql2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iteration_reaches_closed_form(variant: str, seed: int) -> None:
    emp = instance(seed, 4, 3, 0.9)
    rng = np.random.default_rng(seed)
    pi = random_policy(4, 3, rng)
    q0 = rng.normal(size=(4, 3))
    closed = cql_evaluate(emp, pi, 2.5, variant=variant)  # type: ignore[arg-type]
    its = cql_iterate(emp, pi, 2.5, 400, variant=variant, q0=q0)  # type: ignore[arg-type]
    errors = np.max(np.abs(its.q - closed.q), axis=(1, 2))
    # 0.9^400 ~ 5e-19: the last iterate is the fixed point up to rounding.
    assert errors[-1] <= 1e-8
    # A gamma-contraction in the sup norm: |Q_k - Q_hat| <= gamma^k |Q_0 - Q_hat|.
    k = np.arange(len(errors))
    assert np.all(errors <= 0.9**k * errors[0] + 1e-10)


@pytest.mark.parametrize("variant", ["cql1", "cql2"])
def test_each_iterate_is_the_argmin_of_its_objective(variant: str) -> None:
    emp = instance(3, 3, 2, 0.9)
    rng = np.random.default_rng(3)
    pi = random_policy(3, 2, rng)
    its = cql_iterate(emp, pi, 1.5, 3, variant=variant, q0=rng.normal(size=(3, 2)))  # type: ignore[arg-type]
    n = emp.counts.sum()
    d, w = emp.state_counts / n, emp.counts / n
    for k in range(3):
        target = backup(emp, its.q[k], pi)

        def f(x: np.ndarray, target: np.ndarray = target) -> float:
            return cql_objective(emp, x.reshape(3, 2), target, 1.5, pi, variant)  # type: ignore[arg-type]

        def grad(x: np.ndarray, target: np.ndarray = target) -> np.ndarray:
            # alpha d(s) mu(a|s) [- alpha n(s,a)/N] + n(s,a)/N (Q - y), by hand.
            g = 1.5 * d[:, None] * pi + w * (x.reshape(3, 2) - target)
            return (g - 1.5 * w if variant == "cql2" else g).ravel()

        found = opt.minimize(f, np.zeros(6), jac=grad, method="BFGS", options={"gtol": 1e-13}).x
        assert np.max(np.abs(found.reshape(3, 2) - its.q[k + 1])) <= 1e-6
        # Exactly what a perturbation should do to a strictly convex objective at its minimum.
        for delta in rng.normal(size=(10, 3, 2)):
            assert f((its.q[k + 1] + 1e-3 * delta).ravel()) > f(its.q[k + 1].ravel())


def test_sampled_td_loss_differs_by_a_constant() -> None:
    # The paper's TD term uses sampled targets r_i + gamma V_k(s'_i); it equals the B_hat^pi
    # version plus a constant (the within-pair variance of the targets), so both have one argmin.
    rng = np.random.default_rng(7)
    mdp = random_mdp(3, 2, rng, gamma=0.8)
    data = sample_dataset(mdp, random_policy(3, 2, rng), 200, rng, reward_noise=0.5)
    emp = EmpiricalMDP.from_dataset(data, 0.8)
    pi = random_policy(3, 2, rng)
    q_k = rng.normal(size=(3, 2))
    target = backup(emp, q_k, pi)
    v_k = np.sum(pi * q_k, axis=1)
    y_samples = data.r + 0.8 * v_k[data.s2]

    def sampled(q: np.ndarray) -> float:
        reg = np.mean(np.sum(pi[data.s] * q[data.s], axis=1))  # E_{s~D, a~mu=pi}[Q]
        return 1.3 * reg + 0.5 * np.mean((q[data.s, data.a] - y_samples) ** 2)

    gaps = [
        sampled(q) - cql_objective(emp, q, target, 1.3, pi, "cql1")
        for q in rng.normal(size=(4, 3, 2))
    ]
    assert np.ptp(gaps) <= 1e-12
    assert gaps[0] > 0  # the constant is a variance; noisy rewards make it positive


# --- 3. CQL(H) -------------------------------------------------------------------------------


def independent_residual(
    emp: EmpiricalMDP, pi: np.ndarray, q: np.ndarray, alpha: float, tau: float
) -> np.ndarray:
    # F(Q) = Q - B_hat^pi Q + alpha (softmax(Q/tau)/pi_beta_hat - 1), full coverage assumed.
    return q - backup(emp, q, pi) + alpha * (ss.softmax(q / tau, axis=1) / emp.pi_beta - 1.0)


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    S=st.integers(1, 4),
    A=st.integers(1, 4),
    gamma=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    alpha=st.floats(0.0, 100.0),
    tau=st.floats(0.1, 10.0),
)
def test_cql_h_stationary_point(
    seed: int, S: int, A: int, gamma: float, alpha: float, tau: float
) -> None:
    emp = instance(seed, S, A, gamma, n_extra=10 * S * A)
    pi = random_policy(S, A, np.random.default_rng(seed + 1))
    res = cql_h_evaluate(emp, pi, alpha, tau)
    assert res.residual < 1e-10
    assert np.max(np.abs(independent_residual(emp, pi, res.q, alpha, tau))) < 1e-10
    # CQL(H) at its stationary point is CQL(2) with mu = softmax(Q_hat/tau) (the Eq. 3 maximiser):
    # the closed form of Eq. 2 with that mu must return the same table.
    as_cql2 = cql_evaluate(emp, pi, alpha, mu=ss.softmax(res.q / tau, axis=1), variant="cql2")
    assert np.max(np.abs(as_cql2.q - res.q)) <= 1e-9 * max(1.0, np.max(np.abs(res.q)))


def test_cql_h_hand_worked_bandit() -> None:
    # One state, gamma = 0, b = (1/2, 1/2), r = (1, 0), alpha = tau = 1:
    # Q1 = 1 - (2p - 1) = 2 - 2p, Q2 = 0 - (2(1 - p) - 1) = 2p - 1 with p = sigmoid(Q1 - Q2),
    # so the gap g = Q1 - Q2 solves g = 3 - 4 sigmoid(g): one scalar root, found by brentq.
    emp = from_lists(1, 2, [0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0] * 4, 0.0)
    g = opt.brentq(lambda g: g - 3 + 4 * ss.expit(g), -10, 10, xtol=1e-15)
    p = ss.expit(g)
    res = cql_h_evaluate(emp, np.array([[0.5, 0.5]]), 1.0, 1.0)
    np.testing.assert_allclose(res.q, [[2 - 2 * p, 2 * p - 1]], atol=1e-13)
    np.testing.assert_allclose(res.mu, [[p, 1 - p]], atol=1e-13)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cql_h_is_the_minimiser_of_its_convex_objective(seed: int) -> None:
    # At Q*, the per-iteration objective with target B_hat^pi Q* held fixed is minimised by Q*.
    S, A, alpha, tau = 3, 3, 4.0, 0.7
    emp = instance(seed, S, A, 0.9, n_extra=40)
    rng = np.random.default_rng(seed)
    pi = random_policy(S, A, rng)
    q_star = cql_h_evaluate(emp, pi, alpha, tau).q
    target = backup(emp, q_star, pi)
    n = emp.counts.sum()
    d, w = emp.state_counts / n, emp.counts / n

    def f(x: np.ndarray) -> float:
        return cql_h_objective(emp, x.reshape(S, A), target, alpha, tau)

    def grad(x: np.ndarray) -> np.ndarray:
        # d/dQ [alpha d(s) (tau lse(Q/tau) - b.Q) + 1/2 w (Q - y)^2], written out by hand.
        q = x.reshape(S, A)
        p = ss.softmax(q / tau, axis=1)
        return (alpha * d[:, None] * (p - emp.pi_beta) + w * (q - target)).ravel()

    start = (q_star + rng.normal(size=(S, A))).ravel()
    found = opt.minimize(f, start, jac=grad, method="BFGS", options={"gtol": 1e-12}).x
    assert np.max(np.abs(found.reshape(S, A) - q_star)) <= 1e-6
    # The objective written independently with scipy's logsumexp agrees with the module's.
    by_hand = alpha * np.sum(
        d * (tau * ss.logsumexp(q_star / tau, axis=1) - np.sum(emp.pi_beta * q_star, axis=1))
    ) + 0.5 * np.sum(w * (q_star - target) ** 2)
    assert f(q_star.ravel()) == pytest.approx(by_hand, abs=1e-12)
    # Perturbations increase it (strict convexity, every pair is seen).
    base = f(q_star.ravel())
    for delta in rng.normal(size=(20, S * A)):
        assert f(q_star.ravel() + 1e-3 * delta) > base
    # cql_h_argmin solves the same problem directly.
    assert np.max(np.abs(cql_h_argmin(emp, target, alpha, tau) - q_star)) <= 1e-10


def test_cql_h_exact_iteration_contracts_where_the_explicit_one_diverges() -> None:
    # Large alpha / (tau pi_beta_hat): the explicit update Q <- B Q - alpha (p/b - 1) blows up,
    # while the exact per-iteration argmin is a gamma-contraction (stochastic resolvent).
    rng = np.random.default_rng(11)
    mdp = random_mdp(3, 3, rng, gamma=0.9)
    behavior = np.tile([0.8, 0.15, 0.05], (3, 1))
    emp = full_coverage_data(mdp, rng, 300, behavior)
    pi = random_policy(3, 3, rng)
    alpha, tau = 50.0, 0.5
    q_star = cql_h_evaluate(emp, pi, alpha, tau).q
    its = cql_h_iterate(emp, pi, alpha, 300, tau, q0=np.zeros((3, 3))).q
    err = np.max(np.abs(its - q_star), axis=(1, 2))
    assert np.all(err <= 0.9 ** np.arange(301) * err[0] + 1e-9)
    assert err[-1] <= 1e-9  # 0.9^300 ~ 2e-14
    q = np.zeros((3, 3))
    explicit = []
    for _ in range(40):
        q = backup(emp, q, pi) - alpha * (ss.softmax(q / tau, axis=1) / emp.pi_beta - 1.0)
        explicit.append(np.max(np.abs(q - q_star)))
    # It oscillates with a growing amplitude (errors in the hundreds to thousands here) and
    # never comes back even as close as its start.
    assert min(explicit[10:]) > 10 * err[0]


def test_cql_h_partial_coverage_is_finite_and_leaves_unseen_pairs_to_the_empirical_mdp() -> None:
    # Action 2 never taken at state 0; state 2 never a current state.
    s = [0, 0, 0, 1, 1, 1, 1]
    a = [0, 1, 1, 0, 1, 2, 2]
    emp = from_lists(3, 3, s, a, [1, 0, 0, 1, -1, 0, 1], [1, 0, 2, 0, 1, 2, 0], 0.9)
    pi = np.full((3, 3), 1 / 3)
    res = cql_h_evaluate(emp, pi, 5.0, 1.0)
    assert np.all(np.isfinite(res.q)) and res.residual < 1e-10
    assert res.mu[0, 2] == 0.0 and np.all(res.mu[2] == 0.0)
    np.testing.assert_allclose(res.mu[:2].sum(axis=1), 1.0, atol=1e-15)
    b = backup(emp, res.q, pi)
    for pair in [(0, 2), (2, 0), (2, 1), (2, 2)]:
        assert res.q[pair] == pytest.approx(b[pair], abs=1e-12)
        assert res.penalty[pair] == 0.0


# --- 4. the control loop ---------------------------------------------------------------------


@pytest.mark.parametrize("improvement", ["greedy", "soft"])
def test_control_iterates_are_consistent(improvement: str) -> None:
    emp = instance(5, 4, 3, 0.9)
    out = cql_control(emp, 2.0, 6, improvement=improvement, temperature=0.5, step_size=0.7)  # type: ignore[arg-type]
    assert out.policies.shape == out.q_hat.shape == out.q_empirical.shape == (7, 4, 3)
    assert np.all(out.policies >= 0)
    np.testing.assert_allclose(out.policies.sum(axis=2), 1.0, atol=1e-12)
    assert np.all(out.residuals < 1e-10)
    np.testing.assert_array_equal(out.policies[0], emp.pi_beta)
    for k in range(6):
        new = (
            greedy_policy(out.q_hat[k])
            if improvement == "greedy"
            else ss.softmax(out.q_hat[k] / 0.5, axis=1)
        )
        np.testing.assert_allclose(
            out.policies[k + 1], 0.3 * out.policies[k] + 0.7 * new, atol=1e-14
        )
        np.testing.assert_allclose(
            out.q_empirical[k], policy_evaluation(emp.mdp, out.policies[k]), atol=1e-12
        )
        np.testing.assert_allclose(
            out.q_hat[k], cql_h_evaluate(emp, out.policies[k], 2.0, 0.5).q, atol=1e-9
        )


def test_naive_control_is_policy_iteration_in_the_empirical_mdp() -> None:
    emp = instance(6, 5, 3, 0.9)
    out = cql_control(emp, 0.0, 12)
    np.testing.assert_array_equal(out.q_hat, out.q_empirical)
    q_opt, _ = value_iteration(emp.mdp)
    np.testing.assert_allclose(out.q_hat[-1], q_opt, atol=1e-9)


CHAIN_BEHAVIOR = np.tile([0.9, 0.1], (6, 1))  # moves right only one time in ten


def test_conservative_control_stops_overestimation_on_the_chain() -> None:
    # chain_mdp(6) and a behaviour policy that rarely moves right; 20 datasets of 300 i.i.d.
    # transitions (seeds 0..19). Soft improvement pi_{k+1} ∝ exp(Q_hat_k/tau) is the setting of
    # Theorem 3.3: at convergence mu = pi and the value bound of Thm 3.2 applies. Naive
    # (alpha = 0) policy iteration in the empirical MDP often believes its learned policy is
    # better than it is in the true MDP (a winner's curse over the noisy T_hat; 13 of the 20
    # datasets at the time of writing); CQL(H) with alpha = 1 never does, at any state in D.
    mdp = chain_mdp(6, gamma=0.9)
    over = {0.0: 0, 1.0: 0}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        emp = EmpiricalMDP.from_dataset(sample_dataset(mdp, CHAIN_BEHAVIOR, 300, rng), 0.9)
        for alpha in over:
            out = cql_control(emp, alpha, 30, improvement="soft", temperature=1.0, mdp=mdp)
            assert out.q_true is not None
            pi = out.policies[-1]
            assert np.max(np.abs(pi - out.policies[-2])) < 1e-6  # the loop has converged
            v_hat = np.sum(pi * out.q_hat[-1], axis=1)
            v_true = np.sum(pi * out.q_true[-1], axis=1)
            over[alpha] += bool(np.max((v_hat - v_true)[emp.seen_states]) > 0)
    assert over[0.0] >= 10
    assert over[1.0] == 0


def test_greedy_improvement_voids_the_value_bound() -> None:
    # CQL(H) at Q_hat is CQL(2) with mu = softmax(Q_hat): V_hat = V_hat^pi - alpha
    # (I - gamma P_pi)^{-1} E_pi[mu/pi_beta_hat - 1]. A greedy pi on the behaviour's common action
    # makes E_pi[mu/pi_beta_hat - 1] negative, so V_hat exceeds even the empirical V_hat^pi:
    # why Theorem 3.3 asks for pi ∝ exp(Q_hat).
    mdp = chain_mdp(6, gamma=0.9)
    rng = np.random.default_rng(0)
    emp = EmpiricalMDP.from_dataset(sample_dataset(mdp, CHAIN_BEHAVIOR, 300, rng), 0.9)
    out = cql_control(emp, 5.0, 10, improvement="greedy")
    pi, q_hat = out.policies[-1], out.q_hat[-1]
    mu = ss.softmax(q_hat, axis=1)
    e_pi = np.sum(pi * (mu / emp.pi_beta - 1.0), axis=1)
    v_hat = np.sum(pi * q_hat, axis=1)
    v_emp = np.sum(pi * out.q_empirical[-1], axis=1)
    assert np.any(e_pi < 0)
    assert np.max(v_hat - v_emp) > 0.1


# --- 5. errors -------------------------------------------------------------------------------


def test_errors_name_the_problem() -> None:
    emp = from_lists(2, 2, [0, 0, 1], [0, 0, 1], [0.0, 1.0, 0.5], [1, 0, 0], 0.9)
    pi = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        cql_evaluate(emp, pi, -0.1)
    with pytest.raises(ValueError, match="alpha must be a finite"):
        cql_h_evaluate(emp, pi, float("nan"))
    with pytest.raises(InvalidMDPError, match=r"mu\[0, 1\].*never appears at state 0"):
        cql_evaluate(emp, pi, 1.0, mu=np.full((2, 2), 0.5))
    with pytest.raises(InvalidMDPError, match=r"mu\[1, 0\]"):
        cql_penalty(emp, np.array([[1.0, 0.0], [1.0, 0.0]]), "cql2")
    with pytest.raises(InvalidMDPError, match=r"pi\[0, 1\] = nan"):
        cql_evaluate(emp, np.array([[1.0, np.nan], [0.0, 1.0]]), 1.0)
    with pytest.raises(InvalidMDPError, match=r"q0\[1, 0\] = nan is not finite"):
        cql_h_evaluate(emp, pi, 1.0, q0=np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(InvalidMDPError, match=r"q0 must have shape \(2, 2\)"):
        cql_iterate(emp, pi, 1.0, 3, q0=np.zeros(2))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        cql_h_evaluate(emp, pi, 1.0, temperature=0.0)
    with pytest.raises(ValueError, match="variant must be 'cql1' or 'cql2'"):
        cql_evaluate(emp, pi, 1.0, variant="cql3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_iters must be a non-negative integer"):
        cql_iterate(emp, pi, 1.0, -1)
    with pytest.raises(ValueError, match="improvement must be 'greedy' or 'soft'"):
        cql_control(emp, 1.0, 2, improvement="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"step_size must be in \(0, 1\]"):
        cql_control(emp, 1.0, 2, step_size=0.0)
    with pytest.raises(InvalidMDPError, match="true mdp has"):
        cql_control(emp, 1.0, 2, mdp=chain_mdp(3))


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), spread=st.floats(1e-6, 100.0))
def test_cql_h_residual_bounds_the_distance_to_the_solution(seed: int, spread: float) -> None:
    # |Q - Q*|_inf <= |F(Q)|_inf / (1 - gamma) for every Q (the averaged Jacobian between Q and
    # Q* has a stochastic-resolvent inverse), the guarantee behind the reported residual.
    S, A, gamma, alpha, tau = 4, 3, 0.9, 20.0, 0.3
    emp = instance(seed % 1000, S, A, gamma)
    rng = np.random.default_rng(seed)
    pi = random_policy(S, A, rng)
    q_star = cql_h_evaluate(emp, pi, alpha, tau).q
    q = q_star + spread * rng.normal(size=(S, A))
    F = independent_residual(emp, pi, q, alpha, tau)
    assert np.max(np.abs(q - q_star)) <= np.max(np.abs(F)) / (1 - gamma) * (1 + 1e-9) + 1e-12


def test_cql_h_on_a_sparse_empirical_mdp() -> None:
    # 1200 states x 3 actions: T_hat is stored sparse (S*A*S > 4e6 entries), and the Newton
    # system is solved in state space by solve_discounted; the residual is recomputed here with
    # the sparse (S*A, S) matrix.
    rng = np.random.default_rng(4)
    S, A = 1200, 3
    mdp = random_mdp(S, A, rng, gamma=0.9, n_next=3, sparse=True)
    emp = EmpiricalMDP.from_dataset(sample_dataset(mdp, random_policy(S, A, rng), 12000, rng), 0.9)
    assert emp.mdp.is_sparse
    pi = random_policy(S, A, rng)
    res = cql_h_evaluate(emp, pi, 3.0, 1.0)
    v = np.sum(pi * res.q, axis=1)
    b = emp.R + 0.9 * (emp.mdp.P_flat @ v).reshape(S, A)
    p = np.where(emp.seen, np.exp(res.q - res.q.max(axis=1, keepdims=True)), 0.0)
    p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    pen = np.where(emp.seen, p / np.where(emp.seen, emp.pi_beta, 1.0) - 1.0, 0.0)
    assert np.max(np.abs(res.q - b + 3.0 * pen)) < 1e-10
    assert res.residual < 1e-10


# --- Cal-QL: the calibrated fixed point ----------------------------------------------------


@settings(max_examples=200)
@given(target=st.floats(-5, 5), ref=st.floats(-5, 5), rho=st.floats(0, 4), alpha=st.floats(0, 5))
def test_cal_ql_step_is_the_argmin_of_its_per_pair_objective(
    target: float, ref: float, rho: float, alpha: float
) -> None:
    # alpha rho max(q, ref) - alpha q + (q - target)^2 / 2, minimised on a fine grid and by
    # scipy (a convex function of one variable), against the median formula.
    def f(q: float) -> float:
        return alpha * rho * max(q, ref) - alpha * q + 0.5 * (q - target) ** 2

    closed = float(np.median([target - alpha * (rho - 1), ref, target + alpha]))
    found = opt.minimize_scalar(f, bounds=(-40, 40), method="bounded", options={"xatol": 1e-10}).x
    assert f(closed) <= f(found) + 1e-9
    assert abs(closed - found) < 1e-4


@settings(max_examples=100)
@given(problem=offline_problems(), alpha=st.floats(0.0, 10.0), data=st.data())
def test_cal_ql_fixed_point_is_exact_above_cql_and_is_cql_without_a_reference(
    problem: OfflineProblem, alpha: float, data: st.DataObject
) -> None:
    emp = problem.emp
    pi = data.draw(supported_policies(emp))
    cal = cal_ql_evaluate(emp, pi, alpha)
    cql = cql_evaluate(emp, pi, alpha, variant="cql2")
    scale = 1e-8 * (1.0 + np.max(np.abs(cql.q)))
    # The fixed-point equation holds exactly (one step changes nothing).
    again = cal_ql_step(emp, bellman(emp.mdp, cal.q, pi), alpha, pi, cal.reference)
    np.testing.assert_allclose(again, cal.q, atol=scale)
    # The calibrated step is >= CQL(2)'s step and both are monotone: Q_cal >= Q_cql pointwise.
    assert np.all(cal.q >= cql.q - scale)
    # Pushed-down pairs sit above the reference, lifted ones below it.
    assert np.all(cal.q[cal.pushed_down] >= cal.reference[cal.pushed_down] - scale)
    assert np.all(cal.q[cal.lifted] <= cal.reference[cal.lifted] + scale)
    # Without a reference (-inf) nothing stops the push-down: CQL(2)'s fixed point.
    none = cal_ql_evaluate(emp, pi, alpha, reference=np.full(emp.n_states, -np.inf))
    np.testing.assert_allclose(none.q, cql.q, atol=scale)


def test_cal_ql_keeps_the_value_above_the_behaviour_value_where_cql_does_not() -> None:
    # A named instance (seed 0 of offline_problem, 3 states, 2 actions, gamma 0.8, alpha 10):
    # CQL(2)'s value of pi falls below V^{pi_beta_hat} at some state of D, the calibrated one
    # stays at or above it at every state of D.
    rng = np.random.default_rng(0)
    problem = offline_problem(rng, 3, 2, 10, gamma=0.8)
    emp = problem.emp
    pi = supported_policy(emp, rng)
    v_beta = behaviour_reference(emp)[:, 0]
    on_d = emp.seen_states
    cql = cql_evaluate(emp, pi, 10.0, variant="cql2")
    cal = cal_ql_evaluate(emp, pi, 10.0)
    assert np.any(cql.v[on_d] < v_beta[on_d] - 1e-6)
    assert np.all(cal.v[on_d] >= v_beta[on_d] - 1e-9)
    with pytest.raises(ValueError, match="reference must be"):
        cal_ql_evaluate(emp, pi, 1.0, reference=np.zeros(7))


# --- linear features (the linear-function variant of Theorem 3.1) ---------------------------


@settings(max_examples=60, deadline=None)
@given(problem=exact_problems(), data=st.data(), alpha=st.floats(0.0, 10.0))
def test_linear_cql_fixed_point_is_the_projected_penalised_td_fixed_point(
    problem: OfflineProblem, data: st.DataObject, alpha: float
) -> None:
    emp = problem.emp
    pi = data.draw(supported_policies(emp))
    n_seen = int(emp.seen.sum())
    k = data.draw(st.integers(1, n_seen))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    phi = rng.normal(size=(emp.n_states, emp.n_actions, k))
    try:
        ev = linear_cql_evaluate(emp, pi, phi, alpha)
    except ValueError as e:  # an ill-posed projected equation is refused, never solved
        assert "no unique solution" in str(e) or "linearly dependent" in str(e)
        return
    flat, d = phi.reshape(-1, k), emp.counts.reshape(-1).astype(float)
    # Zero gradient of the per-iteration objective at Q_k = Q_hat: the fit of the penalised
    # backup of Q_hat is Q_hat itself.
    m = cql_penalty(emp, pi).reshape(-1)
    residual = (ev.q - bellman(emp.mdp, ev.q, pi)).reshape(-1) + alpha * m
    scale = 1.0 + np.abs(ev.q).max() + alpha * np.abs(m).max()
    np.testing.assert_allclose(flat.T @ (d * residual), 0.0, atol=1e-7 * scale * d.sum())
    np.testing.assert_allclose(ev.q, ev.q_td - alpha * ev.direction, atol=1e-8 * scale)
    # The lower bound holds exactly where the direction is nonnegative (for alpha > 0).
    if alpha > 1e-3:
        below = ev.q <= ev.q_td + 1e-9 * scale
        clear = np.abs(ev.direction) > 1e-6
        np.testing.assert_array_equal(below[clear], (ev.direction >= 0)[clear])


@settings(max_examples=40, deadline=None)
@given(
    problem=exact_problems(max_count=3),
    data=st.data(),
    alpha=st.floats(0.0, 10.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_tabular_features_give_the_tabular_fixed_point_and_theorem_3_1(
    problem: OfflineProblem, data: st.DataObject, alpha: float, seed: int
) -> None:
    emp = problem.emp
    # One-hot features of the pairs of D: u = (I - gamma P_DD)^{-1} m >= 0 on D (P_DD: the
    # transitions between pairs of D, substochastic), 0 elsewhere. Theorem 3.1's lower bound.
    seen = np.flatnonzero(emp.seen.reshape(-1))
    phi = np.eye(emp.n_states * emp.n_actions)[:, seen].reshape(emp.n_states, emp.n_actions, -1)
    pi = data.draw(supported_policies(emp))
    ev = linear_cql_evaluate(emp, pi, phi, alpha)
    assert np.all(ev.direction >= -1e-10) and ev.lower_bound().all()
    np.testing.assert_array_equal(ev.direction[~emp.seen], 0.0)
    # With every pair in D, the linear critic is the table: cql_evaluate's fixed point.
    rng = np.random.default_rng(seed)
    S, A = emp.n_states, emp.n_actions
    full = exact_problem(rng.integers(1, 4, (S, A, S)), rng.uniform(0, 1, (S, A)), emp.gamma)
    pi_full = data.draw(supported_policies(full.emp))
    ev = linear_cql_evaluate(full.emp, pi_full, np.eye(S * A).reshape(S, A, S * A), alpha)
    tabular = cql_evaluate(full.emp, pi_full, alpha).q
    np.testing.assert_allclose(ev.q, tabular, atol=1e-8 * (1.0 + np.abs(tabular).max()))


def test_linear_features_can_break_the_lower_bound() -> None:
    # One state, two actions, each taken once (pi_beta_hat = 1/2, 1/2), evaluated at
    # pi = mu = (1/2, 1/2), so m = mu/pi_beta_hat = (1, 1); one feature, phi = (1, -1/2).
    # A = phi^T D (phi - gamma P^pi phi) = 1.25 - 0.125 gamma, u = phi (0.5 / A): pushing the
    # weight down to lower Q at action 0 raises it at action 1.
    problem = exact_problem(np.ones((1, 2, 1), dtype=int), np.array([[1.0, 0.0]]), 0.5)
    phi = np.array([[[1.0], [-0.5]]])
    pi = np.array([[0.5, 0.5]])
    a = 1.25 - 0.125 * 0.5
    for alpha in (0.1, 1.0, 10.0):
        ev = linear_cql_evaluate(problem.emp, pi, phi, alpha)
        np.testing.assert_allclose(ev.direction, [[0.5 / a, -0.25 / a]])
        np.testing.assert_allclose(ev.q - ev.q_td, [[-alpha * 0.5 / a, alpha * 0.25 / a]])
        np.testing.assert_array_equal(ev.lower_bound(), [[True, False]])  # above Q_td at a1
        # The policy's value is still pushed down: V_hat - V_td = -alpha (0.5 - 0.25) / (2 A).
        np.testing.assert_allclose(np.sum(pi * (ev.q - ev.q_td)), -alpha * 0.125 / a)
    # The iteration of least-squares steps converges to the same fixed point here.
    w = linear_cql_iterate(problem.emp, pi, phi, 1.0, 200)
    np.testing.assert_allclose(w[-1], linear_cql_evaluate(problem.emp, pi, phi, 1.0).weights)


def test_linear_cql_refuses_features_it_cannot_fit() -> None:
    problem = exact_problem(np.ones((1, 2, 1), dtype=int), np.array([[1.0, 0.0]]), 0.5)
    pi = np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match="linearly dependent on the pairs of D"):
        linear_cql_evaluate(problem.emp, pi, np.ones((1, 2, 2)), 1.0)
    with pytest.raises(ValueError, match=r"features must be \(S, A, k\)"):
        linear_cql_evaluate(problem.emp, pi, np.ones((2, 2, 1)), 1.0)
