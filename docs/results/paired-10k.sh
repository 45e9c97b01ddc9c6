#!/usr/bin/env bash
# Fast CQL against the standard settings, paired by seed, at 10,000 updates: cql-fast with the
# sampled and with the mean-action backup, and cql (standard), seeds 3-5 (fresh: seeds 0-2
# chose the fast settings), one sweep per core, each niced; halfcheetah-medium after the two
# hopper datasets. Running it again continues it.
#
#   bash docs/results/paired-10k.sh [OUT]        # OUT defaults to runs/paired-10k
#
# The paired table: python -m deep.report OUT/<dataset> (its "paired" section, in OUT/<dataset>/report/).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/paired-10k}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
run() {
  local dataset=$1
  nice -n 10 "$PY" -m deep.sweep --algos cql-fast cql --datasets "$dataset" --seeds 3 4 5 \
    --set steps=10000 eval_every=2500 eval_episodes=10 \
    --grid 'cql-fast:backup_action=["sample","mean"]' \
    --workers 1 --out "$OUT/$dataset" > "$OUT/$dataset.log" 2>&1
}
mkdir -p "$OUT"
run hopper-medium-replay &
run hopper-medium &
wait
run halfcheetah-medium
