#!/usr/bin/env bash
# Three fresh seeds at a shorter budget on the four locomotion datasets: the cql-fast preset
# (mean-action backup) in bf16 and BC (fp32), 40,000 updates, evaluated every 10,000 on 10
# episodes, seeds 9-11 (no setting was chosen on them). 40k updates is where the 300k curves
# (campaign-300k.sh) have levelled off on every dataset. One sweep per dataset, two at a time
# (one per core), each niced; within a sweep cql-fast runs first, then BC. Running it again
# continues it (finished trials are skipped, stopped ones resume from their checkpoint).
#
#   bash docs/results/seeds-40k.sh [OUT]        # OUT defaults to runs/seeds-40k
#
# The paired table (cql-fast - BC, seed by seed):
#   python docs/results/paired_10k.py OUT docs/results/seeds-40k.json bc
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/seeds-40k}
export PY=${PY:-.venv/bin/python}
export OUT OMP_NUM_THREADS=1
mkdir -p "$OUT"
printf '%s\n' hopper-medium-replay walker2d-medium hopper-medium halfcheetah-medium |
  xargs -P 2 -I {} bash -c 'dataset=$1
    nice -n 10 "$PY" -m deep.sweep --algos cql-fast bc --datasets "$dataset" --seeds 9 10 11 \
      --set steps=40000 eval_every=10000 eval_episodes=10 cql-fast:precision=bf16 \
      --workers 1 --out "$OUT/$dataset" >> "$OUT/$dataset.log" 2>&1' _ {}
