#!/usr/bin/env bash
# The step against its floor and against a peer on the CPU (issue 24), one job at a time on a quiet machine:
#   bash benchmarks/step_floor_cpu.sh            (about 20 minutes on 2 cores; PYTHON=... to choose the interpreter;
#                                                 RUNS=3 runs of stage 1; FLOOR_ONLY=1 stops after it)
# 1. benchmarks/step_cost.py, moco only: the step, its floor and the breakdown, on resnet-tiny-cpu and on the
#    cub100_init recipe (resnet-s16-cpu, channels_last), each with the allocator setting the commands use
#    (training/host_memory.py) and with glibc's defaults (FGSSL_KEEP_FREED_MEMORY=0), RUNS times each (separate
#    processes: the ratio moves by about +-0.01 between runs), under step_floor/run<i>/; step_floor/floor_runs.md
#    gathers the ratios;
# 2. the views' blur against kornia's (benchmarks/step_pieces.py); the same step
#    compiled (torch.compile, inductor), once;
# 3. benchmarks/peer_step.py: fgssl-pretrain --method plain against the plain PyTorch MoCo v2 loop.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
RUNS=${RUNS:-3}
OUT=benchmarks/results/step_floor
PEER=benchmarks/results/peer_step
FLOOR=(--methods moco --no_memory --no_flops --no_plot --reps 60)
RECIPE=(--config configs/cub100_init_cpu.yaml --channels_last)
for run in $(seq 1 "$RUNS"); do
    for allocator in kept glibc_defaults; do
        keep=$([[ $allocator == kept ]] && echo 1 || echo 0)
        FGSSL_KEEP_FREED_MEMORY=$keep $PYTHON benchmarks/step_cost.py --backbone resnet-tiny-cpu "${FLOOR[@]}" \
            --out "$OUT/run$run/$allocator"
        FGSSL_KEEP_FREED_MEMORY=$keep $PYTHON benchmarks/step_cost.py "${RECIPE[@]}" "${FLOOR[@]}" \
            --out "$OUT/run$run/$allocator"
    done
done
$PYTHON - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for path in sorted(out.glob("run*/*/step_cost_*.json")):
    result = json.loads(path.read_text())
    key = (path.stem.removeprefix("step_cost_"), path.parent.name)
    rows.setdefault(key, []).append((result["variants"]["moco"]["median_ms"], result["floor"]["median_ms"],
                                     result["floor"]["moco_over_floor"]))
machine = result["machine"]
lines = ["# The moco step over its floor, run after run (benchmarks/step_floor_cpu.sh)", "",
         f"Machine: {machine['cpu']}, {machine['cores_available']} cores, torch {machine['torch']}. Each run: a separate "
         "process, 60 interleaved steps and floors after 3 warm-up steps (medians); target <= 1.25 x (CPU).", "",
         "| setting | freed host memory | runs | step ms (median of runs) | floor ms | step / floor, each run | median |",
         "|---|---|---|---|---|---|---|"]
for (tag, allocator), values in sorted(rows.items()):
    ratios = [v[2] for v in values]
    lines.append(f"| {tag} | {'kept (default)' if allocator == 'kept' else 'glibc defaults'} | {len(values)} | "
                 f"{statistics.median(v[0] for v in values):.1f} | {statistics.median(v[1] for v in values):.1f} | "
                 f"{', '.join(f'{r:.3f}' for r in ratios)} | **{statistics.median(ratios):.3f}** |")
(out / "floor_runs.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
[[ "${FLOOR_ONLY:-0}" == 1 ]] && exit 0  # FLOOR_ONLY=1: stage 1 alone
$PYTHON benchmarks/step_pieces.py --out "$OUT"
$PYTHON benchmarks/step_cost.py --backbone resnet-tiny-cpu --compile "${FLOOR[@]}" --out "$OUT"
$PYTHON benchmarks/peer_step.py --out "$PEER"
$PYTHON benchmarks/peer_step.py --backbone resnet-s16-cpu --channels_last --queue_size 1024 --out "$PEER"
