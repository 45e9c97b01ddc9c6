"""Our CQL next to d3rlpy's, trained side by side on the same data and scored on the same
start states.

::

    python -m deep.parity --dataset pendulum-medium --seeds 100 101 102 103 --out runs/parity
    python -m deep.parity --seeds 100 101 --peer none          # our side only
    python -m deep.parity --seeds 100 101 --train d3rlpy       # train one side in this process
    python -m deep.parity --seeds 100 101 --train              # only rewrite the table
    python -m deep.parity --seeds 100 101 102 --workers 2      # two runs at once, on Ray
    python -m deep.parity --seeds 100 101 102 --address auto   # on a Ray cluster

For every seed, our CQL is trained by :func:`deep.train.run` and d3rlpy's
(``d3rlpy.algos.CQLConfig``) by its own ``fitter``, with the same settings (by default the
demo's: :class:`deep.demo.DemoConfig`), the same transitions, the same number of updates and
the same batch size. Each (side, seed) run is one call placed by :func:`deep.tasks.map_calls`
as the sweep tool places its trials: in this process by default, or as Ray tasks on
``--workers`` local CPUs or on the cluster at ``--address``. Both final policies
(deterministic: tanh of the actor's mean; d3rlpy's ``algo.predict``) are then run by
:func:`deep.envs.evaluate` on the same ``--final-episodes`` episodes, seeded
``eval_seed(seed, steps)`` (the seeds of our run's own last evaluation), and normalised by
:func:`deep.envs.normalized_score`.

Written to ``--out``: ``ours/seed<k>/`` (a :mod:`deep.train` run folder) and
``d3rlpy/seed<k>/`` (``model.d3``, d3rlpy's own file), each with ``parity.json`` (the seed's
final evaluation and the settings); ``results.md`` and ``results.json``: per-seed scores, mean
± std, IQM and mean with 95% stratified-bootstrap CIs (:mod:`deep.stats`), the 95% bootstrap
CI of the difference of means (ours − d3rlpy, the seeds of each side resampled independently),
Welch's t-test p and the probability of improvement. A seed with a ``parity.json`` is never
redone, so re-running the command resumes (an interrupted run of ours continues from its last
checkpoint; an interrupted d3rlpy run restarts). The table covers every requested seed that is
finished on disk, so two processes (``--train ours`` and ``--train d3rlpy``) can share a
folder.

d3rlpy is optional: without it the default ``--peer auto`` says so in one line (with the
install command: ``make bench-peer``) and runs our side only; ``--peer none`` never imports it.

What is translated, field by field (:func:`d3rlpy_config`)
----------------------------------------------------------
=================================  ===============================================
ours (``CQLConfig`` / ``RunConfig``)  d3rlpy (``CQLConfig``)
=================================  ===============================================
``actor_hidden``, ``critic_hidden``  ``actor_/critic_encoder_factory`` =
                                   ``VectorEncoderFactory(hidden)`` (ReLU after every
                                   hidden layer, then a linear head: the same MLP)
``n_critics``                      ``n_critics``
``gamma``, ``target_tau``          ``gamma``, ``tau``
``critic_lr``, ``actor_lr``        ``critic_learning_rate``, ``actor_learning_rate``
``entropy_lr`` (``auto_entropy``)  ``temp_learning_rate`` (0 when not learned)
``init_entropy_alpha``             ``initial_temperature``
``cql_weight`` (``lagrange=False``) ``conservative_weight``, ``initial_alpha=1``,
                                   ``alpha_learning_rate=0`` (fixed weight),
                                   ``alpha_threshold=0`` (a constant shift of the loss
                                   without a gradient once the weight is fixed)
``cql_n_actions``                  ``n_action_samples`` (N uniform, N π(·|s), N π(·|s'),
                                   all scored at s, as ours)
``backup_entropy``,                ``soft_q_backup`` (True: a sample a' and the entropy
``backup_action``                  term, as ours with ``backup_entropy``; False: the mean
                                   action, as ours with ``backup_action="mean"``)
``max_q_backup`` (max-of-min)      ``max_q_backup`` (d3rlpy's is max_j min_i)
``batch_size``, ``steps``          ``batch_size``, ``n_steps``
``normalize_obs``                  ``observation_scaler=StandardObservationScaler(mean,
                                   std)`` with our normaliser's statistics, so both
                                   standardise identically (d3rlpy would fit them on the
                                   observations of its own transitions, one fewer per
                                   timed-out episode)
=================================  ===============================================

Settings d3rlpy has no field for are refused when they differ from its fixed behaviour:
``cql_temperature`` ≠ 1, ``cql_estimator="rho"``, ``lagrange=True`` with a threshold (d3rlpy's
threshold is on another gap; not translated here), ``bc_steps`` > 0, ``target_entropy`` other
than −|A|, ``reward_scale``/``reward_bias`` other than 1/0, ``log_std_min/max`` other than
−20/2, ``max_q_backup_order="min-of-max"``, ``precision="bf16"``.

What cannot be matched (read from d3rlpy 2.8.1's ``algos/qlearning/torch/cql_impl.py``,
``sac_impl.py``, ``ddpg_impl.py``, ``dataset/``)
--------------------------------------------------------------------------------------
1. Backup action: d3rlpy's target (``soft_q_backup=False``) is min_i Q̄_i(s', tanh(μ(s'))),
   at the policy's mean action; ours by default at one sample a' ~ π(·|s') without the
   entropy term, which d3rlpy has no setting for (``--backup-action mean`` matches d3rlpy).
2. Data: ``MDPDataset`` stores observations per step, not next observations, so the last
   transition of every episode that ends in a timeout has no s' and is dropped (Pendulum:
   1 of each 200; 0.5% of the data). Terminal episodes keep every transition (s' zeroed,
   terminal 1), as ours.
3. Initialisation: d3rlpy's layers keep torch's default (Kaiming-uniform weights and biases,
   U(±1/√fan_in)); ours are orthogonal (gain √2 hidden, 1e-2 output) with zero biases, so a
   fresh critic of ours predicts Q ≈ 0 and a fresh actor has σ ≈ 1.
4. Update order: d3rlpy steps the critics first, then computes the actor loss with the
   updated critics, and updates the temperature before the actor loss reads it; ours builds
   every loss from the same pre-update parameters and takes one backward pass.
5. Temperature loss: d3rlpy's is −α·E[log π + H̄] (its gradient in log α carries a factor α);
   ours −log α·E[log π + H̄], the official code's. Adam rescales both, so only the path
   differs.
6. Random numbers: d3rlpy draws batches from numpy's global generator (one transition at a
   time) and its noise from torch's global generator (both seeded with the run's seed by
   ``d3rlpy.seed``); ours from the run's own generators. Same laws, other streams.
7. The TD loss (Σ over critics of the MSE, no ½), the conservative term (Σ over critics of
   the batch mean of log-sum-exp over the 3N importance-weighted values minus Q at the data
   action), the tanh-Gaussian log-density (softplus form), the log σ clamp [−20, 2], Adam's
   settings and the target-entropy −|A| are the same on both sides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.stats
import torch
import tyro

from deep import envs, stats
from deep.algos import CQLConfig
from deep.cli import main_guard, one_line
from deep.config import RunConfig, TrainConfig, make_config
from deep.data import ObservationNormalizer, OfflineDataset, load_dataset
from deep.demo import DemoConfig
from deep.evaluate import evaluate_checkpoint
from deep.evaluation import critic_units_return, eval_seed
from deep.files import atomic_write_text
from deep.layout import PARITY_RESULT, PARITY_SIDES, RESULTS_JSON, RESULTS_MD, FolderError, claim
from deep.peer import INSTALL_HINT, d3rlpy_config, d3rlpy_dataset, import_d3rlpy
from deep.runlog import write_json
from deep.tasks import map_calls
from deep.train import run_state, start_or_resume

__all__ = [
    "CURVE_NAME",
    "INSTALL_HINT",
    "SIDES",
    "FolderError",
    "ParityConfig",
    "compare",
    "d3rlpy_config",
    "d3rlpy_dataset",
    "import_d3rlpy",
    "main",
    "our_config",
    "results_markdown",
    "settings_dict",
    "train_d3rlpy",
    "train_d3rlpy_timed",
    "train_ours",
]

Side = Literal["ours", "d3rlpy"]
SIDES: tuple[Side, ...] = ("ours", "d3rlpy")
RESULT_NAME = PARITY_RESULT
SETTINGS_NAME = "settings.json"
_OWN = frozenset({*PARITY_SIDES, SETTINGS_NAME, RESULTS_MD, RESULTS_JSON})
"""Everything a parity folder holds: one folder per side, the last settings, the tables."""


_DEMO = DemoConfig()
_CQL = CQLConfig()


@dataclass
class ParityConfig:
    """Our CQL and d3rlpy's, trained on the same data and scored on the same episodes."""

    dataset: str = _DEMO.dataset
    """Dataset (any spec deep.train accepts; d3rlpy gets the same arrays)."""

    seeds: tuple[int, ...] = (100, 101, 102, 103, 104, 105, 106, 107)
    """Seeds; each trains one run per implementation."""

    steps: int = _DEMO.cql_steps
    """Gradient steps (one batch each) of every run."""

    out: str = "runs/parity"
    """Folder of the runs (ours/, d3rlpy/) and of results.md, results.json."""

    peer: Literal["auto", "d3rlpy", "none"] = "auto"
    """auto: d3rlpy when it imports, else our side only (one line says so); d3rlpy: an error
    when it is missing; none: our side only."""

    train: tuple[Side, ...] = SIDES
    """Sides this process trains; the table reads every finished seed of both sides
    (``--train`` with no side trains nothing and only rewrites the table)."""

    final_episodes: int = _DEMO.final_episodes
    """Episodes of each final evaluation (the same start states for both sides)."""

    batch_size: int = 256
    """Transitions per gradient step."""

    hidden_dims: tuple[int, ...] = _DEMO.hidden_dims
    """Hidden widths of the actor and of every critic."""

    gamma: float = _DEMO.gamma
    """Discount factor."""

    target_tau: float = _DEMO.target_tau
    """Polyak rate of the target critics."""

    cql_weight: float = _DEMO.cql_weight
    """Fixed weight of the conservative gap."""

    cql_n_actions: int = _CQL.cql_n_actions
    """Sampled actions per group (uniform, π(·|s), π(·|s'))."""

    backup_action: Literal["sample", "mean"] = _CQL.backup_action
    """Our TD target's action at s' (``CQLConfig.backup_action``); "mean" is d3rlpy's."""

    critic_lr: float = _CQL.critic_lr
    """Adam learning rate of the critics."""

    actor_lr: float = _CQL.actor_lr
    """Adam learning rate of the actor."""

    entropy_lr: float = _CQL.entropy_lr
    """Adam learning rate of the SAC temperature (learned towards −|A|)."""

    normalize_obs: bool = True
    """Standardise observations with the dataset's statistics (both sides)."""

    eval_every: int = _DEMO.eval_every
    """Our runs' learning-curve evaluation interval (d3rlpy's runs are evaluated at the end
    only)."""

    eval_episodes: int = _DEMO.eval_episodes
    """Episodes of our runs' learning-curve evaluations."""

    bootstrap_seed: int = 0
    """Seed of the bootstrap resamples of the tables."""

    workers: int = 1
    """Runs trained at once, each a Ray task as ``deep.sweep``'s trials (one CPU, one torch
    thread each); 1 (and no ``--address``): one after the other in this process, no Ray."""

    address: str | None = None
    """Ray cluster to run on (as ``deep.sweep --address``; also ``RAY_ADDRESS``); its nodes
    need this package, d3rlpy, and ``--out`` on shared storage."""


def settings_dict(p: ParityConfig) -> dict[str, Any]:
    """The settings a seed's result depends on (a finished seed with other settings is refused)."""
    skip = {"seeds", "out", "peer", "train", "bootstrap_seed", "workers", "address"}
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(p).items()
        if k not in skip
    }


# ------------------------------------------------------------------------ the two configs


def our_config(p: ParityConfig, seed: int, out: Path) -> TrainConfig[Any]:
    """Our CQL run of seed ``seed`` in folder ``out``."""
    hidden = tuple(p.hidden_dims)
    settings = RunConfig(
        dataset=p.dataset,
        steps=p.steps,
        seed=seed,
        device="cpu",
        threads=1,
        out=str(out),
        batch_size=p.batch_size,
        log_every=min(250, p.eval_every),
        eval_every=p.eval_every,
        eval_episodes=p.eval_episodes,
        normalize_obs=p.normalize_obs,
        tensorboard=False,
        progress=False,
        plots=False,
    )
    return make_config(
        "cql",
        settings,
        actor_hidden=hidden,
        critic_hidden=hidden,
        gamma=p.gamma,
        target_tau=p.target_tau,
        cql_weight=p.cql_weight,
        cql_n_actions=p.cql_n_actions,
        backup_action=p.backup_action,
        critic_lr=p.critic_lr,
        actor_lr=p.actor_lr,
        entropy_lr=p.entropy_lr,
    )


def train_side(p: ParityConfig, side: Side, seed: int, root: str) -> tuple[dict[str, Any], float]:
    """One seed of one side (:func:`train_ours` or :func:`train_d3rlpy`, which reads the
    dataset itself) and its seconds: the unit :func:`deep.tasks.map_calls` places."""
    start = time.perf_counter()
    if side == "ours":
        result = train_ours(p, seed, Path(root))
    else:
        result = train_d3rlpy(p, seed, Path(root), load_dataset(p.dataset))
    return result, time.perf_counter() - start


# ------------------------------------------------------------------------ training a seed


def _read_result(folder: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """A finished seed's result, or None; a result with other settings is an error."""
    path = folder / RESULT_NAME
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    saved = result.get("settings")
    if isinstance(saved, dict):
        # A setting added after the seed was run had its default value then.
        saved = {
            **{k: v for k, v in settings_dict(ParityConfig()).items() if k not in saved},
            **saved,
        }
    if saved != settings:
        raise ValueError(
            f"{path} was made with other settings ({result.get('settings')}); "
            "choose another --out, or delete that seed's folder to redo it"
        )
    return result


def _evaluation_metrics(result: envs.EvalResult, dataset_name: str, q: float) -> dict[str, Any]:
    scores = envs.normalized_score(dataset_name, result.returns)
    mc = critic_units_return(result.discounted_returns, result.lengths, result.gamma)
    return {
        "normalized_score": float(np.mean(scores)),
        "return_mean": float(result.returns.mean()),
        "return_std": float(result.returns.std()),
        "q_estimate": q,
        "mc_return": float(mc.mean()),
    }


def train_ours(p: ParityConfig, seed: int, root: Path) -> dict[str, Any]:
    """Train (or resume, or read) our run of ``seed`` under ``root/ours`` and evaluate it."""
    folder = root / "ours" / f"seed{seed}"
    settings = settings_dict(p)
    done = _read_result(folder, settings)
    if done is not None:
        return done
    config = our_config(p, seed, folder)
    start = time.perf_counter()
    summary = start_or_resume(config, tool_files={RESULT_NAME})
    first = eval_seed(seed, p.steps)
    threads = torch.get_num_threads()
    # One thread, as the run itself: on a busy machine torch's thread pool, waiting on its
    # peers, makes the small batches of an evaluation many times slower.
    torch.set_num_threads(1)
    try:
        final = evaluate_checkpoint(folder, episodes=p.final_episodes, seed=first, device="cpu")
    finally:
        torch.set_num_threads(threads)
    result = {
        "implementation": "ours",
        "seed": seed,
        "eval_seed": first,
        "episodes": p.final_episodes,
        "normalized_score": float(final["eval/normalized_score"]),
        "return_mean": float(final["eval/return_mean"]),
        "return_std": float(final["eval/return_std"]),
        "q_estimate": float(final["eval/q_estimate"]),
        "mc_return": float(final["eval/mc_return"]),
        "train_seconds": float(summary["train_seconds"]),
        "wall_seconds": time.perf_counter() - start,
        "settings": settings,
    }
    write_json(folder / RESULT_NAME, result)
    return result


def _quiet_d3rlpy() -> None:
    """d3rlpy logs every build step through structlog: keep warnings and errors only."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def train_d3rlpy(
    p: ParityConfig,
    seed: int,
    root: Path,
    dataset: OfflineDataset,
    *,
    keep_timeout_transitions: bool = False,
    side: str = "d3rlpy",
) -> dict[str, Any]:
    """Train (or read) d3rlpy's CQL for ``seed`` under ``root/<side>`` and evaluate it on the
    episodes our run of the same seed is evaluated on. ``dataset`` is the raw (unnormalised)
    data; the observation statistics are ours (see :func:`d3rlpy_config`)."""
    folder = root / side / f"seed{seed}"
    settings = settings_dict(p)
    if keep_timeout_transitions:
        settings = {**settings, "keep_timeout_transitions": True}
    done = _read_result(folder, settings)
    if done is not None:
        return done
    d3rlpy = import_d3rlpy()
    from d3rlpy.logging import NoopAdapterFactory

    _quiet_d3rlpy()
    agent = our_config(p, seed, folder).agent
    normalizer = ObservationNormalizer.from_dataset(dataset) if p.normalize_obs else None
    config = d3rlpy_config(agent, p.batch_size, dataset.act_dim, normalizer)
    mdp = d3rlpy_dataset(dataset, keep_timeout_transitions)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as our runs (RunConfig.threads = 1)
    try:
        d3rlpy.seed(seed)
        algo = config.create(device="cpu:0")
        start = time.perf_counter()
        for _ in algo.fitter(
            mdp,
            n_steps=p.steps,
            n_steps_per_epoch=p.steps,
            logger_adapter=NoopAdapterFactory(),
            show_progress=False,
            experiment_name=f"parity-seed{seed}",
        ):
            pass
        train_seconds = time.perf_counter() - start

        env_id = envs.resolve_env_id(dataset.env_id or dataset.name)
        first = eval_seed(seed, p.steps)
        result = envs.evaluate(_d3rlpy_policy(algo), env_id, p.final_episodes, first, agent.gamma)
        q = _d3rlpy_q(algo, result.start_observations)
        folder.mkdir(parents=True, exist_ok=True)
        algo.save(str(folder / "model.d3"))
    finally:
        torch.set_num_threads(threads)
    record = {
        "implementation": side,
        "seed": seed,
        "eval_seed": first,
        "episodes": p.final_episodes,
        **_evaluation_metrics(result, dataset.name, q),
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "settings": settings,
    }
    write_json(folder / RESULT_NAME, record)
    return record


CURVE_NAME = "curve.json"


def train_d3rlpy_timed(
    agent: CQLConfig,
    dataset_spec: str,
    seed: int,
    folder: Path,
    *,
    minutes: float,
    eval_every: int,
    eval_episodes: int,
    batch_size: int = 256,
    normalize_obs: bool = True,
) -> dict[str, Any]:
    """d3rlpy's CQL with ``agent``'s settings (:func:`d3rlpy_config`) trained for ``minutes``
    of training time on one thread, evaluated every ``eval_every`` updates on the episodes
    our runs use at that step (``eval_seed(seed, step)``); evaluations are not timed, as in
    our runs' ``eval_clock``. ``folder/curve.json`` holds the curve so far after every
    evaluation (a stopped run restarts: d3rlpy saves no optimiser state mid-run) and
    ``"finished": true`` at the end; a finished curve with the same settings is read back."""
    settings = {
        "agent": dataclasses.asdict(agent),
        "dataset": dataset_spec,
        "minutes": minutes,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "batch_size": batch_size,
        "normalize_obs": normalize_obs,
    }
    settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
    claim(folder, {CURVE_NAME}, "deep.parity")
    path = folder / CURVE_NAME
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("settings") != settings:
            raise ValueError(
                f"{path} was made with other settings; choose another folder, or delete it "
                "to redo the run"
            )
        if saved.get("finished"):
            return dict(saved)
    d3rlpy = import_d3rlpy()
    from d3rlpy.logging import NoopAdapterFactory

    _quiet_d3rlpy()
    dataset = load_dataset(dataset_spec)
    normalizer = ObservationNormalizer.from_dataset(dataset) if normalize_obs else None
    config = d3rlpy_config(agent, batch_size, dataset.act_dim, normalizer)
    env_id = envs.resolve_env_id(dataset.env_id or dataset.name)
    record: dict[str, Any] = {
        "implementation": "d3rlpy",
        "seed": seed,
        "settings": settings,
        "curve": [],
        "finished": False,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d3rlpy.seed(seed)
        algo = config.create(device="cpu:0")
        budget, seconds = 60.0 * minutes, 0.0
        fitter = algo.fitter(
            d3rlpy_dataset(dataset),
            n_steps=10**9,
            n_steps_per_epoch=eval_every,
            logger_adapter=NoopAdapterFactory(),
            show_progress=False,
            save_interval=10**9,
            experiment_name=f"timed-seed{seed}",
        )
        tick = time.perf_counter()
        for epoch, _ in fitter:
            seconds += time.perf_counter() - tick
            step = epoch * eval_every
            result = envs.evaluate(
                _d3rlpy_policy(algo), env_id, eval_episodes, eval_seed(seed, step), agent.gamma
            )
            q = _d3rlpy_q(algo, result.start_observations)
            point = {"step": step, "train_seconds": seconds}
            record["curve"].append({**point, **_evaluation_metrics(result, dataset.name, q)})
            record["finished"] = seconds >= budget
            write_json(path, record)
            if record["finished"]:
                break
            tick = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    return record


def _d3rlpy_policy(algo: Any) -> Callable[[np.ndarray], np.ndarray]:
    """d3rlpy's deterministic policy (``algo.predict``) as :func:`deep.envs.evaluate` takes it."""

    def policy(obs: np.ndarray) -> np.ndarray:
        action: np.ndarray = algo.predict(obs)
        return action

    return policy


@torch.no_grad()
def _d3rlpy_q(algo: Any, observations: np.ndarray) -> float:
    """Mean over ``observations`` of min_i Q_i(s, π(s)), as our diagnostic (d3rlpy's own
    ``predict_value`` averages the critics instead of taking their minimum)."""
    impl = algo.impl
    x = torch.as_tensor(observations, dtype=torch.float32)
    if algo.observation_scaler is not None:
        x = algo.observation_scaler.transform(x)
    action = impl.policy(x).squashed_mu
    q = impl._q_func_forwarder.compute_expected_q(x, action, "min")
    return float(q.mean())


# ------------------------------------------------------------------------ the comparison


def _side_summary(scores: np.ndarray, seed: int) -> dict[str, Any]:
    intervals = stats.aggregate_intervals(scores, seed)
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std(ddof=1)) if scores.size > 1 else math.nan,
        "iqm": intervals["iqm"].to_dict(),
        "mean_ci": intervals["mean"].to_dict(),
    }


def compare(ours: Sequence[float], theirs: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Difference of means (ours − theirs) with its 95% bootstrap CI (each side's seeds
    resampled independently: the runs are not paired), Welch's t-test p and the probability
    of improvement P(ours > theirs) with its CI."""
    x, y = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)

    def difference(tasks: stats.Tasks) -> np.ndarray:
        return np.asarray(tasks[0].mean(axis=-1) - tasks[1].mean(axis=-1))

    point, low, high = stats.stratified_bootstrap([x, y], difference, seed)
    if x.size > 1 and y.size > 1:
        welch = scipy.stats.ttest_ind(x, y, equal_var=False)
        p_value, t_value = float(welch.pvalue), float(welch.statistic)
    else:
        p_value = t_value = math.nan
    improvement = stats.improvement_interval(x, y, seed)
    return {
        "difference": {"point": float(point), "low": float(low), "high": float(high)},
        "welch_t": t_value,
        "welch_p": p_value,
        "probability_of_improvement": improvement.to_dict(),
    }


def summarize(results: dict[str, dict[int, dict[str, Any]]], seed: int = 0) -> dict[str, Any]:
    """``results[side][seed]`` (each a ``parity.json``) -> per-side statistics and, when both
    sides have runs, the comparison."""
    out: dict[str, Any] = {"sides": {}}
    for side, by_seed in results.items():
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        scores = np.array([by_seed[s]["normalized_score"] for s in seeds])
        summary = _side_summary(scores, seed)
        summary["seeds"] = seeds
        summary["scores"] = scores.tolist()
        summary["q_minus_mc"] = float(
            np.mean([by_seed[s]["q_estimate"] - by_seed[s]["mc_return"] for s in seeds])
        )
        summary["train_seconds"] = float(np.mean([by_seed[s]["train_seconds"] for s in seeds]))
        out["sides"][side] = summary
    sides = out["sides"]
    if "ours" in sides and "d3rlpy" in sides:
        out["comparison"] = compare(sides["ours"]["scores"], sides["d3rlpy"]["scores"], seed)
    return out


def _f(v: float, fmt: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def results_markdown(
    summary: dict[str, Any], results: dict[str, dict[int, dict[str, Any]]], p: ParityConfig
) -> str:
    """The tables of :func:`summarize` as markdown."""
    sides = [s for s in summary["sides"]]
    lines = [
        f"# CQL parity on `{p.dataset}`: ours vs d3rlpy",
        "",
        f"{p.steps:,} gradient steps, batch {p.batch_size}, networks "
        f"{'×'.join(map(str, p.hidden_dims))}, γ = {p.gamma}, τ = {p.target_tau}, CQL weight "
        f"{p.cql_weight} (fixed), N = {p.cql_n_actions}; normalised score of the final policy "
        f"on {p.final_episodes} episodes (the same start states for both sides).",
        "",
        "| seed | " + " | ".join(sides) + " |",
        "|---:|" + "---:|" * len(sides),
    ]
    all_seeds = sorted({s for side in sides for s in results[side]})
    for s in all_seeds:
        cells = [
            _f(results[side][s]["normalized_score"]) if s in results[side] else "-"
            for side in sides
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")

    def row(name: str, cell: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(summary["sides"][x]) for x in sides) + " |")

    row("mean ± std", lambda x: f"{_f(x['mean'])} ± {_f(x['std'])}")
    row(
        "mean [95% CI]",
        lambda x: (
            f"{_f(x['mean_ci']['point'])} [{_f(x['mean_ci']['low'])}, {_f(x['mean_ci']['high'])}]"
        ),
    )
    row(
        "IQM [95% CI]",
        lambda x: f"{_f(x['iqm']['point'])} [{_f(x['iqm']['low'])}, {_f(x['iqm']['high'])}]",
    )
    row("Q(s₀, π(s₀)) − MC, mean", lambda x: _f(x["q_minus_mc"]))
    row("training wall-clock seconds per run", lambda x: _f(x["train_seconds"], ".0f"))
    comparison = summary.get("comparison")
    lines.append("")
    if comparison is not None:
        d = comparison["difference"]
        poi = comparison["probability_of_improvement"]
        lines += [
            f"Difference of means (ours − d3rlpy): {_f(d['point'])}, 95% bootstrap CI "
            f"[{_f(d['low'])}, {_f(d['high'])}] (seeds of each side resampled independently); "
            f"Welch's t = {_f(comparison['welch_t'], '.2f')}, p = "
            f"{_f(comparison['welch_p'], '.3f')}; P(ours > d3rlpy) = {_f(poi['point'], '.2f')} "
            f"[{_f(poi['low'], '.2f')}, {_f(poi['high'], '.2f')}].",
        ]
    else:
        lines.append("Only one side has finished runs: no comparison.")
    lines += [
        "",
        "Scores are 100 (R − R_random) / (R_expert − R_random) (deep.envs). Q − MC: the "
        "critics' min_i Q_i at the start states minus the discounted return obtained from them "
        "(below 0: conservative). The differences that remain between the two implementations "
        "are listed in the docstring of deep/parity.py.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------ entry point


def _read_all(p: ParityConfig, root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    settings = settings_dict(p)
    found: dict[str, dict[int, dict[str, Any]]] = {side: {} for side in SIDES}
    for side in SIDES:
        for seed in p.seeds:
            result = _read_result(root / side / f"seed{seed}", settings)
            if result is not None:
                found[side][seed] = result
    return found


def check_folder(p: ParityConfig, root: Path) -> None:
    """Before any work: ``root`` is new, empty or a parity folder, and every seed already in
    it was made with ``p``'s settings (else an error naming the folder and the settings)."""
    claim(root, _OWN, "deep.parity")
    _read_all(p, root)
    for seed in p.seeds:
        run_state(our_config(p, seed, root / "ours" / f"seed{seed}"), tool_files={RESULT_NAME})


def write_results(p: ParityConfig, root: Path) -> str:
    """Read every finished seed under ``root``, write results.json and results.md; the
    markdown is returned."""
    results = _read_all(p, root)
    results = {side: r for side, r in results.items() if r}
    if not results:
        return "no finished seed yet\n"
    summary = summarize(results, p.bootstrap_seed)
    text = results_markdown(summary, results, p)
    write_json(
        root / RESULTS_JSON,
        {
            "settings": settings_dict(p),
            **summary,
            "runs": {s: list(r.values()) for s, r in results.items()},
        },
    )
    atomic_write_text(root / RESULTS_MD, text)
    return text


def _check(p: ParityConfig) -> None:
    if not p.seeds:
        raise ValueError("--seeds: give at least one seed")
    if len(set(p.seeds)) != len(p.seeds):
        raise ValueError(f"--seeds has repeated seeds: {list(p.seeds)}")
    for name in ("steps", "final_episodes", "batch_size", "eval_every", "eval_episodes", "workers"):
        if getattr(p, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(p, name)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m deep.parity``)."""
    return main_guard(_main, argv)


def _main(argv: list[str]) -> int:
    p = tyro.cli(
        ParityConfig,
        args=argv,
        prog="python -m deep.parity",
        description=(__doc__ or "").split("\n\n")[0],
    )
    _check(p)
    root = Path(p.out)
    peer = p.peer
    if peer != "none":
        try:
            import_d3rlpy()
        except ImportError as e:
            if peer == "d3rlpy":
                raise
            print(f"{e}: running our side only", flush=True)
            peer = "none"
    sides = [s for s in p.train if s == "ours" or peer != "none"]
    check_folder(p, root)
    write_json(root / SETTINGS_NAME, settings_dict(p))
    calls = [(p, side, seed, str(root.resolve())) for seed in p.seeds for side in sides]
    failed = 0
    for i, outcome in map_calls(train_side, calls, p.workers, p.address):
        _, side, seed, _ = calls[i]
        if isinstance(outcome, BaseException):  # a Ray task's error
            failed += 1
            print(f"{side:>6} seed {seed}: failed: {one_line(outcome)}", flush=True)
            continue
        result, seconds = outcome
        print(
            f"{side:>6} seed {seed}: normalised score {result['normalized_score']:.1f} "
            f"({seconds:.0f} s)",
            flush=True,
        )
    text = write_results(p, root)
    print()
    print(text, end="")
    print(f"Wrote {root}/results.md and results.json")
    if failed:
        print(f"{failed} of {len(calls)} runs failed; run the same command again to redo them")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
