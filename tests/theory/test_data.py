"""Tests of theory.data: transitions, sampling, and the empirical MDP from counts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from theory import data as data_module
from theory.data import EmpiricalMDP, Transitions, sample_dataset
from theory.mdp import (
    InvalidMDPError,
    TabularMDP,
    chain_mdp,
    policy_evaluation,
    random_mdp,
    random_policy,
    uniform_policy,
)

# --- a hand-made dataset and its hand-counted tables --------------------------------------

# S = 3 states, A = 2 actions. State 2 only ever appears as a *next* state (the coverage gap
# the DESIGN warns about) and action 1 is never taken in state 1.
#              row:   0    1    2     3    4    5    6     7     8    9
HAND_S = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
HAND_A = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
HAND_R = np.array([1.0, 0.0, 2.0, -1.0, 0.5, 0.5, 1.5, -0.5, -1.5, 1.0])
HAND_S2 = np.array([1, 1, 0, 2, 1, 2, 2, 0, 2, 1])

# Counted by hand from the rows above:
#   (0, 0): rows 0, 1, 2, 9 -> n = 4, next states 1, 1, 0, 1, rewards 1, 0, 2, 1
#   (0, 1): rows 3, 8       -> n = 2, next states 2, 2,       rewards -1, -1.5
#   (1, 0): rows 4, 5, 6, 7 -> n = 4, next states 1, 2, 2, 0, rewards 0.5, 0.5, 1.5, -0.5
#   (1, 1), (2, 0), (2, 1): never seen.
HAND_COUNTS = np.array([[4, 2], [4, 0], [0, 0]])
HAND_STATE_COUNTS = np.array([6, 4, 0])
# pi_beta_hat = n(s, a) / n(s); state 2 is not in D, so uniform as a placeholder.
HAND_PI_BETA = np.array([[4 / 6, 2 / 6], [4 / 4, 0 / 4], [1 / 2, 1 / 2]])
# T_hat = n(s, a, s') / n(s, a); unseen pairs are absorbing (a self-loop on s).
HAND_T = np.array(
    [
        [[1 / 4, 3 / 4, 0.0], [0.0, 0.0, 2 / 2]],
        [[1 / 4, 1 / 4, 2 / 4], [0.0, 1.0, 0.0]],  # (1, 1) unseen: stays in 1
        [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],  # state 2 unseen: stays in 2
    ]
)
# r_hat = mean observed reward; unseen pairs get -r_max = -max|r| = -2.
HAND_R_HAT = np.array(
    [
        [(1 + 0 + 2 + 1) / 4, (-1 - 1.5) / 2],
        [(0.5 + 0.5 + 1.5 - 0.5) / 4, -2.0],
        [-2.0, -2.0],
    ]
)
HAND_SEEN = np.array([[True, True], [True, False], [False, False]])
HAND_SEEN_STATES = np.array([True, True, False])


def _hand_empirical(
    *, unseen_reward: float | None = None, r_max: float | None = None
) -> EmpiricalMDP:
    return EmpiricalMDP.from_transitions(
        3, 2, HAND_S, HAND_A, HAND_R, HAND_S2, 0.9, unseen_reward=unseen_reward, r_max=r_max
    )


def _check_hand_tables(emp: EmpiricalMDP) -> None:
    np.testing.assert_array_equal(emp.counts, HAND_COUNTS)
    np.testing.assert_array_equal(emp.state_counts, HAND_STATE_COUNTS)
    np.testing.assert_allclose(emp.pi_beta, HAND_PI_BETA, rtol=1e-15)
    np.testing.assert_allclose(emp.mdp.dense_P(), HAND_T, rtol=1e-15)
    np.testing.assert_allclose(emp.R, HAND_R_HAT, rtol=1e-15)
    np.testing.assert_array_equal(emp.seen, HAND_SEEN)
    np.testing.assert_array_equal(emp.seen_states, HAND_SEEN_STATES)
    assert emp.unseen_reward == -2.0
    assert (emp.n_states, emp.n_actions, emp.gamma) == (3, 2, 0.9)


def test_empirical_mdp_reproduces_the_hand_counted_tables() -> None:
    emp = _hand_empirical()
    assert not emp.mdp.is_sparse
    _check_hand_tables(emp)
    np.testing.assert_array_equal(emp.P, emp.mdp.P)


def test_empirical_mdp_sparse_storage_reproduces_the_same_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Large state spaces store T_hat as CSR; force that path on the hand dataset.
    monkeypatch.setattr(data_module, "DENSE_MAX_ENTRIES", 0)
    emp = _hand_empirical()
    assert emp.mdp.is_sparse
    _check_hand_tables(emp)


def test_row_order_does_not_matter() -> None:
    order = np.random.default_rng(0).permutation(len(HAND_S))
    emp = EmpiricalMDP.from_transitions(
        3, 2, HAND_S[order], HAND_A[order], HAND_R[order], HAND_S2[order], 0.9
    )
    _check_hand_tables(emp)


def test_from_dataset_matches_from_transitions_and_passes_options() -> None:
    d0 = np.array([0.0, 1.0, 0.0])
    emp = EmpiricalMDP.from_dataset(
        Transitions(HAND_S, HAND_A, HAND_R, HAND_S2, 3, 2), 0.9, r_max=5.0, d0=d0
    )
    np.testing.assert_array_equal(emp.counts, HAND_COUNTS)
    np.testing.assert_array_equal(emp.mdp.d0, d0)
    # r_max given: unseen pairs get -5 instead of -max|r| = -2.
    assert emp.unseen_reward == -5.0
    np.testing.assert_array_equal(emp.R[~HAND_SEEN], -5.0)
    np.testing.assert_allclose(emp.R[HAND_SEEN], HAND_R_HAT[HAND_SEEN])


def test_unseen_reward_overrides_r_max() -> None:
    emp = _hand_empirical(unseen_reward=0.0, r_max=7.0)
    assert emp.unseen_reward == 0.0
    np.testing.assert_array_equal(emp.R[~HAND_SEEN], 0.0)


def test_unseen_pairs_follow_the_absorbing_convention() -> None:
    # State 2 is not in D: every action there is an absorbing self-loop with reward -r_max = -2,
    # so Q_hat(2, a) = -2 / (1 - 0.9) = -20 under every policy, the lowest value possible.
    # The unseen action 1 at state 1 (which is in D) loops back to state 1: Q_hat(1, 1) =
    # -2 + 0.9 V_hat(1), and -20 only for a policy that keeps taking it.
    emp = _hand_empirical()
    on_support = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    off_support = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    for pi in (on_support, off_support, uniform_policy(3, 2)):
        q = policy_evaluation(emp.mdp, pi)
        np.testing.assert_allclose(q[2], -20.0, rtol=1e-12)
        v1 = pi[1] @ q[1]
        np.testing.assert_allclose(q[1, 1], -2.0 + 0.9 * v1, rtol=1e-12)
        assert np.all(q >= -20.0 - 1e-9)
    np.testing.assert_allclose(policy_evaluation(emp.mdp, off_support)[1, 1], -20.0, rtol=1e-12)
    # On the support, by hand: V2 = -20, Q(0, 1) = -1.25 + 0.9 V2 = -19.25, and
    #   V1 = Q(1, 0) = 0.5 + 0.9 (V0/4 + V1/4 + V2/2)           => 0.775 V1 - 0.225 V0 = -8.5
    #   V0 = (Q(0, 0) + Q(0, 1)) / 2, Q(0, 0) = 1 + 0.9 (V0/4 + 3 V1/4)
    #                                                           => 0.8875 V0 - 0.3375 V1 = -9.125
    # Cramer: det = 0.8875 * 0.775 - 0.3375 * 0.225 = 0.611875,
    # V0 = (-9.125 * 0.775 - 0.3375 * 8.5) / det, V1 = (-8.5 * 0.8875 - 0.225 * 9.125) / det,
    # so Q_hat(1, 1) = -2 + 0.9 V1 = -16.116, well above -20.
    det = 0.8875 * 0.775 - 0.3375 * 0.225
    v0 = (-9.125 * 0.775 - 0.3375 * 8.5) / det
    v1 = (-8.5 * 0.8875 - 0.225 * 9.125) / det
    q = policy_evaluation(emp.mdp, on_support)
    expected = [[1 + 0.9 * (v0 / 4 + 3 * v1 / 4), -19.25], [v1, -2 + 0.9 * v1], [-20.0, -20.0]]
    np.testing.assert_allclose(q, expected, rtol=1e-12)


def test_empty_dataset_is_all_unseen() -> None:
    empty = np.array([], dtype=np.int64)
    emp = EmpiricalMDP.from_transitions(2, 2, empty, empty, np.array([]), empty, 0.5)
    assert not emp.seen.any() and not emp.seen_states.any()
    np.testing.assert_array_equal(emp.R, -1.0)  # r_max defaults to 1 without data
    np.testing.assert_array_equal(emp.mdp.dense_P()[:, :, 0], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(emp.pi_beta, 0.5)


def test_integer_valued_float_indices_are_accepted() -> None:
    emp = EmpiricalMDP.from_transitions(
        3, 2, HAND_S.astype(float), HAND_A.astype(float), HAND_R, HAND_S2.astype(float), 0.9
    )
    _check_hand_tables(emp)


# --- bad transitions --------------------------------------------------------------------


def _corrupt(**changes: tuple[int, float]) -> dict[str, np.ndarray]:
    """The hand dataset with ``key=(row, value)`` written in (as float when value is a float)."""
    arrays = {"s": HAND_S, "a": HAND_A, "r": HAND_R, "s2": HAND_S2}
    for key, (row, value) in changes.items():
        x = arrays[key].astype(float if isinstance(value, float) else np.int64)
        x[row] = value
        arrays[key] = x
    return arrays


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (_corrupt(s=(4, 3)), r"row 4: s = 3 is outside \[0, 3\)"),
        (_corrupt(s=(2, -1)), r"row 2: s = -1 is outside \[0, 3\)"),
        (_corrupt(a=(6, 2)), r"row 6: a = 2 is outside \[0, 2\)"),
        (_corrupt(s2=(9, 5)), r"row 9: s2 = 5 is outside \[0, 3\)"),
        (_corrupt(r=(7, np.nan)), r"row 7: reward r = nan is not finite"),
        (_corrupt(r=(1, np.inf)), r"row 1: reward r = inf is not finite"),
        (_corrupt(s=(3, 1.5)), r"row 3: s = 1\.5 is not an integer index"),
        (_corrupt(a=(5, np.nan)), r"row 5: a = nan is not an integer index"),
        (_corrupt(s2=(8, 0.25)), r"row 8: s2 = 0\.25 is not an integer index"),
        (
            {"s": HAND_S, "a": HAND_A[:-1], "r": HAND_R, "s2": HAND_S2},
            r"unequal lengths: \{'s': 10, 'a': 9, 'r': 10, 's2': 10\}",
        ),
        (
            {"s": HAND_S.reshape(2, 5), "a": HAND_A, "r": HAND_R, "s2": HAND_S2},
            r"s must be 1-D, got shape \(2, 5\)",
        ),
        (
            {"s": HAND_S, "a": HAND_A.astype(bool), "r": HAND_R, "s2": HAND_S2},
            "a must be numeric, got dtype bool",
        ),
    ],
)
def test_bad_transitions_name_the_row(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidMDPError, match=message):
        EmpiricalMDP.from_transitions(
            3, 2, arrays["s"], arrays["a"], arrays["r"], arrays["s2"], 0.9
        )
    with pytest.raises(InvalidMDPError, match=message):
        Transitions(n_states=3, n_actions=2, **arrays)


def test_bad_sizes_and_options_are_rejected() -> None:
    with pytest.raises(InvalidMDPError, match="n_states must be a positive integer, got 0"):
        Transitions(HAND_S, HAND_A, HAND_R, HAND_S2, 0, 2)
    with pytest.raises(InvalidMDPError, match=r"n_actions must be a positive integer, got 2\.0"):
        Transitions(HAND_S, HAND_A, HAND_R, HAND_S2, 3, 2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidMDPError, match=r"r_max must be finite and >= 0, got -1\.0"):
        _hand_empirical(r_max=-1.0)
    with pytest.raises(InvalidMDPError, match=r"gamma must satisfy 0 <= gamma < 1, got 1\.0"):
        EmpiricalMDP.from_transitions(3, 2, HAND_S, HAND_A, HAND_R, HAND_S2, 1.0)


def test_transitions_store_int64_indices_and_float_rewards() -> None:
    data = Transitions(HAND_S.astype(np.int8), HAND_A, HAND_R.astype(np.float32), HAND_S2, 3, 2)
    assert data.s.dtype == np.int64 and data.r.dtype == np.float64
    assert len(data) == 10


# --- the support condition ----------------------------------------------------------------


def test_check_support_accepts_policies_inside_the_data_support() -> None:
    emp = _hand_empirical()
    # State 1 only saw action 0; state 2 is not in D, so any mu is allowed there.
    mu = np.array([[0.3, 0.7], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(emp.check_support(mu), mu)


def test_check_support_names_the_unsupported_pair() -> None:
    emp = _hand_empirical()
    mu = np.array([[0.5, 0.5], [0.7, 0.3], [0.5, 0.5]])
    with pytest.raises(
        InvalidMDPError,
        match=r"mu\[1, 1\] = 0\.3 but action 1 never appears at state 1 in the dataset",
    ):
        emp.check_support(mu)
    with pytest.raises(InvalidMDPError, match=r"pi\[1, 1\] = 0\.3 but action 1"):
        emp.check_support(mu, name="pi")


def test_check_support_validates_the_policy() -> None:
    emp = _hand_empirical()
    with pytest.raises(InvalidMDPError, match=r"mu\[0\] sums to 0\.5, not 1"):
        emp.check_support(np.array([[0.25, 0.25], [1.0, 0.0], [0.5, 0.5]]))


# --- sampling -----------------------------------------------------------------------------


def _sparse_copy(mdp: TabularMDP) -> TabularMDP:
    return TabularMDP(sp.csr_array(mdp.P_flat), mdp.R, mdp.gamma, d0=mdp.d0)


@pytest.mark.parametrize("horizon", [None, 7])
def test_samples_follow_the_model_support(horizon: int | None) -> None:
    rng = np.random.default_rng(0)
    mdp = random_mdp(20, 4, rng, n_next=3, sparse=True)
    behavior = random_policy(20, 4, rng)
    behavior[:, 1] = 0.0  # action 1 is never taken
    behavior /= behavior.sum(axis=1, keepdims=True)
    data = sample_dataset(mdp, behavior, 3000, rng, horizon=horizon, reward_noise=0.1)
    assert len(data) == 3000
    assert np.all(mdp.dense_P()[data.s, data.a, data.s2] > 0)
    assert not np.any(data.a == 1)
    assert np.all(np.abs(data.r - mdp.R[data.s, data.a]) <= 0.1)
    assert np.any(data.r != mdp.R[data.s, data.a])  # the noise is there


@pytest.mark.parametrize("horizon", [None, 5])
def test_dense_and_sparse_storage_sample_the_same_dataset(horizon: int | None) -> None:
    mdp = random_mdp(15, 3, np.random.default_rng(1), n_next=4)
    behavior = random_policy(15, 3, np.random.default_rng(2))
    a = sample_dataset(mdp, behavior, 500, np.random.default_rng(3), horizon=horizon)
    b = sample_dataset(_sparse_copy(mdp), behavior, 500, np.random.default_rng(3), horizon=horizon)
    for field in ("s", "a", "r", "s2"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.r, mdp.R[a.s, a.a])  # no noise asked for


def test_trajectories_chain_and_start_from_d0() -> None:
    mdp = chain_mdp(n_states=6)  # d0 = state 0
    horizon, n = 7, 40  # 5 full episodes and one cut to 5 steps
    data = sample_dataset(mdp, uniform_policy(6, 2), n, np.random.default_rng(4), horizon=horizon)
    assert len(data) == n
    starts = np.arange(0, n, horizon)
    np.testing.assert_array_equal(data.s[starts], 0)
    within = np.setdiff1d(np.arange(1, n), starts)
    np.testing.assert_array_equal(data.s[within], data.s2[within - 1])


def test_iid_states_follow_state_dist() -> None:
    mdp = random_mdp(5, 2, np.random.default_rng(0))
    state_dist = np.array([0.5, 0.0, 0.5, 0.0, 0.0])
    data = sample_dataset(
        mdp, uniform_policy(5, 2), 1000, np.random.default_rng(1), state_dist=state_dist
    )
    assert set(np.unique(data.s)) == {0, 2}


def test_sampling_argument_errors() -> None:
    mdp = chain_mdp(n_states=2)
    rng = np.random.default_rng(0)
    pi = uniform_policy(2, 2)
    assert len(sample_dataset(mdp, pi, 0, rng)) == 0
    with pytest.raises(ValueError, match="n must be non-negative, got -1"):
        sample_dataset(mdp, pi, -1, rng)
    with pytest.raises(ValueError, match="horizon must be >= 1, got 0"):
        sample_dataset(mdp, pi, 10, rng, horizon=0)
    with pytest.raises(ValueError, match=r"reward_noise must be finite and >= 0, got -0\.5"):
        sample_dataset(mdp, pi, 10, rng, reward_noise=-0.5)
    with pytest.raises(InvalidMDPError, match=r"behavior\[1\] sums to 1\.5, not 1"):
        sample_dataset(mdp, np.array([[0.5, 0.5], [1.0, 0.5]]), 10, rng)
    with pytest.raises(InvalidMDPError, match=r"state_dist sums to 0\.5, not 1"):
        sample_dataset(mdp, pi, 10, rng, state_dist=np.array([0.25, 0.25]))


# --- convergence of the empirical MDP to the true one -----------------------------------

# Tolerances from Hoeffding's inequality. Read D as "stacks of samples": for each (s, a) an
# i.i.d. sequence of next states (and of rewards), for each s an i.i.d. sequence of actions
# from pi_beta(.|s); both sampling modes read the stacks in order (trajectories by the Markov
# property), so T_hat(.|s, a) is the empirical distribution of the first n(s, a) entries of its
# stack. For one entry and a fixed m, P(|mean_m - p| >= eps) <= 2 exp(-2 m eps^2); a union over
# the entries and over every m <= N (the count n(s, a) is random, at most N = |D|) gives, with
# probability >= 1 - delta, simultaneously for all (s, a, s'):
#   |T_hat - T| <= sqrt(log(2 S A S N / delta) / (2 n(s, a))),
#   |pi_beta_hat - pi_beta| <= sqrt(log(2 S A N / delta) / (2 n(s))),
#   |r_hat - r| <= eta sqrt(2 log(2 S A N / delta) / n(s, a))   (rewards r + U[-eta, eta]).
# delta = 1e-8 per assertion and 36 assertions below: the test fails by chance with
# probability < 4e-7 < 1e-6. The seed is fixed, so the run is reproducible as well.
DELTA = 1e-8
ETA = 0.5


@pytest.mark.parametrize("horizon", [None, 50], ids=["iid", "trajectories"])
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_empirical_mdp_converges_at_the_hoeffding_rate(horizon: int | None, storage: str) -> None:
    rng = np.random.default_rng(2024)
    S, A = 6, 3
    if storage == "dense":
        mdp = random_mdp(S, A, rng, gamma=0.9)
    else:
        mdp = random_mdp(S, A, rng, gamma=0.9, n_next=3, sparse=True)
    # Every action has probability >= 1/(2A), so every pair is visited often.
    behavior = 0.5 * uniform_policy(S, A) + 0.5 * random_policy(S, A, rng)
    T = mdp.dense_P()
    for n in (2_000, 20_000, 200_000):
        data = sample_dataset(mdp, behavior, n, rng, horizon=horizon, reward_noise=ETA)
        emp = EmpiricalMDP.from_dataset(data, mdp.gamma)
        seen = emp.seen
        log_t = np.log(2 * S * A * S * n / DELTA)
        log_pa = np.log(2 * S * A * n / DELTA)
        # The rate, entry by entry: sqrt(n(s, a)) |T_hat - T| is bounded by a constant.
        t_err = np.abs(emp.mdp.dense_P() - T).max(axis=2)[seen]
        assert np.all(t_err * np.sqrt(emp.counts[seen]) <= np.sqrt(log_t / 2)), n
        ok = emp.seen_states
        pi_err = np.abs(emp.pi_beta - behavior).max(axis=1)[ok]
        assert np.all(pi_err * np.sqrt(emp.state_counts[ok]) <= np.sqrt(log_pa / 2)), n
        r_err = np.abs(emp.R - mdp.R)[seen]
        assert np.all(r_err * np.sqrt(emp.counts[seen]) <= ETA * np.sqrt(2 * log_pa)), n
    # At the largest n every pair is covered, so the bounds above held on every entry.
    assert emp.seen.all() and emp.seen_states.all()
