"""The typed config tree of a training run: the run's settings (:class:`RunConfig`) plus the
chosen algorithm's own config (from :data:`deep.algos.ALGORITHMS`), and the command line read
from it by tyro, one subcommand per algorithm::

    python -m deep.train cql --dataset pendulum-medium --cql-weight 10 --steps 20000
    python -m deep.train cql --help        # every CQL field and every run setting
    python -m deep.train resume runs/cql   # continue a stopped run with its saved config

``config.json`` and each checkpoint store ``{"algo": name, **run settings}`` under
``train`` / ``config`` and the algorithm's config under ``agent`` / ``agent_config``. Run
folders written before this layout (one flat option set with per-agent overrides) load too:
their agent config was saved in full, and their run settings are the same fields.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import torch
import tyro
from typeguard import TypeCheckError, check_type

from deep.algos import ALGORITHMS, Agent, Algorithm, check_action_kind, get_algorithm

__all__ = [
    "DatasetInfo",
    "RunConfig",
    "TrainConfig",
    "build_agent",
    "checkpoint_interval",
    "cli_type",
    "config_from_dict",
    "config_to_dict",
    "default_out_dir",
    "evaluation_gamma",
    "make_config",
    "options_config",
    "resolve_device",
    "reward_transform",
    "validate_config",
]

C = TypeVar("C")


@dataclass
class RunConfig:
    """The settings of a run that every algorithm shares."""

    dataset: str = "pendulum-medium"
    """Dataset: a built-in name (pendulum-*, cartpole-*, inverted-double-pendulum-*, with
    * = random, medium, expert or medium-expert; hopper-*, halfcheetah-*, walker2d-*, with
    * = random, medium, expert, medium-replay or medium-expert), a D4RL .hdf5, an .npz, or
    minari:<id>. Built-ins are generated on first use and cached in $CQL_COMPANION_DATA."""

    steps: int = 20_000
    """Number of offline gradient steps (one batch each)."""

    online_steps: int = 0
    """Offline-to-online fine-tuning: after --steps, this many steps in the dataset's
    environment with the agent's stochastic policy, each followed by one gradient step on a
    batch mixing dataset and online transitions (deep.online); 0: offline only."""

    online_ratio: float = 0.5
    """Fraction of each fine-tuning batch drawn from the online transitions once an online
    episode has finished (the rest from the dataset; Cal-QL's symmetric sampling is 0.5)."""

    time_limit: float | None = None
    """Stop after this many minutes of training (evaluations not counted), at the first log
    step past it, which is evaluated, checkpointed and summarised like a run's end; the
    summary says how many steps were done. Where such a run stops depends on the machine's
    speed; default: no limit."""

    seed: int = 0
    """Seed of network initialisation, batch sampling and evaluation episodes."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: auto picks cuda when available."""

    threads: int = 1
    """CPU threads for torch (torch.set_num_threads; 0 keeps torch's default). Results are
    bit-reproducible for a fixed value. One thread is usually fastest for these small networks
    and avoids the heavy slow-down of oversubscribed cores when several runs share a machine."""

    out: str | None = None
    """Run directory; default runs/<algo>-<dataset>-seed<seed>."""

    batch_size: int = 256
    """Transitions per gradient step."""

    log_every: int = 250
    """Average the training metrics, check them for NaN/inf and write a metrics row every this
    many steps."""

    eval_every: int = 2_500
    """Evaluate the policy in the dataset's environment every this many steps (and at the
    end)."""

    eval_episodes: int = 10
    """Episodes per evaluation (run as one vectorised batch)."""

    checkpoint_every: int | None = None
    """Write a checkpoint every this many steps (a multiple of --log-every); default: the
    smallest multiple of --log-every that is at least --eval-every."""

    normalize_obs: bool = True
    """Standardise observations with the dataset's mean and std (recommended for continuous
    control); the statistics are saved in the checkpoint and applied at evaluation."""

    env_id: str | None = None
    """Gymnasium id to evaluate on; default: the dataset's own environment."""

    max_episode_steps: int | None = None
    """For a D4RL file without a 'timeouts' key: an episode ends every this many steps (d4rl's
    env._max_episode_steps fallback); such a file is refused without it."""

    action_low: float | None = None
    """Lower bound of the dataset's continuous actions, in its own units, for every action
    dimension; default: the file's action_low attribute, else -1. Actions are rescaled to
    [-1, 1] on loading (the environment's RescaleAction maps the policy back)."""

    action_high: float | None = None
    """Upper bound of the dataset's continuous actions, as --action-low; default: the file's
    action_high attribute, else 1."""

    eval_gamma: float | None = None
    """Discount of the evaluation's Monte-Carlo returns for agents without a γ of their own
    (bc, discrete-bc); default 0.99. Agents with a γ use it, so this option is refused for
    them (set --gamma instead)."""

    returns_to_go: bool = False
    """Put each transition's discounted Monte-Carlo return-to-go (with the agent's --gamma,
    on its scaled rewards) in every minibatch, as Cal-QL needs (deep.data.returns_to_go)."""

    tensorboard: bool = True
    """Write TensorBoard event files to <out>/tb."""

    progress: bool = True
    """Show a progress bar with live metrics."""

    plots: bool = True
    """Write learning-curve PNGs at the end."""


@dataclass
class TrainConfig(Generic[C]):
    """Offline training of one agent on one dataset: the algorithm's name, its config, and
    the run's settings."""

    algo: Annotated[str, tyro.conf.Suppress]
    """Name of the algorithm in :data:`deep.algos.ALGORITHMS` (the subcommand)."""

    agent: Annotated[C, tyro.conf.OmitArgPrefixes]
    """The algorithm's own config."""

    run: Annotated[RunConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=RunConfig)
    """The run's settings."""

    @property
    def algorithm(self) -> Algorithm[C]:
        """The registry entry of :attr:`algo`."""
        found: Algorithm[C] = get_algorithm(self.algo)
        return found


def make_config(algo: str, run: RunConfig | None = None, **agent_fields: Any) -> TrainConfig[Any]:
    """The :class:`TrainConfig` of ``algo`` with its default config, the given agent fields
    replaced (an unknown field is an error naming it) and ``run`` (default settings)."""
    algorithm = get_algorithm(algo)
    base = algorithm.default_config()
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(agent_fields) - names)
    if unknown:
        raise ValueError(
            f"{type(base).__name__} (algorithm {algo}) has no field(s) {unknown}; "
            f"its fields are {sorted(names)}"
        )
    agent = dataclasses.replace(base, **agent_fields)
    return TrainConfig(algo, algorithm.check_config(agent), run if run is not None else RunConfig())


def _check_value(owner: type, name: str, value: Any, where: str) -> Any:
    """``value`` for the field ``name`` of the dataclass ``owner``, lists read as tuples; a
    value of the wrong type is a ValueError naming the field, the value and the type."""
    hint = typing.get_type_hints(owner, include_extras=False)[name]
    value = _tuples(value)
    wrong = isinstance(value, bool) and hint in (int, float, int | None, float | None)
    if not wrong:
        try:
            check_type(value, hint)
        except TypeCheckError:
            wrong = True
    if wrong:
        if typing.get_origin(hint) is Literal:
            shown = "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
        else:
            shown = "of type " + (
                hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            )
        raise ValueError(f"{where}: {name} = {value!r} is not {shown}")
    return float(value) if hint is float and isinstance(value, int) else value


def options_config(
    algo: str, options: Mapping[str, Any], where: str = "options", **run_fields: Any
) -> TrainConfig[Any]:
    """The :class:`TrainConfig` of ``algo`` from ``options``, each the name of a run setting
    or of a field of the algorithm's config (``cql_weight`` or ``cql-weight``; lists for
    tuples), with ``run_fields`` on top: what every tool builds instead of a command line.
    An unknown name, a value of the wrong type or an impossible value is a ValueError that
    names it and ``where``."""
    algorithm = get_algorithm(algo)
    run_names = {f.name for f in dataclasses.fields(RunConfig)}
    agent_names = {f.name for f in dataclasses.fields(algorithm.config_type)}
    run: dict[str, Any] = {}
    agent: dict[str, Any] = {}
    for key, value in {**options, **run_fields}.items():
        name = key.replace("-", "_")
        if name in agent_names:
            agent[name] = _check_value(algorithm.config_type, name, value, where)
        elif name in run_names:
            run[name] = _check_value(RunConfig, name, value, where)
        else:
            raise ValueError(
                f"{where}: {algo} has no option {key!r} (see python -m deep.train {algo} --help)"
            )
    try:
        config = make_config(algo, RunConfig(**run), **agent)
        validate_config(config)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return config


def cli_type() -> Any:
    """The command line's type: one tyro subcommand per registered algorithm, each the
    :class:`TrainConfig` of that algorithm's config type with its defaults."""
    members = tuple(
        Annotated[
            TrainConfig[algo.config_type],  # type: ignore[name-defined]
            tyro.conf.subcommand(
                name,
                default=TrainConfig(name, algo.default_config(), RunConfig()),
                description=algo.summary,
            ),
        ]
        for name, algo in ALGORITHMS.items()
    )
    return Union[members]  # noqa: UP007  (a runtime union of a dynamic tuple)


def validate_config(config: TrainConfig[Any]) -> None:
    """Reject impossible option values with a message naming the option."""
    run = config.run
    get_algorithm(config.algo)
    if run.seed < 0:
        raise ValueError(f"--seed must be >= 0 (numpy seeds are unsigned), got {run.seed}")
    if run.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {run.threads}")
    positive = ("steps", "batch_size", "log_every", "eval_every", "eval_episodes")
    for name in positive:
        if getattr(run, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(run, name)}")
    if run.online_steps < 0:
        raise ValueError(f"--online-steps must be >= 0, got {run.online_steps}")
    if not 0.0 <= run.online_ratio <= 1.0:
        raise ValueError(f"--online-ratio must be in [0, 1], got {run.online_ratio}")
    if run.time_limit is not None and not run.time_limit > 0:
        raise ValueError(f"--time-limit is in minutes and must be > 0, got {run.time_limit}")
    ckpt = run.checkpoint_every
    if ckpt is not None and (ckpt < 1 or ckpt % run.log_every):
        raise ValueError(
            f"--checkpoint-every must be a positive multiple of --log-every ({run.log_every}) "
            f"so that no partly averaged log interval is lost on resume; got {ckpt}"
        )
    if run.eval_gamma is not None and hasattr(config.agent, "gamma"):
        raise ValueError(
            f"--eval-gamma is for agents without a discount of their own; {config.algo} "
            "evaluates with its --gamma"
        )
    if run.returns_to_go and not hasattr(config.agent, "gamma"):
        raise ValueError(
            f"--returns-to-go discounts with the agent's --gamma; {config.algo} has none "
            "(it learns no value, so it has no use for returns-to-go)"
        )


def checkpoint_interval(config: RunConfig) -> int:
    """Steps between checkpoints: the option, or the first multiple of log_every >= eval_every."""
    if config.checkpoint_every is not None:
        return config.checkpoint_every
    return config.log_every * max(1, math.ceil(config.eval_every / config.log_every))


def default_out_dir(config: TrainConfig[Any]) -> Path:
    """``runs/<algo>-<dataset>-seed<seed>``, the dataset spec reduced to a file-name stem."""
    stem = Path(config.run.dataset.replace("minari:", "").replace("/", "-")).stem
    return Path("runs") / f"{config.algo}-{stem}-seed{config.run.seed}"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu, or install a CUDA build of torch on a machine with a GPU"
        )
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@dataclass(frozen=True)
class DatasetInfo:
    """What an agent and its evaluation need to know about the data (saved in checkpoints)."""

    name: str
    env_id: str | None
    obs_dim: int
    act_dim: int
    discrete: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_dataset(config: TrainConfig[Any], info: DatasetInfo) -> None:
    """The algorithm suits the dataset's kind of actions (else an error naming both)."""
    check_action_kind(config.algorithm, info.discrete, f"dataset {info.name!r}")


def build_agent(config: TrainConfig[Any], info: DatasetInfo, device: torch.device) -> Agent:
    """The agent of ``config`` for ``info``'s dimensions, its generators seeded from the run's
    seed; an algorithm for the other kind of actions is an error naming both."""
    check_dataset(config, info)
    return config.algorithm.make(
        info.obs_dim, info.act_dim, config.agent, device=device, seed=config.run.seed
    )


def evaluation_gamma(config: TrainConfig[Any]) -> float:
    """The discount of the evaluation's Monte-Carlo returns: the agent's own γ; for an agent
    without one, ``--eval-gamma`` if given, else 0.99."""
    gamma = getattr(config.agent, "gamma", None)
    if gamma is not None:
        return float(gamma)
    return float(config.run.eval_gamma) if config.run.eval_gamma is not None else 0.99


def reward_transform(agent_config: Any) -> tuple[float, float]:
    """(reward_scale, reward_bias) of an agent config; (1, 0) for agents without them."""
    return (
        float(getattr(agent_config, "reward_scale", 1.0)),
        float(getattr(agent_config, "reward_bias", 0.0)),
    )


# ------------------------------------------------------------------------ serialisation


def _plain(x: Any) -> Any:
    """JSON-ready primitives: tuples become lists, recursively."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _tuples(x: Any) -> Any:
    """Inverse of :func:`_plain` for config values: lists become tuples (no config field is a
    list)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def run_to_dict(config: TrainConfig[Any]) -> dict[str, Any]:
    """``{"algo": name, **run settings}``: what ``config.json`` keeps under ``train``."""
    return {"algo": config.algo, **_plain(dataclasses.asdict(config.run))}


def agent_to_dict(config: TrainConfig[Any]) -> dict[str, Any]:
    """The algorithm's config as JSON-ready primitives."""
    plain: dict[str, Any] = _plain(dataclasses.asdict(config.agent))
    return plain


def config_to_dict(config: TrainConfig[Any]) -> dict[str, Any]:
    """``{"train": run_to_dict, "agent": agent_to_dict}``."""
    return {"train": run_to_dict(config), "agent": agent_to_dict(config)}


# Options of the flat layout before the config tree: agent overrides (already in the saved
# agent config), the JSON escape hatch and the resume path. ``gamma`` of an agent without one
# discounted its evaluation returns: today's ``eval_gamma``.
_FLAT_ONLY = frozenset(
    {
        "resume",
        "agent_set",
        "critic_lr",
        "actor_lr",
        "target_tau",
        "hidden_dims",
        "n_critics",
        "cql_weight",
        "cql_temperature",
        "cql_n_actions",
        "lagrange_threshold",
        "bc_steps",
        "reward_scale",
        "reward_bias",
    }
)


def config_from_dict(
    train: Mapping[str, Any], agent: Mapping[str, Any], source: str = "config"
) -> TrainConfig[Any]:
    """Inverse of :func:`run_to_dict` and :func:`agent_to_dict`; also reads the flat layout
    of earlier versions. Unknown keys are an error naming them and ``source``."""
    data = dict(train)
    if "algo" not in data:
        raise ValueError(f"{source}: no 'algo' entry; not a run config of this project")
    algo = str(data.pop("algo"))
    try:
        algorithm = get_algorithm(algo)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if "agent_set" in data or "hidden_dims" in data:  # the flat layout
        gamma = data.pop("gamma", None)
        for key in _FLAT_ONLY:
            data.pop(key, None)
        if gamma is not None and not hasattr(algorithm.config_type, "gamma"):
            data.setdefault("eval_gamma", gamma)
    run_names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - run_names)
    if unknown:
        raise ValueError(f"{source}: unknown run setting(s) {unknown}; known: {sorted(run_names)}")
    agent_names = {f.name for f in dataclasses.fields(algorithm.config_type)}
    unknown = sorted(set(agent) - agent_names)
    if unknown:
        raise ValueError(
            f"{source}: {algorithm.config_type.__name__} has no field(s) {unknown}; the run was "
            "written by another version of this project"
        )
    run = RunConfig(**{k: _tuples(v) for k, v in data.items()})
    agent_config = algorithm.config_type(**{k: _tuples(v) for k, v in agent.items()})
    return TrainConfig(algo, algorithm.check_config(agent_config), run)
