"""Behaviour policies that generate the built-in datasets (scripted controllers, no weights)."""

from deep.policies.scripted import (
    BehaviourPolicy,
    CartPoleLinear,
    DoublePendulumLQR,
    PendulumSwingUp,
    UniformRandom,
    bind,
)

__all__ = [
    "BehaviourPolicy",
    "CartPoleLinear",
    "DoublePendulumLQR",
    "PendulumSwingUp",
    "UniformRandom",
    "bind",
]
