"""Train an offline agent from the command line: one config, the loop, evaluation, logs.

::

    python -m deep.train --algo cql --dataset pendulum-medium --steps 20000 --out runs/cql
    python -m deep.train --resume runs/cql      # continue a stopped (or killed) run
    cql-train --help

A run directory (``--out``) holds:

- ``config.json``: the resolved config (these options plus the agent's full config);
- ``checkpoint.pt``: the latest checkpoint, written atomically; it loads with
  ``torch.load(weights_only=True)`` (see :mod:`deep.checkpoint`);
- ``metrics.csv``: one row per log step (training metrics averaged over the interval) and per
  evaluation step (return, normalised score, and the conservative-value diagnostic
  ``eval/q_estimate`` next to ``eval/mc_return``);
- ``tb/``: TensorBoard event files; ``learning_curves.png``; ``summary.json`` at the end.

Determinism and resume: every source of randomness is seeded from ``--seed`` and saved in the
checkpoint: the agent's own generators (initialisation, training draws, acting; part of its
``state_dict``), the batch sampler's ``torch.Generator``, and, although nothing here draws from
them, torch's, numpy's and python's global generators. The checkpoint also holds the
optimisers, the step counter and the metric rows logged so far. Evaluation
episodes are seeded by :func:`eval_seed` ``(seed, step)``, so they do not depend on when a run
was interrupted. A run killed at any moment and resumed with ``--resume`` therefore ends, on
CPU, with the same metrics as an uninterrupted one. Checkpoints are written only at log steps
(so no half-averaged interval is lost) and only when every tensor of the state is finite.

Host synchronisation: ``agent.update`` returns 0-d tensors; they stay on the device in a
:class:`MetricBuffer` until a log step reads them all with one copy. The non-finite check runs
at the same time, so a NaN is reported at most ``--log-every`` steps late, naming the metric and
the exact step where it first appeared.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deep.agents import Agent
from deep.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)

Algo = Literal["cql", "cql-lagrange", "cql-rho", "sac", "bc", "discrete-cql"]
ALGOS: tuple[str, ...] = ("cql", "cql-lagrange", "cql-rho", "sac", "bc", "discrete-cql")
DISCRETE_ALGOS = frozenset({"discrete-cql"})

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
TENSORBOARD_DIR = "tb"

_AGENT = {"agent": True}
"""Field metadata marking a :class:`TrainConfig` option that overrides an agent config field."""


@dataclass
class TrainConfig:
    """Offline training of one agent on one dataset.

    Options marked "agent" override a field of the chosen algorithm's config dataclass
    (``deep.agents``), of the same name except where noted; left at ``None`` they keep that
    config's default, so the defaults live in one place. Setting one that the algorithm does
    not have is an error; ``--agent-set`` reaches every other field.
    """

    algo: Algo = "cql"
    """Algorithm: cql (CQL(H) with importance-sampled log-sum-exp), cql-lagrange (CQL weight
    tuned by dual descent to a gap threshold), cql-rho (CQL(ρ): uniform and policy actions
    without importance weights), sac (naive offline SAC, no conservative term), bc (behaviour
    cloning), discrete-cql (exact log-sum-exp over discrete actions)."""

    dataset: str = "pendulum-medium"
    """Dataset: a built-in name (pendulum-*, cartpole-*, inverted-double-pendulum-*, with
    * = random, medium, expert or medium-expert), a D4RL .hdf5, an .npz, or minari:<id>."""

    steps: int = 20_000
    """Number of gradient steps (one batch each)."""

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

    resume: str | None = None
    """Continue the run in this directory from its last checkpoint, with its saved config
    (other options are ignored)."""

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

    tensorboard: bool = True
    """Write TensorBoard event files to <out>/tb."""

    progress: bool = True
    """Show a progress bar with live metrics."""

    plots: bool = True
    """Write learning-curve PNGs at the end."""

    # ---- agent hyper-parameters: None keeps the algorithm's default (deep.agents) ----------
    gamma: float | None = field(default=None, metadata=_AGENT)
    """agent: discount factor γ; evaluation's Monte-Carlo returns use the same γ (for bc,
    which does not bootstrap, only those)."""

    critic_lr: float | None = field(default=None, metadata=_AGENT)
    """agent: learning rate of the critics (cql*, sac) or of the Q-network (discrete-cql)."""

    actor_lr: float | None = field(default=None, metadata=_AGENT)
    """agent: learning rate of the actor (cql*, sac) or of the policy (bc)."""

    target_tau: float | None = field(default=None, metadata=_AGENT)
    """agent: Polyak rate τ of the target critics."""

    hidden_dims: tuple[int, ...] | None = field(default=None, metadata=_AGENT)
    """agent: hidden layer widths of every network of the agent."""

    n_critics: int | None = field(default=None, metadata=_AGENT)
    """agent: number of critics (the minimum over them is used)."""

    cql_weight: float | None = field(default=None, metadata=_AGENT)
    """agent: weight w of the CQL gap in the critic loss."""

    cql_temperature: float | None = field(default=None, metadata=_AGENT)
    """agent: temperature T of the soft maximum in the CQL regulariser."""

    cql_n_actions: int | None = field(default=None, metadata=_AGENT)
    """agent: sampled actions per group (uniform, π at s, π at s') of the CQL estimate."""

    lagrange_threshold: float | None = field(default=None, metadata=_AGENT)
    """agent: gap threshold τ of cql-lagrange (α' grows while the gap exceeds it)."""

    bc_steps: int | None = field(default=None, metadata=_AGENT)
    """agent: behaviour-cloning warm-start steps of the actor (cql*, sac)."""

    reward_scale: float | None = field(default=None, metadata=_AGENT)
    """agent: rewards enter the TD target as reward_scale · r + reward_bias."""

    reward_bias: float | None = field(default=None, metadata=_AGENT)
    """agent: see --reward-scale."""

    agent_set: tuple[str, ...] = ()
    """Any other agent config field, as KEY=VALUE (VALUE read as JSON, else as a string), e.g.
    --agent-set max_q_backup=true init_entropy_alpha=0.1; see deep/agents.py for the fields."""

    def __post_init__(self) -> None:
        if self.hidden_dims is not None:
            self.hidden_dims = tuple(int(h) for h in self.hidden_dims)


_DEFAULTS = TrainConfig()

# --------------------------------------------------------------------------- configuration


def agent_overrides(config: TrainConfig) -> dict[str, Any]:
    """The agent options (marked "agent") set on the command line, i.e. not ``None``."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.metadata.get("agent") and getattr(config, f.name) is not None
    }


def validate_config(config: TrainConfig) -> None:
    """Reject impossible option values with a message naming the option."""
    if config.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {config.threads}")
    positive = ("steps", "batch_size", "log_every", "eval_every", "eval_episodes")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}"
            )
    if config.algo not in ALGOS:
        raise ValueError(f"--algo must be one of {', '.join(ALGOS)}, got {config.algo!r}")
    ckpt = config.checkpoint_every
    if ckpt is not None and (ckpt < 1 or ckpt % config.log_every):
        raise ValueError(
            f"--checkpoint-every must be a positive multiple of --log-every ({config.log_every}) "
            f"so that no partly averaged log interval is lost on resume; got {ckpt}"
        )


def checkpoint_interval(config: TrainConfig) -> int:
    """Steps between checkpoints: the option, or the first multiple of log_every >= eval_every."""
    if config.checkpoint_every is not None:
        return config.checkpoint_every
    return config.log_every * max(1, math.ceil(config.eval_every / config.log_every))


def default_out_dir(config: TrainConfig) -> Path:
    """``runs/<algo>-<dataset>-seed<seed>``, the dataset spec reduced to a file-name stem."""
    stem = Path(config.dataset.replace("minari:", "").replace("/", "-")).stem
    return Path("runs") / f"{config.algo}-{stem}-seed{config.seed}"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def eval_seed(seed: int, step: int) -> int:
    """Seed of the first evaluation episode at ``step``: a hash of ``(seed, step)``.

    Episode ``i`` then uses ``eval_seed + i`` (``deep.envs.evaluate``). Being a function of the
    step alone, the episodes do not change when a run is resumed. ``SeedSequence`` mixes the
    pair, so neighbouring steps or seeds do not share episodes; 31 bits keep gymnasium happy.
    """
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint32)[0] >> 1)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as JSON-ready primitives (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown keys are an error naming them."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown option(s) {unknown}; known: {sorted(names)}")
    return TrainConfig(**dict(data))


# ------------------------------------------------------------------------------- agent glue


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


def _agent_targets(option: str, fields: set[str]) -> tuple[str, ...]:
    """Agent-config fields that the train option ``option`` sets (empty: not applicable).

    Most options share the agent field's name. The exceptions are the single-network agents,
    whose one ``lr`` is the critic's (discrete-cql) or the policy's (bc), and ``hidden_dims``,
    which sets every network's widths.
    """
    if option == "hidden_dims":
        return tuple(f for f in ("actor_hidden", "critic_hidden", "hidden") if f in fields)
    if option == "critic_lr" and "critic_lr" not in fields:
        return ("lr",) if "lr" in fields and "cql_weight" in fields else ()
    if option == "actor_lr" and "actor_lr" not in fields:
        return ("lr",) if "lr" in fields and "cql_weight" not in fields else ()
    return (option,) if option in fields else ()


def _parse_agent_set(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of --agent-set; VALUE as JSON (lists become tuples), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--agent-set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out[key.strip().replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return out


def make_agent_config(config: TrainConfig, discrete: bool) -> Any:
    """The algorithm's default config (``deep.agents.default_config``) with the overrides.

    Raises ``ValueError`` naming an option that the algorithm's config does not have.
    """
    from deep import agents

    base = agents.default_config(config.algo, discrete=discrete)
    fields = {f.name for f in dataclasses.fields(base)}
    updates: dict[str, Any] = {}
    for option, value in agent_overrides(config).items():
        targets = _agent_targets(option, fields)
        if not targets and option == "gamma":
            continue  # an agent without bootstrapping (bc): γ only discounts evaluation returns
        if not targets:
            raise ValueError(
                f"--{option.replace('_', '-')} does not apply to --algo {config.algo} "
                f"({type(base).__name__} has no matching field)"
            )
        updates.update(dict.fromkeys(targets, value))
    for key, value in _parse_agent_set(config.agent_set).items():
        if key not in fields:
            raise ValueError(
                f"--agent-set {key}: {type(base).__name__} (--algo {config.algo}) has no field "
                f"{key!r}; its fields are {sorted(fields)}"
            )
        updates[key] = value
    return dataclasses.replace(base, **updates)


def build_agent(config: TrainConfig, info: DatasetInfo, device: torch.device) -> tuple[Agent, Any]:
    """Create the agent of ``config.algo`` for ``info``'s dimensions; returns (agent, its config).

    The agent's own generators (initialisation, training draws, acting) are seeded from
    ``config.seed``.
    """
    from deep import agents

    if config.algo in DISCRETE_ALGOS and not info.discrete:
        raise ValueError(
            f"--algo {config.algo} needs discrete actions; dataset {info.name!r} has continuous "
            "ones (use cql, cql-lagrange, cql-rho, sac or bc)"
        )
    if info.discrete and config.algo not in (*DISCRETE_ALGOS, "bc"):
        raise ValueError(
            f"--algo {config.algo} needs continuous actions; dataset {info.name!r} has "
            f"{info.act_dim} discrete actions (use discrete-cql or bc)"
        )
    agent_config = make_agent_config(config, info.discrete)
    agent = agents.make_agent(
        config.algo,
        info.obs_dim,
        info.act_dim,
        config=agent_config,
        device=device,
        seed=config.seed,
        discrete=info.discrete,
    )
    return agent, agent_config


def agent_gamma(config: TrainConfig, agent_config: Any) -> float:
    """The discount of the evaluation's Monte-Carlo returns: the agent's own γ; for an agent
    without one (bc), ``--gamma`` if given, else 0.99."""
    if hasattr(agent_config, "gamma"):
        return float(agent_config.gamma)
    return float(config.gamma) if config.gamma is not None else 0.99


# ------------------------------------------------------------------------------ evaluation


def critic_units_return(
    discounted: np.ndarray,
    lengths: np.ndarray,
    gamma: float,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
) -> np.ndarray:
    """Discounted returns in the units the critic learns, ``r' = reward_scale · r + reward_bias``.

    ``G' = Σ_{t<T} γ^t (c r_t + b) = c G + b (1 − γ^T) / (1 − γ)`` (the last factor is T when
    γ = 1). Shapes: ``discounted`` G (n,), ``lengths`` T (n,) -> (n,).
    """
    g = np.asarray(discounted, dtype=np.float64)
    t = np.asarray(lengths, dtype=np.float64)
    horizon = t if gamma == 1.0 else (1.0 - gamma**t) / (1.0 - gamma)
    out: np.ndarray = reward_scale * g + reward_bias * horizon
    return out


def reward_transform(agent_config: Any) -> tuple[float, float]:
    """(reward_scale, reward_bias) of an agent config; (1, 0) for agents without them."""
    return (
        float(getattr(agent_config, "reward_scale", 1.0)),
        float(getattr(agent_config, "reward_bias", 0.0)),
    )


def evaluate_agent(
    agent: Agent,
    *,
    env: str,
    dataset_name: str,
    normalizer: Any | None,
    episodes: int,
    seed: int,
    gamma: float,
    device: torch.device,
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
) -> dict[str, float]:
    """Run ``episodes`` deterministic-policy episodes and the conservative-value diagnostic.

    Returns ``eval/return_mean``, ``eval/return_std``, ``eval/length_mean`` (undiscounted
    environment returns), ``eval/normalized_score`` (NaN when the dataset has no reference
    scores) and the diagnostic: ``eval/q_estimate``, the mean over the episodes' start states
    s₀ of ``Q(s₀, π(s₀))`` (the critic at the policy's own action, on normalised observations
    when normalisation is on; NaN for agents without a critic), next to ``eval/mc_return``,
    the mean discounted return ``Σ_t γ^t r'_t`` actually obtained from those s₀, with the
    training γ and in the critic's reward units (:func:`critic_units_return`). A conservative
    critic has ``q_estimate`` below ``mc_return``.

    Caveat: at a time limit the critic bootstraps (a truncation is not terminal), so Q(s₀)
    estimates the value beyond the limit too, while the Monte-Carlo sum stops there; the
    missing tail is at most ``γ^T max|r'| / (1 − γ)`` (for Pendulum, T = 200 and γ = 0.99:
    ``0.134 · max|r'| / 0.01``).
    """
    from deep import envs

    def prepare(obs: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(obs, dtype=torch.float32, device=device)
        return normalizer(x) if normalizer is not None else x

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.act(prepare(obs), deterministic=True).cpu().numpy()

    result = envs.evaluate(policy, env, n_episodes=episodes, seed=seed, gamma=gamma)
    q_estimate = math.nan
    q_value = getattr(agent, "q_value", None) if agent.has_critic else None
    if q_value is not None:
        with torch.no_grad():
            s0 = prepare(result.start_observations)
            q_estimate = float(q_value(s0, agent.act(s0, deterministic=True)).mean())
    try:
        score = float(np.mean(envs.normalized_score(dataset_name, result.returns)))
    except ValueError:
        try:
            score = float(np.mean(envs.normalized_score(env, result.returns)))
        except ValueError:
            score = math.nan
    return {
        "eval/return_mean": float(result.returns.mean()),
        "eval/return_std": float(result.returns.std()),
        "eval/length_mean": float(result.lengths.mean()),
        "eval/normalized_score": score,
        "eval/q_estimate": q_estimate,
        "eval/mc_return": float(
            critic_units_return(
                result.discounted_returns, result.lengths, gamma, reward_scale, reward_bias
            ).mean()
        ),
    }


# --------------------------------------------------------------------------------- metrics


class NonFiniteError(RuntimeError):
    """Training produced a NaN or inf; the run stopped without writing a checkpoint."""


class MetricBuffer:
    """Per-step metric tensors kept on the device until :meth:`flush` reads them in one copy.

    Each :meth:`append` stacks the step's 0-d tensors into one (M,) tensor (no host sync);
    :meth:`flush` stacks the interval into (K, M) per key set, copies it to the host, checks
    every value for NaN/inf (naming the first bad metric and step) and returns the means.
    """

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._keys: list[tuple[str, ...]] = []
        self._values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._steps)

    def append(self, step: int, metrics: Mapping[str, torch.Tensor | float]) -> None:
        if not metrics:
            return
        values = [torch.as_tensor(v).detach().reshape(()).float() for v in metrics.values()]
        self._steps.append(step)
        self._keys.append(tuple(metrics))
        self._values.append(torch.stack(values))

    def flush(self) -> dict[str, float]:
        """Means over the buffered steps; raises :class:`NonFiniteError` on any NaN/inf."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        first_bad: tuple[int, str, float] | None = None
        i = 0
        while i < len(self._steps):
            # Consecutive steps with the same key set form one (K, M) block and one host copy.
            j = i
            while j < len(self._steps) and self._keys[j] == self._keys[i]:
                j += 1
            keys = self._keys[i]
            block = torch.stack(self._values[i:j]).cpu().double().numpy()
            bad = ~np.isfinite(block)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                candidate = (self._steps[i + int(r)], keys[int(c)], float(block[r, c]))
                if first_bad is None or candidate[0] < first_bad[0]:
                    first_bad = candidate
            for c, key in enumerate(keys):
                sums[key] = sums.get(key, 0.0) + float(block[:, c].sum())
                counts[key] = counts.get(key, 0) + (j - i)
            i = j
        self._steps.clear()
        self._keys.clear()
        self._values.clear()
        if first_bad is not None:
            step, key, value = first_bad
            raise NonFiniteError(f"metric {key!r} became {value} at step {step}")
        return {k: sums[k] / counts[k] for k in sums}


def first_nonfinite_tensor(state: Any, prefix: str = "") -> str | None:
    """Path of the first floating tensor in a nested state holding NaN/inf, else None."""
    tensors: list[tuple[str, torch.Tensor]] = []

    def walk(x: Any, path: str) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() or x.is_complex():
                tensors.append((path, x))
        elif isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(x, list | tuple):
            for k, v in enumerate(x):
                walk(v, f"{path}[{k}]")

    walk(state, prefix)
    # One host copy per device, not one per tensor.
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    finite = [True] * len(tensors)
    for indices in by_device.values():
        flags = torch.stack([tensors[i][1].detach().isfinite().all() for i in indices]).cpu()
        for i, ok in zip(indices, flags.tolist(), strict=True):
            finite[i] = bool(ok)
    bad = [path for (path, _), ok in zip(tensors, finite, strict=True) if not ok]
    return bad[0] if bad else None


class RunLog:
    """Metric rows of a run: metrics.csv (rewritten atomically) and TensorBoard scalars.

    Rows are kept in memory (and in every checkpoint), keyed by step; a log step and an
    evaluation step that coincide share one row. Rewriting the whole CSV from the rows makes a
    resumed run's file end exactly at the checkpoint's rows, with no duplicate steps.
    """

    def __init__(
        self, out: Path, rows: Sequence[Mapping[str, float]], tensorboard: bool, purge_step: int
    ) -> None:
        self.path = out / METRICS_NAME
        self.rows: list[dict[str, float]] = [dict(r) for r in rows]
        self.writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run wrote after its last checkpoint.
            self.writer = SummaryWriter(
                str(out / TENSORBOARD_DIR), purge_step=purge_step if purge_step > 0 else None
            )
        self.write_csv()

    def record(self, step: int, values: Mapping[str, float]) -> None:
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": step, **values})
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def write_csv(self) -> None:
        columns: dict[str, None] = {"step": None}
        for row in self.rows:
            columns.update(dict.fromkeys(row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(
                {k: (int(v) if k == "step" else repr(float(v))) for k, v in row.items()}
            )
        atomic_write_text(self.path, buf.getvalue())

    def flush(self) -> None:
        self.write_csv()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def last_value(rows: Sequence[Mapping[str, float]], key: str) -> float:
    """The value of ``key`` in the last row that has it (NaN if none)."""
    for row in reversed(rows):
        if key in row:
            return float(row[key])
    return math.nan


# ------------------------------------------------------------------------------ RNG states


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, python) as checkpoint-safe values.

    This project never draws from the global generators (agents own theirs, evaluation seeds
    its environments); saving them anyway keeps a resume exact if a library does.
    """
    np_state = np.random.get_state()  # noqa: NPY002
    assert isinstance(np_state, tuple)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's and python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


# ------------------------------------------------------------------------------- the run


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, Mapping):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    atomic_write_text(path, json.dumps(clean(data), indent=2, allow_nan=False) + "\n")


def _load_run_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Saved config and checkpoint (None if the run was killed before its first one)."""
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        config = config_from_dict(ckpt["config"], source=str(ckpt_path))
        return config, ckpt
    cfg_path = run_dir / CONFIG_NAME
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"--resume {run_dir}: neither {CHECKPOINT_NAME} nor {CONFIG_NAME} found there"
        )
    saved = json.loads(cfg_path.read_text())
    return config_from_dict(saved["train"], source=str(cfg_path)), None


def run(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a run and return its summary (also written to ``summary.json``).

    Raises :class:`NonFiniteError` when a metric or the state becomes NaN/inf; the last
    checkpoint on disk is then left as it was.
    """
    ckpt: dict[str, Any] | None = None
    if config.resume is not None:
        run_dir = Path(config.resume)
        ignored = [
            "--" + f.name.replace("_", "-")
            for f in dataclasses.fields(TrainConfig)
            if f.name != "resume" and getattr(config, f.name) != getattr(_DEFAULTS, f.name)
        ]
        if ignored:
            warnings.warn(
                f"--resume uses the run's saved config; ignoring {', '.join(ignored)}",
                stacklevel=2,
            )
        config, ckpt = _load_run_config(run_dir)
        config = dataclasses.replace(config, resume=None, out=str(run_dir))
    else:
        run_dir = Path(config.out) if config.out is not None else default_out_dir(config)
        config = dataclasses.replace(config, out=str(run_dir))
        if (run_dir / CHECKPOINT_NAME).exists() or (run_dir / CONFIG_NAME).exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                "another --out"
            )
    validate_config(config)
    device = resolve_device(config.device)
    threads_before = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, run_dir, ckpt, device)
    finally:
        torch.set_num_threads(threads_before)


def _train(
    config: TrainConfig, run_dir: Path, ckpt: dict[str, Any] | None, device: torch.device
) -> dict[str, Any]:
    """The body of :func:`run`, once the config, directory and device are settled."""
    from tqdm import tqdm

    from deep.data import ObservationNormalizer, ReplaySampler, load_dataset, normalize_dataset

    dataset = load_dataset(config.dataset, env_id=config.env_id)
    info = DatasetInfo(
        name=dataset.name,
        env_id=config.env_id or dataset.env_id,
        obs_dim=dataset.obs_dim,
        act_dim=dataset.act_dim,
        discrete=dataset.discrete,
    )
    normalizer: ObservationNormalizer | None = None
    if config.normalize_obs:
        dataset, normalizer = normalize_dataset(dataset)

    seed_everything(config.seed)
    agent, agent_config = build_agent(config, info, device)
    gamma = agent_gamma(config, agent_config)
    scale, bias = reward_transform(agent_config)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    sampler = ReplaySampler(dataset, device, generator)

    run_dir.mkdir(parents=True, exist_ok=True)
    if ckpt is None:
        _write_json(
            run_dir / CONFIG_NAME,
            {
                "train": config_to_dict(config),
                "agent": dataclasses.asdict(agent_config),
                "dataset": info.to_dict(),
                "device": str(device),
            },
        )

    start_step = 0
    train_seconds = 0.0
    rows: list[dict[str, float]] = []
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        generator.set_state(ckpt["sampler_generator"])  # loaded on CPU, as set_state wants
        set_rng_state(ckpt["rng"])
        start_step = int(ckpt["step"])
        train_seconds = float(ckpt["train_seconds"])
        rows = list(ckpt["rows"])

    log = RunLog(run_dir, rows, config.tensorboard, purge_step=start_step + 1 if ckpt else 0)
    ckpt_every = checkpoint_interval(config)
    ckpt_step = start_step if ckpt is not None else None
    env = info.env_id

    def save(step: int) -> None:
        state = agent.state_dict()
        bad = first_nonfinite_tensor(state, "agent")
        if bad is not None:
            raise NonFiniteError(f"state tensor {bad!r} is not finite at step {step}")
        save_checkpoint(
            run_dir / CHECKPOINT_NAME,
            {
                "step": step,
                "config": config_to_dict(config),
                "agent_config": dataclasses.asdict(agent_config),
                "dataset": info.to_dict(),
                "agent": state,
                "normalizer": normalizer.state_dict() if normalizer is not None else None,
                "sampler_generator": generator.get_state(),
                "rng": rng_state(),
                "rows": [dict(r) for r in log.rows],
                "train_seconds": train_seconds,
            },
        )

    def evaluate(step: int) -> dict[str, float]:
        assert env is not None
        # fork_rng: evaluation must not move the training generators, or an evaluation
        # schedule change (or a resume) would change the training trajectory.
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return evaluate_agent(
                agent,
                env=env,
                dataset_name=info.name,
                normalizer=normalizer,
                episodes=config.eval_episodes,
                seed=eval_seed(config.seed, step),
                gamma=gamma,
                device=device,
                reward_scale=scale,
                reward_bias=bias,
            )

    if ckpt is None:
        save(0)
        ckpt_step = 0

    buffer = MetricBuffer()
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        disable=not config.progress,
        dynamic_ncols=True,
        desc=f"{config.algo} {info.name}",
    )
    postfix: dict[str, str] = {}
    try:
        tick = time.perf_counter()
        for step in range(start_step + 1, config.steps + 1):
            metrics = agent.update(sampler.sample(config.batch_size))
            buffer.append(step, metrics)
            last = step == config.steps
            is_log = step % config.log_every == 0 or last
            is_eval = (step % config.eval_every == 0 or last) and env is not None
            is_ckpt = step % ckpt_every == 0 or last
            if not (is_log or is_eval or is_ckpt):
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            train_seconds += now - tick
            if is_log:
                try:
                    means = buffer.flush()
                except NonFiniteError as e:
                    raise NonFiniteError(
                        f"training stopped: {e}. The last good checkpoint "
                        f"({run_dir / CHECKPOINT_NAME}, step {ckpt_step}) was left untouched; "
                        "lower the learning rates, scale the rewards or check the data"
                    ) from None
                log.record(step, means)
                postfix.update(
                    {
                        k.split("/")[-1]: f"{v:.3g}"
                        for k, v in means.items()
                        if k.startswith("loss/")
                    }
                )
            if is_eval:
                result = evaluate(step)
                log.record(step, result)
                postfix["score"] = f"{result['eval/normalized_score']:.1f}"
                postfix["Q/MC"] = f"{result['eval/q_estimate']:.3g}/{result['eval/mc_return']:.3g}"
            log.flush()
            if is_ckpt:
                try:
                    save(step)
                except NonFiniteError as e:
                    raise NonFiniteError(
                        f"training stopped: {e}. The last good checkpoint "
                        f"({run_dir / CHECKPOINT_NAME}, step {ckpt_step}) was left untouched"
                    ) from None
                ckpt_step = step
            bar.set_postfix(postfix, refresh=False)
            bar.update(step - bar.n)
            if log.writer is not None and train_seconds > 0:
                log.writer.add_scalar("perf/steps_per_second", step / train_seconds, step)
            tick = time.perf_counter()
    finally:
        bar.close()
        log.close()

    summary = make_summary(config, info, log.rows, train_seconds)
    _write_json(run_dir / SUMMARY_NAME, summary)
    if config.plots:
        from deep import plots

        plots.plot_run(run_dir)
    return summary


def make_summary(
    config: TrainConfig, info: DatasetInfo, rows: Sequence[Mapping[str, float]], seconds: float
) -> dict[str, Any]:
    """Final numbers of a run: the last evaluation, the last training metrics, throughput."""
    last_train = {
        k: v
        for k, v in (rows[-1].items() if rows else ())
        if k != "step" and not k.startswith("eval/")
    }
    return {
        "algo": config.algo,
        "dataset": info.name,
        "env_id": info.env_id,
        "steps": config.steps,
        "seed": config.seed,
        "normalized_score": last_value(rows, "eval/normalized_score"),
        "return_mean": last_value(rows, "eval/return_mean"),
        "return_std": last_value(rows, "eval/return_std"),
        "q_estimate_mean": last_value(rows, "eval/q_estimate"),
        "mc_return_mean": last_value(rows, "eval/mc_return"),
        "eval_episodes": config.eval_episodes,
        "final_train_metrics": last_train,
        "steps_per_second": config.steps / seconds if seconds > 0 else math.nan,
        "train_seconds": seconds,
    }


# ------------------------------------------------------------------------------ entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m deep.train``, ``cql-train``)."""
    import tyro

    config = tyro.cli(TrainConfig, args=argv, description=(__doc__ or "").split("\n\n")[0])
    try:
        summary = run(config)
    except KeyboardInterrupt:
        where = config.resume or config.out or default_out_dir(config)
        print(f"interrupted; continue with --resume {where}", file=sys.stderr)
        return 130
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "final_train_metrics"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
