"""The algorithms: one module each, and the one registry every other part reads.

==================  ==========================================  =====================
name                agent (config)                              actions
==================  ==========================================  =====================
``cql``             :class:`CQL` (:class:`CQLConfig`)           continuous
``cql-lagrange``    CQL with ``lagrange=True`` (Eq. 5)          continuous
``cql-rho``         CQL with ``cql_estimator="rho"``            continuous
``sac``             :class:`OfflineSAC` (:class:`SACConfig`)    continuous
``bc``              :class:`BC` (:class:`BCConfig`)             continuous
``discrete-cql``    :class:`DiscreteCQL`                        discrete
``discrete-bc``     :class:`DiscreteBC`                         discrete
==================  ==========================================  =====================

The command line's choices, each algorithm's defaults and the check that an algorithm suits
a dataset's actions all come from :data:`ALGORITHMS`. A new algorithm is a new module with a
config dataclass (one docstring per field: they become its ``--help``) and an agent class
following :class:`~deep.algos.base.Agent`, plus one :func:`register` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from deep.algos.base import Agent, Device, Seed
from deep.algos.bc import BC, BCConfig, DiscreteBC, DiscreteBCConfig
from deep.algos.cql import CQL, CQLConfig
from deep.algos.discrete_cql import DiscreteCQL, DiscreteCQLConfig
from deep.algos.sac import OfflineSAC, SACConfig

__all__ = [
    "ALGORITHMS",
    "BC",
    "CQL",
    "Agent",
    "Algorithm",
    "BCConfig",
    "CQLConfig",
    "DiscreteBC",
    "DiscreteBCConfig",
    "DiscreteCQL",
    "DiscreteCQLConfig",
    "OfflineSAC",
    "SACConfig",
    "get_algorithm",
    "make_agent",
    "register",
]

C = TypeVar("C")


@dataclass(frozen=True)
class Algorithm(Generic[C]):
    """A registry entry: what ``python -m deep.train NAME`` builds."""

    name: str
    config_type: type[C]
    agent_type: Callable[[int, int, C, Device, Seed], Agent]
    """Called as ``agent_type(obs_dim, act_dim, config, device, seed)``; for discrete
    algorithms ``act_dim`` is the number of actions."""
    discrete: bool
    """True: needs discrete actions; False: continuous actions in [-1, 1]^d."""
    summary: str
    """One line for ``--help``."""
    preset: Mapping[str, Any] = field(default_factory=dict)
    """Config fields that define this entry beside its config type's defaults (e.g.
    ``cql-lagrange``: ``lagrange=True``); a config given for the entry must keep them."""

    def default_config(self) -> C:
        """The config type's defaults with the preset applied."""
        return self.config_type(**self.preset)

    def check_config(self, config: Any) -> C:
        """``config`` if it is this entry's type and keeps its preset, else an error naming
        what is wrong."""
        if type(config) is not self.config_type:
            raise TypeError(
                f"agent {self.name!r} needs a {self.config_type.__name__}, "
                f"got {type(config).__name__}"
            )
        for key, value in self.preset.items():
            if getattr(config, key) != value:
                raise ValueError(
                    f"agent {self.name!r} needs {key}={value!r} in its config, "
                    f"got {getattr(config, key)!r}"
                )
        checked: C = config
        return checked

    def make(
        self,
        obs_dim: int,
        act_dim: int,
        config: C | None = None,
        device: Device = "cpu",
        seed: Seed = 0,
    ) -> Agent:
        """The agent for these dimensions (``config`` defaults to :meth:`default_config`)."""
        cfg = self.check_config(config if config is not None else self.default_config())
        return self.agent_type(obs_dim, act_dim, cfg, device, seed)


ALGORITHMS: dict[str, Algorithm[Any]] = {}
"""name -> :class:`Algorithm`, in the order of ``--help``."""


def register(algorithm: Algorithm[C]) -> Algorithm[C]:
    """Add ``algorithm`` under its name (an existing name is an error)."""
    if algorithm.name in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def get_algorithm(name: str) -> Algorithm[Any]:
    """The registry entry ``name``; an unknown name is an error listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(ALGORITHMS)}") from None


def algorithms_for(discrete: bool) -> list[str]:
    """Names of the algorithms for discrete (True) or continuous (False) actions."""
    return [name for name, algo in ALGORITHMS.items() if algo.discrete == discrete]


def check_action_kind(algorithm: Algorithm[Any], discrete: bool, what: str) -> None:
    """Raise naming ``what`` (e.g. a dataset) and the algorithms that would suit it when
    ``algorithm`` is for the other kind of actions."""
    if algorithm.discrete == discrete:
        return
    kind = "discrete" if algorithm.discrete else "continuous"
    other = "discrete" if discrete else "continuous"
    raise ValueError(
        f"agent {algorithm.name!r} is for {kind} actions; {what} has {other} ones "
        f"(use {', '.join(algorithms_for(discrete))})"
    )


def make_agent(
    name: str,
    obs_dim: int,
    act_dim: int,
    *,
    config: Any = None,
    device: Device = "cpu",
    seed: Seed = 0,
    discrete: bool | None = None,
    **overrides: Any,
) -> Agent:
    """Build agent ``name`` of :data:`ALGORITHMS`; ``overrides`` replace config fields by name.

    ``act_dim`` is the number of actions for discrete agents; ``discrete``, when given, is
    checked against the algorithm's kind of actions.
    """
    algorithm = get_algorithm(name)
    if discrete is not None:
        check_action_kind(algorithm, discrete, "the caller")
    cfg = config if config is not None else algorithm.default_config()
    if overrides:
        fields = {f.name for f in dataclasses.fields(cfg)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown {type(cfg).__name__} fields for {name!r}: {unknown}")
        cfg = dataclasses.replace(cfg, **overrides)
    return algorithm.make(obs_dim, act_dim, cfg, device, seed)


_BUILTIN: tuple[Algorithm[Any], ...] = (
    Algorithm(
        "cql",
        CQLConfig,
        CQL,
        discrete=False,
        summary="CQL(H): SAC plus the importance-sampled log-sum-exp gap (Eq. 4, App. F).",
    ),
    Algorithm(
        "cql-lagrange",
        CQLConfig,
        CQL,
        discrete=False,
        summary="CQL with the weight α' tuned by dual descent to a gap threshold (Eq. 5).",
        preset={"lagrange": True},
    ),
    Algorithm(
        "cql-rho",
        CQLConfig,
        CQL,
        discrete=False,
        summary="CQL(ρ): the same samples without importance weights.",
        preset={"cql_estimator": "rho"},
    ),
    Algorithm(
        "cql-fast",
        CQLConfig,
        CQL,
        discrete=False,
        summary="CQL(ρ) with one sampled action per group (not ten), Q(s, a_D) in the "
        "log-sum-exp and the TD target at the policy's mean action: a far cheaper update.",
        preset={
            "cql_n_actions": 1,
            "cql_estimator": "rho",
            "cql_data_in_push_down": True,
            "backup_action": "mean",
        },
    ),
    Algorithm(
        "cal-ql",
        CQLConfig,
        CQL,
        discrete=False,
        summary="Cal-QL: CQL with the policy samples' Q floored at the data's return-to-go.",
        preset={"calibrated": True},
    ),
    Algorithm(
        "sac",
        SACConfig,
        OfflineSAC,
        discrete=False,
        summary="Naive offline SAC: no conservative term (over-estimates).",
    ),
    Algorithm("bc", BCConfig, BC, discrete=False, summary="Behaviour cloning."),
    Algorithm(
        "discrete-cql",
        DiscreteCQLConfig,
        DiscreteCQL,
        discrete=True,
        summary="Discrete CQL(H): Double DQN plus the exact log-sum-exp gap.",
    ),
    Algorithm(
        "discrete-bc",
        DiscreteBCConfig,
        DiscreteBC,
        discrete=True,
        summary="Behaviour cloning on discrete actions (cross-entropy).",
    ),
)
for _entry in _BUILTIN:
    register(_entry)
