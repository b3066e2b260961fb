#!/usr/bin/env bash
# Meta-train the two HalfCheetah benchmarks with the published protocols, with checkpoints.
#   halfcheetah-dir: ProMP protocol (horizon 100, meta-batch 40, 20 episodes, inner lr 0.1)
#   halfcheetah-vel: MAML paper protocol (horizon 200, meta-batch 40, 20 episodes, inner lr 0.1)
# Usage: scripts/reproduce_halfcheetah.sh [dir|vel|both] [ITERATIONS] [LOGDIR]
# Curves: metarl plot LOGDIR/*; resume an interrupted run with metarl train --resume RUN_DIR.
set -euo pipefail
which="${1:-both}"
iterations="${2:-1000}"
logdir="${3:-runs/reproduce}"
if [[ "$which" == dir || "$which" == both ]]; then
  metarl train --env halfcheetah-dir --set horizon=100 --iterations "$iterations" --seed 1 \
    --set checkpoint_every=10 --logdir "$logdir" --no-progress
fi
if [[ "$which" == vel || "$which" == both ]]; then
  metarl train --env halfcheetah-vel --set horizon=200 --iterations "$iterations" --seed 1 \
    --set checkpoint_every=10 --logdir "$logdir" --no-progress
fi
