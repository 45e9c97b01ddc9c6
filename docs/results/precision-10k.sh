#!/usr/bin/env bash
# bf16 against fp32, paired by seed, at 10,000 updates: the cql-fast preset in fp32, in
# bf16-td32 (bf16 autocast but for the TD error's two critic evaluations) and in bf16, on
# hopper-medium-replay, hopper-medium and halfcheetah-medium, seeds 6-8 (fresh: no setting was
# chosen on them), evaluated at the end on 10 episodes. Four sweeps (halfcheetah-medium split
# by seed so that the last one does not hold one core alone), two at a time (one per core),
# each niced; within a sweep fp32 runs first, then bf16-td32, then bf16. bf16 pays only on a
# CPU with native bf16 (the agent warns otherwise). Running it again continues it.
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
# Each line: sweep folder, dataset, seeds.
printf '%s\n' "hopper-medium-replay hopper-medium-replay 6 7 8" "hopper-medium hopper-medium 6 7 8" \
  "halfcheetah-medium-a halfcheetah-medium 6 7" "halfcheetah-medium-b halfcheetah-medium 8" |
  xargs -P 2 -L 1 bash -c 'name=$1 dataset=$2; shift 2
    nice -n 10 "$PY" -m deep.sweep --algos cql-fast --datasets "$dataset" --seeds "$@" \
      --set steps=10000 eval_every=10000 eval_episodes=10 \
      --grid "cql-fast:precision=[\"fp32\",\"bf16-td32\",\"bf16\"]" \
      --workers 1 --out "$OUT/$name" >> "$OUT/$name.log" 2>&1' _
