"""Environments, reference scores and evaluation (deep/envs.py).

Built-in datasets and their behaviour policies are tested in data/test_builtin.py.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from deep import envs
from deep.data import builtin
from deep.policies import CartPoleLinear, DoublePendulumLQR, PendulumSwingUp, UniformRandom, bind


# ------------------------------------------------------------------ reference scores
def test_normalized_score_on_d4rl_numbers() -> None:
    # Endpoints map to 0 and 100; the midpoint (min + max) / 2 to 50.
    lo, hi = -20.272305, 3234.3
    np.testing.assert_allclose(
        envs.normalized_score("hopper-medium-v2", np.array([lo, hi, (lo + hi) / 2])),
        [0.0, 100.0, 50.0],
        atol=1e-9,
    )
    # walker2d, by hand: 100 (1000 - 1.629008) / (4592.3 - 1.629008) = 21.7478...
    assert float(envs.normalized_score("walker2d-expert-v2", 1000.0)) == pytest.approx(
        100 * (1000 - 1.629008) / (4592.3 - 1.629008)
    )
    for alias in ("mujoco/halfcheetah/medium-v0", "HalfCheetah-v5", "halfcheetah-random-v0"):
        ref = envs.reference_scores(alias)
        assert (ref.min, ref.max) == (-280.178953, 12135.0)
    assert envs.normalized_score("hopper", np.zeros((2, 3))).shape == (2, 3)


def test_normalized_score_on_builtins_uses_the_measured_references() -> None:
    ref = envs.reference_scores("pendulum-medium")
    assert ref is envs.reference_scores("Pendulum-v1") is envs.reference_scores("pendulum")
    np.testing.assert_allclose(
        envs.normalized_score("pendulum-expert", np.array([ref.min, ref.max])),
        np.array([0.0, 100.0]),
    )
    # CartPole: R_min = 23.52, R_max = 500, so R = 261.76 is exactly halfway.
    assert float(envs.normalized_score("cartpole-random", 261.76)) == pytest.approx(50.0)


def test_unknown_reference_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no reference scores for 'ant-medium-v2'"):
        envs.normalized_score("ant-medium-v2", 1.0)
    with pytest.raises(ValueError, match="unknown task 'hopper'"):
        builtin.measure_reference_scores("hopper")


# --------------------------------------------------------------------------- evaluate
def test_evaluate_counts_episodes_and_discounts_by_hand() -> None:
    # CartPole pays 1 per step, so an episode of length L has return L and discounted return
    # Σ_{t<L} γ^t = (1 - γ^L) / (1 - γ). 5 episodes over 2 sub-envs: waves of 2, 2, 1.
    rng = np.random.default_rng(0)
    gamma = 0.9
    res = envs.evaluate(
        bind(UniformRandom(n_actions=2), rng), "cartpole-random", 5, seed=3, gamma=gamma, num_envs=2
    )
    assert res.n_episodes == 5 and res.env_id == "CartPole-v1"
    assert res.returns.shape == res.discounted_returns.shape == res.lengths.shape == (5,)
    assert res.start_observations.shape == (5, 4)
    np.testing.assert_array_equal(res.seeds, [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(res.returns, res.lengths)
    np.testing.assert_allclose(res.discounted_returns, (1 - gamma**res.lengths) / (1 - gamma))
    assert np.all(res.terminated == (res.lengths < 500))
    # Episode i starts where a plain env reset with seed 3 + i starts.
    env = gym.make("CartPole-v1")
    for i in range(5):
        np.testing.assert_array_equal(res.start_observations[i], env.reset(seed=3 + i)[0])


def test_evaluate_matches_a_plain_single_env_loop() -> None:
    # Pendulum, 3 episodes on 2 sub-envs (a full and a partial wave) against a one-env loop.
    controller = PendulumSwingUp(swing_torque=0.5)
    policy = bind(controller, np.random.default_rng(0))  # noise-free: rng unused
    gamma = 0.95
    res = envs.evaluate(policy, "Pendulum-v1", 3, seed=11, gamma=gamma, num_envs=2)
    env = envs.make_env("Pendulum-v1")
    for i in range(3):
        obs, _ = env.reset(seed=11 + i)
        np.testing.assert_array_equal(res.start_observations[i], obs)
        total, disc, t, done = 0.0, 0.0, 0, False
        while not done:
            action = policy(obs[None].astype(np.float32))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            disc += gamma**t * float(reward)
            t += 1
            done = terminated or truncated
        assert res.lengths[i] == t == 200
        assert res.returns[i] == pytest.approx(total, rel=1e-9)
        assert res.discounted_returns[i] == pytest.approx(disc, rel=1e-9)
        assert not res.terminated[i]


def test_evaluate_is_deterministic_and_independent_of_num_envs() -> None:
    policy = bind(DoublePendulumLQR(noise_std=0.25), np.random.default_rng(5))
    a = envs.evaluate(policy, "inverted-double-pendulum-medium", 4, seed=0, num_envs=4)
    policy = bind(DoublePendulumLQR(noise_std=0.25), np.random.default_rng(5))
    b = envs.evaluate(policy, "inverted-double-pendulum-medium", 4, seed=0, num_envs=4)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.start_observations, b.start_observations)
    # A deterministic policy does not care how episodes are batched.
    expert = bind(CartPoleLinear(epsilon=0.0), np.random.default_rng(0))
    one = envs.evaluate(expert, "cartpole-expert", 3, seed=100, num_envs=1)
    three = envs.evaluate(expert, "cartpole-expert", 3, seed=100, num_envs=3)
    np.testing.assert_array_equal(one.returns, three.returns)
    np.testing.assert_array_equal(one.discounted_returns, three.discounted_returns)
    np.testing.assert_array_equal(one.start_observations, three.start_observations)
    np.testing.assert_allclose(one.normalized("cartpole-expert"), 100.0)


def test_evaluate_rejects_bad_actions() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*got \(2,\)"):
        envs.evaluate(lambda obs: np.zeros(len(obs)), "Pendulum-v1", 2)
    with pytest.raises(ValueError, match=r"non-finite actions in rows \[0, 1\]"):
        envs.evaluate(lambda obs: np.full((len(obs), 1), np.nan), "Pendulum-v1", 2)
    with pytest.raises(ValueError, match=r"outside \[0, 2\) in rows \[0, 1\]: \[2, 2\]"):
        envs.evaluate(lambda obs: np.full(len(obs), 2), "CartPole-v1", 2)
    with pytest.raises(ValueError, match="integer actions"):
        envs.evaluate(lambda obs: np.zeros(len(obs)), "CartPole-v1", 2)
    with pytest.raises(ValueError, match="gamma must be in"):
        envs.evaluate(lambda obs: np.zeros(len(obs)), "CartPole-v1", 2, gamma=1.5)


# --------------------------------------------------------------------- action scaling
def test_make_env_rescales_pendulum_torque_by_two() -> None:
    env = envs.make_env("pendulum-medium")
    assert isinstance(env.action_space, gym.spaces.Box)
    np.testing.assert_array_equal(env.action_space.low, [-1.0])
    np.testing.assert_array_equal(env.action_space.high, [1.0])
    raw = gym.make("Pendulum-v1")
    low, high = raw.action_space.low, raw.action_space.high  # type: ignore[attr-defined]
    a = np.array([0.25], dtype=np.float32)
    np.testing.assert_allclose(envs.to_env_action(a, low, high), [0.5])  # u = 2a
    np.testing.assert_allclose(envs.from_env_action(envs.to_env_action(a, low, high), low, high), a)
    # The wrapped env stepped with a equals the raw env stepped with u = 2a.
    env.reset(seed=1)
    raw.reset(seed=1)
    wrapped_step = env.step(a)
    raw_step = raw.step(np.array([0.5], dtype=np.float32))
    np.testing.assert_allclose(wrapped_step[0], raw_step[0])
    assert wrapped_step[1] == pytest.approx(raw_step[1])
    # InvertedDoublePendulum's actuator range is already [-1, 1]: no wrapper.
    idp = envs.make_env("inverted-double-pendulum-expert")
    assert not isinstance(idp, gym.wrappers.RescaleAction)
    with pytest.raises(ValueError, match="cannot map 'no-such-env'"):
        envs.make_env("no-such-env")
