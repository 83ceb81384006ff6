#!/usr/bin/env bash
# Peak memory of fgssl against moco on ViT, on the CPU (issue 24: fgssl f=1 <= 1.6 x moco), one job at a time:
#   bash benchmarks/vit_memory_cpu.sh            (about 15 minutes on 2 cores; PYTHON=... to choose the interpreter)
# benchmarks/step_cost.py measures each variant's peak in a fresh process (VmHWM over the RSS after imports:
# parameters, gradients, optimiser state, activations). `+recompute` = --synth_recompute true (the decoder's and the
# synthesized queries' activations recomputed in backward).
# 1. vit-tiny-cpu, 64 px, batch 64 (the CPU preset: decoder from the 8 x 8 patch grid to 64 px);
# 2. the ViT-S/16 GPU recipe (configs/cub200_vit_s16_gpu.yaml: 224 px, decoder 14 x 14 -> 112 px = input / 2) at
#    batch 16 in fp32, and the same with a decoder that stops at 56 px (three blocks).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=benchmarks/results/vit_memory
VARIANTS=(--methods moco fgssl-1.0 fgssl-1.0+recompute --no_flops --no_plot)
$PYTHON benchmarks/step_cost.py --backbone vit-tiny-cpu "${VARIANTS[@]}" --reps 5 --breakdown_reps 2 --out "$OUT"
S16=(--config configs/cub200_vit_s16_gpu.yaml --batch_size 16 --reps 2 --warmup 1 --breakdown_reps 1)
$PYTHON benchmarks/step_cost.py "${S16[@]}" "${VARIANTS[@]}" --out "$OUT"
$PYTHON benchmarks/step_cost.py "${S16[@]}" "${VARIANTS[@]}" --decoder_block_out_channels 256 128 64 --out "$OUT"
