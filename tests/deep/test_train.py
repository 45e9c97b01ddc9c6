"""Tests of the training product: deep.train, deep.config, deep.evaluate, deep.checkpoint,
deep.plots.

Every run here is tiny: 1,000-transition datasets written to .npz by the built-in generators,
16-unit networks, a handful of steps, one or two evaluation episodes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from deep import checkpoint as ckpt_mod
from deep import config as cfg_mod
from deep import evaluate, evaluation, runlog, train
from deep.algos import ALGORITHMS, get_algorithm
from deep.config import RunConfig, make_config
from deep.data import generate_builtin, save_npz
from deep.envs import builtin_names

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small pendulum (continuous) and cartpole (discrete) datasets as .npz files."""
    folder = tmp_path_factory.mktemp("data")
    return {
        "pendulum": save_npz(
            generate_builtin("pendulum-medium", n_transitions=1000), folder / "pendulum.npz"
        ),
        "cartpole": save_npz(
            generate_builtin("cartpole-medium", n_transitions=1000), folder / "cartpole.npz"
        ),
    }


RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
WIDTHS = ("actor_hidden", "critic_hidden", "hidden")


def tiny_config(dataset: Path, out: Path, algo: str = "cql", **kw: Any) -> cfg_mod.TrainConfig[Any]:
    """A tiny run of ``algo``: ``kw`` sets run settings and agent fields by name."""
    run = RunConfig(
        dataset=str(dataset),
        out=str(out),
        steps=6,
        batch_size=16,
        log_every=2,
        eval_every=6,
        eval_episodes=1,
        device="cpu",
        progress=False,
        tensorboard=False,
        plots=False,
    )
    run = dataclasses.replace(run, **{k: v for k, v in kw.items() if k in RUN_FIELDS})
    agent = {k: v for k, v in kw.items() if k not in RUN_FIELDS}
    fields = {f.name for f in dataclasses.fields(get_algorithm(algo).config_type)}
    widths = {k: (16, 16) for k in WIDTHS if k in fields}
    return make_config(algo, run, **{**widths, **agent})


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ smoke runs

# Every registered algorithm, on data of its kind of actions.
ALGO_DATA = [(name, "cartpole" if a.discrete else "pendulum") for name, a in ALGORITHMS.items()]


@pytest.mark.parametrize(("algo", "data"), ALGO_DATA)
def test_every_algo_trains_logs_evaluates_and_checkpoints(
    algo: str, data: str, datasets: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / algo
    summary = train.run(tiny_config(datasets[data], out, algo=algo))

    for key in ("algo", "dataset", "steps", "seed", "normalized_score", "return_mean"):
        assert key in summary
    for key in ("return_std", "q_estimate_mean", "mc_return_mean", "steps_per_second"):
        assert key in summary
    assert summary["algo"] == algo and summary["steps"] == 6
    assert math.isfinite(summary["return_mean"]) and math.isfinite(summary["mc_return_mean"])
    assert math.isfinite(summary["normalized_score"])
    assert summary["steps_per_second"] > 0
    # Behaviour cloning has no critic (and no γ), so no Q estimate; every other agent has one.
    critic = hasattr(ALGORITHMS[algo].config_type, "gamma")
    assert math.isfinite(summary["q_estimate_mean"]) == critic
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["return_mean"] == summary["return_mean"]

    rows = read_rows(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert rows[-1]["eval/return_mean"] != "" and rows[0]["eval/return_mean"] == ""
    assert float(rows[-1]["eval/return_mean"]) == summary["return_mean"]
    assert "loss/policy" in rows[0] or algo == "discrete-cql"
    assert ("loss/q1" in rows[0]) == critic
    if "cql" in algo:
        assert "loss/cql" in rows[0]

    config = json.loads((out / "config.json").read_text())
    assert config["train"]["algo"] == algo
    widths = [v for k, v in config["agent"].items() if k.endswith("hidden")]
    assert widths and all(w == [16, 16] for w in widths)

    # The final checkpoint loads with weights_only (load_checkpoint uses it) and is finite.
    ckpt = ckpt_mod.load_checkpoint(out)
    assert ckpt["step"] == 6 and len(ckpt["rows"]) == 3
    assert runlog.first_nonfinite_tensor(ckpt["agent"]) is None
    torch.load(out / "checkpoint.pt", weights_only=True)


def test_console_entry_writes_tensorboard_and_plots(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [
        "cql", "--dataset", str(datasets["pendulum"]), "--out", str(out),
        "--steps", "4", "--batch-size", "16", "--log-every", "2", "--eval-every", "4",
        "--eval-episodes", "1", "--actor-hidden", "16", "16", "--critic-hidden", "16", "16",
        "--device", "cpu", "--no-progress", "--cql-weight", "2.5", "--max-q-backup",
    ]  # fmt: skip
    assert train.main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["agent"]["cql_weight"] == 2.5 and config["agent"]["max_q_backup"] is True
    assert list((out / "tb").glob("events.out.tfevents.*"))
    png = out / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "sac", "cql_weight": 3.0}, "(algorithm sac) has no field(s) ['cql_weight']"),
        ({"algo": "bc", "critic_lr": 1e-3}, "(algorithm bc) has no field(s) ['critic_lr']"),
        ({"algo": "sac", "eval_gamma": 0.5}, "--eval-gamma is for agents without a discount"),
        ({"algo": "bc", "returns_to_go": True}, "--returns-to-go discounts with the agent's"),
        ({"checkpoint_every": 3}, "multiple of --log-every"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"time_limit": 0.0}, "--time-limit is in minutes and must be > 0"),
        ({"algo": "discrete-cql"}, "is for discrete actions"),
    ],
)
def test_bad_options_are_named(
    overrides: dict[str, Any], message: str, datasets: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        train.run(tiny_config(datasets["pendulum"], tmp_path / "run", **overrides))


def test_returns_to_go_reach_the_agent_with_its_gamma(
    datasets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    real = train.ReplaySampler.sample

    def spy(self: Any, batch_size: int) -> Any:
        batch = real(self, batch_size)
        seen.append(batch.returns_to_go)
        return batch

    monkeypatch.setattr(train.ReplaySampler, "sample", spy)
    config = tiny_config(datasets["pendulum"], tmp_path / "on", algo="sac", returns_to_go=True)
    train.run(config)
    assert seen and all(g is not None and g.shape == (16,) for g in seen)
    seen.clear()
    train.run(tiny_config(datasets["pendulum"], tmp_path / "off", algo="sac"))
    assert seen and all(g is None for g in seen)  # off by default
    seen.clear()
    train.run(tiny_config(datasets["pendulum"], tmp_path / "calql", algo="cal-ql"))
    assert seen and all(g is not None for g in seen)  # Cal-QL turns them on itself


def test_a_time_limit_ends_the_run_at_a_log_step_like_its_end(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    timed = tmp_path / "timed"
    summary = train.run(tiny_config(datasets["pendulum"], timed, time_limit=1e-9))
    # Past the limit at the first log step: evaluated, checkpointed and summarised there.
    assert summary["steps_done"] == 2 and summary["stopped_by_time_limit"] is True
    assert summary["steps"] == 6
    rows = read_rows(timed / "metrics.csv")
    assert [int(r["step"]) for r in rows if r.get("eval/normalized_score")] == [2]
    assert torch.load(timed / "checkpoint.pt", weights_only=True)["step"] == 2
    assert summary["eval_clock"] == [[2, summary["train_seconds"]]]
    # A finished run is read back, not continued.
    assert train.start_or_resume(tiny_config(datasets["pendulum"], timed, time_limit=1e-9)) == (
        json.loads((timed / "summary.json").read_text())
    )
    # A limit never reached computes what no limit does; the clock has every evaluation.
    free, far = tmp_path / "free", tmp_path / "far"
    untimed = train.run(tiny_config(datasets["pendulum"], free, eval_every=2))
    train.run(tiny_config(datasets["pendulum"], far, eval_every=2, time_limit=1e6))
    assert (free / "metrics.csv").read_text() == (far / "metrics.csv").read_text()
    assert untimed["steps_done"] == 6 and untimed["stopped_by_time_limit"] is False
    assert [step for step, _ in untimed["eval_clock"]] == [2, 4, 6]
    seconds = [t for _, t in untimed["eval_clock"]]
    assert seconds == sorted(seconds) and seconds[-1] == untimed["train_seconds"]


def test_continuous_algo_on_discrete_data_is_refused(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="is for continuous actions"):
        train.run(tiny_config(datasets["cartpole"], tmp_path / "run", algo="cql"))


def test_existing_run_is_not_overwritten(datasets: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_config(datasets["pendulum"], tmp_path / "run", algo="bc", steps=2)
    train.run(config)
    with pytest.raises(train.FolderError, match=r"deep\.train resume"):
        train.run(config)


def test_command_line_lists_every_field_and_refuses_foreign_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every CQL field is a documented option of the cql subcommand, with its docstring.
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["cql", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--cql-estimator", "--lagrange-lr", "--backup-entropy", "--log-std-min"):
        assert option in text, option
    assert "--precision" in text and "--dataset" in text
    # --dataset's help names every family of built-in datasets (as NAME-*) and every level.
    families = re.findall(r"([a-z0-9-]+)-\*", " ".join(text.split()))
    for name in builtin_names():
        assert any(name.startswith(f + "-") for f in families), name
        assert name.split("-")[-1] in text, name
    # An option of another algorithm is refused by the parser, before any work.
    for argv in (["sac", "--cql-weight", "3"], ["bc", "--critic-lr", "1e-3"]):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(argv)
        assert exit_info.value.code == 2
    parsed = train.parse_args(["cql-lagrange", "--lagrange-threshold", "2", "--steps", "7"])
    assert isinstance(parsed, cfg_mod.TrainConfig)
    assert parsed.algo == "cql-lagrange" and parsed.agent.lagrange
    assert parsed.agent.lagrange_threshold == 2.0 and parsed.run.steps == 7
    resumed = train.parse_args(["--resume", "runs/x"])
    assert isinstance(resumed, train.Resume) and resumed.run_dir == "runs/x"


def test_evaluation_discount_is_the_agents_own_or_eval_gamma() -> None:
    # BC does not bootstrap: --eval-gamma only sets the discount of its evaluation returns.
    assert cfg_mod.evaluation_gamma(make_config("bc", RunConfig(eval_gamma=0.5))) == 0.5
    assert cfg_mod.evaluation_gamma(make_config("bc")) == 0.99
    assert cfg_mod.evaluation_gamma(make_config("sac", gamma=0.9)) == 0.9


# ------------------------------------------------------------------------- metric buffer


def test_metric_buffer_averages_and_names_first_nonfinite_step() -> None:
    buf = runlog.MetricBuffer()
    buf.append(1, {"loss/a": torch.tensor(1.0), "loss/b": torch.tensor(10.0)})
    buf.append(2, {"loss/a": torch.tensor(3.0), "loss/b": torch.tensor(20.0)})
    buf.append(3, {"loss/a": torch.tensor(8.0)})  # a step with fewer keys
    # loss/a: (1 + 3 + 8) / 3 = 4; loss/b: (10 + 20) / 2 = 15.
    assert buf.flush() == {"loss/a": 4.0, "loss/b": 15.0}
    assert len(buf) == 0

    buf.append(4, {"loss/a": torch.tensor(1.0), "loss/b": torch.tensor(2.0)})
    buf.append(5, {"loss/a": torch.tensor(1.0), "loss/b": torch.tensor(float("inf"))})
    buf.append(6, {"loss/a": torch.tensor(float("nan")), "loss/b": torch.tensor(2.0)})
    with pytest.raises(runlog.NonFiniteError, match=r"'loss/b' became inf at step 5"):
        buf.flush()


def test_critic_units_return_by_hand() -> None:
    # G' = c G + b (1 - γ^T) / (1 - γ). With γ = 0.5: T = 3 gives 1 + 0.5 + 0.25 = 1.75 and
    # T = 1 gives 1; so c = 2, b = 1 maps G = (10, -4) to (21.75, -7).
    got = evaluation.critic_units_return(np.array([10.0, -4.0]), np.array([3, 1]), 0.5, 2.0, 1.0)
    np.testing.assert_allclose(got, [21.75, -7.0])
    # γ = 1: the bias adds once per step.
    got = evaluation.critic_units_return(np.array([1.0]), np.array([4]), 1.0, 1.0, 0.5)
    np.testing.assert_allclose(got, [3.0])


def test_eval_seed_depends_on_seed_and_step_only() -> None:
    assert evaluation.eval_seed(0, 100) == evaluation.eval_seed(0, 100)
    seeds = {evaluation.eval_seed(s, t) for s in range(3) for t in (100, 200, 300)}
    assert len(seeds) == 9
    assert all(0 <= s < 2**31 for s in seeds)


# --------------------------------------------------------------------- non-finite stops


class _Poison:
    """Wraps an agent: from step ``at`` on, its reported loss/q1 is NaN (``where="metric"``),
    or right after update ``at`` its actor weights become NaN (``where="state"``); that
    update's own metrics are still finite, so only the state check can catch it."""

    def __init__(self, agent: Any, at: int, where: str) -> None:
        self._agent, self._at, self._where = agent, at, where

    def __getattr__(self, name: str) -> Any:
        return getattr(self._agent, name)

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        metrics = self._agent.update(batch)
        if self._where == "metric" and self._agent.step >= self._at:
            metrics["loss/q1"] = torch.tensor(float("nan"))
        elif self._where == "state" and self._agent.step == self._at:
            with torch.no_grad():
                next(self._agent.actor.parameters()).fill_(float("nan"))
        return metrics


@pytest.mark.parametrize(
    ("where", "at", "message"),
    [
        ("metric", 7, r"metric 'loss/q1' became nan at step 7\."),
        ("state", 8, r"state tensor 'agent\.actor\.[\w.]+' is not finite at step 8"),
    ],
)
def test_nonfinite_stops_run_and_keeps_last_good_checkpoint(
    where: str,
    at: int,
    message: str,
    datasets: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build = train.build_agent

    def poisoned(*args: Any, **kw: Any) -> Any:
        return _Poison(build(*args, **kw), at=at, where=where)

    monkeypatch.setattr(train, "build_agent", poisoned)
    out = tmp_path / "run"
    config = tiny_config(
        datasets["pendulum"], out, algo="cql", steps=12, checkpoint_every=4, eval_every=100
    )
    with pytest.raises(runlog.NonFiniteError, match=message) as err:
        train.run(config)
    assert "last good checkpoint" in str(err.value) and "step 4" in str(err.value)
    ckpt = ckpt_mod.load_checkpoint(out)
    assert ckpt["step"] == 4
    assert runlog.first_nonfinite_tensor(ckpt["agent"]) is None
    assert not (out / "summary.json").exists()


def test_huge_reward_scale_stops_with_message(
    datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rewards of Pendulum are in [-16.3, 0]; scaled by 1e30 the first TD error squared is
    # ~1e62, beyond float32's 3.4e38, so loss/q1 is inf at step 1.
    out = tmp_path / "run"
    args = [
        "sac", "--dataset", str(datasets["pendulum"]), "--out", str(out),
        "--steps", "6", "--batch-size", "16", "--log-every", "2", "--actor-hidden", "16",
        "--critic-hidden", "16", "--device", "cpu", "--no-progress", "--no-tensorboard",
        "--reward-scale", "1e30",
    ]  # fmt: skip
    assert train.main(args) == 1
    err = capsys.readouterr().err
    assert re.search(r"metric 'loss/q1' became inf at step 1\b", err), err
    assert ckpt_mod.load_checkpoint(out)["step"] == 0


# --------------------------------------------------------------------- foreign checkpoints


class _Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes evil.pkl's protocol
def test_foreign_checkpoints_are_refused_without_running_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sentinel = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": 1, "x": _Payload(sentinel)}, evil)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Payload(sentinel), f)
    torch.save({"actor": torch.zeros(3)}, tmp_path / "weights.pt")
    torch.save({"format": ckpt_mod.FORMAT, "version": 999}, tmp_path / "future.pt")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(512))

    for name in ("evil.pt", "evil.pkl", "noise.pt"):
        with pytest.raises(ckpt_mod.CheckpointError, match=r"safe loading .* refused it"):
            ckpt_mod.load_checkpoint(tmp_path / name)
    assert not sentinel.exists()
    with pytest.raises(ckpt_mod.CheckpointError, match="expected format marker"):
        ckpt_mod.load_checkpoint(tmp_path / "weights.pt")
    with pytest.raises(ckpt_mod.CheckpointError, match="layout version 999"):
        ckpt_mod.load_checkpoint(tmp_path / "future.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ckpt_mod.CheckpointError, match="not a readable torch checkpoint"):
        ckpt_mod.load_checkpoint(tmp_path / "empty.pt")

    # The command lines report the same, as errors, not tracebacks.
    assert evaluate.main([str(evil)]) == 2
    assert "not a cql-companion checkpoint" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(evil.read_bytes())
    assert train.main(["--resume", str(run_dir)]) == 2
    assert "not a cql-companion checkpoint" in capsys.readouterr().err
    assert not sentinel.exists()


# ------------------------------------------------------------------------ evaluate CLI


def test_evaluate_cli_reproduces_the_runs_last_evaluation(
    datasets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    summary = train.run(tiny_config(datasets["pendulum"], out, algo="cql", eval_episodes=2))
    assert evaluate.main([str(out / "checkpoint.pt"), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Same checkpoint, same default seeds (eval_seed(seed, step)): identical numbers.
    assert result["step"] == 6 and result["seed"] == evaluation.eval_seed(0, 6)
    assert result["eval/return_mean"] == summary["return_mean"]
    assert result["eval/q_estimate"] == summary["q_estimate_mean"]
    assert result["eval/mc_return"] == summary["mc_return_mean"]

    # The Q estimate, recomputed by hand: Pendulum's start states for those seeds straight
    # from gymnasium, standardised with the checkpoint's statistics, fed to the critic at the
    # policy's own action.
    ckpt = ckpt_mod.load_checkpoint(out)
    config = cfg_mod.config_from_dict(ckpt["config"], ckpt["agent_config"])
    agent = cfg_mod.build_agent(config, cfg_mod.DatasetInfo(**ckpt["dataset"]), torch.device("cpu"))
    agent.load_state_dict(ckpt["agent"])
    env = gym.make("Pendulum-v1")
    s0 = np.stack([env.reset(seed=result["seed"] + i)[0] for i in range(2)])
    mean, std = ckpt["normalizer"]["mean"].numpy(), ckpt["normalizer"]["std"].numpy()
    x = torch.as_tensor((s0 - mean) / std, dtype=torch.float32)
    q = agent.q_value(x, agent.act(x, deterministic=True)).mean().item()  # type: ignore[attr-defined]
    assert q == pytest.approx(result["eval/q_estimate"], rel=1e-5, abs=1e-6)

    # Other seeds give other episodes; the text output names the numbers.
    assert evaluate.main([str(out), "--episodes", "1", "--seed", "12345"]) == 0
    text = capsys.readouterr().out
    assert "1 episodes from seed 12345" in text and "MC return" in text


# ------------------------------------------------------------------- kill and resume


def test_resume_before_first_checkpoint_restarts_from_saved_config(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    # A run killed between writing config.json and its step-0 checkpoint: only the config
    # (and maybe a header-only metrics.csv) exist. Resuming starts it from scratch.
    out = tmp_path / "run"
    first = train.run(tiny_config(datasets["pendulum"], out, algo="sac"))
    expected = (out / "metrics.csv").read_text()
    (out / "checkpoint.pt").unlink()
    (out / "summary.json").unlink()
    again = train.run(out)
    assert again["steps"] == 6
    assert (out / "metrics.csv").read_text() == expected
    assert again["return_mean"] == first["return_mean"]
    assert again["q_estimate_mean"] == first["q_estimate_mean"]


def test_resume_of_a_missing_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"neither checkpoint\.pt nor config\.json"):
        train.run(tmp_path)


def _run_cli(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "deep.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _last_logged_step(path: Path) -> int:
    try:
        lines = path.read_text().strip().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    steps, ckpt_every = 300, 40
    common = [
        "cql", "--dataset", str(datasets["pendulum"]), "--steps", str(steps),
        "--batch-size", "16", "--log-every", "10", "--eval-every", "50",
        "--checkpoint-every", str(ckpt_every), "--eval-episodes", "1", "--actor-hidden", "16",
        "--critic-hidden", "16", "--device", "cpu", "--no-progress", "--no-plots", "--seed", "3",
    ]  # fmt: skip
    killed = tmp_path / "killed"
    proc = _run_cli([*common, "--out", str(killed)])
    deadline = time.monotonic() + 120
    # Kill once a log row exists past a checkpoint, so metrics.csv is ahead of the checkpoint.
    while True:
        logged = _last_logged_step(killed / "metrics.csv")
        if logged > ckpt_every and logged % ckpt_every:
            break
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr}"
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    at_kill = ckpt_mod.load_checkpoint(killed)["step"]
    assert 0 < at_kill < steps

    resumed = _run_cli(["resume", str(killed)])
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err.decode()

    reference = tmp_path / "reference"
    args = [*common, "--out", str(reference)]
    assert train.main(args) == 0

    # metrics.csv identical byte for byte (so no duplicate rows after the resume) ...
    assert (killed / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    steps_logged = [int(r["step"]) for r in read_rows(killed / "metrics.csv")]
    assert steps_logged == list(range(10, steps + 1, 10))
    # ... and the same summary, apart from wall-clock throughput.
    timing = {"steps_per_second", "train_seconds", "eval_clock"}
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((reference / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing
    }
    # The clock of every evaluation survives the kill (it is in the checkpoint).
    assert [step for step, _ in a["eval_clock"]] == list(range(50, steps + 1, 50))
    # The final weights agree too.
    wa = ckpt_mod.load_checkpoint(killed)["agent"]["critic"]
    wb = ckpt_mod.load_checkpoint(reference)["agent"]["critic"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_a_run_of_the_flat_layout_before_the_config_tree_resumes(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    # Earlier versions saved one flat option set (per-agent overrides, the --agent-set hatch)
    # beside the agent's full config. Such a run, stopped at step 4 of 8, continues.
    out = tmp_path / "run"
    train.run(tiny_config(datasets["pendulum"], out, algo="sac", steps=4, eval_every=4))
    ckpt = {
        k: v for k, v in ckpt_mod.load_checkpoint(out).items() if k not in ("format", "version")
    }
    flat = {**ckpt["config"], "steps": 8, "resume": None, "gamma": None, "critic_lr": None}
    flat.update(hidden_dims=[16, 16], cql_weight=None, agent_set=[])
    del flat["eval_gamma"], ckpt["dataset_digest"]
    ckpt_mod.save_checkpoint(out / "checkpoint.pt", {**ckpt, "config": flat})
    (out / "summary.json").unlink()
    summary = train.run(out)
    assert summary["steps"] == 8 and summary["algo"] == "sac"
    assert [int(r["step"]) for r in read_rows(out / "metrics.csv")] == [2, 4, 6, 8]
    # An entry this version does not know is refused, naming it.
    ckpt_mod.save_checkpoint(out / "checkpoint.pt", {**ckpt, "config": {**flat, "warp": 9}})
    with pytest.raises(ValueError, match=r"unknown run setting\(s\) \['warp'\]"):
        train.run(out)
