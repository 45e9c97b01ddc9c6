"""Paired tables, per dataset, seed by seed, with mean, IQM and 95% bootstrap CIs
(deep.stats, 10,000 resamples):

- ``fast`` (docs/results/paired-10k.sh): cql-fast with the sampled and with the mean-action
  backup, minus standard CQL, seeds 3-5, 10,000 updates;
- ``precision`` (docs/results/precision-10k.sh): the cql-fast preset in bf16-td32 and in
  bf16, minus the same in fp32, seeds 6-8, 10,000 updates;
- ``bc`` (docs/results/seeds-40k.sh): the cql-fast preset in bf16 minus BC, seeds 9-11,
  40,000 updates.

    python docs/results/paired_10k.py runs/paired-10k docs/results/paired-10k.json
    python docs/results/paired_10k.py runs/precision-10k docs/results/precision-10k.json precision
    python docs/results/paired_10k.py runs/seeds-40k docs/results/seeds-40k.json bc
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deep import stats
from deep.report import Run, find_runs
from deep.runlog import write_json


class Comparison(NamedTuple):
    script: str
    seeds: str
    steps: int
    baseline: str
    variants: dict[str, str]
    key: str
    """The JSON key of a variant's paired differences, from its short name."""


COMPARISONS = {
    "fast": Comparison(
        "paired-10k.sh",
        "3-5",
        10_000,
        "cql",
        {"sample": "cql-fast backup_action=sample", "mean": "cql-fast backup_action=mean"},
        "fast_{}_minus_standard",
    ),
    "precision": Comparison(
        "precision-10k.sh",
        "6-8",
        10_000,
        "cql-fast precision=fp32",
        {"bf16-td32": "cql-fast precision=bf16-td32", "bf16": "cql-fast precision=bf16"},
        "{}_minus_fp32",
    ),
    "bc": Comparison("seeds-40k.sh", "9-11", 40_000, "bc", {"cql-fast": "cql-fast"}, "{}_minus_bc"),
}


def interval(x: np.ndarray, statistic: stats.Statistic) -> dict[str, float]:
    return stats.interval_estimate(x, statistic, 0, reps=10_000).to_dict()


def main(root: str, out: str, mode: str = "fast") -> None:
    if mode not in COMPARISONS:
        raise SystemExit(f"the comparison must be one of {sorted(COMPARISONS)}, got {mode!r}")
    c = COMPARISONS[mode]
    table: dict[str, object] = {
        "what": f"normalised score after {c.steps:,} updates, 10 evaluation episodes, "
        f"seeds {c.seeds}",
        "command": f"bash docs/results/{c.script}; python docs/results/paired_10k.py "
        f"{root} {out} {mode}",
        "datasets": {},
    }
    if Path(out).exists():  # datasets measured in an earlier sitting, whose folders are gone
        table["datasets"] = json.loads(Path(out).read_text())["datasets"]
    by_dataset: dict[str, list[Run]] = {}
    for run in find_runs(root):  # a dataset's runs may sit in several sweep folders
        by_dataset.setdefault(run.dataset, []).append(run)
    for dataset, runs in sorted(by_dataset.items()):
        by = {(r.label, r.seed): r for r in runs if r.score is not None}
        seeds = sorted({s for _, s in by})
        entry: dict[str, object] = {
            "seeds": seeds,
            "eval_episodes": sorted({r.eval_episodes for r in runs}),
            "scores": {
                label: {str(s): by[(label, s)].score for s in seeds if (label, s) in by}
                for label in (c.baseline, *c.variants.values())
            },
            "q_minus_mc": {
                label: {str(s): by[(label, s)].q_minus_mc for s in seeds if (label, s) in by}
                for label in (c.baseline, *c.variants.values())
            },
        }
        for name, label in c.variants.items():
            common = [s for s in seeds if (label, s) in by and (c.baseline, s) in by]
            if not common:
                continue
            d = np.array([by[(label, s)].score - by[(c.baseline, s)].score for s in common])
            entry[c.key.format(name)] = {
                "seeds": common,
                "differences": d.tolist(),
                "mean": interval(d, stats.mean_statistic),
                "iqm": interval(d, stats.iqm_statistic),
                "ahead": int((d > 0).sum()),
            }
        table["datasets"][dataset] = entry  # type: ignore[index]
    write_json(Path(out), table)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
