#!/usr/bin/env bash
# Issue 19 end to end, one job after the other (2 cores: never two at once), each step resumable and cached:
#   1. the generic initialisation (tinyimagenet200 with labels -> a plain backbone folder);
#   2. the grid on cub100's holdout (learning rate of the continued training, then fgssl's knobs), never on test;
#   3. the 3-seed benchmark at equal epochs with the grid's choice (--knobs_from), every method from the same init.
# Rerunning skips what is finished. Settings (PYTHON: the repo's .venv by default): cub100_init_settings.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/cub100_init_settings.sh  # PYTHON OUT RUNS METHODS SEEDS INIT TITLE

$PYTHON benchmarks/generic_init.py --out "$OUT"
$PYTHON benchmarks/cub100.py --config configs/cub100_init_cpu.yaml --init "$INIT" --grid --out "$OUT" \
    --runs_dir "$RUNS"
$PYTHON benchmarks/cub100.py --config configs/cub100_init_cpu.yaml --init "$INIT" \
    --knobs_from "$OUT/grid/grid.json" --methods "$METHODS" --seeds "$SEEDS" --budgets equal_epochs \
    --equal_time_reference none --out "$OUT" --runs_dir "$RUNS" \
    --title "$TITLE"
