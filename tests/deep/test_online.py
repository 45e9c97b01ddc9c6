"""Offline-to-online fine-tuning (deep.online): the buffer, the mixed batches, the phase
boundary, and a resume in the middle of an online episode."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deep import checkpoint as ckpt_mod
from deep import online, train
from deep.batch import Batch
from deep.data import generate_builtin, save_npz
from tests.deep.test_train import read_rows, tiny_config


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    return {
        name: save_npz(
            generate_builtin(f"{name}-medium", n_transitions=1000), folder / f"{name}.npz"
        )
        for name in ("pendulum", "cartpole")
    }


def _episode(rewards: list[float], obs_dim: int = 2) -> dict[str, np.ndarray]:
    n = len(rewards)
    obs = np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim)
    return {
        "obs": obs,
        "act": np.full((n, 1), 0.5, np.float32),
        "rew": np.asarray(rewards),
        "next_obs": obs + 1,
        "term": np.eye(1, n, n - 1, dtype=np.float32)[0],
    }


def test_the_buffer_keeps_episodes_with_their_returns_to_go_in_critic_units() -> None:
    buf = online.OnlineBuffer(
        10, 2, 1, False, torch.device("cpu"), returns_to_go_gamma=0.5, reward_scale=2.0,
        reward_bias=-1.0,
    )  # fmt: skip
    buf.add(_episode([1.0, 2.0, 3.0]))
    buf.add(_episode([4.0]))
    assert buf.size == 4
    # r' = 2r - 1 = 1, 3, 5 | 7; G_t = r'_t + 0.5 G_{t+1}, restarting at each episode.
    assert buf.rtg is not None
    assert buf.rtg[:4].tolist() == [1 + 0.5 * (3 + 0.5 * 5), 3 + 0.5 * 5, 5.0, 7.0]
    assert buf.term[:4].tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="online buffer full"):
        buf.add(_episode([0.0] * 7))

    again = online.OnlineBuffer(10, 2, 1, False, torch.device("cpu"), returns_to_go_gamma=0.5)
    again.load_state_dict(buf.state_dict())
    assert again.size == 4 and torch.equal(again.rtg[:4], buf.rtg[:4])  # type: ignore[index]
    assert torch.equal(again.obs, buf.obs) and torch.equal(again.act, buf.act)


def test_a_mixed_batch_takes_its_share_from_each_source() -> None:
    buf = online.OnlineBuffer(8, 2, 1, False, torch.device("cpu"))
    offline_draws: list[int] = []

    def offline(n: int) -> Batch:
        offline_draws.append(n)
        side = torch.full((n, 2), -1.0)
        return Batch(side, torch.zeros(n, 1), torch.zeros(n), side, torch.zeros(n))

    gen = torch.Generator().manual_seed(0)
    # Empty online buffer: the whole batch is offline.
    assert online.mixed_batch(offline, buf, 10, 0.5, gen).observations.shape == (10, 2)
    assert offline_draws == [10]
    buf.add(_episode([1.0, 1.0]))
    batch = online.mixed_batch(offline, buf, 10, 0.3, gen)
    assert offline_draws[-1] == 7
    assert int((batch.observations[:, 0] >= 0).sum()) == 3  # the online rows
    assert batch.returns_to_go is None
    assert online.mixed_batch(offline, buf, 10, 1.0, gen).observations.min() >= 0
    assert offline_draws[-1] == 7  # ratio 1: nothing drawn offline


def _online_config(data: Path, out: Path, **kw: Any) -> Any:
    settings = {
        "steps": 50, "online_steps": 450, "log_every": 10, "eval_every": 100,
        "checkpoint_every": 30, "algo": "cal-ql", "cql_n_actions": 2,
    }  # fmt: skip
    settings.update(kw)
    return tiny_config(data, out, **settings)


def test_the_offline_phase_of_a_fine_tuning_run_is_the_offline_run(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    tuned = train.run(_online_config(datasets["pendulum"], tmp_path / "tuned"))
    offline = train.run(_online_config(datasets["pendulum"], tmp_path / "off", online_steps=0))
    rows_tuned = read_rows(tmp_path / "tuned" / "metrics.csv")
    rows_off = read_rows(tmp_path / "off" / "metrics.csv")
    before = [
        {k: v for k, v in r.items() if v != "" and not k.startswith("online/")}
        for r in rows_tuned
        if int(r["step"]) <= 50
    ]
    assert before == [{k: v for k, v in r.items() if v != ""} for r in rows_off]
    assert tuned["offline_normalized_score"] == offline["normalized_score"]
    assert tuned["online_steps"] == 450 and tuned["steps"] == 50
    # Pendulum's episodes last 200 steps: two finished in 450 online steps, each logged.
    returns = [float(r["online/episode_return"]) for r in rows_tuned if r["online/episode_return"]]
    assert len(returns) == 2 and all(-2000 < g < 0 for g in returns)
    ckpt = ckpt_mod.load_checkpoint(tmp_path / "tuned")
    assert ckpt["online"]["buffer"]["size"] == 400
    assert ckpt["online"]["collector"] == {"episode": 2, "steps": 50} | {
        k: ckpt["online"]["collector"][k] for k in ("act", "rew", "next_obs")
    }
    # Cal-QL's online transitions carry their returns-to-go.
    assert torch.isfinite(ckpt["online"]["buffer"]["rtg"]).all()


def test_a_run_stopped_in_an_online_episode_resumes_to_the_same_numbers(
    datasets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = train.run(_online_config(datasets["pendulum"], tmp_path / "reference"))
    real_step = online.Collector.step
    calls = [0]

    def stop_at_300(self: online.Collector) -> Any:
        calls[0] += 1
        if calls[0] == 300:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(online.Collector, "step", stop_at_300)
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train.run(_online_config(datasets["pendulum"], stopped))
    saved = ckpt_mod.load_checkpoint(stopped)
    # The last checkpoint (step 330) is 80 steps into the second online episode.
    assert saved["step"] == 330 and saved["online"]["collector"]["steps"] == 80
    monkeypatch.setattr(online.Collector, "step", real_step)
    resumed = train.run(stopped)
    timing = {"steps_per_second", "train_seconds", "eval_clock"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in reference.items() if k not in timing
    }
    assert (stopped / "metrics.csv").read_text() == (
        tmp_path / "reference" / "metrics.csv"
    ).read_text()

    # A saved episode the environment does not reproduce is refused, naming the cause.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "metrics.csv"):
        (broken / name).write_bytes((stopped / name).read_bytes())
    ckpt = {k: v for k, v in saved.items() if k not in ("format", "version")}
    episode = saved["online"]["collector"]
    ckpt["online"] = {
        **saved["online"],
        "collector": {**episode, "next_obs": episode["next_obs"] + 1},
    }
    ckpt["config"] = dict(saved["config"], out=str(broken))
    ckpt_mod.save_checkpoint(broken / "checkpoint.pt", ckpt)
    with pytest.raises(online.ReplayError, match="reached another state at step 0"):
        train.run(broken)


def test_discrete_agents_fine_tune_too(datasets: dict[str, Path], tmp_path: Path) -> None:
    summary = train.run(
        tiny_config(
            datasets["cartpole"],
            tmp_path / "dqn",
            algo="discrete-cql",
            steps=20,
            online_steps=100,
            log_every=10,
            eval_every=60,
        )
    )
    assert np.isfinite(summary["normalized_score"])
    size = ckpt_mod.load_checkpoint(tmp_path / "dqn")["online"]["buffer"]["size"]
    assert 0 < size <= 100  # the episodes that finished, whole


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"online_steps": -1}, "--online-steps must be >= 0"),
        ({"online_ratio": 1.5}, r"--online-ratio must be in \[0, 1\]"),
    ],
)
def test_wrong_online_options_are_refused(
    change: dict[str, Any], message: str, datasets: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(datasets["pendulum"], tmp_path / "run")
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, **change))
    with pytest.raises(ValueError, match=message):
        train.run(config)
    assert not (tmp_path / "run").exists()


def test_fine_tuning_needs_an_environment(tmp_path: Path) -> None:
    data = generate_builtin("pendulum-medium", n_transitions=300)
    path = save_npz(dataclasses.replace(data, env_id=None, name="anonymous"), tmp_path / "d.npz")
    with pytest.raises(ValueError, match="--online-steps needs an environment"):
        train.run(tiny_config(path, tmp_path / "run", online_steps=10))
    assert not (tmp_path / "run" / "config.json").exists()
