"""The fine-tuning table and curves of docs/results/finetune.sh, as one JSON file (metrics
only): deep.report's fine-tuning rows (pre-trained score, initial dip, final score, gain and
regret over seeds, with 95% bootstrap CIs, 10,000 resamples) and every run's evaluation
curve.

    python docs/results/finetune_table.py runs/finetune docs/results/finetune.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from deep.report import find_runs, run_curve, summarize
from deep.runlog import write_json

COMMAND = "bash docs/results/finetune.sh"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root, target = Path(argv[0]), Path(argv[1])
    runs = find_runs(root)
    results = summarize(runs, reps=10_000)
    curves: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
    for run in runs:
        steps, scores = run_curve(run, "eval/normalized_score")
        by_algo = curves.setdefault(run.dataset, {}).setdefault(run.label, {})
        by_algo[str(run.seed)] = [[int(s), float(x)] for s, x in zip(steps, scores, strict=True)]
    write_json(
        target,
        {
            "command": f"{COMMAND}; python docs/results/finetune_table.py {root} {target}",
            "what": "pre-training 5,000 updates, then 10,000 environment steps with one update "
            "each, half of every batch online; 10 evaluation episodes every 500 steps",
            "fine_tuning": results["fine_tuning"],
            "curves": curves,
        },
    )
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
