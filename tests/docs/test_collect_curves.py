"""``docs/results/collect_curves.py``: a second pair of long runs joins the committed curves
without losing the first, and the results page's table reads the right numbers."""

from __future__ import annotations

import json
from pathlib import Path


def _trial(folder: Path, agent: dict, rows: list[tuple[int, str, str, str]]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"agent": agent}))
    lines = ["step,loss/q1,eval/normalized_score,eval/q_estimate,eval/mc_return"]
    lines += [f"{step},0.1,{score},{q},{mc}" for step, score, q, mc in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_a_new_pair_joins_the_committed_curves(tmp_path: Path, results_script) -> None:
    collect = results_script("collect_curves")
    target = tmp_path / "campaign.json"
    first = tmp_path / "first" / "hopper-medium-replay"
    _trial(
        first / "cql-fast-hopper-medium-replay-seed0",
        {"precision": "fp32", "backup_action": "sample"},
        [(20_000, "30.0", "40.0", "240.0"), (100_000, "26.0", "45.0", "245.0")],
    )
    _trial(first / "bc-hopper-medium-replay-seed0", {"actor_lr": 1e-4}, [(20_000, "15.0", "", "")])
    assert collect.main([str(first.parent), str(target), "replay-walker"]) == 0

    second = tmp_path / "second" / "hopper-medium"
    _trial(
        second / "cql-fast-hopper-medium-seed0",
        {"precision": "bf16", "backup_action": "mean"},
        [(20_000, "34.0", "nan", "250.0"), (300_000, "41.5", "260.0", "250.0")],
    )
    assert collect.main([str(second.parent), str(target), "medium"]) == 0

    record = json.loads(target.read_text())
    assert list(record["datasets"]) == ["hopper-medium-replay", "hopper-medium"]
    assert record["commands"]["hopper-medium-replay"].endswith("first replay-walker")
    assert record["commands"]["hopper-medium"].endswith("second medium")
    curve = record["datasets"]["hopper-medium"]["cql-fast-hopper-medium-seed0"]
    assert curve[0]["q_estimate"] is None  # a NaN is stored as null
    assert (tmp_path / "campaign.png").stat().st_size > 0

    table = collect.table(record).splitlines()
    replay_bc = next(line for line in table if line.startswith("|  | bc (fp32, seed 0)"))
    assert "15.0 / – / – / –" in replay_bc and "(no critic)" in replay_bc
    medium = next(line for line in table if "(bf16, mean backup, seed 0)" in line)
    assert "34.0 / – / – / 41.5" in medium
    assert "– / – / 10" in medium  # Q − MC at 300k; unknown where Q was NaN
    assert "59.1" in medium  # CORL's 1M score for hopper-medium
