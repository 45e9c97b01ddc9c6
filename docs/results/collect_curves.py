"""Collect the evaluation curves of a campaign's sweeps into one JSON file (metrics only).

    python docs/results/collect_curves.py runs/campaign-300k docs/results/campaign-300k.json

Reads every trial folder ``<campaign>/<dataset>/<trial>/metrics.csv`` (the evaluation rows:
step, normalised score, the critic's Q(s0, pi(s0)) and the Monte-Carlo return) and writes
``{"command", "datasets": {dataset: {trial: [rows]}}}``, with how far each trial got.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from deep.runlog import write_json

COMMAND = "bash docs/results/campaign-300k.sh"


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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    campaign, target = Path(argv[0]), Path(argv[1])
    write_json(target, {"command": COMMAND, "datasets": curves(campaign)})
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
