#!/usr/bin/env bash
# navigation-2d, MAML-TRPO, 500 iterations (pytorch-maml-rl's config), seeds 0 1 2, with the default
# config (LVC inner loss, cg_subsample 0.5) and with exact Fisher products (cg_subsample 1.0).
# Each run has its own LOGDIR/CONFIG-seedS folder; running the script again resumes unfinished runs.
# Usage: scripts/reproduce_navigation.sh [LOGDIR]      Curves: metarl plot LOGDIR/*/*
set -euo pipefail
logdir="${1:-runs/navigation-500}"
for seed in 0 1 2; do
  for variant in default exact; do
    folder="$logdir/$variant-seed$seed"
    extra=()
    if [[ "$variant" == exact ]]; then extra=(--set algo_kwargs.cg_subsample=1.0); fi
    run=$(find "$folder" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -1 || true)
    if [[ -n "$run" ]]; then
      metarl train --resume "$run" --no-progress
    else
      metarl train --env navigation-2d --iterations 500 --seed "$seed" "${extra[@]}" --logdir "$folder" --no-progress
    fi
  done
done
