#!/usr/bin/env bash
# Long locomotion runs: fast CQL (the cql-fast preset, with the sampled backup its results
# were measured with), then behaviour cloning, to 300k updates, one sweep per core, each
# niced so that other work on the machine comes first. Running it again continues it (finished trials are skipped, stopped ones resume from their checkpoint).
#
#   bash docs/results/campaign-300k.sh [OUT]        # OUT defaults to runs/campaign-300k
#
# Each dataset's sweep writes OUT/<dataset>/ (trial folders, sweep.jsonl, the report);
# docs/results/campaign-300k.json is made from them by
#   python -m deep.report OUT/<dataset> --out docs/results/campaign-300k/<dataset>
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/campaign-300k}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300000}
SEEDS=${SEEDS:-0}
export OMP_NUM_THREADS=1
run() {
  local dataset=$1
  nice -n 10 "$PY" -m deep.sweep --algos cql-fast bc --datasets "$dataset" --seeds $SEEDS \
    --set steps="$STEPS" eval_every=20000 eval_episodes=10 'cql-fast:backup_action=sample' \
    --workers 1 --out "$OUT/$dataset" >> "$OUT/$dataset.log" 2>&1
}
mkdir -p "$OUT"
run hopper-medium-replay &
run walker2d-medium &
wait
