"""``docs/results/paired_10k.py``: the paired tables of the results page, read from run
folders as deep.train writes them (summary.json), seed by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _run(root: Path, algo: str, seed: int, score: float, q: float | None) -> None:
    folder = root / "hopper-medium" / f"{algo}-hopper-medium-seed{seed}"
    folder.mkdir(parents=True)
    summary = {
        "algo": algo,
        "dataset": "hopper-medium",
        "seed": seed,
        "normalized_score": score,
        "eval_episodes": 10,
        "q_estimate_mean": q,
        "mc_return_mean": 200.0 if q is not None else None,
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_cql_minus_bc_is_paired_by_seed_and_keeps_earlier_datasets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], results_script
) -> None:
    paired = results_script("paired_10k")
    out = tmp_path / "seeds.json"
    earlier = {"what": "x", "command": "y", "datasets": {"walker2d-medium": {"seeds": [9]}}}
    out.write_text(json.dumps(earlier))
    runs = tmp_path / "runs"
    for seed, cql, bc in [(9, 30.0, 20.0), (10, 28.0, 21.0), (11, 26.0, 29.0)]:
        _run(runs, "cql-fast", seed, cql, q=150.0 + seed)
        _run(runs, "bc", seed, bc, q=None)
    _run(runs, "cql-fast", 12, 50.0, q=150.0)  # no BC run of seed 12: not paired

    paired.main(str(runs), str(out), "bc")
    capsys.readouterr()

    table = json.loads(out.read_text())
    assert "40,000 updates" in table["what"] and "seeds 9-11" in table["what"]
    assert "walker2d-medium" in table["datasets"]  # measured earlier, kept
    entry = table["datasets"]["hopper-medium"]
    assert entry["scores"]["bc"] == {"9": 20.0, "10": 21.0, "11": 29.0}
    assert entry["q_minus_mc"]["cql-fast"]["10"] == pytest.approx(-40.0)
    d = entry["cql-fast_minus_bc"]
    assert d["seeds"] == [9, 10, 11]
    assert d["differences"] == [10.0, 7.0, -3.0]
    assert d["ahead"] == 2
    mean = d["mean"]
    assert mean["point"] == pytest.approx(14.0 / 3)
    assert -3.0 <= mean["low"] < mean["point"] < mean["high"] <= 10.0  # within the range


def test_an_unknown_comparison_is_refused(tmp_path: Path, results_script) -> None:
    with pytest.raises(SystemExit, match="must be one of"):
        results_script("paired_10k").main(str(tmp_path), str(tmp_path / "out.json"), "nope")
