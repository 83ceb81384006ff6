"""Cost of one training step of `moco`, `lcr` and `fgssl` (on the MoCo v2 base, and on SimSiam with the prefix
`simsiam`), measured in one process, interleaved, after warm-up.

    python benchmarks/step_cost.py --backbone convnext-tiny-cpu --batch_size 64 --image_size 64
    python benchmarks/step_cost.py --backbone vit-s16 --image_size 224 --device cuda --bf16   # on a GPU

What is measured (and how):

* **Step time.** One training step is what the Trainer's loop does per optimiser step: `trainer.training_step`
  (two augmented views + `compute_loss` + backward), gradient clipping, `optimizer.step()`, `model.zero_grad()`,
  then `trainer.momentum_and_queue_step()` (EMA + enqueue). Every variant gets its own `FGSSLTrainer` built once
  (model, AdamW, accelerate-prepared model: in bf16 its forward is autocast exactly as in `Trainer.train`), then
  `for rep: for variant (rotated order): time one step`, so machine noise hits every variant alike; the median
  over reps is reported, after `--warmup` unmeasured steps each. fgssl runs with `synth_warmup_steps=0` and
  `synth_ramp_steps=0`: the synthesized-pair loss L_Cp is on at full weight from the first step. Variants:
  `moco`, `lcr`, `fgssl-<fraction>` on MoCo v2; `simsiam`, `simsiam-lcr`, `simsiam-fgssl-<fraction>` on SimSiam
  (both views through encoder and heads with gradient, no momentum branch: a SimSiam step is not a MoCo step).
* **Breakdown** (isolated measurements, same tensors: one fixed batch and its views): each section is run alone
  and timed, interleaved with the others, median over reps. Sections: augmentation; SSL forward + backward (moco);
  optimiser + momentum/queue; Grad-CAM scoring (`gradcam_scores` + `gradcam_mask` on a real (L_C, h) graph);
  variance criterion + mask + perturbation; decoder forward + backward for L_R; the synthesized pair at each
  fraction (decode of h' without gradient, resize, encode + project with backward, momentum encode, InfoNCE); LCR's
  Grad-CAM map + KL term; with a SimSiam variant, its SSL forward + backward (both views) and its Grad-CAM scoring
  (the heads re-run with frozen BatchNorm statistics, the gradient, the mask). Sections overlap nothing, but the
  sum of isolated sections is not exactly a step (a fused backward, caches).
* **Peak memory.** CPU: every variant runs alone in a fresh subprocess; the peak is VmHWM (high-water RSS, reset
  after imports) minus the RSS after imports and batch creation, so it counts parameters, gradients, optimiser state and
  activations of the training steps. CUDA: in this process, `torch.cuda.max_memory_allocated` during one step
  minus the allocated bytes before it (activations, gradients, temporaries), plus the bytes of the variant's own
  parameters, buffers and optimiser state.
* **FLOPs** of one step with `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention; forward
  and backward; grouped-convolution backward corrected), less the augmentation's blur; on CUDA also the MFU:
  model FLOPs / median step time / the GPU's dense bf16 peak.

Outputs (under --out): `step_cost_<backbone>_<size>px_b<batch>_<device>[_bf16].{json,md,png}`, naming the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a plain checkout (no pip install)
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

#: The variants every run compares: [simsiam-](moco | lcr | fgssl-<synthesized fraction>); "fgssl" alone means
#: fraction 1.0, "simsiam" alone the plain SimSiam base.
DEFAULT_VARIANTS = ("moco", "lcr", "fgssl-1.0", "fgssl-0.25", "simsiam", "simsiam-fgssl-1.0")
BASELINE = "moco"

#: Dense bf16 peak FLOP/s by GPU name (vendor datasheets, dense, no sparsity), for the MFU estimate.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
}

#: The issue's CPU targets (fractions of a moco step, or ratios to moco).
TARGETS = {
    "gradcam_scoring_pct_of_moco": 5.0,
    "decoder_fwd_bwd_pct_of_moco": 15.0,
    "fgssl-1.0_time_ratio": 2.25,
    "fgssl-0.25_time_ratio": 1.4,
    "fgssl_peak_memory_ratio": 1.6,
    "augment_pct_of_moco": 15.0,
}


# ---------------------------------------------------------------------------------------------------------------
# Settings and machine
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class BenchSettings:
    """What one benchmark run measures; everything else is the shipped defaults (ModelArguments, ObjectiveArguments)."""

    backbone: str = "convnext-tiny-cpu"
    batch_size: int = 64
    image_size: int = 64
    device: str = "cpu"
    bf16: bool = False
    # "model": only the model's forward is autocast, as accelerate does in `Trainer.train` today;
    # "step": the whole compute_loss runs under autocast (the proposed fix; identical to "model" in fp32).
    autocast: str = "model"
    # torch.compile of the encoders and the decoder (TrainingArguments.torch_compile, as `--torch_compile true`).
    compile: bool = False
    seed: int = 0
    # None: ModelArguments' defaults (what the shipped CPU config trains with); set to measure another decoder.
    decoder_block_out_channels: list[int] | None = None
    decoder_base_size: int | None = None
    # Shuffle BN's single-device emulation for BatchNorm backbones (ObjectiveArguments.shuffle_bn_groups; 1 = off).
    shuffle_bn_groups: int = 1
    # channels_last encoders and input images for convolutional backbones (ObjectiveArguments.channels_last).
    channels_last: bool = False
    # Other ModelArguments fields (projector sizes, queue, momentum...), e.g. read from a training config file.
    model_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.batch_size < 2:
            raise ValueError(f"--batch_size must be >= 2 (InfoNCE needs negatives), got {self.batch_size}.")
        if self.image_size < 16:
            raise ValueError(f"--image_size must be >= 16, got {self.image_size}.")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda but torch sees no GPU; run on a GPU machine or use --device cpu.")
        if self.autocast not in ("model", "step"):
            raise ValueError(f"--autocast must be 'model' or 'step', got {self.autocast!r}.")



def result_tag(settings: dict) -> str:
    """File-name tag of a run: backbone, size, batch, device, precision."""
    tag = f"{Path(settings['backbone']).name}_{settings['image_size']}px_b{settings['batch_size']}_{settings['device']}"
    if settings["bf16"]:
        tag += "_bf16" + ("_stepautocast" if settings["autocast"] == "step" else "")
    if settings.get("decoder_block_out_channels"):
        tag += "_dec" + "-".join(map(str, settings["decoder_block_out_channels"]))
    if settings.get("decoder_base_size"):
        tag += f"_base{settings['decoder_base_size']}"
    if settings.get("compile"):
        tag += "_compiled"
    if settings.get("channels_last"):
        tag += "_channelslast"
    if settings.get("shuffle_bn_groups", 1) > 1:
        tag += f"_shufflebn{settings['shuffle_bn_groups']}"
    return tag


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """What ran the benchmark: CPU model, cores, load, library versions, and the GPU when there is one."""
    import transformers

    from fgssl.training.host_memory import keep_freed_memory

    info = {
        "cpu": cpu_model_name(),
        "cores_available": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "freed_host_memory_kept": keep_freed_memory(),  # training/host_memory.py, as the commands run
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, peak_bf16_flops=peak_bf16_flops(torch.cuda.get_device_name(0)))
    return info


def peak_bf16_flops(gpu_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its name (None when unknown: no MFU is reported then)."""
    for key, flops in PEAK_BF16_FLOPS.items():  # most specific names first
        if key.lower() in gpu_name.lower():
            return flops
    return None


def parse_variant(name: str) -> tuple[str, str, float]:
    """'[simsiam-](moco | lcr | fgssl | fgssl-<fraction>)' or 'simsiam' -> (base, method, synthesized fraction).

    A trailing '+recompute' (the decoder's and the synthesized queries' activations recomputed in backward)
    does not change these."""
    name = name.removesuffix("+recompute")
    base, rest = ("simsiam", name[len("simsiam-"):]) if name.startswith("simsiam-") else ("moco", name)
    if name == "simsiam":
        return "simsiam", "plain", 1.0
    if rest == "moco":  # the variant named after MoCo v2 alone: --method plain
        return base, "plain", 1.0
    if rest == "lcr":
        return base, "lcr", 1.0
    if rest == "fgssl":
        return base, "fgssl", 1.0
    if rest.startswith("fgssl-"):
        try:
            fraction = float(rest.split("-", 1)[1])
        except ValueError:
            fraction = -1.0
        if 0.0 < fraction <= 1.0:
            return base, "fgssl", fraction
    raise ValueError(f"Unknown variant {name!r}: use moco, lcr, fgssl or fgssl-<fraction in (0, 1]>, e.g. fgssl-0.25, "
                     "each optionally prefixed with simsiam- (and simsiam alone for the plain SimSiam base).")


#: Variant suffix: the decoder's and the synthesized queries' activations recomputed in backward
#: (ObjectiveArguments.synth_recompute).
RECOMPUTE = "+recompute"


def canonical_variant(name: str) -> str:
    suffix = RECOMPUTE if name.endswith(RECOMPUTE) else ""
    base, method, fraction = parse_variant(name)
    name = ("moco" if method == "plain" else method if method != "fgssl"
            else f"fgssl-{fraction:g}" if fraction != 1.0 else "fgssl-1.0")
    if base == "simsiam":
        return ("simsiam" if method == "plain" else f"simsiam-{name}") + suffix
    return name + suffix


# ---------------------------------------------------------------------------------------------------------------
# Building the trainers
# ---------------------------------------------------------------------------------------------------------------
def make_batch(settings: BenchSettings) -> dict:
    """A fixed uint8 batch B x 3 x S x S, as `collate_uint8` hands it to the trainer (the cost is data-independent)."""
    g = torch.Generator().manual_seed(settings.seed)
    size = settings.image_size
    pixels = torch.randint(0, 256, (settings.batch_size, 3, size, size), dtype=torch.uint8, generator=g)
    return {"pixel_values": pixels, "labels": torch.zeros(settings.batch_size, dtype=torch.long)}


def build_trainer(variant: str, settings: BenchSettings, output_dir: str):
    """An `FGSSLTrainer` for one variant, ready to step: optimiser created, model prepared as `Trainer.train` does."""
    from transformers import TrainingArguments

    from fgssl.training.arguments import ModelArguments
    from fgssl.training.backbones import build_model
    from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments

    recompute = variant.endswith(RECOMPUTE)
    base, method, fraction = parse_variant(variant)
    torch.manual_seed(settings.seed)
    model_args = ModelArguments(**{**settings.model_overrides, "backbone": settings.backbone,
                                   "image_size": settings.image_size, "base": base})
    if settings.decoder_block_out_channels:
        model_args.decoder_block_out_channels = list(settings.decoder_block_out_channels)
    if settings.decoder_base_size:
        model_args.decoder_base_size = settings.decoder_base_size
    model = build_model(model_args, method)
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=settings.batch_size, learning_rate=1e-3,
        weight_decay=0.05, use_cpu=settings.device == "cpu", bf16=settings.bf16, report_to="none",
        torch_compile=settings.compile,
        save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False, remove_unused_columns=False,
    )
    objective = ObjectiveArguments(method=method, synth_fraction=fraction, synth_warmup_steps=0, synth_ramp_steps=0,
                                   synth_recompute=recompute, shuffle_bn_groups=settings.shuffle_bn_groups,
                                   channels_last=settings.channels_last)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=objective, image_size=settings.image_size)
    if settings.bf16 and settings.autocast == "step":
        trainer.compute_loss_context_manager = trainer.accelerator.autocast
    trainer.create_optimizer()
    # As `Trainer._prepare_for_training`: accelerate places the model and, in bf16, autocasts its forward.
    prepared, trainer.optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
    trainer.model_wrapped = prepared
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def build_trainers(variants, settings: BenchSettings, output_dir: str) -> dict:
    return {name: build_trainer(name, settings, output_dir) for name in variants}


def device_batch(batch: dict, settings: BenchSettings) -> dict:
    return {k: v.to(settings.device) for k, v in batch.items()}


def training_step(trainer, batch: dict) -> None:
    """One optimiser step exactly as the Trainer's loop runs it (gradient accumulation 1)."""
    trainer.training_step(trainer.model_wrapped, batch)
    apply_gradients(trainer)
    trainer.state.global_step += 1
    trainer.momentum_and_queue_step()  # what MomentumQueueCallback.on_step_end does


def apply_gradients(trainer) -> None:
    """The optimiser's part of a step, as the Trainer's loop runs it: clip, update, clear the gradients."""
    trainer.clip_gradients(trainer.model_wrapped)
    trainer.optimizer.step()
    trainer.model_wrapped.zero_grad()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Wall seconds of fn(), with the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(fns: dict, reps: int, warmup: int, device: str, setups: dict | None = None) -> dict:
    """{name: [seconds per rep]}: `warmup` untimed calls each, then `reps` rounds over all names in rotated order.

    `setups[name]()` (optional) runs untimed before each call of `fns[name]`.
    """
    setups = setups or {}
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            setups.get(name, lambda: None)()
            fns[name]()
    times = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]  # no variant always runs first
        for name in order:
            setups.get(name, lambda: None)()
            times[name].append(timed(fns[name], device))
    return times


def summarize(seconds: list[float]) -> dict:
    """Median and spread in milliseconds."""
    ms = sorted(s * 1e3 for s in seconds)
    q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) >= 2 else [ms[0], ms[0], ms[0]]
    return {"median_ms": round(statistics.median(ms), 3), "q1_ms": round(q[0], 3), "q3_ms": round(q[2], 3),
            "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3), "reps": len(ms),
            "all_ms": [round(s * 1e3, 2) for s in seconds]}


# ---------------------------------------------------------------------------------------------------------------
# Step times, FLOPs, memory
# ---------------------------------------------------------------------------------------------------------------
#: The name of the step's floor in the step times (not a variant: no objective, no optimiser).
FLOOR = "floor"
#: The issue's targets for a moco step over its floor.
FLOOR_TARGETS = {"cpu": 1.25, "cuda": 1.15}


def floor_step(trainer, batch: dict):
    """The floor of a MoCo step: the same backbone's forward + backward on the query views and forward on the key
    views (momentum encoder, no gradient), nothing else: no augmentation (fixed views), heads, loss, optimiser,
    momentum update or queue. Same dtype (bf16 autocast when the trainer has it) and memory format as the step."""
    core = trainer.accelerator.unwrap_model(trainer.model)
    views = trainer.views(batch["pixel_values"])
    device = views.v1.device.type
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bool(trainer.args.bf16))

    def step():
        with autocast:
            features = core.fgssl(pixel_values=views.v1).pooler_output
        features.float().sum().backward()
        with torch.no_grad(), autocast:
            core.momentum_encoder(pixel_values=views.v2)
        core.fgssl.zero_grad(set_to_none=True)

    return step


def measure_step_times(trainers: dict, batch: dict, reps: int, warmup: int, device: str) -> dict:
    """Median step times of every variant and of the floor (on the baseline's model), interleaved."""
    fns = {name: (lambda t=trainer: training_step(t, batch)) for name, trainer in trainers.items()}
    if BASELINE in trainers:
        fns[FLOOR] = floor_step(trainers[BASELINE], batch)
    return {name: summarize(times) for name, times in interleaved_times(fns, reps, warmup, device).items()}


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of aten.convolution_backward: each gradient asked for costs one forward convolution.

    torch's own formula drops `groups` from the weight gradient, which overcounts depthwise convolutions (ConvNeXt)
    by their channel count (8.8 instead of ~1.5 GFLOP in a convnext-tiny-cpu step).
    """
    spatial = (x_shape if transposed else grad_out_shape)[2:]
    forward = 2 * x_shape[0] * math.prod(spatial) * math.prod(w_shape)  # w_shape is C_out x C_in/groups x k x k
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn) -> int:
    """FLOPs of fn() (matmuls, convolutions, attention; forward and backward) by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})
    with counter:
        fn()
    return int(counter.get_total_flops())


def count_step_flops(trainer, batch: dict) -> dict:
    """{"step": FLOPs of one training step, "augment": of its two-view augmentation (a blur convolution)}."""
    return {"step": count_flops(lambda: training_step(trainer, batch)),
            "augment": count_flops(lambda: trainer.augment(batch["pixel_values"]))}


def state_bytes(trainer) -> int:
    """Bytes of a variant's own resident state: parameters, buffers and optimiser state."""
    model = trainer.model
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    for state in trainer.optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def cuda_peak_bytes(trainer, batch: dict) -> int:
    """Peak bytes of one CUDA training step: state + the step's high-water allocation above its starting point."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    training_step(trainer, batch)
    torch.cuda.synchronize()
    return state_bytes(trainer) + torch.cuda.max_memory_allocated() - before


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: resident high-water mark) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status (peak memory on CPU needs Linux).")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_peak_bytes_child(variant: str, settings: BenchSettings, steps: int) -> dict:
    """In a fresh process: peak RSS of `steps` training steps of one variant, over the RSS after imports."""
    # Import everything a step touches before the baseline, so that module code is not counted as step memory.
    import kornia  # noqa: F401
    import transformers.models.convnext.modeling_convnext  # noqa: F401
    import transformers.models.vit.modeling_vit  # noqa: F401
    from diffusers.models.unets import unet_2d_blocks  # noqa: F401

    import fgssl.modeling  # noqa: F401
    import fgssl.training.trainer  # noqa: F401

    torch.set_num_threads(available_cores())
    batch = device_batch(make_batch(settings), settings)
    # VmHWM, not ru_maxrss: Linux carries the parent's RSS at fork into a child's ru_maxrss across exec. The reset
    # drops the import-time transients from the high-water mark.
    _reset_peak_rss()
    baseline = _status_bytes("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(variant, settings, tmp)
        for _ in range(steps):
            training_step(trainer, batch)
        peak = _status_bytes("VmHWM")
        return {"peak_bytes": peak - baseline, "state_bytes": state_bytes(trainer), "baseline_rss_bytes": baseline}


def cpu_peak_bytes(variant: str, settings: BenchSettings, steps: int = 4) -> dict:
    """Run `cpu_peak_bytes_child` in a subprocess (a process's RSS high-water mark cannot be reset)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory_child", variant, "--_memory_steps", str(steps),
           *settings_to_argv(settings)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"Memory measurement of {variant} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def settings_to_argv(settings: BenchSettings) -> list[str]:
    argv = ["--backbone", settings.backbone, "--batch_size", str(settings.batch_size),
            "--image_size", str(settings.image_size), "--device", settings.device, "--seed", str(settings.seed),
            "--autocast", settings.autocast, "--shuffle_bn_groups", str(settings.shuffle_bn_groups)] + (
        ["--compile"] if settings.compile else []) + (["--channels_last"] if settings.channels_last else [])
    if settings.decoder_block_out_channels:
        argv += ["--decoder_block_out_channels", *map(str, settings.decoder_block_out_channels)]
    if settings.decoder_base_size:
        argv += ["--decoder_base_size", str(settings.decoder_base_size)]
    if settings.model_overrides:
        argv += ["--_model_overrides", json.dumps(settings.model_overrides)]
    return argv + (["--bf16"] if settings.bf16 else [])


# ---------------------------------------------------------------------------------------------------------------
# Breakdown (isolated sections on the same tensors)
# ---------------------------------------------------------------------------------------------------------------
def _zero_grads(*modules) -> None:
    for module in modules:
        module.zero_grad(set_to_none=True)


def ssl_step(trainer, views):
    """The base objective's step 1 on fixed views, as a step computes it (a graph the timed sections reuse). Its MoCo
    keys are a setup's, not a step's: they do not wait for the queue."""
    core = trainer.accelerator.unwrap_model(trainer.model)
    with trainer.compute_loss_context_manager():
        ssl = trainer.base_objective.ssl_loss(trainer.model_wrapped, core, views.v1, views.v2)
    trainer.pending_keys.clear()
    return ssl


def ssl_forward_backward(trainer, views):
    """A section: the base objective's step 1 on fixed views, forward and backward."""
    core = trainer.accelerator.unwrap_model(trainer.model)

    def section():
        with trainer.compute_loss_context_manager():
            loss = trainer.base_objective.ssl_loss(trainer.model_wrapped, core, views.v1, views.v2).loss
        loss.backward()
        _zero_grads(core)

    return section


def breakdown_sections(trainers: dict, batch: dict) -> tuple[dict, dict]:
    """({section: fn}, {section: untimed setup}) on fixed views of `batch`; see the module docstring."""
    from fgssl.training import objective as obj
    from fgssl.training.augment import normalize_images
    from fgssl.training.methods import perturbation_step

    fns, setups = {}, {}
    moco = trainers.get(BASELINE)
    pixels = batch["pixel_values"]
    if moco is not None:
        core = moco.accelerator.unwrap_model(moco.model)

        def give_grads():  # the optimiser section needs gradients to apply
            for p in core.parameters():
                if p.requires_grad:
                    p.grad = torch.full_like(p, 1e-3)

        def optimizer_and_momentum():
            apply_gradients(moco)
            moco.momentum_and_queue_step()

        reference = moco.augment.kornia_reference()
        fns["augment (2 views)"] = lambda: moco.augment(pixels)
        # The kornia chain this project used before (same recipe), timed in the same run for the ratio.
        fns["augment, kornia chain (before)"] = lambda: tuple(
            normalize_images(reference(pixels.float() / 255)) for _ in range(2))
        fns["SSL forward+backward"] = ssl_forward_backward(moco, moco.views(pixels))
        fns["optimizer+momentum/queue"] = optimizer_and_momentum
        setups["optimizer+momentum/queue"] = give_grads

    lcr = trainers.get("lcr")
    if lcr is not None:
        core_l = lcr.accelerator.unwrap_model(lcr.model)
        ssl_l = ssl_step(lcr, lcr.views(pixels))

        def lcr_gradcam_kl():
            with lcr.compute_loss_context_manager():
                lcr.training_objective.addition.screening_loss(lcr.base_objective, core_l, ssl_l)

        fns["LCR Grad-CAM map+KL"] = lcr_gradcam_kl

    simsiam = next((t for n, t in trainers.items() if parse_variant(n)[0] == "simsiam"), None)
    if simsiam is not None:
        fns.update(simsiam_sections(simsiam, pixels))

    fgssl_names = [n for n in trainers if parse_variant(n)[:2] == ("moco", "fgssl") and not n.endswith(RECOMPUTE)]
    if fgssl_names:
        fg = trainers[fgssl_names[0]]
        oa = fg.objective_args
        base, synthesis = fg.base_objective, fg.training_objective.addition
        core_f = fg.accelerator.unwrap_model(fg.model)
        views = fg.views(pixels)
        ssl = ssl_step(fg, views)
        cam = base.gradcam_inputs(core_f, ssl.output, ssl.loss)
        h = ssl.output.pooler_output
        decoded_input = core_f.decoder_features(ssl.output)
        leaf = decoded_input.detach().requires_grad_(True)
        with torch.no_grad(), fg.compute_loss_context_manager():
            recon_fixed = core_f.decode(decoded_input.detach())

        def gradcam_scoring():
            obj.gradcam_mask(obj.gradcam_scores(cam.loss, cam.features), oa.rho_gradcam)

        def steps_2_to_5():  # the trainer's own call
            return perturbation_step(core_f, cam, oa)

        perturbation = steps_2_to_5()

        def decoder_fwd_bwd():
            with fg.compute_loss_context_manager():
                loss = oa.alpha * synthesis.reconstruct(core_f, leaf, views.recon_target)[1]
            loss.backward()
            _zero_grads(core_f.decoder)
            leaf.grad = None

        fns["augment (2 views + geometric target)"] = lambda: fg.augment(pixels, return_geometric=True)
        fns["Grad-CAM scoring"] = gradcam_scoring
        fns["steps 2-5 (criteria+mask+perturb)"] = steps_2_to_5
        fns["decoder forward+backward (L_R)"] = decoder_fwd_bwd

        for name in fgssl_names:
            fraction = parse_variant(name)[2]

            def synthesized_pair(fraction=fraction):
                idx = obj.synth_subset(h.shape[0], fraction, minimum=base.min_pair_batch).to(h.device)
                with fg.compute_loss_context_manager():
                    x_hat, x_hat_perturbed = synthesis.synthesized_images(core_f, recon_fixed, perturbation, idx)
                    loss = synthesis.pair_loss(base, core_f, x_hat_perturbed, x_hat)
                loss.backward()
                _zero_grads(core_f)

            fns[f"synthesized pair (f={fraction:g})"] = synthesized_pair
    return fns, setups


def simsiam_sections(trainer, pixels) -> dict:
    """The SimSiam base's own sections: its SSL step on both views, and its per-sample Grad-CAM scoring."""
    from fgssl.training import objective as obj

    core = trainer.accelerator.unwrap_model(trainer.model)
    views = trainer.views(pixels)
    ssl = ssl_step(trainer, views)

    def gradcam_scoring():  # the trainer's own scoring pass (frozen BatchNorm statistics), then the mask
        with trainer.compute_loss_context_manager():
            cam = trainer.base_objective.gradcam_inputs(core, ssl.output, ssl.loss)
            obj.gradcam_mask(obj.gradcam_scores(cam.loss, cam.features), trainer.objective_args.rho_gradcam)

    return {"SimSiam SSL forward+backward (2 views)": ssl_forward_backward(trainer, views),
            "SimSiam Grad-CAM scoring (frozen-BN pass)": gradcam_scoring}


def measure_breakdown(trainers: dict, batch: dict, reps: int, warmup: int, device: str) -> dict:
    fns, setups = breakdown_sections(trainers, batch)
    times = interleaved_times(fns, reps, warmup, device, setups)
    return {name: summarize(t) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------------------------
def run_benchmark(settings: BenchSettings, variants=DEFAULT_VARIANTS, reps: int = 20, warmup: int = 3,
                  breakdown_reps: int | None = None, measure_memory: bool = True, count_flops: bool = True,
                  log=print) -> dict:
    """Step times, breakdown, peak memory and FLOPs of every variant; returns the JSON-ready result."""
    variants = [canonical_variant(v) for v in variants]
    if BASELINE not in variants:
        raise ValueError(f"The variants must include {BASELINE!r}: every ratio is to it (got {variants}).")
    torch.set_num_threads(available_cores())
    batch = device_batch(make_batch(settings), settings)
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        log(f"[step_cost] building {', '.join(variants)} on {settings.backbone} ({settings.device})")
        trainers = build_trainers(variants, settings, tmp)
        log(f"[step_cost] timing {reps} interleaved steps per variant after {warmup} warm-up steps")
        steps = measure_step_times(trainers, batch, reps, warmup, settings.device)
        log(f"[step_cost] breakdown ({breakdown_reps or reps} reps per section)")
        breakdown = measure_breakdown(trainers, batch, breakdown_reps or reps, min(warmup, 2), settings.device)
        flops = {name: count_step_flops(t, batch) for name, t in trainers.items()} if count_flops else {}
        memory = {}
        if measure_memory:
            log("[step_cost] peak memory")
            for name, trainer in trainers.items():
                if settings.device == "cuda":
                    memory[name] = {"peak_bytes": cuda_peak_bytes(trainer, batch), "state_bytes": state_bytes(trainer),
                                    "method": "cuda max_memory_allocated during one step + own state"}
                else:
                    memory[name] = {**cpu_peak_bytes(name, settings),
                                    "method": "own subprocess, VmHWM (peak RSS) - RSS after imports"}
        params = {name: sum(p.numel() for p in t.model.parameters() if p.requires_grad) for name, t in trainers.items()}
        config = next(iter(trainers.values())).model.config
        model_info = {"feature_dim_C": config.hidden_size, "projector": [config.projector_hidden_size,
                      config.projector_dim], "queue_size": config.queue_size,
                      "decoder_block_out_channels": list(config.decoder_block_out_channels),
                      "decoder_base_size": config.decoder_base_size, "decoder_image_size": config.decoder_image_size}
        trainers.clear()
    result = {
        "benchmark": "step_cost",
        "settings": asdict(settings),
        "model": model_info,
        "machine": {**machine_info(settings.device), "load_average_at_start": load_at_start},
        "reps": reps,
        "warmup": warmup,
        "wall_seconds": round(time.time() - started, 1),
        "variants": {},
        "breakdown": {},
    }
    base_ms = steps[BASELINE]["median_ms"]
    peak = result["machine"].get("peak_bf16_flops")
    for name in variants:
        row = {**steps[name], "time_ratio": round(steps[name]["median_ms"] / base_ms, 3),
               # Contention only adds time: the ratio of the fastest steps is the second, noise-robust estimate.
               "time_ratio_of_min": round(steps[name]["min_ms"] / steps[BASELINE]["min_ms"], 3),
               "images_per_s": round(settings.batch_size / (steps[name]["median_ms"] / 1e3), 1),
               "trainable_params": params[name]}
        if name in flops:
            # Model FLOPs (MFU convention): the step's, less the augmentation's blur convolution.
            model_flops = flops[name]["step"] - flops[name]["augment"]
            seconds = steps[name]["median_ms"] / 1e3
            row["gflops_per_step"] = round(model_flops / 1e9, 3)
            row["augment_gflops"] = round(flops[name]["augment"] / 1e9, 3)
            row["achieved_tflops"] = round(model_flops / seconds / 1e12, 4)
            if peak and settings.device == "cuda":
                row["mfu"] = round(model_flops / seconds / peak, 4)
        if name in memory:
            row["peak_memory_mib"] = round(memory[name]["peak_bytes"] / 2**20, 1)
            row["state_memory_mib"] = round(memory[name]["state_bytes"] / 2**20, 1)
            row["peak_memory_ratio"] = round(memory[name]["peak_bytes"] / memory[BASELINE]["peak_bytes"], 3)
            row["memory_method"] = memory[name]["method"]
        result["variants"][name] = row
    if FLOOR in steps:
        result["floor"] = {**steps[FLOOR], "moco_over_floor": round(base_ms / steps[FLOOR]["median_ms"], 3),
                           "moco_over_floor_of_min": round(steps[BASELINE]["min_ms"] / steps[FLOOR]["min_ms"], 3),
                           "target": FLOOR_TARGETS.get(settings.device)}
    for section, stats in breakdown.items():
        result["breakdown"][section] = {**stats, "pct_of_moco_step": round(100 * stats["median_ms"] / base_ms, 2),
                                        "pct_of_moco_step_min": round(100 * stats["min_ms"] / steps[BASELINE]["min_ms"],
                                                                      2)}
    result["targets"] = check_targets(result)
    return result


def check_targets(result: dict) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met (only those measured)."""
    rows = []
    bd, variants = result["breakdown"], result["variants"]

    def add(name, value, limit, unit, value_min=None):
        rows.append({"target": name, "value": value, "value_of_min": value_min, "limit": limit, "unit": unit,
                     "met": value <= limit})

    for section, key in (("augment (2 views)", "augment_pct_of_moco"),
                         ("Grad-CAM scoring", "gradcam_scoring_pct_of_moco"),
                         ("decoder forward+backward (L_R)", "decoder_fwd_bwd_pct_of_moco")):
        if section in bd:
            add(f"{section} / moco step", bd[section]["pct_of_moco_step"], TARGETS[key], "%",
                bd[section]["pct_of_moco_step_min"])
    floor = result.get("floor")
    if floor and floor.get("target"):
        add("moco step / its floor (backbone fwd+bwd on queries, fwd on keys)", floor["moco_over_floor"],
            floor["target"], "x", floor["moco_over_floor_of_min"])
    if "fgssl-1.0+recompute" in variants and "peak_memory_ratio" in variants["fgssl-1.0+recompute"]:
        add("fgssl-1.0+recompute peak memory / moco", variants["fgssl-1.0+recompute"]["peak_memory_ratio"],
            TARGETS["fgssl_peak_memory_ratio"], "x")
    for name in ("fgssl-1.0", "fgssl-0.25"):
        if name in variants:
            add(f"{name} step / moco step", variants[name]["time_ratio"], TARGETS[f"{name}_time_ratio"], "x",
                variants[name]["time_ratio_of_min"])
            if "peak_memory_ratio" in variants[name]:
                add(f"{name} peak memory / moco", variants[name]["peak_memory_ratio"],
                    TARGETS["fgssl_peak_memory_ratio"], "x")
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Writing results
# ---------------------------------------------------------------------------------------------------------------
def to_markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    where = m.get("gpu") or m["cpu"]
    lines = [
        f"# Step cost: {s['backbone']}, {s['image_size']} px, batch {s['batch_size']}, {s['device']}"
        f"{' bf16' if s['bf16'] else ''}",
        "",
        f"Machine: {where}; {m['cores_available']} cores available, {m['torch_threads']} torch threads; "
        f"load average (1/5/15 min) at start {m.get('load_average_at_start')}, at the end {m['load_average_1_5_15']}; torch {m['torch']}, transformers {m['transformers']}; "
        f"freed host memory kept for reuse (training/host_memory.py): {'yes' if m.get('freed_host_memory_kept') else 'no'}.",
        f"Model: C = {result['model']['feature_dim_C']}, decoder "
        f"({s['model_overrides'].get('decoder_input', 'FGSSLConfig default') if s.get('model_overrides') else 'FGSSLConfig default'} input) "
        f"{result['model']['decoder_block_out_channels']} "
        f"from {result['model']['decoder_base_size']} px to S = {result['model']['decoder_image_size']} px, "
        f"queue {result['model']['queue_size']}.",
        f"Median of {result['reps']} interleaved steps per variant after {result['warmup']} warm-up steps "
        "(q1-q3 in brackets). A step = augment + compute_loss + backward + clip + optimizer + momentum/queue. "
        "fgssl with L_Cp on from step 0.",
        *([result["note"]] if result.get("note") else []),
        "",
        "| variant | ms / step | x moco | min ms | x moco (min) | images/s | GFLOP/step | peak mem MiB | x moco mem |"
        + (" MFU |" if s["device"] == "cuda" else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if s["device"] == "cuda" else ""),
    ]
    for name, r in result["variants"].items():
        row = (f"| {name} | {r['median_ms']:.1f} [{r['q1_ms']:.1f}-{r['q3_ms']:.1f}] | {r['time_ratio']:.2f} | "
               f"{r['min_ms']:.1f} | {r['time_ratio_of_min']:.2f} | {r['images_per_s']:.0f} | {r.get('gflops_per_step', float('nan')):.1f} | "
               f"{r.get('peak_memory_mib', float('nan')):.0f} | {r.get('peak_memory_ratio', float('nan')):.2f} |")
        if s["device"] == "cuda":
            row += f" {100 * r['mfu']:.1f} % |" if "mfu" in r else " n/a |"
        lines.append(row)
    if result.get("floor"):
        f = result["floor"]
        lines += ["", f"The step's floor (the backbone's forward + backward on the query views and forward on the key "
                      f"views, fixed views, nothing else; interleaved with the steps): {f['median_ms']:.1f} ms "
                      f"[{f['q1_ms']:.1f}-{f['q3_ms']:.1f}], min {f['min_ms']:.1f} ms; the moco step is "
                      f"**{f['moco_over_floor']:.2f} x** its floor ({f['moco_over_floor_of_min']:.2f} x from the "
                      "fastest steps)."]
    memory_method = next((r["memory_method"] for r in result["variants"].values() if "memory_method" in r), None)
    if memory_method:
        lines += ["", f"Peak memory: {memory_method}."]
    lines += ["", "Breakdown (isolated sections on the same tensors, median ms, % of the moco step):", "",
              "| section | ms | % of moco step | min ms | % of moco step (min) |", "|---|---|---|---|---|"]
    for name, b in result["breakdown"].items():
        lines.append(f"| {name} | {b['median_ms']:.1f} | {b['pct_of_moco_step']:.1f} | {b['min_ms']:.1f} | "
                     f"{b['pct_of_moco_step_min']:.1f} |")
    if result.get("targets"):
        lines += ["", "Targets (the issue's, set for 2 CPU cores, tiny backbones, 64 px, batch 64):", "",
                  "| target | measured (medians) | from the fastest steps | limit | met |", "|---|---|---|---|---|"]
        for t in result["targets"]:
            of_min = f"{t['value_of_min']:.2f} {t['unit']}" if t.get("value_of_min") is not None else ""
            lines.append(f"| {t['target']} | {t['value']:.2f} {t['unit']} | {of_min} | {t['limit']} {t['unit']} | "
                         f"{'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, m = result["settings"], result["machine"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    names = list(result["variants"])
    med = [result["variants"][n]["median_ms"] for n in names]
    err = [[med[i] - result["variants"][n]["q1_ms"] for i, n in enumerate(names)],
           [result["variants"][n]["q3_ms"] - med[i] for i, n in enumerate(names)]]
    palette = ["#888888", "#5b8db8", "#d9822b", "#f0b37e", "#6a9f58", "#a5cf8f", "#9b6fb0", "#c9a9d6"]
    bars = ax1.bar(names, med, yerr=err, capsize=4, color=[palette[i % len(palette)] for i in range(len(names))])
    for bar, n in zip(bars, names):  # the ratio above the q3 whisker
        ax1.annotate(f"{result['variants'][n]['time_ratio']:.2f}x", (bar.get_x() + bar.get_width() / 2,
                     result["variants"][n]["q3_ms"]), ha="center", va="bottom", fontsize=9, xytext=(0, 3),
                     textcoords="offset points")
    ax1.set_ylim(top=1.1 * max(result["variants"][n]["q3_ms"] for n in names))
    ax1.set_ylabel("ms per training step (median, q1-q3)")
    ax1.set_title("Step time")
    sections = list(result["breakdown"])
    pct = [result["breakdown"][k]["pct_of_moco_step"] for k in sections]
    ax2.barh(sections, pct, color="#5b8db8")
    ax2.invert_yaxis()
    for limit, label in ((TARGETS["gradcam_scoring_pct_of_moco"], "5 %"), (TARGETS["decoder_fwd_bwd_pct_of_moco"], "15 %")):
        ax2.axvline(limit, color="#aa3333", linestyle=":", linewidth=1)
        ax2.annotate(label, (limit, 0), xycoords=("data", "axes fraction"), fontsize=7, color="#aa3333",
                     xytext=(2, 2), textcoords="offset points")
    ax2.set_xlabel("% of a moco step (isolated sections)")
    ax2.set_title("Breakdown")
    ax2.tick_params(axis="y", labelsize=8)
    where = m.get("gpu") or f"{m['cpu']}, {m['cores_available']} cores"
    fig.suptitle(f"{s['backbone']} {s['image_size']} px, batch {s['batch_size']}, {s['device']}"
                 f"{' bf16' if s['bf16'] else ''} - {where}, torch {m['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(result: dict, out_dir: str | Path, make_plot: bool = True) -> dict:
    """Write step_cost_<tag>.json / .md / .png under out_dir; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"step_cost_{result_tag(result['settings'])}"
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md")}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(to_markdown(result))
    if make_plot:
        paths["png"] = plot(result, stem.with_suffix(".png"))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=None,
                   help="A training config (YAML): its model fields (backbone, image_size, projector, queue, decoder)\n"
                        "are used; the flags below override them. Default: ModelArguments' defaults.")
    p.add_argument("--backbone", default=None,
                   help="A preset of training.pretrain or a local folder (default: the config's, else convnext-tiny-cpu).")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--image_size", type=int, default=None, help="Default: the config's, else 64.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (autocast), as --bf16 true in training.")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoders and the decoder (as --torch_compile true in training).")
    p.add_argument("--autocast", default="model", choices=("model", "step"),
                   help="model: autocast the model's forward only, as accelerate does today; step: all of compute_loss.")
    p.add_argument("--decoder_block_out_channels", type=int, nargs="+", default=None,
                   help="Measure another decoder (default: ModelArguments' default, or the --config's).")
    p.add_argument("--decoder_base_size", type=int, default=None, help="Default: ModelArguments', or the --config's.")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_VARIANTS),
                   help="Variants: moco, lcr, fgssl (= fgssl-1.0), fgssl-<fraction>; on SimSiam: simsiam, "
                        "simsiam-lcr, simsiam-fgssl-<fraction>; any fgssl one with +recompute (synth_recompute). "
                        "moco is required (every ratio is to it).")
    p.add_argument("--shuffle_bn_groups", type=int, default=1,
                   help="BatchNorm backbones: the key batch in this many shuffled groups (Shuffle BN on one device).")
    p.add_argument("--channels_last", action="store_true",
                   help="channels_last encoders and images (convolutional backbones), as --channels_last true.")
    p.add_argument("--reps", type=int, default=20, help="Timed steps per variant (median reported).")
    p.add_argument("--warmup", type=int, default=3, help="Untimed steps per variant first.")
    p.add_argument("--breakdown_reps", type=int, default=None, help="Reps per breakdown section (default --reps).")
    p.add_argument("--no_memory", action="store_true", help="Skip the peak-memory measurement.")
    p.add_argument("--no_flops", action="store_true", help="Skip the FLOP count.")
    p.add_argument("--no_plot", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument("--_memory_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_memory_steps", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--_model_overrides", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def model_fields_of_config(path: str | None) -> dict:
    """The ModelArguments fields a training config file sets (the rest of it is not about the step's cost)."""
    if not path:
        return {}
    import yaml

    from fgssl.training.arguments import ModelArguments

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path} does not exist (shipped configs are in configs/).")
    values = yaml.safe_load(file.read_text()) or {}
    names = {f.name for f in fields(ModelArguments)}
    return {k: v for k, v in values.items() if k in names and v is not None}


def settings_from_args(args) -> BenchSettings:
    overrides = json.loads(args._model_overrides) if args._model_overrides else model_fields_of_config(args.config)
    backbone = args.backbone or overrides.pop("backbone", "convnext-tiny-cpu")
    image_size = args.image_size or overrides.pop("image_size", 64)
    overrides.pop("backbone", None), overrides.pop("image_size", None)
    return BenchSettings(backbone=backbone, batch_size=args.batch_size, image_size=int(image_size),
                         device=args.device, bf16=args.bf16, autocast=args.autocast, seed=args.seed,
                         compile=args.compile, shuffle_bn_groups=args.shuffle_bn_groups,
                         channels_last=args.channels_last,
                         decoder_block_out_channels=args.decoder_block_out_channels,
                         decoder_base_size=args.decoder_base_size, model_overrides=overrides)


def main(argv=None) -> dict:
    from fgssl.training.host_memory import keep_freed_memory

    args = parse_args(argv)
    settings = settings_from_args(args)
    keep_freed_memory()  # as the console scripts do (FGSSL_KEEP_FREED_MEMORY=0: glibc's defaults)
    if args._memory_child:
        print(json.dumps(cpu_peak_bytes_child(args._memory_child, settings, args._memory_steps)))
        return {}
    result = run_benchmark(settings, args.methods, reps=args.reps, warmup=args.warmup,
                           breakdown_reps=args.breakdown_reps, measure_memory=not args.no_memory,
                           count_flops=not args.no_flops)
    paths = write_results(result, args.out, make_plot=not args.no_plot)
    print(to_markdown(result))
    print("Wrote " + ", ".join(str(p) for p in paths.values()))
    return result


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
