"""deep.report on synthetic run folders (summary.json + metrics.csv, as deep.train writes)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deep import report, stats


def make_run(
    path: Path,
    algo: str,
    dataset: str,
    seed: int,
    score: float | None,
    q: float | None = 1.0,
    mc: float | None = 3.0,
    settings: dict[str, Any] | None = None,
) -> None:
    path.mkdir(parents=True)
    summary = {
        "algo": algo,
        "dataset": dataset,
        "env_id": "Pendulum-v1",
        "steps": 100,
        "seed": seed,
        "normalized_score": score,
        "return_mean": -500.0 + seed,
        "return_std": 1.0,
        "q_estimate_mean": q if q is not None else math.nan,
        "mc_return_mean": mc,
        "eval_episodes": 5,
        "steps_per_second": 100.0,
        "train_seconds": 1.0,
    }
    # deep.train writes NaN for a missing number (json's default); the report must cope.
    (path / "summary.json").write_text(json.dumps(summary))
    train = {"algo": algo, "dataset": dataset, "seed": seed, "out": str(path), "steps": 100}
    train.update(settings or {})
    (path / "config.json").write_text(json.dumps({"train": train}))
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["step", "loss/q1", "eval/normalized_score", "eval/q_estimate", "eval/mc_return"]
        )
        half = "" if score is None else score / 2
        q_half, q_end = ("", "") if q is None else (q / 2, q)
        w.writerow([50, 1.0, "", "", ""])
        w.writerow([100, 0.5, half, q_half, mc / 2 if mc is not None else ""])
        w.writerow([150, 0.4, "", "", ""])
        w.writerow([200, 0.3, "" if score is None else score, q_end, "" if mc is None else mc])


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    scores = {
        ("cql", "pendulum-medium"): [40.0, 50.0, 60.0],
        ("bc", "pendulum-medium"): [20.0, 30.0, 25.0],
        ("cql", "cartpole-medium"): [80.0, 90.0, 100.0],
        ("bc", "cartpole-medium"): [70.0, 60.0, None],
    }
    for (algo, dataset), xs in scores.items():
        for seed, x in enumerate(xs):
            q = None if algo == "bc" else 10.0 + seed
            make_run(tmp_path / "nested" / f"{algo}-{dataset}-{seed}", algo, dataset, seed, x, q=q)
    return tmp_path


def test_report_tables(runs_root: Path) -> None:
    results = report.report(runs_root, reps=500)
    cells = {(c["dataset"], c["algorithm"]): c for c in results["cells"]}
    assert set(cells) == {
        (d, a) for d in ("pendulum-medium", "cartpole-medium") for a in ("cql", "bc")
    }
    c = cells[("pendulum-medium", "cql")]
    assert (c["runs"], c["scored"], c["null"], c["eval_episodes"]) == (3, 3, 0, 5)
    assert c["score_mean"] == pytest.approx(50.0)
    assert c["score_std"] == pytest.approx(10.0)
    assert c["score_iqm"]["point"] == pytest.approx(stats.iqm([40, 50, 60]))
    assert c["score_iqm"]["low"] <= 50.0 <= c["score_iqm"]["high"]
    # The run without a score is counted, listed, and not averaged in.
    c = cells[("cartpole-medium", "bc")]
    assert (c["runs"], c["scored"], c["null"]) == (3, 2, 1)
    assert c["score_mean"] == pytest.approx(65.0)
    assert [r["seed"] for r in results["null_runs"]] == [2]

    agg = results["aggregates"]
    assert agg["cql"]["iqm"]["point"] == pytest.approx(stats.iqm([[40, 50, 60], [80, 90, 100]]))
    assert agg["cql"]["mean"]["point"] == pytest.approx(70.0)
    assert agg["cql"]["optimality_gap"]["point"] == pytest.approx(30.0)
    assert agg["bc"]["scored"] == 5 and agg["bc"]["runs"] == 6
    poi = {(p["x"], p["y"]): p for p in results["probability_of_improvement"]}
    assert poi[("cql", "bc")]["point"] == pytest.approx(1.0)
    assert poi[("bc", "cql")]["point"] == pytest.approx(0.0)
    # Q - MC: cql runs 10+seed - 3 on both datasets; bc has no critic estimate.
    assert results["q_minus_mc"]["cql"]["q_minus_mc"]["point"] == pytest.approx(8.0)
    assert results["q_minus_mc"]["bc"]["q_minus_mc"] is None
    # ... and per cell, with the count of over-estimating runs (all three: 10+seed > 3).
    c = cells[("pendulum-medium", "cql")]
    assert c["q_minus_mc"]["point"] == pytest.approx(8.0)
    assert (c["q_above_mc"], c["q_minus_mc_runs"]) == (3, 3)
    assert cells[("pendulum-medium", "bc")]["q_minus_mc"] is None

    text = (runs_root / "report" / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["cells"] == results["cells"]
    md = (runs_root / "report" / "results.md").read_text()
    assert "| pendulum-medium | cql | 3 | 0 | 5 | 50.0 ± 10.0 |" in md
    assert "Runs without a score" in md
    rows = {tuple(line.split(" | ")[:2]): line for line in md.splitlines() if line.count("|") > 9}
    assert rows[("| pendulum-medium", "cql")].endswith(" | 3/3 |")
    assert " | 8.0 [" in rows[("| pendulum-medium", "cql")]
    assert rows[("| pendulum-medium", "bc")].endswith(" | null | – |")
    pngs = [report.INTERVALS_PNG, report.PROFILES_PNG, report.TRAINING_PNG, report.VALUES_PNG]
    for png in pngs:
        assert (runs_root / "report" / png).stat().st_size > 1000
    assert results["plots"] == pngs


def test_training_curves(runs_root: Path) -> None:
    runs = report.find_runs(runs_root)
    curves = report.training_curves(runs, reps=200)
    c = curves[("pendulum-medium", "cql")]
    np.testing.assert_array_equal(c["step"], [100, 200])
    np.testing.assert_allclose(c["mean"], [25.0, 50.0])
    assert (c["low"] <= c["mean"]).all() and (c["mean"] <= c["high"]).all()
    np.testing.assert_array_equal(curves[("cartpole-medium", "bc")]["runs"], [2, 2])
    # Any logged metric: the critic's estimate over training (bc logs none, so has no curve).
    q = report.training_curves(runs, reps=200, key=report.Q_KEY)
    np.testing.assert_allclose(q[("pendulum-medium", "cql")]["mean"], [5.5, 11.0])
    assert ("pendulum-medium", "bc") not in q


def test_labels_name_the_settings_that_vary(tmp_path: Path) -> None:
    for w in (1.0, 5.0):
        for seed in (0, 1):
            make_run(
                tmp_path / f"cql-w{w}-{seed}",
                "cql",
                "pendulum-medium",
                seed,
                10 * w + seed,
                settings={"cql_weight": w, "hidden_dims": [32, 32]},
            )
    make_run(tmp_path / "bc-0", "bc", "pendulum-medium", 0, 5.0)
    results = report.report(tmp_path, reps=200, plots=False)
    assert results["algorithms"] == ["bc", "cql cql_weight=1.0", "cql cql_weight=5.0"]
    assert results["aggregates"]["cql cql_weight=5.0"]["mean"]["point"] == pytest.approx(50.5)


def test_ablations_are_paired_by_seed(tmp_path: Path) -> None:
    # Two sweeps: one set precision=bf16, the other left it at its default (only in config.json).
    # Seed 3 exists for fp32 alone, and an older run lacks the setting entirely.
    for seed, (bf16, fp32) in enumerate([(20.0, 21.0), (30.0, 33.5), (40.0, 42.0)]):
        sweep = tmp_path / "a"
        make_run(sweep / f"cql-{seed}", "cql", "hopper-medium", seed, bf16)
        (sweep / ".sweep").mkdir(exist_ok=True)
        meta = {"algo": "cql", "seed": seed, "settings": {"precision": "bf16", "threads": 1}}
        (sweep / ".sweep" / f"cql-{seed}.json").write_text(json.dumps(meta))
        make_run(
            tmp_path / "b" / f"cql-{seed}",
            "cql",
            "hopper-medium",
            seed,
            fp32,
            settings={"precision": "fp32"},
        )
    make_run(
        tmp_path / "b" / "cql-3", "cql", "hopper-medium", 3, 50.0, settings={"precision": "fp32"}
    )
    make_run(tmp_path / "old" / "cql-9", "cql", "hopper-medium", 9, 1.0)
    # Two settings at once is no ablation of either: never paired.
    for seed in (0, 1):
        make_run(
            tmp_path / "d" / f"cql-{seed}",
            "cql",
            "hopper-medium",
            seed,
            5.0,
            settings={"precision": "bf16", "steps": 300},
        )
    for seed in (0, 1):
        make_run(tmp_path / "c" / f"bc-{seed}", "bc", "hopper-medium", seed, 10.0)

    results = report.report(tmp_path, reps=500, plots=False)
    cells = {c["algorithm"]: c["runs"] for c in results["cells"]}
    # The old run without the setting joins no cell of its own making: it is labelled plain cql.
    bf16, fp32 = "cql precision=bf16 steps=100", "cql precision=fp32 steps=100"
    assert cells == {
        "bc": 2,
        "cql steps=100": 1,
        bf16: 3,
        fp32: 4,
        "cql precision=bf16 steps=300": 2,
    }
    # Only cells of one algo that differ in one setting pair up, on the seeds both have:
    # bf16 at 300 steps pairs with bf16 at 100 (steps), not with fp32 at 100 (two settings).
    pairs = {(p["x"], p["y"]): p for p in results["paired"]}
    assert set(pairs) == {(bf16, fp32), (bf16, "cql precision=bf16 steps=300")}
    assert pairs[(bf16, "cql precision=bf16 steps=300")]["setting"] == "steps"
    p = pairs[(bf16, fp32)]
    assert (p["setting"], p["seeds"]) == ("precision", [0, 1, 2])
    np.testing.assert_allclose(p["differences"], [-1.0, -3.5, -2.0])
    assert p["difference"]["point"] == pytest.approx(-6.5 / 3)
    assert p["difference"]["low"] <= -3.0 and p["difference"]["high"] >= -1.5
    assert p["difference"]["high"] < 0 and p["x_ahead"] == 0
    md = (tmp_path / "report" / "results.md").read_text()
    assert f"| hopper-medium | {bf16} | {fp32} | 3 | -1.0, -3.5, -2.0 |" in md


def test_all_null_scores_are_reported(tmp_path: Path) -> None:
    make_run(tmp_path / "a", "cql", "custom.npz", 0, None)
    make_run(tmp_path / "b", "cql", "custom.npz", 1, None)
    results = report.report(tmp_path, reps=100)
    (cell,) = results["cells"]
    assert (cell["runs"], cell["null"], cell["score_mean"], cell["score_iqm"]) == (2, 2, None, None)
    assert results["aggregates"]["cql"]["iqm"] is None
    assert len(results["null_runs"]) == 2
    json.loads((tmp_path / "report" / "results.json").read_text())


def test_cli_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no run folder") and "\n" not in err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "summary.json").write_text("{broken")
    assert report.main([str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--confidence", "1.5"], "--confidence must be between 0 and 1"),
        (["--confidence", "0"], "--confidence must be between 0 and 1"),
        (["--reps", "0"], "--reps must be >= 1"),
    ],
)
def test_bad_interval_options_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    assert report.main([str(tmp_path), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err
    assert not list(tmp_path.iterdir())  # nothing written


# ------------------------------------------------------------------- where a report writes


def test_report_writes_its_own_folder_and_refuses_a_foreign_one(
    runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run folder's or a demo's own results.md is never the report's: it goes to DIR/report.
    demo_table = runs_root / "results.md"
    demo_table.write_text("the demo's table")
    assert report.main([str(runs_root), "--reps", "50", "--no-plots"]) == 0
    assert demo_table.read_text() == "the demo's table"
    assert (runs_root / "report" / "results.md").is_file()
    # An --out holding other files is refused before anything is written.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert report.main([str(runs_root), "--out", str(other), "--reps", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds files deep.report did not write (notes.txt)" in err and "\n" not in err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # A folder where the report's results.md would go: refused before results.json is written.
    (runs_root / "report" / "results.md").unlink()
    (runs_root / "report" / "results.md").mkdir()
    (runs_root / "report" / "results.json").unlink()
    assert report.main([str(runs_root), "--reps", "50", "--no-plots"]) == 2
    assert "results.md/" in capsys.readouterr().err
    assert not (runs_root / "report" / "results.json").exists()
    # Paths that cannot be written: one line, exit 2.
    for out in ("/dev/null/x", "/proc/x"):
        assert report.main([str(runs_root), "--out", out, "--reps", "50"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_a_report_replaces_a_symlink_and_never_writes_through_it(
    runs_root: Path, tmp_path: Path
) -> None:
    target = tmp_path / "outside.md"
    target.write_text("not the report's")
    out = runs_root / "report"
    out.mkdir()
    (out / "results.md").symlink_to(target)
    report.report(runs_root, reps=50, plots=False)
    assert target.read_text() == "not the report's"
    assert not (out / "results.md").is_symlink()


def test_one_seed_has_no_interval(tmp_path: Path) -> None:
    make_run(tmp_path / "r", "cql", "pendulum-medium", 0, 50.0, q=10.0)
    results = report.report(tmp_path, reps=50, plots=False)
    (cell,) = results["cells"]
    assert cell["score_mean"] == 50.0
    assert cell["score_iqm"] is None and cell["score_mean_ci"] is None
    assert results["aggregates"]["cql"]["iqm"] is None
    assert results["q_minus_mc"]["cql"]["q_minus_mc"] is None


def test_fine_tuning_runs_get_their_dip_final_score_and_regret(tmp_path: Path) -> None:
    # Pre-training ends at step 100; 1,000 online steps; the dip window is (100, 200].
    curves = {
        0: [(100, 40.0), (150, 10.0), (200, 30.0), (600, 50.0), (1100, 60.0)],
        1: [(100, 50.0), (150, 45.0), (200, 20.0), (600, 70.0), (1100, 80.0)],
    }
    for seed, curve in curves.items():
        path = tmp_path / f"cal-ql-{seed}"
        settings = {"online_steps": 1000, "online_ratio": 0.5}
        make_run(path, "cal-ql", "hopper-medium", seed, curve[-1][1], settings=settings)
        with open(path / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "eval/normalized_score"])
            w.writerows(curve)
    make_run(tmp_path / "offline", "cql", "hopper-medium", 0, 30.0)  # no online phase
    runs = report.find_runs(tmp_path)
    assert report.fine_tuning(next(r for r in runs if r.algo == "cql")) is None
    results = report.summarize(runs, reps=200)
    (row,) = results["fine_tuning"]
    assert row["algorithm"] == "cal-ql" and row["seeds"] == [0, 1] and row["online_steps"] == 1000
    assert row["offline"]["values"] == [40.0, 50.0]
    assert row["dip"]["values"] == [30.0, 30.0]  # 40 - 10, 50 - 20
    assert row["final"]["values"] == [60.0, 80.0]
    assert row["gain"]["values"] == [20.0, 30.0]
    # Regret: the mean over the four online evaluations of (100 - score) / 100.
    assert row["regret"]["values"] == pytest.approx(
        [(90 + 70 + 50 + 40) / 400, (55 + 80 + 30 + 20) / 400]
    )
    assert row["final"]["mean_ci"]["low"] <= 70.0 <= row["final"]["mean_ci"]["high"]
    text = report.to_markdown(results)
    assert "## Offline-to-online fine-tuning" in text
    assert "| hopper-medium | cal-ql | 2 | 1000 | 45.0 ± 7.1 [40.0, 50.0] | 30.0 ± 0.0" in text
