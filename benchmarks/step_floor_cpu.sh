#!/usr/bin/env bash
# The step against its floor and against a peer on the CPU (issue 24), one job at a time on a quiet machine:
#   bash benchmarks/step_floor_cpu.sh            (about 10 minutes on 2 cores; PYTHON=... to choose the interpreter)
# 1-4. benchmarks/step_cost.py, moco only: the step, its floor and the breakdown, on resnet-tiny-cpu and on the
#      cub100_init recipe (resnet-s16-cpu, channels_last), each with the allocator setting the commands use
#      (training/host_memory.py) and with glibc's defaults (FGSSL_KEEP_FREED_MEMORY=0, under glibc_defaults/);
# 5.   the same step compiled (torch.compile, inductor);
# 6-7. benchmarks/peer_step.py: fgssl-pretrain --method plain against the plain PyTorch MoCo v2 loop.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=benchmarks/results/step_floor
PEER=benchmarks/results/peer_step
FLOOR=(--methods moco --no_memory --no_flops --no_plot --reps 60)
$PYTHON benchmarks/step_cost.py --backbone resnet-tiny-cpu "${FLOOR[@]}" --out "$OUT"
FGSSL_KEEP_FREED_MEMORY=0 $PYTHON benchmarks/step_cost.py --backbone resnet-tiny-cpu "${FLOOR[@]}" --out "$OUT/glibc_defaults"
$PYTHON benchmarks/step_cost.py --config configs/cub100_init_cpu.yaml --channels_last "${FLOOR[@]}" --out "$OUT"
FGSSL_KEEP_FREED_MEMORY=0 $PYTHON benchmarks/step_cost.py --config configs/cub100_init_cpu.yaml --channels_last \
    "${FLOOR[@]}" --out "$OUT/glibc_defaults"
$PYTHON benchmarks/step_cost.py --backbone resnet-tiny-cpu --compile "${FLOOR[@]}" --out "$OUT"
$PYTHON benchmarks/peer_step.py --out "$PEER"
$PYTHON benchmarks/peer_step.py --backbone resnet-s16-cpu --channels_last --queue_size 1024 --out "$PEER"
