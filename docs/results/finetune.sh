#!/usr/bin/env bash
# Offline-to-online fine-tuning (deep.online): CQL (the cql-fast preset, with the sampled
# backup these results were measured with), Cal-QL (the same fast settings, calibrated) and
# BC, each pre-trained offline for 5,000 updates, then fine-tuned for 10,000 environment
# steps with one update per step and half of every batch
# from the online transitions; hopper-medium-replay and hopper-medium, seeds 0-2, evaluated
# every 500 steps on 10 episodes. CQL on one core, Cal-QL on the other, then BC. Running it
# again continues it (finished trials are skipped, stopped ones resume).
#
#   bash docs/results/finetune.sh [OUT]        # OUT defaults to runs/finetune
#
# docs/results/finetune.json is made from OUT by
#   python docs/results/finetune_table.py OUT docs/results/finetune.json
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/finetune}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
FAST="cql_n_actions=1 cql_estimator=rho cql_data_in_push_down=true"
run() {
  local algo=$1; shift
  nice -n 10 "$PY" -m deep.sweep --algos "$algo" \
    --datasets hopper-medium-replay hopper-medium --seeds 0 1 2 \
    --set steps=5000 online_steps=10000 online_ratio=0.5 eval_every=500 eval_episodes=10 "$@" \
    --workers 1 --no-report --out "$OUT/$algo" >> "$OUT/$algo.log" 2>&1
}
mkdir -p "$OUT"
(run cql-fast cql-fast:backup_action=sample; run bc) &
run cal-ql $(for kv in $FAST; do printf 'cal-ql:%s ' "$kv"; done) &
wait
