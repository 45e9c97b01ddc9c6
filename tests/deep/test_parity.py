"""deep.parity: the settings translated field by field onto d3rlpy's config, d3rlpy's view of
our transitions, the comparison statistics against scipy, a tiny comparison without d3rlpy
(the install line is printed and our side's table still made, and a re-run redoes nothing),
and, when d3rlpy imports, a tiny run of both sides on the same start states."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats

from deep import parity
from deep.algos import CQLConfig
from deep.data import generate_builtin, load_dataset, save_npz

TINY = [
    "--steps", "20", "--eval-every", "20", "--eval-episodes", "2", "--final-episodes", "2",
    "--batch-size", "32", "--hidden-dims", "8", "8", "--cql-n-actions", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 pendulum-medium transitions (5 episodes, each ending in a timeout)."""
    folder = tmp_path_factory.mktemp("data")
    return save_npz(generate_builtin("pendulum-medium", n_transitions=1000), folder / "p.npz")


def test_untranslatable_settings_are_named() -> None:
    agent = CQLConfig(cql_temperature=2.0, bc_steps=5, cql_estimator="rho")
    with pytest.raises(ValueError, match=r"cql_temperature=2\.0.*cql_estimator='rho'.*bc_steps=5"):
        parity.d3rlpy_config(agent, 256, act_dim=1)


def test_compare_matches_scipy_and_the_means() -> None:
    ours, theirs = [60.0, 62.0, 58.0, 70.0], [65.0, 71.0, 69.0, 75.0, 68.0]
    result = parity.compare(ours, theirs, seed=3)
    d = result["difference"]
    assert d["point"] == pytest.approx(np.mean(ours) - np.mean(theirs))
    assert d["low"] < d["point"] < d["high"] < 0  # every resample has ours below
    expected = scipy.stats.ttest_ind(ours, theirs, equal_var=False).pvalue
    assert result["welch_p"] == pytest.approx(expected)
    # 3 of the 20 pairs have ours ahead (70 > 65, 69, 68), no ties.
    assert result["probability_of_improvement"]["point"] == pytest.approx(3 / 20)


def test_without_d3rlpy_our_side_runs(
    pendulum: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # import d3rlpy -> ImportError
    out = tmp_path / "cmp"
    args = ["--dataset", str(pendulum), "--seeds", "5", "6", "--out", str(out), *TINY]
    assert parity.main(args) == 0
    printed = capsys.readouterr().out
    assert "make bench-peer" in printed and "running our side only" in printed
    results = json.loads((out / "results.json").read_text())
    assert list(results["sides"]) == ["ours"] and "comparison" not in results
    ours = results["sides"]["ours"]
    assert ours["seeds"] == [5, 6] and len(ours["scores"]) == 2
    assert ours["mean"] == pytest.approx(np.mean(ours["scores"]))
    table = (out / "results.md").read_text()
    assert "| seed | ours |" in table and "d3rlpy |" not in table.split("\n\n")[2]
    assert "IQM [95% CI]" in table
    # Both sides evaluate seed k on the episodes of our run's last evaluation.
    run5 = json.loads((out / "ours" / "seed5" / parity.RESULT_NAME).read_text())
    assert run5["episodes"] == 2 and run5["eval_seed"] == parity.eval_seed(5, 20)

    # Asking for d3rlpy explicitly is an error with the install line.
    assert parity.main([*args, "--peer", "d3rlpy"]) == 2
    assert "make bench-peer" in capsys.readouterr().err

    # A re-run redoes nothing; other settings in the same folder are refused.
    def no_training(*_: object) -> None:
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(parity, "start_or_resume", no_training)
    assert parity.main(args) == 0
    (out / "results.md").unlink()
    assert parity.main([*args, "--train"]) == 0  # no side: the table only
    assert "| 5 |" in (out / "results.md").read_text()
    assert parity.main([*args, "--gamma", "0.9"]) == 2
    assert "other settings" in capsys.readouterr().err

    # A seed finished before a setting existed had its default: still read, not redone...
    path = out / "ours" / "seed5" / parity.RESULT_NAME
    old = json.loads(path.read_text())
    del old["settings"]["backup_action"]
    path.write_text(json.dumps(old))
    assert parity.main([*args, "--train"]) == 0
    # ... and another value of it is other settings.
    assert parity.main([*args, "--train", "--backup-action", "mean"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_go_to_ray_as_the_sweep_places_trials(pendulum: Path, tmp_path: Path) -> None:
    args = ["--dataset", str(pendulum), "--seeds", "5", "6", "--peer", "none", *TINY]
    assert parity.main([*args, "--out", str(tmp_path / "here")]) == 0
    assert parity.main([*args, "--out", str(tmp_path / "ray"), "--workers", "2"]) == 0
    here, ray = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("here", "ray"))
    # Runs are deterministic for a seed: the same scores wherever they ran.
    assert ray["sides"]["ours"]["scores"] == here["sides"]["ours"]["scores"]
    assert (tmp_path / "ray" / "ours" / "seed6" / parity.RESULT_NAME).is_file()


def test_translation_field_by_field() -> None:
    pytest.importorskip("d3rlpy")
    p = parity.ParityConfig()
    agent = parity.our_config(p, 0, Path("unused")).agent
    dataset = generate_builtin("pendulum-medium", n_transitions=400)
    norm = parity.ObservationNormalizer.from_dataset(dataset)
    cfg = parity.d3rlpy_config(agent, p.batch_size, dataset.act_dim, norm)
    assert cfg.actor_encoder_factory.hidden_units == [64, 64]
    assert cfg.critic_encoder_factory.hidden_units == [64, 64]
    expected = {
        "batch_size": 256, "n_critics": 2, "gamma": 0.95, "tau": 0.02,
        "critic_learning_rate": 3e-4, "actor_learning_rate": 1e-4, "temp_learning_rate": 1e-4,
        "initial_temperature": 1.0, "conservative_weight": 10.0, "initial_alpha": 1.0,
        "alpha_learning_rate": 0.0, "alpha_threshold": 0.0, "n_action_samples": 10,
        "soft_q_backup": False, "max_q_backup": False,
    }  # fmt: skip
    assert {k: getattr(cfg, k) for k in expected} == expected
    # The same standardisation as ours, value for value.
    obs = dataset.observations[:7]
    import torch

    theirs = cfg.observation_scaler.transform(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(theirs, norm(obs), rtol=1e-5, atol=1e-6)
    fixed = parity.d3rlpy_config(dataclasses.replace(agent, auto_entropy=False), 8, 1)
    assert fixed.temp_learning_rate == 0.0 and fixed.observation_scaler is None


def test_d3rlpy_sees_our_transitions(pendulum: Path) -> None:
    pytest.importorskip("d3rlpy")
    ds = load_dataset(str(pendulum))
    assert ds.timeouts is not None
    episodes = int(ds.timeouts.sum())
    dropped = parity.d3rlpy_dataset(ds)
    assert dropped.transition_count == len(ds) - episodes  # one per timed-out episode
    kept = parity.d3rlpy_dataset(ds, keep_timeout_transitions=True)
    assert kept.transition_count == len(ds)
    # The last transition of the first episode, with its true s'.
    end = int(np.flatnonzero(ds.timeouts)[0])
    episode = kept.episodes[0]
    t = kept.transition_picker(episode, end)
    np.testing.assert_array_equal(t.observation, ds.observations[end])
    np.testing.assert_array_equal(t.next_observation, ds.next_observations[end])
    assert t.reward[0] == ds.rewards[end] and t.terminal == 0.0


def test_both_sides_tiny(pendulum: Path, tmp_path: Path) -> None:
    pytest.importorskip("d3rlpy")
    out = tmp_path / "both"
    args = ["--dataset", str(pendulum), "--seeds", "1", "2", "--out", str(out), *TINY]
    assert parity.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    ours, theirs = results["sides"]["ours"]["scores"], results["sides"]["d3rlpy"]["scores"]
    assert len(ours) == len(theirs) == 2
    diff = results["comparison"]["difference"]["point"]
    assert diff == pytest.approx(np.mean(ours) - np.mean(theirs))
    for seed in (1, 2):
        a, b = (json.loads((out / s / f"seed{seed}" / parity.RESULT_NAME).read_text())
                for s in parity.SIDES)  # fmt: skip
        assert a["eval_seed"] == b["eval_seed"] and a["episodes"] == b["episodes"] == 2
        assert (out / "d3rlpy" / f"seed{seed}" / "model.d3").exists()
    assert "Difference of means (ours − d3rlpy)" in (out / "results.md").read_text()


def test_d3rlpy_timed_curve_is_kept_and_read_back(
    pendulum: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("d3rlpy")
    agent = CQLConfig(actor_hidden=(8, 8), critic_hidden=(8, 8), cql_n_actions=2)
    folder = tmp_path / "timed"
    kw: dict[str, Any] = {"eval_every": 5, "eval_episodes": 1, "batch_size": 16}
    record = parity.train_d3rlpy_timed(agent, str(pendulum), 3, folder, minutes=1e-9, **kw)
    # Past the budget after the first evaluation: one point, at 5 updates, timed.
    assert record["finished"] is True and [p["step"] for p in record["curve"]] == [5]
    point = record["curve"][0]
    assert point["train_seconds"] > 0 and np.isfinite(point["normalized_score"])
    assert json.loads((folder / parity.CURVE_NAME).read_text()) == record
    # A finished curve is read back without training (d3rlpy is not even imported) ...
    monkeypatch.setattr(parity, "import_d3rlpy", lambda: pytest.fail("trained again"))
    again = parity.train_d3rlpy_timed(agent, str(pendulum), 3, folder, minutes=1e-9, **kw)
    assert again == record
    # ... one made with other settings is refused, and a foreign folder is left alone.
    with pytest.raises(ValueError, match="other settings"):
        parity.train_d3rlpy_timed(agent, str(pendulum), 3, folder, minutes=2.0, **kw)
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(parity.FolderError, match="did not write"):
        parity.train_d3rlpy_timed(agent, str(pendulum), 3, foreign, minutes=1.0, **kw)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
