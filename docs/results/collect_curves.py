"""Collect the evaluation curves of a campaign's sweeps into one JSON file (metrics only).

    python docs/results/collect_curves.py runs/campaign-300k docs/results/campaign-300k.json PAIR

Reads every trial folder ``<campaign>/<dataset>/<trial>/metrics.csv`` (the evaluation rows:
step, normalised score, the critic's Q(s0, pi(s0)) and the Monte-Carlo return) and writes
``{"commands": {dataset: command}, "settings": {dataset: {trial: "fp32, mean backup"}},
"datasets": {dataset: {trial: [rows]}}}``, with how far each trial got, and beside it a plot
of the curves (``.png``). PAIR is the ``campaign-300k.sh`` pair the runs came from; it goes
into each collected dataset's command. Datasets already in the target and not in the
campaign folder are kept, so pairs run in different sittings end up in one file.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from deep.runlog import write_json

SCRIPT = "bash docs/results/campaign-300k.sh"
SCORE_AT = (20_000, 100_000, 200_000, 300_000)
GAP_AT = (20_000, 200_000, 300_000)
CORL_CQL_1M = {  # CORL's CQL after 1M updates (D4RL v2 datasets), for the table's last column
    "hopper-medium-replay": 95.1,
    "hopper-medium": 59.1,
    "halfcheetah-medium": 47.0,
    "walker2d-medium": 80.8,
}


def _number(text: str) -> float | None:
    if text == "":
        return None
    x = float(text)
    return x if math.isfinite(x) else None


def curves(campaign: Path) -> dict[str, dict[str, list[dict[str, float | None]]]]:
    out: dict[str, dict[str, list[dict[str, float | None]]]] = {}
    for dataset_dir in sorted(p for p in campaign.iterdir() if p.is_dir()):
        runs = {}
        for trial in sorted(p for p in dataset_dir.iterdir() if (p / "metrics.csv").is_file()):
            with open(trial / "metrics.csv", newline="") as f:
                rows = [
                    {
                        "step": int(row["step"]),
                        "score": _number(row["eval/normalized_score"]),
                        "q_estimate": _number(row.get("eval/q_estimate", "")),
                        "mc_return": _number(row.get("eval/mc_return", "")),
                    }
                    for row in csv.DictReader(f)
                    if row.get("eval/normalized_score", "") != ""
                ]
            if rows:
                runs[trial.name] = rows
        if runs:
            out[dataset_dir.name] = runs
    return out


def _name(dataset: str, trial: str) -> tuple[str, str]:
    """``cql-fast-hopper-medium-seed0`` of ``hopper-medium`` -> (``cql-fast``, ``seed 0``)."""
    algo, _, seed = trial.partition(f"-{dataset}-")
    return algo, seed.replace("seed", "seed ")


def _at(curve: list[dict[str, float | None]], step: int, value, digits: int) -> str:
    row = next((r for r in curve if r["step"] == step), None)
    x = None if row is None else value(row)
    return "–" if x is None else f"{x:.{digits}f}".replace("-", "−")


def _gap(row: dict[str, float | None]) -> float | None:
    q, mc = row["q_estimate"], row["mc_return"]
    return None if q is None or mc is None else q - mc


def table(record: dict) -> str:
    """The results page's table: score and Q - MC at fixed update counts, per trial."""
    scores = " / ".join(f"{s // 1000}k" for s in SCORE_AT)
    gaps = " / ".join(f"{s // 1000}k" for s in GAP_AT)
    lines = [
        f"| dataset | algorithm | score at {scores} updates | Q(s₀, π(s₀)) − MC at {gaps} "
        "| CORL CQL, 1M |",
        "|---|---|---|---|---|",
    ]
    for dataset, runs in record["datasets"].items():
        for i, (trial, curve) in enumerate(sorted(runs.items(), reverse=True)):
            score = " / ".join(_at(curve, s, lambda r: r["score"], 1) for s in SCORE_AT)
            gap = " / ".join(_at(curve, s, _gap, 0) for s in GAP_AT)
            if all(r["q_estimate"] is None for r in curve):
                gap = "(no critic)"
            corl = f"{CORL_CQL_1M[dataset]}" if i == 0 and dataset in CORL_CQL_1M else ""
            algo, seed = _name(dataset, trial)
            name = f"{algo} ({record['settings'][dataset][trial]}, {seed})"
            lines.append(f"| {dataset if i == 0 else ''} | {name} | {score} | {gap} | {corl} |")
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    """Score (top) and the critic's Q(s0, pi(s0)) - MC (bottom) against updates, a column per
    dataset; CORL's 1M-update CQL score as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(record["datasets"])
    fig, axes = plt.subplots(
        2, len(datasets), figsize=(3.2 * len(datasets), 5.4), squeeze=False, sharex=True
    )
    for col, dataset in enumerate(datasets):
        top, bottom = axes[0][col], axes[1][col]
        for trial, curve in sorted(record["datasets"][dataset].items(), reverse=True):
            algo, seed = _name(dataset, trial)
            algo = algo if seed == "seed 0" else f"{algo} {seed}"
            steps = [r["step"] / 1000 for r in curve]
            top.plot(steps, [r["score"] for r in curve], marker=".", label=algo)
            gaps = [_gap(r) for r in curve]
            if any(g is not None for g in gaps):
                bottom.plot(steps, gaps, marker=".", label=algo)
        if dataset in CORL_CQL_1M:
            top.axhline(CORL_CQL_1M[dataset], color="grey", linestyle=":", label="CORL CQL, 1M")
        bottom.axhline(0, color="grey", linewidth=0.8)
        top.set_title(dataset, fontsize=9)
        bottom.set_xlabel("updates (thousands)")
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalised score")
    axes[1][0].set_ylabel("Q(s₀, π(s₀)) − MC return")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings(campaign: Path) -> dict[str, dict[str, str]]:
    """Per dataset and trial, the settings the table names: precision and, for a critic,
    the backup action (from each trial's ``config.json``)."""
    out: dict[str, dict[str, str]] = {}
    for config in sorted(campaign.glob("*/*/config.json")):
        agent = json.loads(config.read_text())["agent"]
        words = [agent.get("precision", "fp32")]  # BC has no precision option: fp32
        if "backup_action" in agent:
            words.append(f"{agent['backup_action']} backup")
        out.setdefault(config.parent.parent.name, {})[config.parent.name] = ", ".join(words)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    campaign, target, pair = Path(argv[0]), Path(argv[1]), argv[2]
    record = {"commands": {}, "settings": {}, "datasets": {}}
    if target.exists():
        record = json.loads(target.read_text())
    new, named = curves(campaign), settings(campaign)
    for dataset, runs in new.items():
        record["commands"][dataset] = f"{SCRIPT} {campaign} {pair}"
        record["settings"][dataset] = {trial: named[dataset][trial] for trial in runs}
        record["datasets"][dataset] = runs
    write_json(target, record)
    print(f"wrote {target}: {', '.join(new)} from {campaign}")
    plot(record, target.with_suffix(".png"))
    print(f"wrote {target.with_suffix('.png')}")
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
