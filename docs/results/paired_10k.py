"""The paired table of docs/results/paired-10k.sh: per dataset, cql-fast (sampled and
mean-action backup) minus standard CQL, seed by seed, with mean, IQM and 95% bootstrap CIs
(deep.stats, 10,000 resamples).

    python docs/results/paired_10k.py runs/paired-10k docs/results/paired-10k.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from deep import stats
from deep.report import find_runs
from deep.runlog import write_json

STANDARD = "cql"
FAST = {"sample": "cql-fast backup_action=sample", "mean": "cql-fast backup_action=mean"}


def interval(x: np.ndarray, statistic: stats.Statistic) -> dict[str, float]:
    return stats.interval_estimate(x, statistic, 0, reps=10_000).to_dict()


def main(root: str, out: str) -> None:
    table: dict[str, object] = {
        "what": "normalised score after 10,000 updates, 10 evaluation episodes, seeds 3-5",
        "command": "bash docs/results/paired-10k.sh; python docs/results/paired_10k.py "
        f"{root} {out}",
        "datasets": {},
    }
    if Path(out).exists():  # datasets measured in an earlier sitting, whose folders are gone
        table["datasets"] = json.loads(Path(out).read_text())["datasets"]
    for folder in sorted(Path(root).iterdir()):
        if not folder.is_dir() or not find_runs(folder):
            continue
        runs = find_runs(folder)
        by = {(r.label, r.seed): r for r in runs if r.score is not None}
        seeds = sorted({s for _, s in by})
        entry: dict[str, object] = {
            "seeds": seeds,
            "eval_episodes": sorted({r.eval_episodes for r in runs}),
            "scores": {
                label: [by[(label, s)].score for s in seeds if (label, s) in by]
                for label in (STANDARD, *FAST.values())
            },
            "q_minus_mc": {
                label: [by[(label, s)].q_minus_mc for s in seeds if (label, s) in by]
                for label in (STANDARD, *FAST.values())
            },
        }
        for backup, label in FAST.items():
            common = [s for s in seeds if (label, s) in by and (STANDARD, s) in by]
            d = np.array([by[(label, s)].score - by[(STANDARD, s)].score for s in common])
            entry[f"fast_{backup}_minus_standard"] = {
                "differences": d.tolist(),
                "mean": interval(d, stats.mean_statistic),
                "iqm": interval(d, stats.iqm_statistic),
                "fast_ahead": int((d > 0).sum()),
            }
        table["datasets"][folder.name] = entry  # type: ignore[index]
    write_json(Path(out), table)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
