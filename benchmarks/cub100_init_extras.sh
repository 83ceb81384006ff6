#!/usr/bin/env bash
# Issue 19, after benchmarks/cub100_init.sh (same variables), one job after the other, each resumable:
#   4. the mechanism check's class side on the equal-epoch runs (do the dims fgssl's criteria pick carry less class
#      information than the kept ones, and than random dims?), and the synthesized pairs' numbers (R^2 of D(h),
#      pair top-1) of seed 0's fgssl run and its random-mask control;
#   5. the step cost of the recipe (relative costs for the equal wall-clock budget, from step_cost.py's ratios, not
#      from the runs' noisy seconds);
#   6. the equal wall-clock budget: every method re-trained with moco's training time.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/cub100_init_settings.sh  # PYTHON OUT RUNS METHODS SEEDS INIT TITLE

$PYTHON benchmarks/mechanism.py --config configs/cub100_init_cpu.yaml --init "$INIT" \
    --knobs_from "$OUT/grid/grid.json" --runs_dir "$RUNS" --out "$OUT/mechanism" \
    --methods moco,fgssl,fgssl-random --seeds "$SEEDS" --analyse_only

# What the synthesized pairs are in this regime (numbers; the pairs sheets go into the run folders).
$PYTHON benchmarks/synth_pairs.py "$RUNS/equal_epochs/fgssl-seed0" "$RUNS/equal_epochs/fgssl-random-seed0" \
    --out "$OUT" --name synth_pairs_test

# The recipe's step cost (the config's preset has the init's architecture; the chosen queue comes from the grid).
QUEUE=$($PYTHON -c "import json; print(json.load(open('$OUT/grid/grid.json'))['chosen'].get('queue_size', 0))")
$PYTHON benchmarks/step_cost.py --config configs/cub100_init_cpu.yaml --channels_last --batch_size 64 \
    --methods moco lcr fgssl-1.0 simsiam simsiam-fgssl-1.0 --reps 12 --warmup 3 --breakdown_reps 3 --no_memory \
    --no_flops --no_plot --out "$OUT"
COSTS=$($PYTHON - "$OUT" <<'PY'
import json, sys
from pathlib import Path
path = sorted(Path(sys.argv[1]).glob("step_cost_resnet-s16-cpu_64px_b64_cpu*channelslast*.json"))[-1]
ratios = {k: v["time_ratio"] for k, v in json.loads(path.read_text())["variants"].items()}
costs = {"moco": 1.0, "lcr": ratios["lcr"], "fgssl": ratios["fgssl-1.0"], "fgssl-random": ratios["fgssl-1.0"],
         "simsiam": ratios["simsiam"], "simsiam-fgssl": ratios["simsiam-fgssl-1.0"]}
print(",".join(f"{k}={v:.3f}" for k, v in costs.items()))
PY
)
echo "relative step costs: $COSTS (queue $QUEUE)"
$PYTHON benchmarks/cub100.py --config configs/cub100_init_cpu.yaml --init "$INIT" \
    --knobs_from "$OUT/grid/grid.json" --methods "$METHODS" --seeds "$SEEDS" --budgets equal_epochs,equal_time \
    --equal_time_reference moco --step_cost "$COSTS" --out "$OUT" --runs_dir "$RUNS" --title "$TITLE"
