"""Collect the evaluation curves of a campaign's sweeps into one JSON file (metrics only).

    python docs/results/collect_curves.py runs/campaign-300k docs/results/campaign-300k.json PAIR

Reads every trial folder ``<campaign>/<dataset>/<trial>/metrics.csv`` (the evaluation rows:
step, normalised score, the critic's Q(s0, pi(s0)) and the Monte-Carlo return) and writes
``{"commands": {dataset: command}, "datasets": {dataset: {trial: [rows]}}}``, with how far
each trial got. PAIR is the ``campaign-300k.sh`` pair the runs came from; it goes into each
collected dataset's command. Datasets already in the target and not in the campaign folder
are kept, so pairs run in different sittings end up in one file.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from deep.runlog import write_json

SCRIPT = "bash docs/results/campaign-300k.sh"


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
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    campaign, target, pair = Path(argv[0]), Path(argv[1]), argv[2]
    record = {"commands": {}, "datasets": {}}
    if target.exists():
        record = json.loads(target.read_text())
    new = curves(campaign)
    for dataset, runs in new.items():
        record["commands"][dataset] = f"{SCRIPT} {campaign} {pair}"
        record["datasets"][dataset] = runs
    write_json(target, record)
    print(f"wrote {target}: {', '.join(new)} from {campaign}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
