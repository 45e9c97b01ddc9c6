"""Train an offline agent: the loop, its checkpoints, and the command line.

::

    python -m deep.train cql --dataset pendulum-medium --steps 20000 --out runs/cql
    python -m deep.train cql --help          # every CQL field and every run setting
    python -m deep.train resume runs/cql     # continue a stopped (or killed) run
    cql-train --help

The config is a :class:`~deep.config.TrainConfig`: the run's settings plus the chosen
algorithm's own config (:mod:`deep.config`). A run directory (``--out``) holds:

- ``config.json``: the resolved config (``train``: the algorithm's name and the run settings;
  ``agent``: the algorithm's full config; ``dataset``; ``device``);
- ``checkpoint.pt``: the latest checkpoint, written atomically; it loads with
  ``torch.load(weights_only=True)`` (see :mod:`deep.checkpoint`);
- ``metrics.csv``: one row per log step (training metrics averaged over the interval) and per
  evaluation step (return, normalised score, and the conservative-value diagnostic
  ``eval/q_estimate`` next to ``eval/mc_return``);
- ``tb/``: TensorBoard event files; ``learning_curves.png``; ``summary.json`` at the end.

Offline-to-online fine-tuning (``--online-steps N``): after ``--steps`` offline updates the
loop goes on for N more, each preceded by one environment step of the agent's stochastic
policy and fed a batch that mixes the dataset with the online transitions (:mod:`deep.online`);
the end of the offline phase is logged, evaluated and checkpointed like the end of a run.

Determinism and resume: every source of randomness is seeded from ``--seed`` and saved in the
checkpoint: the agent's own generators (initialisation, training draws, acting; part of its
``state_dict``), the batch sampler's ``torch.Generator``, and, although nothing here draws from
them, torch's, numpy's and python's global generators. The checkpoint also holds the
optimisers, the step counter and the metric rows logged so far. Evaluation episodes are seeded
by :func:`~deep.evaluation.eval_seed` ``(seed, step)``, so they do not depend on when a run was
interrupted. A run killed at any moment and resumed therefore ends, on CPU, with the same
metrics as an uninterrupted one. Checkpoints are written only at log steps (so no
half-averaged interval is lost) and only when every tensor of the state is finite.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro
from tqdm import tqdm

from deep import plots
from deep.batch import Batch
from deep.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from deep.cli import main_guard
from deep.config import (
    DatasetInfo,
    TrainConfig,
    agent_to_dict,
    build_agent,
    check_dataset,
    checkpoint_interval,
    cli_type,
    config_from_dict,
    config_to_dict,
    default_out_dir,
    evaluation_gamma,
    resolve_device,
    reward_transform,
    run_to_dict,
    validate_config,
)
from deep.data import (
    ObservationNormalizer,
    OfflineDataset,
    ReplaySampler,
    dataset_digest,
    load_dataset,
    normalize_dataset,
)
from deep.evaluation import check_environment, eval_seed, evaluate_agent
from deep.files import remove_leftovers
from deep.layout import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LEARNING_CURVES,
    METRICS_NAME,
    RUN_FILES,
    SUMMARY_NAME,
    TENSORBOARD_DIR,
    FolderError,
    claim,
    folder_lock,
)
from deep.online import Collector, OnlineBuffer, mixed_batch
from deep.runlog import (
    MetricBuffer,
    NonFiniteError,
    RunLog,
    first_nonfinite_tensor,
    json_text,
    last_value,
    rng_state,
    seed_everything,
    set_rng_state,
    write_json,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "SUMMARY_NAME",
    "dataset_info",
    "load_run_config",
    "main",
    "make_summary",
    "read_summary",
    "run",
    "run_folder",
    "run_state",
    "start_or_resume",
]


class NoEvaluationWarning(UserWarning):
    """The dataset names no environment: the run trains without evaluation."""


class OddRequestWarning(UserWarning):
    """A legal request that is probably not what was meant (said out loud, then done)."""


class DatasetChangedError(ValueError):
    """A resumed run's dataset is not the one it started with."""


def check_new_run_dir(run_dir: Path) -> None:
    """A new run may use ``run_dir`` only when it is new, empty (leftovers of killed writes
    aside) and writable; a run of ours there is to be resumed, anything else is refused, so
    nothing the project did not write is ever overwritten."""
    if (run_dir / CHECKPOINT_NAME).exists() or (run_dir / CONFIG_NAME).exists():
        raise FolderError(
            f"{run_dir} already holds a run; continue it with "
            f"`python -m deep.train resume {run_dir}` or choose another --out"
        )
    claim(run_dir, (), "deep.train")


class SettingsChangedError(FolderError):
    """A folder holds a run made with other settings than the ones asked for."""


def run_folder(config: TrainConfig[Any]) -> Path:
    """Where ``config`` runs: ``--out``, else ``runs/<algo>-<dataset>-seed<seed>``."""
    return Path(config.run.out) if config.run.out is not None else default_out_dir(config)


# Run settings that say how a run is watched, not what it computes.
_NOT_COMPARED = frozenset({"out", "progress"})


def _comparable(config: TrainConfig[Any]) -> dict[str, Any]:
    data = config_to_dict(config)
    data["train"]["dataset"] = _absolute_spec(data["train"]["dataset"])
    for key in _NOT_COMPARED:
        data["train"].pop(key, None)
    return data


def settings_differences(a: TrainConfig[Any], b: TrainConfig[Any]) -> list[str]:
    """The settings (``train.steps``, ``agent.cql_weight``, ...) in which two configs differ,
    apart from where and how visibly they run."""
    da, db = _comparable(a), _comparable(b)
    return sorted(
        f"{part}.{key}"
        for part in da
        for key in set(da[part]) | set(db.get(part, {}))
        if da[part].get(key) != db.get(part, {}).get(key)
    )


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's ``summary.json`` as a dict; None when it is missing or unreadable."""
    try:
        summary = json.loads((run_dir / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _saved_config(run_dir: Path) -> TrainConfig[Any]:
    """The config a run folder was made with: its ``config.json`` (written once, when the run
    starts), else the one its checkpoint holds."""
    saved = run_dir / CONFIG_NAME
    if saved.exists():
        data = json.loads(saved.read_text())
        return config_from_dict(data["train"], data["agent"], source=str(saved))
    return load_run_config(run_dir)[0]


def run_state(
    config: TrainConfig[Any], tool_files: Collection[str] = ()
) -> Literal["start", "resume", "done"]:
    """What :func:`start_or_resume` will do with ``config``'s folder, checked in
    milliseconds: ``start`` (new or empty), ``resume`` (a stopped run with these settings) or
    ``done`` (a finished one). A run with other settings, or a folder with files that are not
    a run's (or ``tool_files``, which the calling tool writes beside a run), raises
    :class:`FolderError` naming them: a tool that starts several runs checks every one of
    them with this before it trains the first."""
    validate_config(config)
    run_dir = run_folder(config)
    ours = (run_dir / CONFIG_NAME).exists() or (run_dir / CHECKPOINT_NAME).exists()
    # A folder without a run's config holds nothing of ours, whatever its files are called.
    claim(run_dir, RUN_FILES | set(tool_files) if ours else (), "deep.train")
    if not ours:
        return "start"
    changed = settings_differences(_saved_config(run_dir), config)
    if changed:
        raise SettingsChangedError(
            f"{run_dir} holds a run made with other settings ({', '.join(changed)} "
            "differ); choose another --out, or delete that folder to redo the run"
        )
    return "done" if read_summary(run_dir) is not None else "resume"


def start_or_resume(config: TrainConfig[Any], tool_files: Collection[str] = ()) -> dict[str, Any]:
    """Run ``config`` in its folder by the one rule every tool uses (:func:`run_state`): a new
    or empty folder starts the run; a run made with the same settings is resumed from its
    checkpoint, or read back when it has finished (its summary); a run with other settings,
    or anything that is not a run of ours, is refused. The check and the training hold the
    folder's lock, so of two processes given one folder, the second finds what the first
    made and reads, resumes or refuses it. Returns the run's summary."""
    run_dir = run_folder(config)
    try:
        run_state(config, tool_files)  # a foreign folder is refused before the lock goes in
    except SettingsChangedError:
        raise
    except FolderError:
        # Files that appeared between the two looks of that check, with a run's config among
        # them, are another process creating this very run: the full check waits for its lock.
        if not (run_dir / CONFIG_NAME).exists():
            raise
    with folder_lock(run_dir):
        state = run_state(config, tool_files)
        if state == "start":
            return run(config)
        done = read_summary(run_dir)
        return done if done is not None else run(str(run_dir))


def _absolute_spec(spec: str) -> str:
    """A dataset file's absolute path (so a resume elsewhere reads the same file); other
    specs (built-in names, ``minari:<id>``) as given."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_file() else spec


def dataset_info(dataset: OfflineDataset, env_id: str | None) -> DatasetInfo:
    """The :class:`~deep.config.DatasetInfo` of ``dataset``, evaluated on ``env_id`` when
    given, else on the dataset's own environment."""
    return DatasetInfo(
        name=dataset.name,
        env_id=env_id or dataset.env_id,
        obs_dim=dataset.obs_dim,
        act_dim=dataset.act_dim,
        discrete=dataset.discrete,
    )


def load_run_config(run_dir: Path) -> tuple[TrainConfig[Any], dict[str, Any] | None]:
    """A run's saved config and its checkpoint (None if it was killed before the first)."""
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        try:
            train, agent = ckpt["config"], ckpt["agent_config"]
        except KeyError as e:
            raise CheckpointError(f"{ckpt_path}: checkpoint lacks the entry {e}") from None
        return config_from_dict(train, agent, source=str(ckpt_path)), ckpt
    cfg_path = run_dir / CONFIG_NAME
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"resume {run_dir}: neither {CHECKPOINT_NAME} nor {CONFIG_NAME} found there"
        )
    saved = json.loads(cfg_path.read_text())
    return config_from_dict(saved["train"], saved["agent"], source=str(cfg_path)), None


def run(config: TrainConfig[Any] | str | Path) -> dict[str, Any]:
    """Train a run in a new folder, or resume the one in the directory ``config``; returns its
    summary (also written to ``summary.json``). :func:`start_or_resume` decides which.

    Raises :class:`~deep.runlog.NonFiniteError` when a metric or the state becomes NaN/inf;
    the last checkpoint on disk is then left as it was.
    """
    ckpt: dict[str, Any] | None = None
    if isinstance(config, str | Path):
        run_dir = Path(config)
        config, ckpt = load_run_config(run_dir)
        remove_leftovers(run_dir)
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, out=str(run_dir)))
        validate_config(config)
    else:
        validate_config(config)
        run_dir = run_folder(config)
        check_new_run_dir(run_dir)
        settings = dataclasses.replace(
            config.run, out=str(run_dir), dataset=_absolute_spec(config.run.dataset)
        )
        config = dataclasses.replace(config, run=settings)
    device = resolve_device(config.run.device)
    threads_before = torch.get_num_threads()
    if config.run.threads > 0:
        torch.set_num_threads(config.run.threads)
    try:
        return _Run(config, run_dir, ckpt, device).train()
    finally:
        torch.set_num_threads(threads_before)


class _Run:
    """One run once its config, directory and device are settled: data, agent, sampler and
    log, restored from ``ckpt`` when resuming; :meth:`train` runs the loop."""

    def __init__(
        self,
        config: TrainConfig[Any],
        run_dir: Path,
        ckpt: dict[str, Any] | None,
        device: torch.device,
    ) -> None:
        settings = config.run
        self.config, self.run_dir, self.device = config, run_dir, device
        dataset = load_dataset(
            settings.dataset,
            env_id=settings.env_id,
            max_episode_steps=settings.max_episode_steps,
            action_low=settings.action_low,
            action_high=settings.action_high,
        )
        self.digest = dataset_digest(dataset)
        self._check_identity(ckpt)
        self.info = dataset_info(dataset, settings.env_id)
        if settings.batch_size > len(dataset.rewards):
            warnings.warn(
                f"--batch-size {settings.batch_size} is larger than the {len(dataset.rewards)} "
                f"transitions of {self.info.name!r}: every batch draws the same transitions "
                "several times (batches are drawn with replacement)",
                OddRequestWarning,
                stacklevel=2,
            )
        # Everything checkable before training is checked here, in seconds.
        check_dataset(config, self.info)
        if self.info.env_id is None:
            warnings.warn(
                f"dataset {self.info.name!r} names no environment: training without "
                "evaluation (pass --env-id to evaluate)",
                NoEvaluationWarning,
                stacklevel=2,
            )
        else:
            check_environment(
                self.info.env_id,
                self.info.obs_dim,
                self.info.act_dim,
                self.info.discrete,
                self.info.name,
            )
        self.normalizer: ObservationNormalizer | None = None
        if settings.normalize_obs:
            saved = ckpt.get("normalizer") if ckpt is not None else None
            # A resumed run keeps the statistics it trained with.
            restored = ObservationNormalizer.from_state_dict(saved) if saved else None
            dataset, self.normalizer = normalize_dataset(dataset, restored)

        seed_everything(settings.seed)
        self.agent = build_agent(config, self.info, device)
        self.gamma = evaluation_gamma(config)
        self.reward_scale, self.reward_bias = reward_transform(config.agent)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(settings.seed)
        self.sampler = ReplaySampler(
            dataset,
            device,
            self.generator,
            returns_to_go_gamma=self.gamma if needs_returns_to_go(config) else None,
            reward_scale=self.reward_scale,
            reward_bias=self.reward_bias,
        )
        self.online: OnlineBuffer | None = None
        self.collector: Collector | None = None
        if settings.online_steps:
            self._start_online(ckpt)

        run_dir.mkdir(parents=True, exist_ok=True)
        self.start_step = 0
        self.train_seconds = 0.0
        # (step, training seconds so far) at every evaluation: the run's clock, kept out of
        # metrics.csv so that a resumed run's metrics equal an uninterrupted one's.
        self.eval_clock: list[tuple[int, float]] = []
        rows: list[dict[str, float]] = []
        if ckpt is None:
            write_json(
                run_dir / CONFIG_NAME,
                {
                    "train": run_to_dict(config),
                    "agent": agent_to_dict(config),
                    "dataset": self.info.to_dict(),
                    "dataset_digest": self.digest,
                    "device": str(device),
                },
            )
        else:
            self.agent.load_state_dict(ckpt["agent"])
            self.generator.set_state(ckpt["sampler_generator"])  # on CPU, as set_state wants
            set_rng_state(ckpt["rng"])
            self.start_step = int(ckpt["step"])
            self.train_seconds = float(ckpt["train_seconds"])
            self.eval_clock = [(int(a), float(b)) for a, b in ckpt.get("eval_clock", ())]
            rows = list(ckpt["rows"])
        self.log = RunLog(
            run_dir, rows, settings.tensorboard, purge_step=self.start_step + 1 if ckpt else 0
        )
        self.ckpt_step: int | None = self.start_step if ckpt is not None else None

    def _start_online(self, ckpt: dict[str, Any] | None) -> None:
        """The online buffer and the environment of fine-tuning, restored from ``ckpt``."""
        settings = self.config.run
        if self.info.env_id is None:
            raise ValueError(
                f"--online-steps needs an environment to act in; dataset {self.info.name!r} "
                "names none: pass --env-id"
            )
        self.online = OnlineBuffer(
            settings.online_steps,
            self.info.obs_dim,
            self.info.act_dim,
            self.info.discrete,
            self.device,
            returns_to_go_gamma=self.gamma if needs_returns_to_go(self.config) else None,
            reward_scale=self.reward_scale,
            reward_bias=self.reward_bias,
        )
        self.collector = Collector(
            self.info.env_id, settings.seed, self.agent, self.normalizer, self.device
        )
        saved = ckpt.get("online") if ckpt is not None else None
        if saved is not None:
            self.online.load_state_dict(saved["buffer"])
            self.collector.load_state_dict(saved["collector"])

    def batch(self, step: int) -> Batch:
        """The batch of ``step``: from the dataset, mixed with online data after --steps."""
        settings = self.config.run
        if self.online is None or step <= settings.steps:
            return self.sampler.sample(settings.batch_size)
        return mixed_batch(
            self.sampler.sample,
            self.online,
            settings.batch_size,
            settings.online_ratio,
            self.generator,
        )

    def act_online(self, step: int, buffer: MetricBuffer) -> None:
        """One environment step of fine-tuning; a finished episode goes to the buffer."""
        if self.collector is None or step <= self.config.run.steps:
            return
        assert self.online is not None
        ended = self.collector.step()
        if ended is not None:
            episode, episode_return = ended
            self.online.add(episode)
            buffer.append(step, {"online/episode_return": episode_return})

    def _check_identity(self, ckpt: dict[str, Any] | None) -> None:
        """Refuse to resume on other data than the run started with (its digest is in the
        checkpoint, or in config.json for a run killed before its first checkpoint)."""
        if ckpt is not None:
            expected = ckpt.get("dataset_digest")
        else:
            saved = self.run_dir / CONFIG_NAME
            expected = (
                json.loads(saved.read_text()).get("dataset_digest") if saved.exists() else None
            )
        if expected is not None and expected != self.digest:
            raise DatasetChangedError(
                f"{self.config.run.dataset} is not the data run {self.run_dir} started with "
                f"(SHA-256 {self.digest[:12]}..., the run recorded {expected[:12]}...): "
                "restore that file, or start a new run"
            )

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def save(self, step: int) -> None:
        """Write the checkpoint of ``step``; refuse (keeping the last one) on a NaN/inf."""
        state = self.agent.state_dict()
        bad = first_nonfinite_tensor(state, "agent")
        if bad is not None:
            raise NonFiniteError(
                f"training stopped: state tensor {bad!r} is not finite at step {step}. The last "
                f"good checkpoint ({self.checkpoint_path}, step {self.ckpt_step}) was left "
                "untouched"
            )
        save_checkpoint(
            self.checkpoint_path,
            {
                "step": step,
                "config": run_to_dict(self.config),
                "agent_config": agent_to_dict(self.config),
                "dataset": self.info.to_dict(),
                "dataset_digest": self.digest,
                "agent": state,
                "normalizer": self.normalizer.state_dict() if self.normalizer else None,
                "sampler_generator": self.generator.get_state(),
                "rng": rng_state(),
                "rows": [dict(r) for r in self.log.rows],
                "train_seconds": self.train_seconds,
                "eval_clock": [list(x) for x in self.eval_clock],
                "online": None
                if self.online is None or self.collector is None
                else {
                    "buffer": self.online.state_dict(),
                    "collector": self.collector.state_dict(),
                },
            },
        )
        self.ckpt_step = step

    def evaluate(self, step: int) -> dict[str, float]:
        """The evaluation row of ``step`` (episodes seeded by ``eval_seed(seed, step)``)."""
        assert self.info.env_id is not None
        # fork_rng: evaluation must not move the training generators, or an evaluation
        # schedule change (or a resume) would change the training trajectory.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return evaluate_agent(
                self.agent,
                env=self.info.env_id,
                dataset_name=self.info.name,
                normalizer=self.normalizer,
                episodes=self.config.run.eval_episodes,
                seed=eval_seed(self.config.run.seed, step),
                gamma=self.gamma,
                device=self.device,
                reward_scale=self.reward_scale,
                reward_bias=self.reward_bias,
            )

    def flush_metrics(self, step: int, buffer: MetricBuffer) -> dict[str, float]:
        """Averages of the buffered interval, recorded at ``step``."""
        try:
            means = buffer.flush()
        except NonFiniteError as e:
            raise NonFiniteError(
                f"training stopped: {e}. The last good checkpoint ({self.checkpoint_path}, "
                f"step {self.ckpt_step}) was left untouched; lower the learning rates, scale "
                "the rewards or check the data"
            ) from None
        self.log.record(step, means)
        return means

    def train(self) -> dict[str, Any]:
        """The loop: one update per step; log, evaluate and checkpoint on their schedules."""
        settings = self.config.run
        ckpt_every = checkpoint_interval(settings)
        has_env = self.info.env_id is not None
        if self.ckpt_step is None:
            self.save(0)
        buffer = MetricBuffer()
        total = settings.steps + settings.online_steps
        limit = math.inf if settings.time_limit is None else 60.0 * settings.time_limit
        out_of_time = False
        bar = tqdm(
            total=total,
            initial=self.start_step,
            disable=not settings.progress,
            dynamic_ncols=True,
            desc=f"{self.config.algo} {self.info.name}",
        )
        postfix: dict[str, str] = {}
        try:
            tick = time.perf_counter()
            for step in range(self.start_step + 1, total + 1):
                self.act_online(step, buffer)
                buffer.append(step, self.agent.update(self.batch(step)))
                bar.update()  # cheap: tqdm redraws at most every mininterval (0.1 s)
                # The end of the offline phase is logged, evaluated and saved like a run's end.
                last = step in (settings.steps, total)
                is_log = step % settings.log_every == 0 or last
                if is_log and self.train_seconds + time.perf_counter() - tick >= limit:
                    out_of_time = last = True
                is_eval = (step % settings.eval_every == 0 or last) and has_env
                is_ckpt = step % ckpt_every == 0 or last
                if not (is_log or is_eval or is_ckpt):
                    continue
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.train_seconds += time.perf_counter() - tick
                if is_log:
                    means = self.flush_metrics(step, buffer)
                    postfix.update(
                        {k.split("/")[-1]: f"{v:.3g}" for k, v in means.items() if "loss/" in k}
                    )
                if is_eval:
                    result = self.evaluate(step)
                    self.log.record(step, result)
                    self.eval_clock.append((step, self.train_seconds))
                    postfix["score"] = f"{result['eval/normalized_score']:.1f}"
                    q, mc = result["eval/q_estimate"], result["eval/mc_return"]
                    postfix["Q/MC"] = f"{q:.3g}/{mc:.3g}"
                self.log.flush()
                if is_ckpt:
                    self.save(step)
                bar.set_postfix(postfix, refresh=False)
                if self.log.writer is not None and self.train_seconds > 0:
                    rate = step / self.train_seconds
                    self.log.writer.add_scalar("perf/steps_per_second", rate, step)
                if out_of_time:
                    break
                tick = time.perf_counter()
        finally:
            bar.close()
            self.log.close()
            if self.collector is not None:
                self.collector.close()

        summary = make_summary(
            self.config, self.info, self.log.rows, self.train_seconds, self.eval_clock
        )
        write_json(self.run_dir / SUMMARY_NAME, summary)
        if settings.plots:
            plots.plot_run(self.run_dir)
        return summary


def make_summary(
    config: TrainConfig[Any],
    info: DatasetInfo,
    rows: Sequence[Mapping[str, float]],
    seconds: float,
    eval_clock: Sequence[tuple[int, float]] = (),
) -> dict[str, Any]:
    """Final numbers of a run: the last evaluation, the last training metrics, throughput,
    and the training seconds at every evaluation (``eval_clock``: [step, seconds] pairs)."""
    last_train = {
        k: v
        for k, v in (rows[-1].items() if rows else ())
        if k != "step" and not k.startswith("eval/")
    }
    total = config.run.steps + config.run.online_steps
    done = int(rows[-1]["step"]) if rows else 0
    online: dict[str, Any] = {}
    if config.run.online_steps:
        offline = [r for r in rows if r["step"] <= config.run.steps]
        online = {
            "online_steps": config.run.online_steps,
            "online_ratio": config.run.online_ratio,
            "offline_normalized_score": last_value(offline, "eval/normalized_score"),
        }
    return {
        "algo": config.algo,
        "dataset": info.name,
        "env_id": info.env_id,
        "steps": config.run.steps,
        "seed": config.run.seed,
        "normalized_score": last_value(rows, "eval/normalized_score"),
        "return_mean": last_value(rows, "eval/return_mean"),
        "return_std": last_value(rows, "eval/return_std"),
        "q_estimate_mean": last_value(rows, "eval/q_estimate"),
        "mc_return_mean": last_value(rows, "eval/mc_return"),
        "eval_episodes": config.run.eval_episodes,
        **online,
        "final_train_metrics": last_train,
        "steps_done": done,
        "stopped_by_time_limit": done < total,
        "steps_per_second": done / seconds if seconds > 0 else math.nan,
        "train_seconds": seconds,
        "eval_clock": [[step, t] for step, t in eval_clock],
    }


# ------------------------------------------------------------------------------ entry point


@dataclass
class Resume:
    """Continue a stopped (or killed) run from its last checkpoint, with its saved config."""

    run_dir: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="RUN_DIR")]
    """The run's directory (its --out)."""


def parse_args(argv: Sequence[str]) -> TrainConfig[Any] | Resume:
    """The command line: ``ALGO [options]``, or ``resume RUN_DIR`` (also ``--resume RUN_DIR``)."""
    args = list(argv)
    if args[:1] in (["resume"], ["--resume"]):
        resumed: Resume = tyro.cli(Resume, args=args[1:], prog="python -m deep.train resume")
        return resumed
    if args[:1] and args[0].startswith("--resume="):
        return Resume(args[0].split("=", 1)[1])
    config: TrainConfig[Any] = tyro.cli(
        cli_type(),
        args=args,
        prog="python -m deep.train",
        description=(__doc__ or "").split("\n\n")[0],
        config=(tyro.conf.OmitSubcommandPrefixes,),
    )
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m deep.train``, ``cql-train``)."""
    target: list[TrainConfig[Any] | str] = []

    def body(args: list[str]) -> int:
        parsed = parse_args(args)
        target.append(parsed.run_dir if isinstance(parsed, Resume) else parsed)
        try:
            summary = run(target[0])
        except NonFiniteError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(json_text({k: v for k, v in summary.items() if k != "final_train_metrics"}), end="")
        done = target[0]
        run_dir = Path(done) if isinstance(done, str) else run_folder(done)
        print(where_the_files_are(run_dir), file=sys.stderr)
        return 0

    return main_guard(body, argv, on_interrupt=lambda: _interrupted(target))


def needs_returns_to_go(config: TrainConfig[Any]) -> bool:
    """``--returns-to-go``, or an agent that uses them (Cal-QL's ``calibrated``)."""
    return config.run.returns_to_go or bool(getattr(config.agent, "calibrated", False))


def where_the_files_are(run_dir: Path) -> str:
    """The lines a finished run ends with: its folder, what is in it, and what to run next."""
    described = [
        (CHECKPOINT_NAME, "the checkpoint (python -m deep.evaluate, deep.train resume)"),
        (METRICS_NAME, "every logged metric"),
        (SUMMARY_NAME, "the final numbers (above)"),
        (LEARNING_CURVES, "the curves"),
        (TENSORBOARD_DIR, f"TensorBoard logs (tensorboard --logdir {run_dir / TENSORBOARD_DIR})"),
    ]
    lines = [f"run folder: {run_dir}"]
    lines += [f"  {name:20s} {what}" for name, what in described if (run_dir / name).exists()]
    lines.append(f"re-evaluate: python -m deep.evaluate {run_dir} --episodes 50")
    return "\n".join(lines)


def _interrupted(target: list[TrainConfig[Any] | str]) -> str:
    """What to do after a Ctrl-C: resume if the run left something to resume from."""
    if not target:
        return "interrupted"
    first = target[0]
    where = Path(first) if isinstance(first, str) else run_folder(first)
    if (where / CHECKPOINT_NAME).exists() or (where / CONFIG_NAME).exists():
        return f"interrupted; continue with `python -m deep.train resume {where}`"
    return "interrupted before the run started; nothing was saved: run the same command again"


if __name__ == "__main__":
    sys.exit(main())
