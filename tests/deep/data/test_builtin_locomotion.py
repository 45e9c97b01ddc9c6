"""The locomotion datasets as built-ins: their names load like any other, are cached,
deterministic, scored on D4RL's scale, and train and evaluate through deep.train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deep import data, train
from deep.data import locomotion
from deep.envs import normalized_score, resolve_env_id


def test_names_cache_and_determinism(tmp_path: Path) -> None:
    names = data.locomotion_names()
    assert {"hopper-medium-replay", "hopper-medium-expert", "hopper-random"} <= set(names)
    first = data.load_locomotion("hopper-medium", n_transitions=1500, cache_dir=tmp_path)
    path = locomotion.locomotion_cache_path("hopper-medium", 1500, None, tmp_path)
    assert path.is_file()
    again = data.load_locomotion("hopper-medium", n_transitions=1500, cache_dir=tmp_path)
    fresh = data.generate_locomotion("hopper-medium", n_transitions=1500)
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        assert np.array_equal(getattr(first, key), getattr(again, key)), key
        assert np.array_equal(getattr(first, key), getattr(fresh, key)), key
    assert len(first) >= 1500 and first.obs_dim == 11 and first.act_dim == 3
    assert first.env_id == resolve_env_id("hopper-medium-replay") == "Hopper-v5"
    # A truncated cache file is regenerated, not a traceback.
    path.write_bytes(path.read_bytes()[:100])
    again = data.load_locomotion("hopper-medium", n_transitions=1500, cache_dir=tmp_path)
    assert np.array_equal(again.actions, first.actions)
    with pytest.raises(KeyError, match="unknown locomotion dataset"):
        data.load_locomotion("hopper-mediocre")


def test_a_locomotion_name_trains_through_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = data.generate_locomotion("hopper-medium-replay", n_transitions=600)
    calls: list[str] = []

    def load_small(name: str, **kwargs: object) -> data.OfflineDataset:
        calls.append(name)
        return small

    monkeypatch.setattr(data, "load_locomotion", load_small)
    out = tmp_path / "run"
    args = [
        "bc", "--hidden", "8", "--dataset", "hopper-medium-replay", "--out", str(out),
        "--steps", "2", "--batch-size", "16", "--log-every", "2", "--eval-every", "2",
        "--eval-episodes", "1", "--device", "cpu", "--no-progress", "--no-tensorboard",
        "--no-plots",
    ]  # fmt: skip
    assert train.main(args) == 0
    assert calls == ["hopper-medium-replay"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_id"] == "Hopper-v5"
    expected = normalized_score("hopper-medium-replay", summary["return_mean"])
    assert summary["normalized_score"] == pytest.approx(float(expected))
