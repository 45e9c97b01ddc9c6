"""Tests of theory.mdp: validation, exact policy evaluation, value iteration, named MDPs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import bench
from theory import mdp as mdp_module
from theory.mdp import (
    InvalidMDPError,
    TabularMDP,
    auto_method,
    bellman,
    chain_mdp,
    expected_return,
    greedy_policy,
    gridworld,
    iterative_policy_evaluation,
    policy_evaluation,
    policy_transition,
    random_mdp,
    random_policy,
    solve_discounted,
    state_values,
    two_state_mdp,
    uniform_policy,
    validate_policy,
    value_iteration,
)

# --- helpers ------------------------------------------------------------------------------


def _valid_parts() -> tuple[np.ndarray, np.ndarray]:
    """A valid 3-state, 2-action (P, R) that each validation test corrupts in one place."""
    P = np.zeros((3, 2, 3))
    P[:, 0, 0] = 1.0
    P[:, 1, :] = [0.25, 0.25, 0.5]
    R = np.arange(6.0).reshape(3, 2)
    return P, R


def _sparse(P: np.ndarray) -> sp.csr_array:
    S, A, _ = P.shape
    return sp.csr_array(P.reshape(S * A, S))


def _bellman_residual(mdp: TabularMDP, pi: np.ndarray, q: np.ndarray) -> float:
    # Written out with a dense P so that it does not share code with the solver under test.
    P = mdp.dense_P()
    target = mdp.R + mdp.gamma * np.einsum("sat,t->sa", P, np.sum(pi * q, axis=1))
    return float(np.max(np.abs(q - target)))


# --- TabularMDP validation ----------------------------------------------------------------


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_valid_mdp_is_accepted_and_stored_in_its_layout(storage: str) -> None:
    P, R = _valid_parts()
    mdp = TabularMDP(_sparse(P) if storage == "sparse" else P, R, 0.5)
    assert mdp.is_sparse == (storage == "sparse")
    assert (mdp.n_states, mdp.n_actions) == (3, 2)
    np.testing.assert_array_equal(mdp.dense_P(), P)
    np.testing.assert_array_equal(
        np.asarray(mdp.P_flat.toarray() if mdp.is_sparse else mdp.P_flat), P.reshape(6, 3)
    )
    np.testing.assert_allclose(mdp.d0, np.full(3, 1 / 3))  # uniform when omitted


def test_R_must_be_two_dimensional() -> None:
    P, _ = _valid_parts()
    with pytest.raises(
        InvalidMDPError, match=re.escape("R must have shape (S, A), got shape (6,)")
    ):
        TabularMDP(P, np.zeros(6), 0.9)


def test_dense_P_shape_must_match_R() -> None:
    P, R = _valid_parts()
    with pytest.raises(
        InvalidMDPError, match=re.escape("(3, 2, 3) to match R (3, 2), got (3, 2, 2)")
    ):
        TabularMDP(P[:, :, :2], R, 0.9)


def test_sparse_P_shape_must_be_SA_by_S() -> None:
    P, R = _valid_parts()
    wrong = sp.csr_array(P.reshape(6, 3)[:5])
    with pytest.raises(
        InvalidMDPError, match=re.escape("(S*A, S) = (6, 3) to match R (3, 2), got (5, 3)")
    ):
        TabularMDP(wrong, R, 0.9)


def test_sparse_P_must_be_two_dimensional() -> None:
    P, R = _valid_parts()
    with pytest.raises(InvalidMDPError, match=re.escape("sparse P must be 2-D")):
        TabularMDP(sp.coo_array(P), R, 0.9)


@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.25, r"P\[1, 1, 2\] = -0\.25 is negative"),
        (np.nan, r"P\[1, 1, 2\] = nan is not finite"),
        (np.inf, r"P\[1, 1, 2\] = inf is not finite"),
    ],
)
def test_bad_probability_names_state_action_next_state_and_value(
    storage: str, value: float, message: str
) -> None:
    P, R = _valid_parts()
    P[1, 1, 2] = value
    with pytest.raises(InvalidMDPError, match=message):
        TabularMDP(_sparse(P) if storage == "sparse" else P, R, 0.9)


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_row_not_summing_to_one_names_pair_and_sum(storage: str) -> None:
    P, R = _valid_parts()
    P[2, 1, :] = [0.25, 0.25, 0.47]  # sums to 0.97
    with pytest.raises(InvalidMDPError, match=r"P\[2, 1\] sums to 0\.97, not 1"):
        TabularMDP(_sparse(P) if storage == "sparse" else P, R, 0.9)


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_row_sum_tolerance_is_1e_9(storage: str) -> None:
    P, R = _valid_parts()
    P[0, 0, 0] = 1.0 + 1e-10  # inside the tolerance: accepted
    TabularMDP(_sparse(P) if storage == "sparse" else P, R, 0.9)
    P[0, 0, 0] = 1.0 + 1e-8  # outside: rejected
    with pytest.raises(InvalidMDPError, match=r"P\[0, 0\] sums to 1\.00000001, not 1"):
        TabularMDP(_sparse(P) if storage == "sparse" else P, R, 0.9)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_reward_names_pair_and_value(value: float) -> None:
    P, R = _valid_parts()
    R[2, 0] = value
    with pytest.raises(InvalidMDPError, match=rf"R\[2, 0\] = {value} is not finite"):
        TabularMDP(P, R, 0.9)


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.1, np.nan])
def test_gamma_outside_unit_interval_is_rejected(gamma: float) -> None:
    P, R = _valid_parts()
    with pytest.raises(InvalidMDPError, match=rf"0 <= gamma < 1, got {gamma}"):
        TabularMDP(P, R, gamma)


def test_gamma_zero_is_allowed_and_gives_Q_equal_R() -> None:
    P, R = _valid_parts()
    mdp = TabularMDP(P, R, 0.0)
    np.testing.assert_array_equal(policy_evaluation(mdp, uniform_policy(3, 2)), R)


@pytest.mark.parametrize(
    ("d0", "message"),
    [
        (np.array([0.5, 0.5]), r"d0 must have shape \(3,\), got \(2,\)"),
        (np.array([1.5, -0.5, 0.0]), r"d0\[1\] = -0\.5 is not a probability"),
        (np.array([0.5, 0.25, 0.2]), r"d0 sums to 0\.95, not 1"),
    ],
)
def test_bad_initial_distribution(d0: np.ndarray, message: str) -> None:
    P, R = _valid_parts()
    with pytest.raises(InvalidMDPError, match=message):
        TabularMDP(P, R, 0.9, d0=d0)


# --- policy validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pi", "message"),
    [
        (np.full((3, 3), 1 / 3), r"pi must have shape \(3, 2\), got \(3, 3\)"),
        (
            np.array([[0.5, 0.5], [1.2, -0.2], [1.0, 0.0]]),
            r"pi\[1, 1\] = -0\.2 is not a probability",
        ),
        (
            np.array([[0.5, 0.5], [0.5, 0.5], [0.5, np.nan]]),
            r"pi\[2, 1\] = nan is not a probability",
        ),
        (np.array([[0.5, 0.5], [0.5, 0.5], [0.6, 0.3]]), r"pi\[2\] sums to 0\.9, not 1"),
    ],
)
def test_bad_policy_is_named_by_row(pi: np.ndarray, message: str) -> None:
    P, R = _valid_parts()
    mdp = TabularMDP(P, R, 0.9)
    with pytest.raises(InvalidMDPError, match=message):
        policy_evaluation(mdp, pi)
    with pytest.raises(InvalidMDPError, match=message):
        bellman(mdp, np.zeros((3, 2)), pi)
    with pytest.raises(InvalidMDPError, match=message):
        iterative_policy_evaluation(mdp, pi)


def test_validate_policy_uses_the_given_name() -> None:
    with pytest.raises(InvalidMDPError, match=r"mu\[0\] sums to 2, not 1"):
        validate_policy(np.ones((2, 2)), 2, 2, name="mu")


def test_solve_discounted_rejects_bad_reward_and_method() -> None:
    mdp = two_state_mdp()
    pi = uniform_policy(2, 2)
    with pytest.raises(InvalidMDPError, match=r"reward must have shape \(2, 2\), got \(2,\)"):
        solve_discounted(mdp, pi, np.zeros(2))
    r = np.zeros((2, 2))
    r[1, 0] = np.inf  # e.g. a CQL penalty mu/pi_beta_hat off the data's support
    with pytest.raises(InvalidMDPError, match=r"reward\[1, 0\] = inf is not finite"):
        solve_discounted(mdp, pi, r)
    with pytest.raises(ValueError, match="unknown method 'lu'"):
        solve_discounted(mdp, pi, np.zeros((2, 2)), method="lu")  # type: ignore[arg-type]


# --- exact policy evaluation: the hand-worked example -------------------------------------


def _two_state_values_by_hand(p: float, q: float, gamma: float) -> tuple[float, float]:
    """V^pi of two_state_mdp, solved by hand.

    two_state_mdp: action 0 stays, action 1 switches; only (s=1, stay) pays 1. With
    p = pi(stay | 0) and q = pi(stay | 1) the Bellman equations on states are

        V0 = p gamma V0 + (1 - p) gamma V1
        V1 = q (1 + gamma V1) + (1 - q) gamma V0

    i.e. [[1 - gamma p, -gamma (1 - p)], [-gamma (1 - q), 1 - gamma q]] V = [0, q]. Cramer's rule:

        det = (1 - gamma p)(1 - gamma q) - gamma^2 (1 - p)(1 - q)
        V0  = gamma (1 - p) q / det,     V1 = (1 - gamma p) q / det.
    """
    det = (1 - gamma * p) * (1 - gamma * q) - gamma**2 * (1 - p) * (1 - q)
    return gamma * (1 - p) * q / det, (1 - gamma * p) * q / det


def test_two_state_policy_evaluation_matches_the_hand_computation() -> None:
    # p = 1/2, q = 3/4, gamma = 9/10: det = 0.55 * 0.325 - 0.81 * 0.5 * 0.25 = 0.0775 = 31/400,
    # V0 = 0.3375 / 0.0775 = 135/31, V1 = 0.4125 / 0.0775 = 165/31. Then Q = R + gamma P V:
    # Q(0, stay) = 0.9 V0 = 243/62, Q(0, switch) = 0.9 V1 = 297/62,
    # Q(1, stay) = 1 + 0.9 V1 = 359/62, Q(1, switch) = 0.9 V0 = 243/62.
    mdp = two_state_mdp(gamma=0.9)
    pi = np.array([[0.5, 0.5], [0.75, 0.25]])
    expected = np.array([[243 / 62, 297 / 62], [359 / 62, 243 / 62]])
    for method in ("auto", "dense", "direct", "gmres"):
        q = policy_evaluation(mdp, pi, method=method)
        np.testing.assert_allclose(q, expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(state_values(q, pi), [135 / 31, 165 / 31], rtol=1e-13)
    # d0 = (1, 0): J(pi) = V0.
    assert expected_return(mdp, pi) == pytest.approx(135 / 31, rel=1e-13)


@pytest.mark.parametrize(
    ("p", "q", "gamma"), [(0.0, 1.0, 0.5), (1.0, 0.3, 0.8), (0.2, 0.9, 0.99), (0.6, 0.1, 0.0)]
)
def test_two_state_values_match_cramers_rule(p: float, q: float, gamma: float) -> None:
    mdp = two_state_mdp(gamma=gamma)
    pi = np.array([[p, 1 - p], [q, 1 - q]])
    v = state_values(policy_evaluation(mdp, pi), pi)
    np.testing.assert_allclose(v, _two_state_values_by_hand(p, q, gamma), rtol=1e-12, atol=1e-14)


def test_two_state_optimal_values_by_hand() -> None:
    # Optimal: switch to state 1 (if not there) and stay forever. V*(1) = 1/(1-gamma) = 10,
    # V*(0) = gamma V*(1) = 9; Q*(0, stay) = gamma V*(0) = 8.1, Q*(0, switch) = gamma V*(1) = 9,
    # Q*(1, stay) = 1 + gamma V*(1) = 10, Q*(1, switch) = gamma V*(0) = 8.1.
    q_star, pi_star = value_iteration(two_state_mdp(gamma=0.9))
    np.testing.assert_allclose(q_star, [[8.1, 9.0], [10.0, 8.1]], atol=1e-10)
    np.testing.assert_array_equal(pi_star, [[0.0, 1.0], [1.0, 0.0]])


def test_iterative_evaluation_and_value_iteration_agree_with_the_solve_to_1e_10() -> None:
    rng = np.random.default_rng(7)
    for sparse in (False, True):
        mdp = random_mdp(12, 4, rng, gamma=0.95, n_next=3 if sparse else None, sparse=sparse)
        pi = random_policy(12, 4, rng)
        q = policy_evaluation(mdp, pi)
        np.testing.assert_allclose(iterative_policy_evaluation(mdp, pi), q, rtol=0, atol=1e-10)
        q_star, pi_star = value_iteration(mdp)
        # The greedy policy of Q* is optimal, so its exact Q is Q* itself.
        np.testing.assert_allclose(policy_evaluation(mdp, pi_star), q_star, rtol=0, atol=1e-10)


def test_iteration_raises_when_it_cannot_converge() -> None:
    mdp = two_state_mdp(gamma=0.99)
    with pytest.raises(RuntimeError, match="did not reach tol"):
        iterative_policy_evaluation(mdp, uniform_policy(2, 2), max_iter=5)
    with pytest.raises(RuntimeError, match="did not reach tol"):
        value_iteration(mdp, max_iter=5)


# --- property tests on random MDPs --------------------------------------------------------


@st.composite
def mdp_and_policy(draw: st.DrawFn) -> tuple[TabularMDP, np.ndarray]:
    S = draw(st.integers(1, 10))
    A = draw(st.integers(1, 5))
    gamma = draw(st.floats(0.0, 0.99))
    sparse = draw(st.booleans())
    # Sparse storage needs a fixed number of next states; dense storage may use any.
    n_next = draw(st.integers(1, S)) if sparse else draw(st.none() | st.integers(1, S))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    concentration = draw(st.sampled_from([0.1, 1.0, 10.0]))
    mdp = random_mdp(
        S,
        A,
        rng,
        gamma=gamma,
        n_next=n_next,
        sparse=sparse,
        concentration=concentration,
        reward_range=(-5.0, 5.0),
    )
    # Policies with zeros (deterministic) as well as full support.
    pi = greedy_policy(rng.random((S, A))) if draw(st.booleans()) else random_policy(S, A, rng)
    return mdp, pi


@settings(max_examples=100)
@given(mdp_and_policy())
def test_Q_pi_satisfies_the_bellman_equation_for_every_method(
    case: tuple[TabularMDP, np.ndarray],
) -> None:
    mdp, pi = case
    scale = float(np.max(np.abs(mdp.R))) / (1.0 - mdp.gamma)  # |Q| <= R_max / (1 - gamma)
    solutions = {m: policy_evaluation(mdp, pi, method=m) for m in ("dense", "direct", "gmres")}
    for method, q in solutions.items():
        assert q.shape == mdp.R.shape
        assert _bellman_residual(mdp, pi, q) <= 1e-10 * max(1.0, scale), method
        assert np.max(np.abs(q)) <= scale * (1 + 1e-9) + 1e-12, method
        np.testing.assert_allclose(q, solutions["dense"], rtol=0, atol=1e-9 * max(1.0, scale))
    np.testing.assert_allclose(
        policy_evaluation(mdp, pi), solutions["dense"], atol=1e-9 * max(1.0, scale)
    )


@settings(max_examples=100)
@given(mdp_and_policy())
def test_dense_and_sparse_storage_give_the_same_answers(
    case: tuple[TabularMDP, np.ndarray],
) -> None:
    mdp, pi = case
    S, A = mdp.n_states, mdp.n_actions
    P = mdp.dense_P()
    dense = TabularMDP(P, mdp.R, mdp.gamma)
    sparse = TabularMDP(sp.csr_array(P.reshape(S * A, S)), mdp.R, mdp.gamma)
    P_pi_dense = policy_transition(dense, pi)
    P_pi_sparse = policy_transition(sparse, pi)
    assert sp.issparse(P_pi_sparse) and isinstance(P_pi_dense, np.ndarray)
    np.testing.assert_allclose(P_pi_sparse.toarray(), P_pi_dense, atol=1e-15)
    np.testing.assert_allclose(P_pi_dense.sum(axis=1), 1.0, atol=1e-12)
    q = np.random.default_rng(0).normal(size=(S, A))
    np.testing.assert_allclose(bellman(sparse, q, pi), bellman(dense, q, pi), atol=1e-12)
    np.testing.assert_allclose(
        policy_evaluation(sparse, pi), policy_evaluation(dense, pi), atol=1e-9 / (1 - mdp.gamma)
    )


@settings(max_examples=60)
@given(mdp_and_policy(), st.integers(0, 2**32 - 1))
def test_iteration_agrees_and_value_iteration_is_optimal_and_dominant(
    case: tuple[TabularMDP, np.ndarray], seed: int
) -> None:
    mdp, pi = case
    if mdp.gamma > 0.95:  # keep the iteration counts modest
        mdp = TabularMDP(mdp.P, mdp.R, 0.95)
    # Iterating B^pi stops within tol * gamma / (1 - gamma) <= 2e-11 of Q^pi.
    np.testing.assert_allclose(
        iterative_policy_evaluation(mdp, pi), policy_evaluation(mdp, pi), rtol=0, atol=1e-10
    )
    q_star, pi_star = value_iteration(mdp)
    # Bellman optimality equation Q* = R + gamma P max_a Q*.
    target = mdp.R + mdp.gamma * np.einsum("sat,t->sa", mdp.dense_P(), q_star.max(axis=1))
    np.testing.assert_allclose(q_star, target, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(pi_star.sum(axis=1), 1.0)
    assert np.all(q_star.argmax(axis=1) == pi_star.argmax(axis=1))
    rng = np.random.default_rng(seed)
    for other in (
        pi,
        random_policy(mdp.n_states, mdp.n_actions, rng),
        uniform_policy(mdp.n_states, mdp.n_actions),
    ):
        assert np.all(policy_evaluation(mdp, other) <= q_star + 1e-9)


def test_auto_method_switches_to_sparse_solvers_on_large_sparse_problems() -> None:
    rng = np.random.default_rng(3)
    small = random_mdp(20, 3, rng)
    big_dense_storage = random_mdp(600, 2, rng, n_next=4)  # 600 states, <1% non-zeros
    big_sparse = random_mdp(6000, 2, rng, n_next=4, sparse=True)
    assert auto_method(small) == "dense"
    assert auto_method(big_dense_storage) == "direct"
    assert auto_method(big_sparse) == "gmres"
    pi = random_policy(600, 2, rng)
    np.testing.assert_allclose(
        policy_evaluation(big_dense_storage, pi),
        policy_evaluation(big_dense_storage, pi, method="dense"),
        atol=1e-10,
    )
    pi = random_policy(6000, 2, rng)
    q = policy_evaluation(big_sparse, pi)
    assert bench.bellman_residual(big_sparse, pi, q) < 1e-10


def _long_sparse_chain(n_states: int, gamma: float) -> TabularMDP:
    """chain_mdp's dynamics (slip 0.1) stored sparse, for sizes a dense P could not hold."""
    S, A = n_states, 2
    s = np.arange(S)
    left, right = np.maximum(s - 1, 0), np.minimum(s + 1, S - 1)
    rows = np.concatenate([s * A, s * A + 1, s * A + 1])
    cols = np.concatenate([left, right, left])
    probs = np.concatenate([np.ones(S), np.full(S, 0.9), np.full(S, 0.1)])
    R = np.zeros((S, A))
    R[0, 0], R[-1, 1] = 0.1, 1.0
    return TabularMDP(sp.csr_array((probs, (rows, cols)), shape=(S * A, S)), R, gamma)


def test_auto_method_factorises_banded_chains_directly() -> None:
    # GMRES converges slowly on a long chain, while its LU factors stay tridiagonal.
    mdp = _long_sparse_chain(8000, gamma=0.99)
    assert auto_method(mdp) == "direct"
    pi = uniform_policy(8000, 2)
    assert bench.bellman_residual(mdp, pi, policy_evaluation(mdp, pi)) < 1e-12
    # The construction is chain_mdp's: same transitions at a size chain_mdp can hold.
    small = _long_sparse_chain(6, gamma=0.9)
    np.testing.assert_allclose(small.dense_P(), chain_mdp(6, gamma=0.9).dense_P())


def test_auto_falls_back_to_the_direct_solve_when_gmres_needs_more_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thresholds lowered so that a small random MDP takes the large-MDP path.
    monkeypatch.setattr(mdp_module, "DIRECT_MAX_STATES", 10)
    monkeypatch.setattr(mdp_module, "DIRECT_MAX_FILL", 0)
    mdp = random_mdp(300, 2, np.random.default_rng(4), n_next=4, sparse=True, gamma=0.95)
    pi = random_policy(300, 2, np.random.default_rng(5))
    assert auto_method(mdp) == "gmres"
    # One GMRES iteration cannot solve this system.
    monkeypatch.setattr(mdp_module, "GMRES_RESTART", 1)
    monkeypatch.setattr(mdp_module, "AUTO_GMRES_CYCLES", 1)
    monkeypatch.setattr(mdp_module, "GMRES_MAX_CYCLES", 1)
    q = policy_evaluation(mdp, pi)
    assert bench.bellman_residual(mdp, pi, q) < 1e-12
    with pytest.raises(RuntimeError, match="GMRES did not converge in 1 cycles of 1 iterations"):
        policy_evaluation(mdp, pi, method="gmres")


# --- random_mdp -------------------------------------------------------------------------


def test_random_mdp_respects_n_next_and_storage() -> None:
    rng = np.random.default_rng(0)
    mdp = random_mdp(30, 4, rng, n_next=3, sparse=True, reward_range=(2.0, 3.0), gamma=0.7)
    assert mdp.is_sparse and mdp.gamma == 0.7
    nnz_per_row = np.diff(mdp.P.indptr)
    np.testing.assert_array_equal(nnz_per_row, 3)
    assert np.all((mdp.R >= 2.0) & (mdp.R <= 3.0))
    dense = random_mdp(30, 4, rng, n_next=3)
    assert not dense.is_sparse
    np.testing.assert_array_equal(np.count_nonzero(dense.P, axis=2), 3)


def test_random_mdp_large_sparse_rows_have_distinct_next_states() -> None:
    # Above the argsort size limit the next states are redrawn until distinct.
    mdp = random_mdp(3000, 2, np.random.default_rng(1), n_next=5, sparse=True)
    np.testing.assert_array_equal(np.diff(mdp.P.indptr), 5)  # CSR sums duplicates: 5 means distinct


def test_random_mdp_argument_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="sparse=True needs n_next"):
        random_mdp(3, 2, rng, sparse=True)
    with pytest.raises(ValueError, match="n_next must be >= 1, got 0"):
        random_mdp(3, 2, rng, n_next=0)
    with pytest.raises(ValueError, match="need at least one state and one action, got S=0"):
        random_mdp(0, 2, rng)


# --- named MDPs -------------------------------------------------------------------------


def test_chain_always_left_values_by_hand() -> None:
    # Always moving left reaches state 0 after s steps (no slip on action 0), then stays there
    # collecting small_reward: V(0) = 0.1 / (1 - 0.9) = 1 and V(s) = 0.9^s V(0).
    mdp = chain_mdp(n_states=6, gamma=0.9, slip=0.1, small_reward=0.1)
    left = np.tile([1.0, 0.0], (6, 1))
    v = state_values(policy_evaluation(mdp, left), left)
    np.testing.assert_allclose(v, 0.9 ** np.arange(6), rtol=1e-12)
    np.testing.assert_allclose(mdp.dense_P().sum(axis=2), 1.0)


def test_chain_always_right_without_slip_values_by_hand() -> None:
    # No slip: the right end is reached after S-1-s steps and pays 1 per step from then on,
    # V(s) = 0.9^(S-1-s) / (1 - 0.9).
    mdp = chain_mdp(n_states=5, gamma=0.9, slip=0.0)
    right = np.tile([0.0, 1.0], (5, 1))
    v = state_values(policy_evaluation(mdp, right), right)
    np.testing.assert_allclose(v, 0.9 ** (4 - np.arange(5)) / 0.1, rtol=1e-12)


def test_gridworld_optimal_values_by_hand() -> None:
    # Without slip the grid is deterministic. From the goal, any action pays 1 and resets to the
    # start (0, 0), which is the Manhattan distance d = 3 + 3 = 6 from the goal (3, 3). So
    # V*(goal) = 1 + gamma^(d+1) V*(goal), i.e. V*(goal) = 1 / (1 - gamma^7), and every other
    # state s is worth gamma^dist(s, goal) V*(goal).
    gamma = 0.9
    mdp = gridworld(4, 4, gamma=gamma, slip=0.0)
    q_star, _ = value_iteration(mdp)
    v_goal = 1.0 / (1.0 - gamma**7)
    rows, cols = np.divmod(np.arange(16), 4)
    dist = (3 - rows) + (3 - cols)
    np.testing.assert_allclose(q_star.max(axis=1), gamma**dist * v_goal, rtol=1e-9)
    np.testing.assert_allclose(q_star[15], v_goal, rtol=1e-9)  # every action at the goal


def test_gridworld_goal_and_pit_values_for_any_policy() -> None:
    # Acting in the goal pays 1 and moves to the start, whatever the policy: Q(goal, a) =
    # 1 + gamma V(start); a pit pays -1 instead.
    mdp = gridworld(3, 4, gamma=0.8, slip=0.2, goal=(2, 3), pits=((1, 1),))
    pi = random_policy(12, 4, np.random.default_rng(5))
    q = policy_evaluation(mdp, pi)
    v_start = state_values(q, pi)[0]
    np.testing.assert_allclose(q[2 * 4 + 3], 1.0 + 0.8 * v_start, rtol=1e-12)
    np.testing.assert_allclose(q[1 * 4 + 1], -1.0 + 0.8 * v_start, rtol=1e-12)
    np.testing.assert_allclose(mdp.dense_P().sum(axis=2), 1.0, atol=1e-12)
    # Intended move w.p. 1 - slip + slip/4: "right" from (0, 0) reaches (0, 1) w.p. 0.85.
    assert mdp.P[0, 1, 1] == pytest.approx(0.85)


def test_named_mdp_argument_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 states, got 1"):
        chain_mdp(n_states=1)
    with pytest.raises(ValueError, match=r"slip must be a probability in \[0, 1\], got 1.5"):
        chain_mdp(slip=1.5)
    with pytest.raises(ValueError, match=r"goal \(4, 0\) is outside the 4 x 4 grid"):
        gridworld(goal=(4, 0))
    with pytest.raises(ValueError, match=r"pit \(0, -1\) is outside the 4 x 4 grid"):
        gridworld(pits=((0, -1),))
    with pytest.raises(ValueError, match=r"slip must be a probability in \[0, 1\], got -0.1"):
        gridworld(slip=-0.1)


# --- the benchmark's functions (correctness on a tiny size, not timing) ------------------


def test_naive_pair_space_solve_matches_the_state_space_solve() -> None:
    rng = np.random.default_rng(11)
    for sparse in (False, True):
        mdp = random_mdp(7, 3, rng, n_next=2 if sparse else None, sparse=sparse)
        pi = random_policy(7, 3, rng)
        q_naive = bench.naive_policy_evaluation(mdp, pi)
        np.testing.assert_allclose(q_naive, policy_evaluation(mdp, pi), atol=1e-12)
        assert bench.bellman_residual(mdp, pi, q_naive) < 1e-12
    # The residual is not trivially zero: Q + c has residual exactly (1 - gamma) c.
    q_bad = q_naive + 0.5
    assert bench.bellman_residual(mdp, pi, q_bad) == pytest.approx(0.5 * (1 - mdp.gamma))


def test_bench_cases_on_tiny_sizes() -> None:
    dense = bench.bench_dense(6, 2, seed=0, repeats=2, min_total=0.0)
    sparse = bench.bench_sparse(40, 3, 2, seed=0, repeats=1, min_total=0.0)
    speedup = bench.bench_speedup(5, 2, seed=0, repeats=1, min_total=0.0)
    for result in (dense, sparse, speedup):
        assert result.seconds > 0 and result.residual < 1e-12
    assert dense.met is None and dense.method == "dense"
    assert sparse.method == "direct" and sparse.met == (
        sparse.seconds < bench.SPARSE_TARGET_SECONDS
    )
    assert speedup.baseline_residual is not None and speedup.baseline_residual < 1e-12
    assert speedup.max_abs_diff is not None and speedup.max_abs_diff < 1e-12
    assert speedup.baseline_seconds is not None and speedup.speedup is not None
    assert speedup.speedup == pytest.approx(speedup.baseline_seconds / speedup.seconds)
    assert speedup.met == (speedup.speedup >= bench.SPEEDUP_TARGET)
    line = bench.format_result(speedup)
    assert "speed-up" in line and "residual" in line and "target >= 20x" in line
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.median_seconds(lambda: np.zeros(1), 0)


def test_median_seconds_repeats_until_the_time_budget_is_spent() -> None:
    calls = []

    def fn() -> np.ndarray:
        calls.append(1)
        return np.full(1, float(len(calls)))

    seconds, out = bench.median_seconds(fn, repeats=3, min_total=0.0)
    assert len(calls) == 3 and out[0] == 3.0 and seconds >= 0.0
    calls.clear()
    bench.median_seconds(fn, repeats=1, min_total=0.02)
    assert len(calls) > 1  # a call takes microseconds, far below the 0.02 s budget
