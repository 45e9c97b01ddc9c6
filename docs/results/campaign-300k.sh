#!/usr/bin/env bash
# Long locomotion runs to 300k updates, one sweep per core, each niced so that other work on
# the machine comes first. Running it again continues it (finished trials are skipped,
# stopped ones resume from their checkpoint).
#
#   bash docs/results/campaign-300k.sh [OUT] [PAIR]   # OUT defaults to runs/campaign-300k
#
# PAIR picks the two datasets and their settings:
#   replay-walker (default): hopper-medium-replay and walker2d-medium; cql-fast with the
#     sampled backup (the preset before it took the mean action), fp32; then BC.
#   medium: hopper-medium and halfcheetah-medium; the cql-fast preset (mean-action backup)
#     in bf16, so that 300k updates fit in one 3-hour sitting; then BC (fp32).
# Naive offline SAC is not run here: on these datasets its Q reaches 4e5 (hopper-medium) and
# 5e2 above the return (halfcheetah-medium) within 10k updates (docs/results.md, "Locomotion").
#
# Each dataset's sweep writes OUT/<dataset>/ (trial folders, sweep.jsonl, the report);
# docs/results/campaign-300k.json is made from them by
#   python docs/results/collect_curves.py OUT docs/results/campaign-300k.json PAIR
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/campaign-300k}
PAIR=${2:-replay-walker}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300000}
SEEDS=${SEEDS:-0}
export OMP_NUM_THREADS=1
run() {
  local dataset=$1
  shift
  nice -n 10 "$PY" -m deep.sweep --datasets "$dataset" --seeds $SEEDS \
    --set eval_episodes=10 "$@" --workers 1 --out "$OUT/$dataset" >> "$OUT/$dataset.log" 2>&1
}
mkdir -p "$OUT"
case $PAIR in
  replay-walker)
    for dataset in hopper-medium-replay walker2d-medium; do
      run "$dataset" steps="$STEPS" eval_every=20000 'cql-fast:backup_action=sample' \
        --algos cql-fast bc &
    done
    ;;
  medium)
    for dataset in hopper-medium halfcheetah-medium; do
      run "$dataset" steps="$STEPS" eval_every=20000 cql-fast:precision=bf16 \
        --algos cql-fast bc &
    done
    ;;
  *)
    echo "campaign-300k.sh: unknown PAIR '$PAIR'; use replay-walker or medium" >&2
    exit 2
    ;;
esac
wait
