#!/usr/bin/env bash
# One prepared GPU check of what fgssl costs and does on a GPU, at most ~9 minutes on one H100/H200 (every stage has
# its own time limit, and a global deadline, DEADLINE_S (default 510 s), cuts the later stages short so that the
# results are always collected within 10 minutes). Stages in order of priority:
#   1. environment: GPU, driver, library versions (nvidia-smi);
#   1b. the paper's backbone first: ResNet-50 at 224 px in bf16 with the recipe's model settings
#      (configs/cub200_resnet50_mocov2_gpu.yaml; random init, same cost as microsoft/resnet-50): moco, fgssl f = 1.0
#      and 0.25 with Shuffle BN's one-GPU emulation (4 groups, the recipe's), then moco and fgssl-1.0 without it;
#   2. step cost of moco vs fgssl (f = 1.0, 0.25, and 1.0 with the decoder and synthesized queries recomputed) and
#      of simsiam, simsiam-fgssl-1.0, for ViT-S/16 and ConvNeXt-T at 224 px in bf16, with the GPU recipes' model
#      settings (configs/cub200_*_gpu.yaml; the decoder decodes the final feature map, FGSSLConfig's default):
#      ms/step, images/s, peak GPU memory, MFU, and the moco step against its floor (the backbone's forward +
#      backward on the queries and forward on the keys, nothing else) (benchmarks/step_cost.py --device cuda --bf16);
#   2b. the peer: fgssl-pretrain --method plain against a plain PyTorch MoCo v2 loop, ResNet-50 (peer_step.py);
#   3. a short cub100 pre-training (fgssl, ViT-S/16, 112 px, 300 steps, bf16) with its evaluation;
#   4. the step cost of both backbones with torch.compile of the encoders and decoder (--compile), moco vs fgssl-1.0;
#      and ViT-S/16 with the whole objective under autocast (--autocast step), as time allows.
#
#   bash benchmarks/gpu_check.sh prepare   # once, on a machine with network access and cub100: the packages the GPU
#                                          # machine lacks as wheels -> .whl/, a 112 px copy of cub100 -> .gpu_data/
#   bash benchmarks/gpu_check.sh           # on the GPU machine, with .whl/ and .gpu_data/cub100.tar in the checkout
#   DRY_RUN=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh   # the same logic on CPU, tiny sizes
#
# Writes at most 9 files under ${OUT:-benchmarks/results/gpu}: gpu_check_<card>.md (summary, every step-cost table),
# gpu_check.log, the step-cost JSONs (ResNet-50 with and without Shuffle BN's emulation, ViT-S/16, ConvNeXt-T),
# the peer JSON and cub100_run_<card>.json. No picture: the run's views are of cub100 images.
# Installs nothing from the network (the GPU machine may have none): the prepared wheels only (pip --no-index).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PY="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# ---------------------------------------------------------------------------------------------------------------
# prepare (on a machine with network access, not on the GPU machine)
# ---------------------------------------------------------------------------------------------------------------
if [[ "${1:-}" == "prepare" ]]; then
    SRC="${CUB100:-$REPO/../shared/data/cub100}"
    for ignored in /.whl/ /.gpu_data/; do  # local ignores: prepared inputs of the check, never committed
        grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
    done
    # The GPU image (python 3.12) has torch, accelerate, peft, huggingface_hub, pyarrow, sklearn, but an older
    # transformers and no diffusers / kornia / datasets / evaluate: bring this project's versions as wheels.
    mkdir -p .whl
    "$PY" - <<'EOF' > .whl/requirements.txt
from importlib.metadata import version
for name in ("transformers", "diffusers", "datasets", "evaluate", "kornia", "kornia_rs", "dill", "multiprocess"):
    print(f"{name}=={version(name)}")
EOF
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl -r .whl/requirements.txt
    # cub100 (66 MB) shrunk to what the check's run reads: the shorter side at 112 px (the run's size), JPEG quality
    # 80, as one tar (about 22 MB) that travels to the GPU machine beside the wheels.
    "$PY" - "$SRC" .gpu_data/cub100 <<'EOF'
import sys
from pathlib import Path
from PIL import Image, ImageOps
src, dst, side = Path(sys.argv[1]), Path(sys.argv[2]), 112
files = sorted(src.glob("*/*/*.jpg"))
if not files:
    sys.exit(f"No JPEGs under {src}/<split>/<class>/; set CUB100=<path to cub100>.")
for path in files:
    out = dst / path.relative_to(src)
    if out.exists():
        continue
    out.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(path)
    img.draft("RGB", (side, side))
    img = ImageOps.exif_transpose(img).convert("RGB")
    scale = side / min(img.size)
    img = img.resize((max(side, round(img.width * scale)), max(side, round(img.height * scale))),
                     Image.Resampling.BICUBIC)
    img.save(out, "JPEG", quality=80)
print(f"{len(files)} images -> {dst}")
EOF
    # One archive: as thousands of small files the copy takes nearly twice its size in disk blocks.
    tar -cf .gpu_data/cub100.tar -C .gpu_data cub100
    du -sh .whl .gpu_data/cub100.tar
    echo "Prepared .whl/ and .gpu_data/cub100.tar. On the GPU machine, with both in the checkout:" \
         "'bash benchmarks/gpu_check.sh'."
    exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------------------------------------------
OUT_DIR="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"   # everything bulky (checkpoints, caches) stays here
LOG="$OUT_DIR/gpu_check.log"
exec > >(tee "$LOG") 2>&1
STARTED=$SECONDS
FAILED=()
stage() { echo; echo "=== [$((SECONDS - STARTED)) s] $*"; }
SKIPPED=()
# run_stage NAME LIMIT_S CMD...: a failed or timed-out stage is recorded, the others still run; no stage runs past
# the global deadline (a stage with under 30 s left is skipped and recorded).
run_stage() {
    local name="$1" limit="$2"; shift 2
    limit=$((limit * LIMIT_SCALE))
    local left=$((DEADLINE_S - (SECONDS - STARTED)))
    if (( left < 30 )); then
        stage "$name: SKIPPED (${left} s left before the ${DEADLINE_S} s deadline)"
        SKIPPED+=("$name"); return 0
    fi
    (( left < limit )) && limit=$left
    stage "$name (limit ${limit} s)"
    if ! timeout --signal=TERM --kill-after=10 "$limit" "$@"; then
        echo "!!! stage '$name' failed or timed out"
        FAILED+=("$name")
    fi
}

# The wheels are for the GPU image (cp312); a dry run uses the local environment as it is.
if [[ "$DRY_RUN" != "1" && -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
    stage "installing the prepared wheels (no network)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [[ "$DRY_RUN" == "1" ]]; then
    # CPU, tiny sizes, the same code paths (configs, bf16 autocast, FLOP counting, memory, the pre-training CLI);
    # CPU peak memory needs a subprocess per variant, hence the longer limits.
    LIMIT_SCALE=4; DEADLINE_S="${DEADLINE_S:-100000}"; DEVICE=cpu; SIZE=32; BATCH=8; REPS=2; WARMUP=1; STEPS=4
    VIT=vit-tiny-cpu; CNX=convnext-s16-cpu; R50=resnet-s16-cpu; DECODER=(--decoder_block_out_channels 32 16)
    RUN_ARGS=(--backbone vit-tiny-cpu --image_size 32 --decoder_block_out_channels 32 16
              --per_device_train_batch_size 16 --max_train_samples 64 --max_eval_samples 32 --use_cpu true
              --synth_warmup_steps 1 --synth_ramp_steps 1 --dataloader_num_workers 0)
else
    LIMIT_SCALE=1; DEADLINE_S="${DEADLINE_S:-510}"; DEVICE=cuda; SIZE=224; BATCH=128; REPS=10; WARMUP=3
    STEPS=300
    VIT=vit-s16; CNX=convnext-t; R50=resnet50; DECODER=()
    # The 7 x 7 final map of ViT-S/16 at 112 px, x 2**3: 56 px synthesized images, resized up to 112.
    RUN_ARGS=(--backbone vit-s16 --image_size 112 --decoder_block_out_channels 128 64 32 32
              --per_device_train_batch_size 128 --synth_warmup_steps 100 --synth_ramp_steps 100
              --dataloader_num_workers 4 --learning_rate 5e-4)
fi

stage "environment"
{ command -v nvidia-smi > /dev/null && nvidia-smi; } || echo "(no nvidia-smi)"
"$PY" - "$DEVICE" <<'EOF'
import importlib, sys
import torch
for name in ("torch", "transformers", "accelerate", "diffusers", "datasets", "kornia", "evaluate", "pyarrow",
             "huggingface_hub", "sklearn"):
    try:
        print(f"{name:>16} {importlib.import_module(name).__version__}")
    except Exception as err:  # report every missing package at once
        print(f"{name:>16} MISSING ({type(err).__name__}: {err}); run 'bash benchmarks/gpu_check.sh prepare' "
              "on a machine with network access and bring its .whl/ here")
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("torch sees no GPU")
    print("GPU:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())
EOF
CARD="$("$PY" -c "import torch, re; print(re.sub('[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-')
    if torch.cuda.is_available() else 'cpu-dry-run')")"

# The paper's recipe first: ResNet-50, MoCo v2 settings of LCR, Shuffle BN's emulation as the recipe runs it (4 groups)
# and, for its cost, without it.
run_stage "step cost $R50 ${SIZE}px bf16, Shuffle BN emulation (4 groups)" 150 \
    "$PY" benchmarks/step_cost.py --config configs/cub200_resnet50_mocov2_gpu.yaml --backbone "$R50" \
    --image_size "$SIZE" --batch_size "$BATCH" --device "$DEVICE" --bf16 --shuffle_bn_groups 4 \
    --methods moco fgssl-1.0 fgssl-0.25 --reps "$REPS" --warmup "$WARMUP" --breakdown_reps 3 --no_plot \
    "${DECODER[@]}" --out "$WORK/step_cost"
run_stage "step cost $R50 ${SIZE}px bf16, no Shuffle BN" 90 \
    "$PY" benchmarks/step_cost.py --config configs/cub200_resnet50_mocov2_gpu.yaml --backbone "$R50" \
    --image_size "$SIZE" --batch_size "$BATCH" --device "$DEVICE" --bf16 --shuffle_bn_groups 1 \
    --methods moco fgssl-1.0 --reps "$REPS" --warmup "$WARMUP" --breakdown_reps 2 --no_memory --no_flops --no_plot \
    "${DECODER[@]}" --out "$WORK/step_cost"
for pair in "$VIT:configs/cub200_vit_s16_gpu.yaml" "$CNX:configs/cub200_convnext_t_gpu.yaml"; do
    backbone="${pair%%:*}"; config="${pair#*:}"
    run_stage "step cost $backbone ${SIZE}px bf16" 150 \
        "$PY" benchmarks/step_cost.py --config "$config" --backbone "$backbone" --image_size "$SIZE" \
        --batch_size "$BATCH" --device "$DEVICE" --bf16 --methods moco fgssl-1.0 fgssl-0.25 fgssl-1.0+recompute simsiam simsiam-fgssl-1.0 \
        --reps "$REPS" --warmup "$WARMUP" --breakdown_reps "$REPS" "${DECODER[@]}" --out "$WORK/step_cost"
done
DATA="${DATA:-}"
if [[ -z "$DATA" && -f .gpu_data/cub100.tar && ! -d .gpu_data/cub100/train ]]; then
    tar -xf .gpu_data/cub100.tar -C "$WORK" && DATA="$WORK/cub100"
fi
for candidate in "$REPO/.gpu_data/cub100" "$REPO/../shared/data/cub100"; do
    [[ -z "$DATA" && -d "$candidate/train" ]] && DATA="$candidate"
done
if [[ -n "$DATA" ]]; then
    # A peer in the same run: fgssl-pretrain --method plain's step against the plain PyTorch MoCo v2 loop (same
    # backbone, batch, resolution, views; benchmarks/peer_step.py), the paper's backbone.
    run_stage "peer: plain MoCo v2 loop vs fgssl-pretrain ($R50 ${SIZE}px)" 150 \
        "$PY" benchmarks/peer_step.py --dataset_name "$DATA" --backbone "$R50" --image_size "$SIZE" \
        --batch_size "$BATCH" --device "$DEVICE" --queue_size "$([[ $DEVICE == cuda ]] && echo 65536 || echo 0)" \
        $([[ $DEVICE == cuda ]] && echo --bf16 --channels_last) --warmup "$((WARMUP * 3))" --steps "$((REPS * 3))" \
        --repeats 2 --out "$WORK/peer_step"
    run_stage "cub100 pre-training ($(basename "$DATA"))" 200 \
        "$PY" -m fgssl.training.pretrain configs/cub100_cpu.yaml --dataset_name "$DATA" --max_steps "$STEPS" \
        --bf16 "$([[ $DEVICE == cuda ]] && echo true || echo false)" --output_dir "$WORK/cub100_run" \
        --save_steps "$STEPS" --logging_steps 25 --picture_steps 0 --report_to none --disable_tqdm true --seed 0 \
        --compare_with_start false --linear_backend torch \
        "${RUN_ARGS[@]}"
else
    echo "!!! no cub100 data: run 'bash benchmarks/gpu_check.sh prepare' where cub100 is and bring its .gpu_data/ here"
    FAILED+=("cub100 data")
fi

if [[ "$DEVICE" == cuda ]]; then  # on CPU, bf16 antialiased resizing (reconstruction_loss) is not implemented
    for pair in "$VIT:configs/cub200_vit_s16_gpu.yaml" "$CNX:configs/cub200_convnext_t_gpu.yaml"; do
        backbone="${pair%%:*}"; config="${pair#*:}"
        run_stage "step cost $backbone ${SIZE}px bf16 torch.compile" 180 \
            "$PY" benchmarks/step_cost.py --config "$config" --backbone "$backbone" --image_size "$SIZE" \
            --batch_size "$BATCH" --device "$DEVICE" --bf16 --compile --methods moco fgssl-1.0 \
            --reps "$REPS" --warmup "$WARMUP" --breakdown_reps 3 --no_memory --no_plot --no_flops "${DECODER[@]}" \
            --out "$WORK/step_cost"
    done
    run_stage "step cost $VIT whole step under autocast" 90 \
        "$PY" benchmarks/step_cost.py --config configs/cub200_vit_s16_gpu.yaml --backbone "$VIT" --image_size "$SIZE" \
        --batch_size "$BATCH" --device "$DEVICE" --bf16 --autocast step --methods moco fgssl-1.0 \
        --reps "$REPS" --warmup "$WARMUP" --breakdown_reps 3 --no_memory --no_plot "${DECODER[@]}" \
        --out "$WORK/step_cost"
fi


stage "collecting results"
"$PY" - "$WORK" "$OUT_DIR" "$CARD" "$((SECONDS - STARTED))" "${FAILED[*]:-}" "${RUN_ARGS[*]}" "${SKIPPED[*]:-}" <<'EOF'
import json, shutil, subprocess, sys
from pathlib import Path
work, out, card, seconds, failed, run_args, skipped = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]
lines = [f"# GPU check on {card}", "", f"Total {seconds} s. Failed stages: {failed or 'none'}. "
         f"Skipped for time: {skipped or 'none'}.", ""]
try:
    lines += ["```", subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout.strip(), "```", ""]
except OSError:
    pass
for md in sorted((work / "step_cost").glob("step_cost_*.md")):
    lines += [md.read_text(), ""]
for md in sorted((work / "peer_step").glob("peer_step_*.md")):
    lines += [md.read_text(), ""]
    shutil.copy(md.with_suffix(".json"), out / md.with_suffix(".json").name)
for path in sorted((work / "step_cost").glob("step_cost_*")):
    if path.suffix == ".json" and "stepautocast" not in path.name and "compiled" not in path.name:
        shutil.copy(path, out / path.name)
run = work / "cub100_run"
if (run / "train_results.json").is_file():
    summary = {"train": json.loads((run / "train_results.json").read_text())}
    if (run / "eval_results.json").is_file():
        summary["eval"] = json.loads((run / "eval_results.json").read_text())
    state = sorted(run.glob("checkpoint-*/trainer_state.json"))
    if state:
        summary["log_history"] = json.loads(state[-1].read_text())["log_history"]
    (out / f"cub100_run_{card}.json").write_text(json.dumps(summary, indent=2, default=str))
    train = summary["train"]
    lines += ["## cub100 pre-training", "",
              f"`python -m fgssl.training.pretrain configs/cub100_cpu.yaml {run_args}`", "",
              f"{train.get('num_train_images')} training images; train_runtime {train.get('train_runtime')} s, "
              f"{train.get('train_samples_per_second')} samples/s, {train.get('train_steps_per_second')} steps/s; "
              f"wall {train.get('wall_seconds')} s (decoding, training, evaluation).", ""]
    logged = [row for row in summary.get("log_history", []) if "loss_ssl" in row]
    if logged:
        first, last = logged[0], logged[-1]
        lines += ["Loss terms, first and last logged: " + "; ".join(
            f"{k} {first[k]:.4f} -> {last[k]:.4f}" for k in ("loss", "loss_ssl", "loss_recon", "loss_synth")
            if k in first and k in last), ""]
    if "eval" in summary:
        metrics = {k: v for k, v in summary["eval"].items() if isinstance(v, float)}
        lines += ["Evaluation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), ""]
(out / f"gpu_check_{card}.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
print("Results:", *sorted(p.name for p in out.iterdir()))
EOF
rm -rf "$WORK"
if (( ${#FAILED[@]} )); then
    echo "FAILED stages: ${FAILED[*]}"
    exit 1
fi
echo "gpu_check done in $((SECONDS - STARTED)) s"
