#!/usr/bin/env bash
# Issue 19 end to end, one job after the other (2 cores: never two at once), each step resumable and cached:
#   1. the generic initialisation (tinyimagenet200 with labels -> a plain backbone folder);
#   2. the grid on cub100's holdout (learning rate of the continued training, then fgssl's knobs), never on test;
#   3. the 3-seed benchmark at equal epochs with the grid's choice (--knobs_from), every method from the same init.
# Rerunning skips what is finished. PYTHON defaults to the repo's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/cub100_init}
RUNS=${RUNS:-outputs/bench/cub100_init}
METHODS=${METHODS:-moco,fgssl,fgssl-random,simsiam,simsiam-fgssl,lcr}
SEEDS=${SEEDS:-0,1,2}
INIT=${INIT:-outputs/bench/generic_init/resnet-s16-cpu-sup-e18-lr0.002-s0/backbone}

$PYTHON benchmarks/generic_init.py --out "$OUT"
$PYTHON benchmarks/cub100.py --config configs/cub100_init_cpu.yaml --init "$INIT" --grid --out "$OUT" \
    --runs_dir "$RUNS"
$PYTHON benchmarks/cub100.py --config configs/cub100_init_cpu.yaml --init "$INIT" \
    --knobs_from "$OUT/grid/grid.json" --methods "$METHODS" --seeds "$SEEDS" --budgets equal_epochs \
    --equal_time_reference none --out "$OUT" --runs_dir "$RUNS" \
    --title "cub100 from the generic initialisation (tinyimagenet200, resnet-s16-cpu, 64 px, 2 CPU cores)"
