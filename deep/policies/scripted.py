"""Scripted behaviour policies for the built-in offline datasets (no training, no weights).

Every policy maps a batch of observations to a batch of actions in the *agent's* action
convention: continuous actions normalised to ``[-1, 1]`` (the range of a tanh-squashed actor;
``deep.envs.make_env`` rescales them to the environment's bounds), discrete actions as int64
indices. Randomness (exploration noise, epsilon, uniform actions) comes from the
``np.random.Generator`` passed to each call, never from a global.

Signature of every policy: ``policy(obs, rng) -> actions`` with ``obs`` (n, obs_dim) and
``actions`` (n, act_dim) float32 or (n,) int64. :func:`bind` turns one into the
``obs -> actions`` callable that ``deep.envs.evaluate`` expects.

Controllers (all hand-derived, see each class):

- :class:`PendulumSwingUp` - energy-pumping swing-up (Åström & Furuta 2000) plus a discrete
  LQR balance controller, on Pendulum-v1.
- :class:`CartPoleLinear` - a linear state-feedback rule (push right iff ``w·s > 0``) with
  epsilon-uniform noise, on CartPole-v1.
- :class:`DoublePendulumLQR` - discrete LQR on InvertedDoublePendulum-v5, linearised by central
  finite differences of MuJoCo's own 5-substep transition at the upright equilibrium.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
import scipy.linalg


class BehaviourPolicy(Protocol):
    """``(obs (n, obs_dim), rng) -> actions (n, act_dim) float32 | (n,) int64``."""

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def bind(policy: BehaviourPolicy, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Fix the generator of a behaviour policy: returns ``obs -> policy(obs, rng)``."""

    def act(obs: np.ndarray) -> np.ndarray:
        return policy(obs, rng)

    return act


def _as_batch(obs: np.ndarray, obs_dim: int, who: str) -> np.ndarray:
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"{who} expects observations of shape (n, {obs_dim}), got {obs.shape}")
    return obs


def dlqr_gain(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Infinite-horizon discrete LQR gain ``K`` for ``x' = A x + B u``, cost ``Σ x'Qx + u'Ru``.

    ``P`` solves the discrete algebraic Riccati equation
    ``P = A'PA - A'PB (R + B'PB)⁻¹ B'PA + Q``; then ``K = (R + B'PB)⁻¹ B'PA`` and ``u = -K x``.
    Shapes: A (n, n), B (n, m), Q (n, n), R (m, m) -> K (m, n).
    """
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    # Solve rather than invert (R + B'PB): it is symmetric positive definite and small.
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


@dataclass(frozen=True)
class UniformRandom:
    """Uniform actions: ``U[-1, 1]^act_dim`` (continuous) or uniform over ``n_actions``.

    This is D4RL's "random" behaviour and the policy behind every reference *minimum* score.
    """

    act_dim: int | None = None
    n_actions: int | None = None

    def __post_init__(self) -> None:
        if (self.act_dim is None) == (self.n_actions is None):
            raise ValueError("UniformRandom needs exactly one of act_dim or n_actions")

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = np.asarray(obs).shape[0]
        if self.n_actions is not None:
            return rng.integers(0, self.n_actions, size=(n,), dtype=np.int64)
        assert self.act_dim is not None
        return rng.uniform(-1.0, 1.0, size=(n, self.act_dim)).astype(np.float32)


# Pendulum-v1's constants (gymnasium/envs/classic_control/pendulum.py): the controller is
# derived from the same model, θ̈ = (3g / 2l) sin θ + (3 / m l²) u, integrated by semi-implicit
# Euler with dt = 0.05; θ = 0 is upright.
PENDULUM_G = 10.0
PENDULUM_M = 1.0
PENDULUM_L = 1.0
PENDULUM_DT = 0.05
PENDULUM_MAX_TORQUE = 2.0
_PEND_A = 3.0 * PENDULUM_G / (2.0 * PENDULUM_L)  # 15: gravity gain, θ̈ = a sin θ + b u
_PEND_B = 3.0 / (PENDULUM_M * PENDULUM_L**2)  # 3: torque gain


def pendulum_linear_model() -> tuple[np.ndarray, np.ndarray]:
    """Pendulum-v1 linearised at upright, one env step, state ``x = (θ, θ̇)``, input torque u.

    Semi-implicit Euler as in the env: ``θ̇' = θ̇ + dt (a θ + b u)``, ``θ' = θ + dt θ̇'``, so
    ``A = [[1 + a dt², dt], [a dt, 1]]`` and ``B = [[b dt²], [b dt]]`` with ``a = 3g/2l = 15``,
    ``b = 3/ml² = 3`` (sin θ ≈ θ). Shapes: A (2, 2), B (2, 1).
    """
    a, b, dt = _PEND_A, _PEND_B, PENDULUM_DT
    A = np.array([[1.0 + a * dt * dt, dt], [a * dt, 1.0]])
    B = np.array([[b * dt * dt], [b * dt]])
    return A, B


@lru_cache(maxsize=1)
def pendulum_lqr_gain() -> np.ndarray:
    """LQR gain (1, 2) for the upright pendulum with the env's own cost weights.

    Pendulum-v1's per-step cost is ``θ² + 0.1 θ̇² + 0.001 u²``, so Q = diag(1, 0.1), R = 0.001.
    """
    A, B = pendulum_linear_model()
    return dlqr_gain(A, B, np.diag([1.0, 0.1]), np.array([[0.001]]))


@dataclass(frozen=True)
class PendulumSwingUp:
    """Energy-based swing-up plus LQR balance for Pendulum-v1; actions ``u / 2`` in [-1, 1].

    With ``θ̈ = a sin θ + b u`` the energy ``E = ½θ̇² + a (cos θ - 1)`` is 0 upright at rest and
    ``-2a`` hanging at rest, and ``Ė = b u θ̇``. Far from upright the controller pumps energy,
    ``u = clip(k_E (0 - E) θ̇, ±swing_torque)`` (so ``Ė = b k_E (-E) θ̇² ≥ 0`` while E < 0);
    within ``balance_angle`` of upright it switches to ``u = -K (θ, θ̇)`` with the LQR gain
    :func:`pendulum_lqr_gain`. Gaussian noise ``noise_std`` (in normalised units) is added
    last, then actions are clipped to [-1, 1].

    The expert uses the full torque (2 N·m) and no noise; the medium policy caps the swing-up
    torque at 0.3 N·m (so from the bottom it needs many swings) and adds noise of std 0.3.
    """

    swing_torque: float = PENDULUM_MAX_TORQUE
    noise_std: float = 0.0
    energy_gain: float = 1.0
    balance_angle: float = 0.6

    def torque(self, obs: np.ndarray) -> np.ndarray:
        """Noise-free torque in N·m, shape (n,), from obs ``(cos θ, sin θ, θ̇)`` (n, 3)."""
        obs = _as_batch(obs, 3, "PendulumSwingUp")
        cos_th, sin_th, thdot = obs[:, 0], obs[:, 1], obs[:, 2]
        theta = np.arctan2(sin_th, cos_th)
        energy = 0.5 * thdot**2 + _PEND_A * (cos_th - 1.0)
        u_swing = np.clip(
            self.energy_gain * (0.0 - energy) * thdot, -self.swing_torque, self.swing_torque
        )
        K = pendulum_lqr_gain()
        u_balance = -(K[0, 0] * theta + K[0, 1] * thdot)
        near_upright = cos_th > np.cos(self.balance_angle)
        return np.where(near_upright, u_balance, u_swing)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = self.torque(obs) / PENDULUM_MAX_TORQUE
        if self.noise_std > 0:
            a = a + self.noise_std * rng.standard_normal(a.shape)
        return np.clip(a, -1.0, 1.0).astype(np.float32)[:, None]


@dataclass(frozen=True)
class CartPoleLinear:
    """``a = 1 (push right) iff w · (x, ẋ, θ, θ̇) > 0``; with probability ``epsilon`` uniform.

    The weights (0.5, 1, 10, 1.5) were hand-tuned: the θ and θ̇ terms balance the pole, the
    small x and ẋ terms keep the cart inside ±2.4 for the 500-step limit. Noise-free, it held
    the pole for all 500 steps in each of 100 seeded episodes.
    """

    weights: tuple[float, float, float, float] = (0.5, 1.0, 10.0, 1.5)
    epsilon: float = 0.0

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        obs = _as_batch(obs, 4, "CartPoleLinear")
        greedy = (obs @ np.asarray(self.weights) > 0).astype(np.int64)
        if self.epsilon <= 0:
            return greedy
        # Draw both arrays for every row so the stream does not depend on which rows explore.
        explore = rng.random(obs.shape[0]) < self.epsilon
        uniform = rng.integers(0, 2, size=obs.shape[0], dtype=np.int64)
        return np.where(explore, uniform, greedy)


DOUBLE_PENDULUM_ENV_ID = "InvertedDoublePendulum-v5"


def double_pendulum_state(obs: np.ndarray) -> np.ndarray:
    """MuJoCo state ``(x, θ₁, θ₂, ẋ, θ̇₁, θ̇₂)`` (n, 6) from InvertedDoublePendulum-v5 obs (n, 9).

    The v5 observation is ``(x, sin θ₁, sin θ₂, cos θ₁, cos θ₂, ẋ, θ̇₁, θ̇₂, f_constraint)`` with
    velocities clipped to ±10 (they never reach that while balancing).
    """
    obs = _as_batch(obs, 9, "DoublePendulumLQR")
    theta1 = np.arctan2(obs[:, 1], obs[:, 3])
    theta2 = np.arctan2(obs[:, 2], obs[:, 4])
    return np.stack([obs[:, 0], theta1, theta2, obs[:, 5], obs[:, 6], obs[:, 7]], axis=1)


@lru_cache(maxsize=1)
def double_pendulum_linear_model() -> tuple[np.ndarray, np.ndarray]:
    """One env step of InvertedDoublePendulum-v5 linearised at upright rest: ``A`` (6, 6), ``B`` (6, 1).

    Central differences (step 1e-6) of the exact transition the env applies: ``frame_skip`` = 5
    MuJoCo RK4 steps with the control held. (``mujoco.mjd_transitionFD`` does not support RK4.)
    """
    import gymnasium as gym  # local: only this controller needs MuJoCo
    import mujoco

    env = gym.make(DOUBLE_PENDULUM_ENV_ID)
    model = env.unwrapped.model  # type: ignore[attr-defined]
    frame_skip = int(env.unwrapped.frame_skip)  # type: ignore[attr-defined]
    env.close()
    data = mujoco.MjData(model)
    nq, nv, nu = model.nq, model.nv, model.nu

    def transition(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:] = x[:nq]
        data.qvel[:] = x[nq:]
        data.ctrl[:] = u
        for _ in range(frame_skip):
            mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    eps = 1e-6
    x0, u0 = np.zeros(nq + nv), np.zeros(nu)
    A = np.stack(
        [
            (transition(x0 + eps * e, u0) - transition(x0 - eps * e, u0)) / (2 * eps)
            for e in np.eye(nq + nv)
        ],
        axis=1,
    )
    B = np.stack(
        [
            (transition(x0, u0 + eps * e) - transition(x0, u0 - eps * e)) / (2 * eps)
            for e in np.eye(nu)
        ],
        axis=1,
    )
    return A, B


@lru_cache(maxsize=1)
def double_pendulum_lqr_gain() -> np.ndarray:
    """LQR gain (1, 6), Q = diag(1, 10, 10, 0.1, 0.1, 0.1), R = 1 (hand-chosen: angles first)."""
    A, B = double_pendulum_linear_model()
    return dlqr_gain(A, B, np.diag([1.0, 10.0, 10.0, 0.1, 0.1, 0.1]), np.array([[1.0]]))


@dataclass(frozen=True)
class DoublePendulumLQR:
    """``a = clip(-K s + noise_std ε, -1, 1)`` on InvertedDoublePendulum-v5 (actuator range ±1).

    Noise-free it balances every seeded start for the full 1000 steps. Gaussian action noise
    makes it fall: the fall time rises steeply with the noise (std 0.18: ~890 steps on average,
    0.2: ~580, 0.24: ~150), and the medium policy uses 0.2.
    """

    noise_std: float = 0.0

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        state = double_pendulum_state(obs)
        a = -state @ double_pendulum_lqr_gain().T
        if self.noise_std > 0:
            a = a + self.noise_std * rng.standard_normal(a.shape)
        return np.clip(a, -1.0, 1.0).astype(np.float32)
