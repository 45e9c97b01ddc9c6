"""Tests of theory.strategies: each strategy delivers what its docstring guarantees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.strategies import (
    OfflineProblem,
    behaviour_policies,
    exact_problem,
    exact_problems,
    mdps,
    offline_problem,
    offline_problems,
    policies,
    supported_policies,
)


def _dense(m: object) -> np.ndarray:
    return np.asarray(m.toarray() if hasattr(m, "toarray") else m)


@settings(max_examples=100)
@given(mdps(r_max=2.0))
def test_mdps_rewards_bounded_rows_stochastic(mdp) -> None:  # type: ignore[no-untyped-def]
    assert np.all(np.abs(mdp.R) <= 2.0)
    assert 0.0 <= mdp.gamma <= 0.95
    np.testing.assert_allclose(_dense(mdp.P_flat).sum(axis=1), 1.0)


def test_mdps_sparse_rewards_and_transitions() -> None:
    @settings(max_examples=30)
    @given(mdps(n_states=4, n_actions=3, reward_density=0.0, n_next=1))
    def check(mdp) -> None:  # type: ignore[no-untyped-def]
        assert np.all(mdp.R == 0.0)
        assert np.all((_dense(mdp.P_flat) != 0).sum(axis=1) == 1)

    check()


@settings(max_examples=100)
@given(offline_problems(r_max=1.5, reward_noise=0.2))
def test_offline_problems_observed_rewards_within_r_max(problem: OfflineProblem) -> None:
    assert problem.data is not None
    assert np.all(np.abs(problem.data.r) <= 1.5)
    S, A = problem.n_states, problem.n_actions
    assert problem.emp.counts.shape == (S, A)  # n(s, a)
    # The empirical MDP is made of the dataset's counts.
    assert int(problem.emp.counts.sum()) == len(problem.data.s)


@settings(max_examples=100)
@given(exact_problems())
def test_exact_problems_have_no_sampling_error(problem: OfflineProblem) -> None:
    assert problem.emp.seen.all()
    np.testing.assert_allclose(_dense(problem.emp.mdp.P_flat), _dense(problem.mdp.P_flat))
    np.testing.assert_allclose(problem.emp.mdp.R, problem.mdp.R)


@settings(max_examples=100)
@given(offline_problems(transitions_per_pair=st.integers(1, 3)), st.data())
def test_supported_policies_stay_on_seen_actions(
    problem: OfflineProblem, data: st.DataObject
) -> None:
    mu = data.draw(supported_policies(problem.emp))
    np.testing.assert_allclose(mu.sum(axis=1), 1.0)
    on_d = problem.emp.seen_states
    assert np.all(mu[on_d][~problem.emp.seen[on_d]] == 0.0)
    problem.emp.check_support(mu, "mu")  # the check the theorems make


@settings(max_examples=50)
@given(st.data())
def test_policies_and_behaviour_policies(data: st.DataObject) -> None:
    pi = data.draw(policies(3, 4))
    np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    beta = data.draw(behaviour_policies(3, 4, min_prob=0.05))
    assert np.all(beta >= 0.05 - 1e-12)
    np.testing.assert_allclose(beta.sum(axis=1), 1.0)


def test_named_instances_reproduce_and_bad_arguments_are_refused() -> None:
    a = offline_problem(np.random.default_rng(5), 3, 2, 10)
    b = offline_problem(np.random.default_rng(5), 3, 2, 10)
    np.testing.assert_array_equal(a.emp.counts, b.emp.counts)
    with pytest.raises(ValueError, match="reward_noise"):
        offline_problem(np.random.default_rng(0), 2, 2, 5, reward_noise=1.0)
    with pytest.raises(ValueError, match="at least one transition"):
        exact_problem(np.zeros((1, 2, 1), dtype=int), np.zeros((1, 2)), 0.9)


@settings(max_examples=1)
@given(st.data())
def test_behaviour_policies_refuse_min_prob_above_uniform(data: st.DataObject) -> None:
    with pytest.raises(ValueError, match="min_prob"):
        data.draw(behaviour_policies(2, 2, min_prob=0.6))
