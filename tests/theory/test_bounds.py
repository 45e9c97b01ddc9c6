"""Tests of theory.bounds: the CQL lower-bound theorems as computable statements.

Layers: hand-worked constants and a hand-solved bandit (oracles); Theorems 3.1/3.2 as
statistical statements against a true MDP (failure rate <= delta over 200 datasets); exact
identities with no sampling error (hypothesis); gap expansion (3.4) checked against an
independent computation of the CQL update; safe improvement (3.6) with the Eq. 6 optimum; and
named instances where a theorem's condition fails, with what happens then.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.bounds import (
    bellman_sampling_term,
    concentration_constants,
    concentration_event,
    d_cql,
    eq6_objective,
    eq6_policy,
    gap_expansion_along_control,
    gap_expansion_step,
    hoeffding_constant,
    l1_deviation_constant,
    propagate_pairs,
    safe_policy_improvement,
    slow_policy_step,
    theorem_3_1,
    theorem_3_2,
)
from theory.cql import cql_control, cql_iterate, masked_softmax
from theory.data import EmpiricalMDP, sample_dataset
from theory.mdp import (
    InvalidMDPError,
    TabularMDP,
    bellman,
    random_mdp,
    random_policy,
)
from theory.strategies import (
    OfflineProblem,
    exact_problem,
    exact_problems,
    offline_problem,
    offline_problems,
    policies,
    supported_policies,
)

R_MAX = 1.0
DELTA = 0.1
N_DATASETS = 200

seeds = st.integers(0, 2**32 - 1)


def test_hoeffding_constant_hand_worked() -> None:
    # delta' = 2 e^{-2}: ln(2/delta') = 2, so C_r = R_max sqrt(2 * 2) = 2 R_max.
    assert hoeffding_constant(2 * np.exp(-2.0), 3.0) == pytest.approx(6.0, rel=1e-12)


def test_l1_constant_hand_worked() -> None:
    # m = 2 outcomes: 2^m - 2 = 2. delta' = 2 e^{-2}: ln(2/delta') = 2, C_T = sqrt(2 * 2) = 2.
    assert l1_deviation_constant(2 * np.exp(-2.0), 2) == pytest.approx(2.0, rel=1e-12)
    # m = 3: 2^3 - 2 = 6; delta' = 6 e^{-8}: C_T = sqrt(2 * 8) = 4.
    assert l1_deviation_constant(6 * np.exp(-8.0), 3) == pytest.approx(4.0, rel=1e-12)
    # One outcome: T_hat = T exactly.
    assert l1_deviation_constant(0.01, 1) == 0.0
    # 2000 outcomes would overflow 2^m: the log form gives sqrt(2 (2000 ln 2 - ln delta')).
    big = l1_deviation_constant(0.01, 2000)
    assert big == pytest.approx(np.sqrt(2 * (2000 * np.log(2) - np.log(0.01))), rel=1e-12)


def test_constants_union_bound_and_sampling_term() -> None:
    c = concentration_constants(3, 2, 0.12, 2.0)
    # Union over 3*2 pairs and the two inequalities.
    assert c.delta_each == pytest.approx(0.12 / 12)
    assert c.C_r == pytest.approx(2.0 * np.sqrt(2 * np.log(2 / 0.01)))
    assert c.C_T == pytest.approx(np.sqrt(2 * np.log(6 / 0.01)))
    gamma = 0.8
    counts = np.array([[4, 0], [1, 9], [16, 25]])
    e = bellman_sampling_term(counts, c, gamma)
    # Paper's form: C_{r,T,delta} R_max / ((1-gamma) sqrt(n)), inf where n = 0.
    expected = c.C_rT(gamma) * 2.0 / (0.2 * np.sqrt(np.maximum(counts, 1)))
    assert np.isposinf(e[0, 1])
    np.testing.assert_allclose(e[counts > 0], expected[counts > 0], rtol=1e-12)
    # and the definition (C_r + gamma C_T 2 R_max/(1-gamma))/sqrt(n) at n = 4:
    assert e[0, 0] == pytest.approx((c.C_r + gamma * c.C_T * 2 * 2.0 / 0.2) / 2.0)


def test_propagate_pairs_hand_worked_with_infinite_entry() -> None:
    # One state, two actions, pi = (1, 0): Q(s,0) = x0 + gamma V, V = Q(s,0) => Q(s,0) = x0/(1-g);
    # the infinite entry at (s,1) is never reached (pi(1|s) = 0) but is the pair itself.
    mdp = TabularMDP(np.ones((1, 2, 1)), np.zeros((1, 2)), 0.75)
    out = propagate_pairs(mdp, np.array([[1.0, 0.0]]), np.array([[2.0, np.inf]]))
    assert out[0, 0] == pytest.approx(2.0 / 0.25)
    assert np.isposinf(out[0, 1])
    # With pi(1|s) > 0 the infinite pair is reachable from (s,0) too.
    out = propagate_pairs(mdp, np.array([[0.5, 0.5]]), np.array([[2.0, np.inf]]))
    assert np.isposinf(out).all()


# --- (a) Theorems 3.1 and 3.2 as statistical statements against the true MDP ----------------


def _statistical_setup() -> tuple[TabularMDP, np.ndarray, np.ndarray]:
    mdp = random_mdp(3, 2, np.random.default_rng(2024), gamma=0.9, reward_range=(-0.8, 0.8))
    # Every action has probability >= 0.3, so 300 transitions cover all 6 pairs.
    beta = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    pi = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    return mdp, beta, pi


def test_theorem_3_1_failure_rate_at_threshold_is_at_most_delta() -> None:
    mdp, beta, pi = _statistical_setup()
    rng = np.random.default_rng(11)
    fail_at_threshold = fail_at_zero = fail_event = 0
    for _ in range(N_DATASETS):
        data = sample_dataset(mdp, beta, 300, rng, reward_noise=0.2)
        emp = EmpiricalMDP.from_dataset(data, mdp.gamma)
        assert emp.seen.all(), "the design covers every pair; a miss would change the test"
        at_zero = theorem_3_1(emp, mdp, pi, 0.0, r_max=R_MAX, delta=DELTA)
        at_thr = theorem_3_1(emp, mdp, pi, at_zero.alpha_threshold, r_max=R_MAX, delta=DELTA)
        fail_at_threshold += not at_thr.conclusion_holds
        fail_at_zero += not at_zero.conclusion_holds
        fail_event += not concentration_event(emp, mdp, at_thr.constants).holds
    rates = (fail_at_threshold / N_DATASETS, fail_at_zero / N_DATASETS, fail_event / N_DATASETS)
    # Thm 3.1: with prob >= 1 - delta, Q_hat <= Q^pi on D once alpha reaches the threshold.
    assert rates[0] <= DELTA, f"failure rates (threshold, alpha=0, event) = {rates}"
    assert rates[2] <= DELTA, rates
    # Without the penalty CQL(1) is FQE in M_hat and over-estimates often: the check has teeth.
    assert rates[1] > 0.2, rates


def test_theorem_3_2_failure_rate_at_threshold_is_at_most_delta() -> None:
    mdp, beta, pi = _statistical_setup()
    rng = np.random.default_rng(12)
    fail_at_threshold = fail_at_zero = 0
    for _ in range(N_DATASETS):
        data = sample_dataset(mdp, beta, 300, rng, reward_noise=0.2)
        emp = EmpiricalMDP.from_dataset(data, mdp.gamma)
        assert emp.seen.all()
        at_zero = theorem_3_2(emp, mdp, pi, 0.0, r_max=R_MAX, delta=DELTA)
        at_thr = theorem_3_2(emp, mdp, pi, at_zero.alpha_threshold, r_max=R_MAX, delta=DELTA)
        fail_at_threshold += not at_thr.conclusion_holds
        fail_at_zero += not at_zero.conclusion_holds
    rate, rate0 = fail_at_threshold / N_DATASETS, fail_at_zero / N_DATASETS
    assert rate <= DELTA, f"V_hat <= V^pi failed on {rate:.3f} of datasets (alpha=0: {rate0:.3f})"
    assert rate0 > 0.2, rate0


# --- Theorem 3.1: properties on random instances ---------------------------------------------


@settings(max_examples=200)
@given(problem=offline_problems(), frac=st.floats(0.0, 3.0), data=st.data())
def test_theorem_3_1_properties(problem: OfflineProblem, frac: float, data: st.DataObject) -> None:
    mdp, emp = problem.mdp, problem.emp
    pi = data.draw(policies(problem.n_states, problem.n_actions))
    mu = data.draw(supported_policies(emp))
    base = theorem_3_1(emp, mdp, pi, 0.0, r_max=R_MAX, mu=mu)
    base.check()
    thr = base.alpha_threshold
    assert base.vacuous == (thr == np.inf)
    alpha = frac * thr if np.isfinite(thr) else 10.0 * frac
    r = theorem_3_1(emp, mdp, pi, alpha, r_max=R_MAX, mu=mu)
    # Every "always" statement: the premise gives the bound at every pair, alpha above the
    # threshold puts the right-hand side below Q^pi on D, and the two give the conclusion.
    r.check()
    np.testing.assert_allclose(r.rhs, r.q_pi - r.penalty + r.sampling)
    # The threshold is the smallest such alpha: just below it some pair of D has rhs > Q^pi.
    rows = np.repeat(r.checked[:, None], problem.n_actions, axis=1)
    if 0 < thr < np.inf:
        below = theorem_3_1(emp, mdp, pi, 0.99 * thr, r_max=R_MAX, mu=mu)
        assert np.any((below.rhs > below.q_pi)[rows])


# --- Theorem 3.2: properties on random instances ---------------------------------------------


@settings(max_examples=200)
@given(problem=offline_problems(), frac=st.floats(0.0, 3.0), data=st.data())
def test_theorem_3_2_properties(problem: OfflineProblem, frac: float, data: st.DataObject) -> None:
    mdp, emp = problem.mdp, problem.emp
    pi = data.draw(supported_policies(emp))
    base = theorem_3_2(emp, mdp, pi, 0.0, r_max=R_MAX)
    base.check()
    D = base.d_cql
    # D_CQL is the chi-square divergence sum (pi - pi_beta_hat)^2 / pi_beta_hat >= 0 on D.
    chi2 = np.sum(
        np.divide((pi - emp.pi_beta) ** 2, emp.pi_beta, out=np.zeros_like(pi), where=emp.seen),
        axis=1,
    )
    np.testing.assert_allclose(D[emp.seen_states], chi2[emp.seen_states], atol=1e-12)
    thr = base.alpha_threshold
    assert base.vacuous == (thr == np.inf)
    # sum_a pi/sqrt(n(s,a)) >= 1/sqrt(n(s)): the paper's printed threshold is never larger
    # than the sufficient one.
    assert base.alpha_paper <= base.alpha_sufficient * (1 + 1e-9)
    alpha = frac * thr if np.isfinite(thr) else 10.0 * frac
    r = theorem_3_2(emp, mdp, pi, alpha, r_max=R_MAX)
    r.check()
    if 0 < thr < np.inf:
        below = theorem_3_2(emp, mdp, pi, 0.99 * thr, r_max=R_MAX)
        assert np.any((below.rhs > below.v_pi)[below.checked])


# --- (b) CQL(2): the value is bounded, pointwise Q is not ------------------------------------


def test_cql2_pointwise_q_exceeds_true_q_while_value_is_bounded() -> None:
    # Found by searching seeds 0..299 of this construction (2 states, 2 actions, 30 noisy
    # transitions) for a dataset where, at Theorem 3.2's alpha threshold, the value bound holds
    # and some Q_hat(s, a) > Q^pi(s, a).
    rng = np.random.default_rng(109)
    mdp = random_mdp(2, 2, rng, gamma=0.9, reward_range=(-0.8, 0.8))
    beta = random_policy(2, 2, rng)
    pi = random_policy(2, 2, rng)
    data = sample_dataset(mdp, beta, 30, rng, reward_noise=0.2)
    emp = EmpiricalMDP.from_dataset(data, mdp.gamma)
    assert emp.seen.all()
    alpha = theorem_3_2(emp, mdp, pi, 0.0, r_max=R_MAX).alpha_threshold
    r = theorem_3_2(emp, mdp, pi, alpha, r_max=R_MAX)
    assert r.bound_holds and r.conclusion_holds  # V_hat <= V^pi on both states
    assert not r.pointwise_conclusion_holds
    s, a = np.unravel_index(np.argmax(r.q_hat - r.q_pi), r.q_hat.shape)
    # Why: pi(a|s) < pi_beta_hat(a|s), so the penalty alpha (pi/pi_beta_hat - 1) is negative
    # there and CQL(2) pushes Q_hat(s, a) *up*; only the pi-average is pushed down (D_CQL >= 0).
    assert pi[s, a] < emp.pi_beta[s, a]
    assert r.q_hat[s, a] - r.q_pi[s, a] > 1.0


def test_cql2_pointwise_overestimate_hand_worked() -> None:
    # One state, two actions, no sampling error (B_hat = B), gamma = 0.3, pi_beta_hat = (1/2, 1/2),
    # pi = (1, 0). Penalty pi/pi_beta_hat - 1 = (1, -1); D_CQL = 1*(2 - 1) = 1. The fixed point is
    # Q_hat = Q^pi - alpha (I - gamma P^pi)^{-1} penalty with
    # (I - gamma P^pi)^{-1} penalty = penalty + gamma/(1 - gamma) D_CQL = (1 + 3/7, -1 + 3/7).
    # So Q_hat(s,1) = Q^pi(s,1) + alpha 4/7 > Q^pi(s,1), while V_hat = V^pi - alpha/(1-gamma).
    gamma, alpha = 0.3, 2.0
    problem = exact_problem(np.array([[[3], [3]]]), np.array([[0.5, -0.25]]), gamma)
    mdp, emp = problem.mdp, problem.emp
    pi = np.array([[1.0, 0.0]])
    r = theorem_3_2(emp, mdp, pi, alpha, r_max=R_MAX)
    assert r.q_hat[0, 1] - r.q_pi[0, 1] == pytest.approx(alpha * 4 / 7)
    assert r.q_hat[0, 0] - r.q_pi[0, 0] == pytest.approx(-alpha * 10 / 7)
    assert r.v_hat[0] - r.v_pi[0] == pytest.approx(-alpha / (1 - gamma))
    assert r.conclusion_holds and not r.pointwise_conclusion_holds


# --- (c) no sampling error: any alpha > 0 gives a lower bound --------------------------------


@settings(max_examples=200)
@given(problem=exact_problems(), alpha=st.floats(1e-3, 100.0), data=st.data())
def test_no_sampling_error_any_alpha_gives_lower_bounds(
    problem: OfflineProblem, alpha: float, data: st.DataObject
) -> None:
    mdp, emp, gamma = problem.mdp, problem.emp, problem.mdp.gamma
    pi = data.draw(policies(problem.n_states, problem.n_actions, deterministic=False))
    mu = data.draw(policies(problem.n_states, problem.n_actions, deterministic=False))
    scale = (R_MAX + alpha * float(np.max(mu / emp.pi_beta))) / (1 - gamma)
    # CQL(1): in the empirical MDP (= the true one here) Theorem 3.1 holds with equality.
    r1 = theorem_3_1(emp, mdp, pi, alpha, r_max=R_MAX, mu=mu)
    np.testing.assert_allclose(r1.q_hat, r1.q_pi - r1.penalty, atol=1e-9 * scale)
    assert r1.conclusion_holds
    assert np.all(r1.q_hat < r1.q_pi)  # strict: the penalty is positive on every pair
    # CQL(2) with mu = pi: V_hat = V^pi - alpha (I - gamma P_pi)^{-1} D_CQL <= V^pi.
    r2 = theorem_3_2(emp, mdp, pi, alpha, r_max=R_MAX)
    scale2 = (R_MAX + alpha * float(np.max(pi / emp.pi_beta))) / (1 - gamma)
    np.testing.assert_allclose(r2.v_hat, r2.v_pi - r2.penalty, atol=1e-9 * scale2)
    assert r2.conclusion_holds


# --- (d) Theorem 3.4: gap expansion ---------------------------------------------------------


_GAP_PROBLEMS = offline_problems(
    n_actions=st.integers(2, 3), transitions_per_pair=st.integers(1, 20), reward_noise=0.0
)


@settings(max_examples=200)
@given(
    problem=_GAP_PROBLEMS,
    seed=seeds,
    frac=st.one_of(st.floats(0.0, 0.97), st.floats(1.03, 4.0)),
    data=st.data(),
)
def test_gap_expansion_step_matches_the_cql_update(
    problem: OfflineProblem, seed: int, frac: float, data: st.DataObject
) -> None:
    emp, S, A = problem.emp, problem.n_states, problem.n_actions
    rng = np.random.default_rng(seed)
    q_hat = rng.normal(scale=3.0, size=(S, A))
    q = rng.normal(scale=3.0, size=(S, A))
    pi = data.draw(policies(S, A))
    mu = data.draw(supported_policies(emp))
    thr = gap_expansion_step(emp, q_hat, q, pi, mu, 0.0).alpha_threshold
    alpha = frac * thr if 0 < thr < np.inf else 0.1 + 5.0 * frac
    step = gap_expansion_step(emp, q_hat, q, pi, mu, alpha)
    # Independent computation: one exact CQL(2)-style update with mu fixed (theory.cql), and the
    # unregularised backup of Q^k; then the gaps E_{pi_beta_hat}[.] - E_mu[.].
    q_hat_next = cql_iterate(emp, pi, alpha, 1, mu=mu, variant="cql2", q0=q_hat).q[1]
    q_next = bellman(emp.mdp, q, pi)
    gap_hat = np.sum((emp.pi_beta - mu) * q_hat_next, axis=1)
    gap = np.sum((emp.pi_beta - mu) * q_next, axis=1)
    tol = 1e-9 * (1 + alpha)
    np.testing.assert_allclose(step.q_hat_next, q_hat_next, atol=tol)
    np.testing.assert_allclose(step.gap_hat - step.gap, gap_hat - gap, atol=tol)
    on_d = step.checked
    margin = (gap_hat - gap)[on_d]
    np.testing.assert_allclose(margin, (alpha * step.d_cql_mu - step.backup_term)[on_d], atol=tol)
    # Theorem 3.4 with its condition made exact: alpha above the threshold expands every gap on
    # D; below a positive threshold some state's gap shrinks. States where the margin is at
    # round-off level (e.g. one state: the backup term is mathematically 0) are ties.
    robust = np.abs(margin) > tol
    step.check()
    if alpha > thr:
        assert np.all(margin[robust] > 0)
    elif np.isfinite(thr) and thr > tol and alpha < thr:
        assert np.any(margin[robust] < 0)


@settings(max_examples=200)
@given(
    problem=offline_problems(n_actions=st.integers(2, 3), transitions_per_pair=10),
    seed=seeds,
    alpha=st.floats(1e-3, 20.0),
    data=st.data(),
)
def test_gap_expands_for_any_alpha_from_a_common_start(
    problem: OfflineProblem, seed: int, alpha: float, data: st.DataObject
) -> None:
    # k = 0 with Q_hat^0 = Q^0 and the same empirical backup: backup_term = 0, so any alpha > 0
    # expands the gap exactly where mu_k differs from pi_beta_hat (D_CQL(mu_k) > 0).
    emp, S, A = problem.emp, problem.n_states, problem.n_actions
    q0 = np.random.default_rng(seed).normal(size=(S, A))
    pi, mu = data.draw(policies(S, A)), data.draw(supported_policies(emp))
    step = gap_expansion_step(emp, q0, q0, pi, mu, alpha)
    step.check()
    on_d = step.checked
    np.testing.assert_allclose(step.backup_term[on_d], 0.0, atol=1e-12)
    np.testing.assert_array_equal(step.expands[on_d], step.d_cql_mu[on_d] > 1e-13)


@settings(max_examples=60)
@given(
    problem=offline_problems(
        n_states=st.integers(2, 4), n_actions=st.integers(2, 3), transitions_per_pair=20
    ),
    alpha=st.floats(0.05, 5.0),
)
def test_gap_expansion_along_the_control_loop(problem: OfflineProblem, alpha: float) -> None:
    mdp, emp = problem.mdp, problem.emp
    res = cql_control(emp, alpha, 3, mdp=mdp)
    for reference, q_ref in ((None, res.q_empirical), (mdp, res.q_true)):
        assert q_ref is not None
        for k, step in enumerate(gap_expansion_along_control(emp, res, reference=reference)):
            # Both iterates are fixed points of their backups: the step returns them unchanged,
            # so the statement is checked at (Q_hat^k, Q^k) themselves.
            np.testing.assert_allclose(step.q_hat_next, res.q_hat[k], atol=1e-7)
            np.testing.assert_allclose(step.q_next, q_ref[k], atol=1e-7)
            mu = masked_softmax(res.q_hat[k], emp.seen, res.temperature)
            on_d = emp.seen_states
            gap_hat = np.sum((emp.pi_beta - mu) * res.q_hat[k], axis=1)[on_d]
            gap = np.sum((emp.pi_beta - mu) * q_ref[k], axis=1)[on_d]
            step.check()
            # The exact condition decides the statement (ties aside).
            if abs(alpha - step.alpha_threshold) > 1e-6 * (1 + abs(alpha)):
                assert step.condition_holds == bool(np.all(gap_hat > gap))
    # Theorem 3.6's bound for the loop's last policy (not the Eq. 6 optimum, so only the proof's
    # zeta, which holds for any pi on the concentration event, is claimed).
    if emp.seen.all():
        r = safe_policy_improvement(emp, mdp, alpha, r_max=R_MAX, pi=res.policies[-1])
        r.check(eq6_optimum=False)
        if r.concentration.holds:
            assert r.emp_error_pi <= r.sampling_pi and r.holds_proof


def test_gap_expansion_fails_when_alpha_is_below_the_threshold() -> None:
    # A named instance where Theorem 3.4's condition fails along the control loop: at k = 1,
    # mu_1 = softmax(Q_hat^1) is within D_CQL = 6e-4 of pi_beta_hat at state 1, so alpha = 1 is
    # below the exact threshold (~3.6) and the gap at state 1 *shrinks*. (Seed found by search.)
    rng = np.random.default_rng(5)
    mdp = random_mdp(2, 2, rng, gamma=0.9)
    emp = EmpiricalMDP.from_dataset(sample_dataset(mdp, np.full((2, 2), 0.5), 100, rng), 0.9)
    res = cql_control(emp, 1.0, 3)
    step = gap_expansion_along_control(emp, res)[1]
    assert not step.condition_holds and step.alpha_threshold > 3.0
    assert step.expands[0] and not step.expands[1]
    assert step.d_cql_mu[1] < 1e-3 and step.backup_term[1] > 0
    # The same update with alpha_k above the threshold (Q_hat^1, Q^1 fixed) expands both gaps.
    mu = masked_softmax(res.q_hat[1], emp.seen, res.temperature)
    larger = gap_expansion_step(
        emp, res.q_hat[1], res.q_empirical[1], res.policies[1], mu, 1.01 * step.alpha_threshold
    )
    assert larger.condition_holds and larger.expands_everywhere


def test_gap_expansion_with_mu_equal_to_pi_beta_has_no_large_enough_alpha() -> None:
    # mu_k = pi_beta_hat: D_CQL(mu_k) = 0, the regulariser cancels in the gap, and the gap
    # difference is -backup_term whatever alpha is: threshold +inf where backup_term >= 0.
    rng = np.random.default_rng(3)
    emp = offline_problem(rng, 3, 2, 20).emp
    q_hat = rng.normal(size=(3, 2))
    q = q_hat + rng.normal(size=(3, 2))
    pi = random_policy(3, 2, rng)
    steps = [gap_expansion_step(emp, q_hat, q, pi, emp.pi_beta, a) for a in (0.0, 1.0, 1e6)]
    np.testing.assert_allclose(steps[0].gap_hat - steps[0].gap, steps[2].gap_hat - steps[2].gap)
    assert np.all(steps[0].d_cql_mu == 0)
    if np.any(steps[0].backup_term >= 0):
        assert steps[0].alpha_threshold == np.inf and not steps[2].condition_holds


# --- (d) Theorems 3.5 / 3.6: Eq. 6 and safe policy improvement -------------------------------


def test_eq6_policy_hand_worked_bandit() -> None:
    # One state, pi_beta_hat = (1/2, 1/2), r = (1, 0). Eq. 6 per step: p - alpha (2p^2 +
    # 2(1-p)^2 - 1) with p = pi(0); derivative 1 - alpha (8p - 4) = 0 => p = 1/2 + 1/(8 alpha),
    # capped at 1 (alpha <= 1/4).
    emp = exact_problem(np.array([[[5], [5]]]), np.array([[1.0, 0.0]]), 0.6).emp
    for alpha, p in ((1.0, 0.625), (0.5, 0.75), (0.2, 1.0), (0.0, 1.0)):
        np.testing.assert_allclose(eq6_policy(emp, alpha), [[p, 1 - p]], atol=1e-9)


@settings(max_examples=200)
@given(
    problem=offline_problems(reward_noise=0.0),
    alpha=st.one_of(st.just(0.0), st.floats(0.01, 10.0)),
    data=st.data(),
)
def test_safe_policy_improvement_properties(
    problem: OfflineProblem, alpha: float, data: st.DataObject
) -> None:
    mdp, emp = problem.mdp, problem.emp
    r = safe_policy_improvement(emp, mdp, alpha, r_max=R_MAX)
    r.check()
    tol = 1e-7 * (1 + abs(r.j_pi_emp) + r.penalty_emp)
    # The last clause of Thm 3.6: for the Eq. 6 optimum, improvement in M_hat >= penalty.
    assert r.improvement_condition
    # Thm 3.5: the Eq. 6 objective J(pi, M_hat) - alpha/(1-gamma) E[D_CQL] is the CQL(2) value.
    obj = eq6_objective(emp, r.pi, alpha, mdp.d0)
    assert obj == pytest.approx(r.j_pi_emp - r.penalty_emp, abs=tol)
    # pi* maximises Eq. 6: no supported perturbation does better.
    for eps in (0.5, 0.05):
        other = (1 - eps) * r.pi + eps * data.draw(supported_policies(emp))
        assert eq6_objective(emp, other, alpha, mdp.d0) <= obj + tol
    # On the concentration event: |J(., M_hat) - J(., M)| <= sampling(.) for pi* and pi_beta_hat,
    # hence the theorem with the proof's zeta; the paper's 2 sampling(pi*) covers it when
    # sampling(pi*) >= sampling(pi_beta_hat).
    if r.concentration.holds:
        assert r.emp_error_pi <= r.sampling_pi + tol
        assert r.emp_error_beta <= r.sampling_beta + tol
        assert r.holds_proof
        if r.sampling_pi >= r.sampling_beta:
            assert r.holds_paper
    assert r.coverage == bool(np.isfinite(r.zeta_paper))


def test_safe_improvement_without_conservatism_can_make_things_worse() -> None:
    # A named instance (seed found by search, 30 transitions): with alpha = 0 the policy that is
    # optimal in M_hat promises +4.7 over pi_beta_hat but is *worse* in the true MDP. Theorem 3.6
    # still holds because zeta's sampling term covers the gap; with alpha > 0, Eq. 6 keeps pi*
    # near pi_beta_hat and the true improvement is positive.
    rng = np.random.default_rng(73)
    mdp = random_mdp(3, 2, rng, gamma=0.9)
    beta = rng.dirichlet(np.ones(2) * 2, size=3)
    emp = EmpiricalMDP.from_dataset(sample_dataset(mdp, beta, 30, rng), 0.9)
    naive = safe_policy_improvement(emp, mdp, 0.0, r_max=R_MAX)
    assert naive.improvement_emp > 4.0 and naive.j_pi < naive.j_beta
    assert naive.holds_paper and naive.holds_proof
    for alpha in (0.1, 0.3, 1.0):
        r = safe_policy_improvement(emp, mdp, alpha, r_max=R_MAX)
        assert r.j_pi > r.j_beta and r.holds_paper


def test_safe_improvement_non_vacuous_with_enough_data() -> None:
    # With gamma = 0.5 and 10^5 transitions the sampling term is small enough that zeta < 0:
    # Theorem 3.6 then *guarantees* a strict improvement, and the true MDP agrees.
    rng = np.random.default_rng(0)
    mdp = random_mdp(2, 2, rng, gamma=0.5)
    emp = EmpiricalMDP.from_dataset(sample_dataset(mdp, np.full((2, 2), 0.5), 100_000, rng), 0.5)
    r = safe_policy_improvement(emp, mdp, 0.1, r_max=R_MAX)
    assert r.concentration.holds and r.zeta_paper < 0 and r.zeta_proof < 0
    assert r.j_pi - r.j_beta >= -r.zeta_paper > 0


def test_paper_zeta_can_be_below_the_proof_zeta() -> None:
    # The paper writes 2 sampling(pi*) for sampling(pi*) + sampling(pi_beta_hat); when pi*
    # visits better-sampled states than pi_beta_hat the paper's zeta is the smaller one.
    # (Seed 11 of a search over random 2-4 state instances.)
    rng = np.random.default_rng(11)
    S, A = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    mdp = random_mdp(S, A, rng, gamma=0.9)
    beta = rng.dirichlet(np.ones(A) * 2, size=S)
    data = sample_dataset(mdp, beta, int(rng.integers(5, 40)) * S * A, rng)
    emp = EmpiricalMDP.from_dataset(data, 0.9)
    r = safe_policy_improvement(emp, mdp, float(rng.choice([0.0, 0.1, 1.0, 5.0])), r_max=R_MAX)
    assert r.sampling_pi < r.sampling_beta and r.zeta_paper < r.zeta_proof
    assert r.holds_paper  # still true here: both zetas are far above the true gap


def test_safe_improvement_without_coverage_is_vacuous() -> None:
    # State 2 is never a current state in D but d0 puts mass on it: no sampling bound there,
    # zeta = +inf (the statement says nothing), reported as such.
    mdp = random_mdp(3, 2, np.random.default_rng(4), gamma=0.9)
    s = np.array([0, 0, 1, 1, 0, 1])
    a = np.array([0, 1, 0, 1, 0, 1])
    s2 = np.array([1, 2, 0, 1, 1, 0])
    emp = EmpiricalMDP.from_transitions(3, 2, s, a, mdp.R[s, a], s2, 0.9, r_max=R_MAX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = safe_policy_improvement(emp, mdp, 1.0, r_max=R_MAX)
    assert not r.coverage and r.zeta_paper == np.inf and r.holds_paper


# --- infinite thresholds, coverage, and input errors ----------------------------------------


def test_thresholds_are_infinite_when_pi_equals_pi_beta_hat() -> None:
    problem = offline_problem(np.random.default_rng(1), 3, 2, 30)
    mdp, emp = problem.mdp, problem.emp
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent division by zero
        r = theorem_3_2(emp, mdp, emp.pi_beta, 5.0, r_max=R_MAX)
    np.testing.assert_allclose(r.d_cql, 0.0, atol=1e-15)
    assert r.alpha_threshold == r.alpha_sufficient == r.alpha_paper == np.inf
    # No penalty: CQL(2) of pi_beta_hat is plain evaluation in M_hat, whatever alpha is.
    np.testing.assert_allclose(r.penalty, 0.0, atol=1e-12)


def test_theorem_3_1_with_a_reachable_unseen_pair() -> None:
    # Action 1 is never taken at state 1, yet pi takes it: the sampling term is +inf on every
    # pair that reaches (1, 1), the bound is vacuous there, and no alpha makes it a lower bound.
    mdp = random_mdp(2, 2, np.random.default_rng(8), gamma=0.9)
    s = np.array([0, 0, 1, 0, 1])
    a = np.array([0, 1, 0, 0, 0])
    s2 = np.array([1, 0, 1, 1, 0])
    emp = EmpiricalMDP.from_transitions(2, 2, s, a, mdp.R[s, a], s2, 0.9, r_max=R_MAX)
    pi = np.full((2, 2), 0.5)
    mu = np.array([[0.5, 0.5], [1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = theorem_3_1(emp, mdp, pi, 1.0, r_max=R_MAX, mu=mu)
    assert np.isposinf(r.sampling).all() and r.alpha_threshold == np.inf
    assert r.bound_holds  # Q_hat <= +inf
    # mu has a zero at a pair the propagation touches: the pointwise form is infinite too.
    assert r.alpha_sufficient == np.inf


def test_input_errors_name_the_problem() -> None:
    rng = np.random.default_rng(2)
    problem = offline_problem(rng, 3, 2, 20)
    mdp, emp = problem.mdp, problem.emp
    pi = random_policy(3, 2, rng)
    with pytest.raises(ValueError, match="alpha"):
        theorem_3_1(emp, mdp, pi, -0.5, r_max=R_MAX)
    with pytest.raises(ValueError, match="alpha"):
        theorem_3_2(emp, mdp, pi, float("nan"), r_max=R_MAX)
    with pytest.raises(ValueError, match="delta"):
        theorem_3_1(emp, mdp, pi, 1.0, r_max=R_MAX, delta=1.0)
    with pytest.raises(ValueError, match="r_max"):
        theorem_3_1(emp, mdp, pi, 1.0, r_max=0.0)
    with pytest.raises(ValueError, match=r"true R\[\d, \d\] = .* exceeds r_max"):
        theorem_3_1(emp, mdp, pi, 1.0, r_max=0.01)
    with pytest.raises(ValueError, match="mu = pi"):
        theorem_3_2(emp, mdp, pi, 1.0, r_max=R_MAX, mu=random_policy(3, 2, rng))
    other = random_mdp(4, 2, rng)
    with pytest.raises(InvalidMDPError, match=r"\(S, A\)"):
        theorem_3_1(emp, other, np.full((4, 2), 0.5), 1.0, r_max=R_MAX)
    with pytest.raises(ValueError, match="alpha"):
        safe_policy_improvement(emp, mdp, -1.0, r_max=R_MAX)
    with pytest.raises(ValueError, match="alpha"):
        gap_expansion_step(emp, np.zeros((3, 2)), np.zeros((3, 2)), pi, pi, -2.0)


def test_states_outside_d_and_unsupported_mu_are_refused() -> None:
    mdp = random_mdp(3, 2, np.random.default_rng(6), gamma=0.9)
    # State 2 never occurs as a current state; action 1 never at state 1.
    s = np.array([0, 0, 1, 1, 0])
    a = np.array([0, 1, 0, 0, 1])
    s2 = np.array([1, 2, 0, 2, 1])
    emp = EmpiricalMDP.from_transitions(3, 2, s, a, mdp.R[s, a], s2, 0.9, r_max=R_MAX)
    pi = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="state 2 is not in D"):
        theorem_3_1(emp, mdp, pi, 1.0, r_max=R_MAX, states=[0, 2])
    with pytest.raises(ValueError, match="state 2 is not in D"):
        theorem_3_2(emp, mdp, pi, 1.0, r_max=R_MAX, states=[2])
    r = theorem_3_1(emp, mdp, pi, 1.0, r_max=R_MAX)
    np.testing.assert_array_equal(r.checked, [True, True, False])
    with pytest.raises(ValueError, match="state 2"):
        r.at(2, 0)
    assert r.at(0, 1)[2] == bool(r.holds[0, 1])
    r2 = theorem_3_2(emp, mdp, pi, 1.0, r_max=R_MAX)
    with pytest.raises(ValueError, match="state 2"):
        r2.at(2)
    # mu (or pi for CQL(2)) on the action D never took at state 1:
    bad = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(InvalidMDPError, match=r"mu\[1, 1\].*never appears at state 1"):
        theorem_3_1(emp, mdp, pi, 1.0, r_max=R_MAX, mu=bad)
    with pytest.raises(InvalidMDPError, match=r"pi\[1, 1\]"):
        theorem_3_2(emp, mdp, bad, 1.0, r_max=R_MAX)
    with pytest.raises(InvalidMDPError, match=r"mu\[1, 1\]"):
        gap_expansion_step(emp, np.zeros((3, 2)), np.zeros((3, 2)), pi, bad, 1.0)
    with pytest.raises(InvalidMDPError, match=r"pi\[1, 1\]"):
        d_cql(emp, bad)
    # The control result without a true MDP cannot be compared with the true MDP.
    res = cql_control(emp, 1.0, 1)
    with pytest.raises(ValueError, match="q_true"):
        gap_expansion_along_control(emp, res, reference=mdp)


# ------------------------------------------------------------- Theorem 3.3: a slow policy


@settings(max_examples=200)
@given(
    problem=offline_problems(n_actions=st.integers(2, 4)),
    seed=seeds,
    move=st.one_of(st.just(0.0), st.floats(0.0, 0.05), st.floats(0.0, 1.0)),
    alpha=st.floats(0.0, 20.0),
    data=st.data(),
)
def test_theorem_3_3_slow_policy_keeps_the_lower_bound(
    problem: OfflineProblem, seed: int, move: float, alpha: float, data: st.DataObject
) -> None:
    emp, S, A = problem.emp, problem.n_states, problem.n_actions
    rng = np.random.default_rng(seed)
    q_hat = rng.normal(scale=2.0, size=(S, A))
    pi = data.draw(policies(S, A))
    mu = np.where(emp.seen_states[:, None], masked_softmax(q_hat, emp.seen), emp.pi_beta)
    # The next policy: a step of size `move` from mu_k towards another supported policy.
    pi_next = (1.0 - move) * mu + move * data.draw(supported_policies(emp))
    step = slow_policy_step(emp, q_hat, pi, pi_next, alpha)
    step.check()
    # Independently: the CQL(H) update is the CQL(2) update with mu = softmax(Q_hat^k).
    q_hat_next = cql_iterate(emp, pi, alpha, 1, mu=mu, variant="cql2", q0=q_hat).q[1]
    backup = bellman(emp.mdp, q_hat, pi)
    on_d = step.checked
    tol = 1e-9 * (1.0 + alpha) * (1.0 + np.abs(backup).max())
    np.testing.assert_allclose(step.mu[on_d], mu[on_d], atol=1e-12)
    v_hat, v = np.sum(pi_next * q_hat_next, axis=1), np.sum(pi_next * backup, axis=1)
    np.testing.assert_allclose(step.v_hat_next[on_d], v_hat[on_d], atol=tol)
    np.testing.assert_allclose(step.v_next[on_d], v[on_d], atol=tol)
    assert np.all((v - v_hat)[step.premise] >= -tol)  # the theorem, recomputed
    assert np.all(step.tv[on_d] <= move + 1e-12)  # TV((1 - m) mu + m nu, mu) = m TV(nu, mu)
    if move == 0.0:  # pi^{k+1} = mu_k: D_CQL >= 0, so the premise holds on all of D
        assert step.premise_everywhere and step.epsilon == 0.0


def _two_action_state(q_gap: float) -> tuple[EmpiricalMDP, np.ndarray]:
    """One state, two actions taken equally often (pi_beta_hat = 1/2, 1/2), and a Q_hat^k
    whose softmax is mu_k = (0.6, 0.4) when q_gap = log 1.5."""
    problem = exact_problem(np.ones((1, 2, 1), dtype=int), np.array([[1.0, 2.0]]), 0.9)
    return problem.emp, np.array([[q_gap, 0.0]])


def test_theorem_3_3_fails_when_the_policy_moves_too_fast() -> None:
    emp, q_hat = _two_action_state(np.log(1.5))
    pi = np.array([[0.5, 0.5]])
    # x = mu/pi_beta = (1.2, 0.8), D_CQL(mu) = 0.04: the premise allows a move of
    # TV <= 0.04 / 1.2; moving mass t from action 0 to 1 changes E[x - 1] by -0.4 t.
    slow = slow_policy_step(emp, q_hat, pi, np.array([[0.58, 0.42]]), alpha=1.0)
    np.testing.assert_allclose(slow.mu, [[0.6, 0.4]])
    np.testing.assert_allclose(slow.d_cql_mu, [0.04])
    assert slow.premise_everywhere and slow.lower_bound.all()
    np.testing.assert_allclose(slow.v_next - slow.v_hat_next, [0.04 - 0.4 * 0.02])
    # Beyond the premise (TV 0.05) the bound still holds here (the premise is sufficient)...
    between = slow_policy_step(emp, q_hat, pi, np.array([[0.55, 0.45]]), alpha=1.0)
    assert not between.premise.any() and between.lower_bound.all()
    # ...but a policy that jumps (TV 0.6, all mass on the action mu_k under-weights) breaks it.
    fast = slow_policy_step(emp, q_hat, pi, np.array([[0.0, 1.0]]), alpha=1.0)
    assert not fast.premise.any() and not fast.lower_bound.any()
    np.testing.assert_allclose(fast.v_next - fast.v_hat_next, [-0.2])
    fast.check()  # the "always" statements still hold: the premise is simply not met
    assert fast.vacuous and not slow.vacuous
