#!/usr/bin/env bash
# Regenerate the shipped checkpoints eatsched/data/checkpoints/{algo}-n{nodes}.pt: the five SAC-family algorithms
# on 4, 8 and 12 nodes, each at the middle of the paper's rate grid (0.05, 0.10, 0.15), all 15 trainings in
# parallel (one CPU thread each: give it a machine with >= 16 cores, or a GPU with --device cuda).
#
#   scripts/train_shipped.sh [MINUTES=30] [DEVICE=cpu] [RUNS=runs/shipped] [PARALLEL=15]
#
# Then compares each against random / fifo / adaptive on 20 held-out seeds (runs/shipped/eval.jsonl).
set -euo pipefail
MINUTES=${1:-30}
DEVICE=${2:-cpu}
RUNS=${3:-runs/shipped}
PARALLEL=${4:-15}
EAT=${EAT:-eat}
DEST=$(python3 -c 'import pathlib, eatsched; print(pathlib.Path(eatsched.__file__).parent / "data" / "checkpoints")' \
       2>/dev/null || echo eatsched/data/checkpoints)
mkdir -p "$RUNS" "$DEST"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 EAT_PROGRESS=0
jobs=()
for nodes_rate in 4:0.05 8:0.10 12:0.15; do
  for algo in eat eat-a eat-d eat-da lad-ts; do
    jobs+=("$algo ${nodes_rate%%:*} ${nodes_rate##*:}")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P "$PARALLEL" -L 1 bash -c '
  algo=$0 nodes=$1 rate=$2
  $EAT train --algo $algo --nodes $nodes --rate $rate --minutes '"$MINUTES"' --device '"$DEVICE"' \
      --out '"$RUNS"'/$algo-n$nodes > '"$RUNS"'/$algo-n$nodes.log 2>&1 \
    && python3 -m eatsched.algos.sac_policy shrink '"$RUNS"'/$algo-n$nodes/best_policy.pt '"$DEST"'/$algo-n$nodes.pt \
    && echo "trained $algo-n$nodes" || echo "FAILED $algo-n$nodes (see '"$RUNS"'/$algo-n$nodes.log)"'
: > "$RUNS/eval.jsonl"
for nodes_rate in 4:0.05 8:0.10 12:0.15; do
  nodes=${nodes_rate%%:*} rate=${nodes_rate##*:}
  for p in random fifo adaptive greedy eat eat-a eat-d eat-da lad-ts; do
    echo "$p $nodes $rate"
  done
done | xargs -P "$PARALLEL" -L 1 bash -c '$EAT simulate --policy $0 --nodes $1 --rate $2 --episodes 20 \
    --seed 2000000 --json >> '"$RUNS"'/eval.jsonl || echo "eval FAILED $0 n$1"'
cat "$RUNS/eval.jsonl"
