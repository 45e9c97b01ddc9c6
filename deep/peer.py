"""d3rlpy, the comparison peer: our CQL config translated into d3rlpy's, and our data into
its ``MDPDataset``. The one translation ``deep.parity`` (training) and ``deep.bench``
(timing) both use. d3rlpy is optional and imported only when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deep.algos import CQLConfig
from deep.data import ObservationNormalizer, OfflineDataset

__all__ = ["INSTALL_HINT", "d3rlpy_config", "d3rlpy_dataset", "import_d3rlpy", "untranslatable"]

INSTALL_HINT = (
    "make bench-peer (or: pip install gym==0.26.2 structlog dataclasses-json 'marshmallow<4' "
    "typing-inspect scikit-learn click colorama && pip install --no-deps d3rlpy==2.8.1)"
)
"""How to install the peer; d3rlpy's own dependencies would downgrade gymnasium."""


def import_d3rlpy() -> Any:
    """The ``d3rlpy`` module; ImportError with :data:`INSTALL_HINT` when it does not import."""
    try:
        import d3rlpy
    except ImportError as err:
        raise ImportError(
            f"d3rlpy does not import ({err}); install it with {INSTALL_HINT}"
        ) from None
    return d3rlpy


def untranslatable(agent: CQLConfig, act_dim: int) -> list[str]:
    """Our settings that d3rlpy's CQLConfig cannot express."""
    default = CQLConfig()
    bad = []
    if agent.cql_temperature != 1.0:
        bad.append(f"cql_temperature={agent.cql_temperature} (d3rlpy's is 1)")
    if agent.cql_estimator != "importance":
        bad.append(f"cql_estimator={agent.cql_estimator!r} (d3rlpy has CQL(H) only)")
    if agent.lagrange:
        bad.append("lagrange=True (the thresholds are on different gaps)")
    if agent.bc_steps:
        bad.append(f"bc_steps={agent.bc_steps} (d3rlpy has no warm-start)")
    if agent.target_entropy is not None and agent.target_entropy != -float(act_dim):
        bad.append(f"target_entropy={agent.target_entropy} (d3rlpy's is -|A|)")
    if (agent.reward_scale, agent.reward_bias) != (1.0, 0.0):
        bad.append("reward_scale/reward_bias (not translated)")
    if (agent.log_std_min, agent.log_std_max) != (default.log_std_min, default.log_std_max):
        bad.append("log_std_min/log_std_max (d3rlpy's CQL clamps to [-20, 2])")
    if agent.max_q_backup and agent.max_q_backup_order != "max-of-min":
        bad.append("max_q_backup_order='min-of-max' (d3rlpy's is max-of-min)")
    if agent.max_q_backup and agent.backup_n_actions != agent.cql_n_actions:
        bad.append("backup_n_actions != cql_n_actions (d3rlpy uses n_action_samples for both)")
    if agent.max_q_backup and agent.backup_entropy:
        bad.append("max_q_backup with backup_entropy (exclusive in d3rlpy)")
    if agent.precision != "fp32":
        bad.append(f"precision={agent.precision!r}")
    return bad


def d3rlpy_config(
    agent: CQLConfig,
    batch_size: int,
    act_dim: int,
    normalizer: ObservationNormalizer | None = None,
) -> Any:
    """d3rlpy's ``CQLConfig`` for our ``agent`` config, field by field (module docstring);
    ValueError naming every setting d3rlpy cannot express. ``normalizer``: our observation
    statistics, passed to d3rlpy's ``StandardObservationScaler`` (its ``std + eps`` with
    eps 1e-3 equals ours)."""
    bad = untranslatable(agent, act_dim)
    if bad:
        raise ValueError("d3rlpy's CQL cannot express: " + "; ".join(bad))
    d3rlpy = import_d3rlpy()
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.preprocessing import StandardObservationScaler

    scaler = None
    if normalizer is not None:
        # Ours: (o − mean) / (std + 1e-3); d3rlpy: (o − mean) / (std + eps), eps = 1e-3.
        scaler = StandardObservationScaler(
            mean=normalizer.mean.astype(np.float32),
            std=(normalizer.std - 1e-3).astype(np.float32),
            eps=1e-3,
        )
    return d3rlpy.algos.CQLConfig(
        actor_encoder_factory=VectorEncoderFactory(hidden_units=list(agent.actor_hidden)),
        critic_encoder_factory=VectorEncoderFactory(hidden_units=list(agent.critic_hidden)),
        batch_size=batch_size,
        n_critics=agent.n_critics,
        gamma=agent.gamma,
        tau=agent.target_tau,
        critic_learning_rate=agent.critic_lr,
        actor_learning_rate=agent.actor_lr,
        temp_learning_rate=agent.entropy_lr if agent.auto_entropy else 0.0,
        initial_temperature=agent.init_entropy_alpha,
        conservative_weight=agent.cql_weight,
        initial_alpha=1.0,
        alpha_learning_rate=0.0,  # fixed CQL weight
        alpha_threshold=0.0,  # a constant once the weight is fixed
        n_action_samples=agent.cql_n_actions,
        soft_q_backup=agent.backup_entropy,
        max_q_backup=agent.max_q_backup,
        observation_scaler=scaler,
    )


def d3rlpy_dataset(dataset: OfflineDataset, keep_timeout_transitions: bool = False) -> Any:
    """``d3rlpy.dataset.MDPDataset`` of our transitions (terminals and timeouts as ours).

    d3rlpy keeps observations per step, so the last transition of an episode that is cut by a
    timeout (or by the end of the data) has no s' and is dropped. ``keep_timeout_transitions``
    keeps it (an ablation): each such episode gets one extra row holding its final s', with a
    zero action and reward that no sampled transition reads (d3rlpy samples the first
    ``length − 1`` rows of a non-terminal episode; the extra row is only an s').
    """
    d3rlpy = import_d3rlpy()
    terminals = np.asarray(dataset.terminals, dtype=bool)
    timeouts = (
        np.asarray(dataset.timeouts, dtype=bool)
        if dataset.timeouts is not None
        else np.zeros_like(terminals)
    )
    timeouts = timeouts & ~terminals
    timeouts[-1] = not terminals[-1]  # the data's end cuts its last episode
    obs, act, rew = dataset.observations, dataset.actions, dataset.rewards
    if keep_timeout_transitions:
        cut = np.flatnonzero(timeouts)
        # Insert after each cut row its s' (and a zero action / reward); the episode now ends
        # at the inserted row.
        at = cut + 1
        obs = np.insert(obs, at, dataset.next_observations[cut], axis=0)
        act = np.insert(act, at, np.zeros_like(act[cut]), axis=0)
        rew = np.insert(rew, at, 0.0, axis=0)
        terminals = np.insert(terminals, at, False)
        timeouts = np.insert(timeouts, at, True)
        timeouts[cut + np.arange(cut.size)] = False
    return d3rlpy.dataset.MDPDataset(
        observations=np.asarray(obs, dtype=np.float32),
        actions=np.asarray(act, dtype=np.float32),
        rewards=np.asarray(rew, dtype=np.float32).reshape(-1, 1),
        terminals=terminals.astype(np.float32),
        timeouts=timeouts.astype(np.float32),
    )
