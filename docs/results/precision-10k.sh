#!/usr/bin/env bash
# bf16 against fp32, paired by seed, at 10,000 updates: the cql-fast preset in fp32, in
# bf16-td32 (bf16 autocast but for the TD error's two critic evaluations) and in bf16, on
# hopper-medium-replay, hopper-medium and halfcheetah-medium, seeds 6-8 (fresh: no setting was
# chosen on them), evaluated at the end on 10 episodes. One sweep per dataset, two at a time
# (one per core), each niced; within a dataset fp32 runs first, then bf16-td32, then bf16.
# bf16 pays only on a CPU with native bf16 (the agent warns otherwise). Running it again
# continues it.
#
#   bash docs/results/precision-10k.sh [OUT]        # OUT defaults to runs/precision-10k
#
# The paired table: python docs/results/paired_10k.py OUT docs/results/precision-10k.json precision
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/precision-10k}
export PY=${PY:-.venv/bin/python}
export OUT OMP_NUM_THREADS=1
mkdir -p "$OUT"
printf '%s\n' hopper-medium-replay hopper-medium halfcheetah-medium | xargs -P 2 -I{} \
  bash -c 'nice -n 10 "$PY" -m deep.sweep --algos cql-fast --datasets "$1" --seeds 6 7 8 \
    --set steps=10000 eval_every=10000 eval_episodes=10 \
    --grid "cql-fast:precision=[\"fp32\",\"bf16-td32\",\"bf16\"]" \
    --workers 1 --out "$OUT/$1" >> "$OUT/$1.log" 2>&1' _ {}
