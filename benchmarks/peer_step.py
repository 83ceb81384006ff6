"""A peer in the same run: `fgssl-pretrain --method plain`'s step against the plain PyTorch MoCo v2 loop a researcher
would otherwise write (issue 24, item 4).

    python benchmarks/peer_step.py                                   # cub100, resnet-tiny-cpu, 64 px, batch 64, CPU
    python benchmarks/peer_step.py --backbone resnet-s16-cpu --channels_last
    python benchmarks/peer_step.py --backbone microsoft/resnet-50 --image_size 224 --batch_size 128 --bf16   # GPU

The peer (`plain_moco_step`) follows facebookresearch/moco `moco/builder.py`: `encoder_q` / `encoder_k` (backbone,
global pooling, the MoCo v2 MLP head), the momentum update of `encoder_k` before the keys, the batch shuffle of the
keys (Shuffle BN; one process: a permutation), InfoNCE against the queue (or the other keys of the batch with
`--queue_size 0`), `enqueue`; then SGD (momentum 0.9), gradient clipping at the Trainer's `max_grad_norm` (1.0). It
uses the same backbone config, batch, resolution, temperature, head sizes and the package's own batched views
(`ObjectiveArguments().augmentation`, the views `fgssl-pretrain` trains on), over the same decoded images
(`load_splits`) in a `DataLoader` like the Trainer's.

How it is timed, each side in a fresh subprocess (so peak memory is that process's own high-water RSS, read with
`os.wait4`), the sides alternating `--repeats` times so that machine noise hits both:
- fgssl: the installed command, run twice per repeat with `--max_steps W` and `--max_steps W + N` (W warm-up steps,
  the same data, no evaluation, no kNN monitor, no picture sheets but the last, no checkpoint); the step time is the
  difference of the two runs' `train_runtime` over N, so start-up, the first steps and the final save cancel.
- peer: one process, W unmeasured steps, then N steps timed with `time.perf_counter` (data loading included, as in
  the Trainer's loop).
Both sides run with the allocator setting the command applies to itself (`training/host_memory.py`; off for both
with `FGSSL_KEEP_FREED_MEMORY=0`). Reported: median step time of each side over the repeats (min-max), the ratio
fgssl / peer (target <= 1.10 x), steps/s, and peak RSS (CPU) or `torch.cuda.max_memory_allocated` of the peer (CUDA). Outputs:
`<out>/peer_step_<backbone>_<size>px_b<batch>_<device>[_channelslast][_compile].{json,md}`, naming the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a plain checkout (no pip install)
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATASET = "../shared/data/cub100"
TARGET_RATIO = 1.10


def parse_cli(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", default=DEFAULT_DATASET, help="Images to train on (as fgssl-pretrain).")
    parser.add_argument("--backbone", default="resnet-tiny-cpu", help="A preset name or a transformers backbone.")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--queue_size", type=int, default=0, help="0: in-batch negatives (the CPU recipes).")
    parser.add_argument("--learning_rate", type=float, default=0.03)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=20, help="Unmeasured steps W.")
    parser.add_argument("--steps", type=int, default=60, help="Measured steps N.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels_last", action="store_true", help="Convolutions in channels_last, both sides.")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides (--torch_compile).")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on CUDA, both sides.")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available).")
    parser.add_argument("--out", default="benchmarks/results/peer_step")
    parser.add_argument("--side", choices=("peer",), default=None, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--result_file", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------- the peer


def plain_moco_step(args: argparse.Namespace) -> dict:
    """The plain PyTorch MoCo v2 loop (moco/builder.py's structure); returns its measured step time."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import AutoBackbone, AutoConfig  # noqa: F401  (AutoConfig: Hub backbones)

    from fgssl.modeling import FGSSLConfig
    from fgssl.training.backbones import backbone_presets
    from fgssl.training.data import collate_uint8, load_splits
    from fgssl.training.trainer import ObjectiveArguments

    torch.manual_seed(0)
    device = torch.device(args.device)
    presets = backbone_presets()
    backbone_config = (presets[args.backbone](args.image_size) if args.backbone in presets
                       else AutoConfig.from_pretrained(args.backbone))
    defaults = FGSSLConfig(backbone_config=backbone_config)
    hidden, dim = defaults.projector_hidden_size, defaults.projector_dim
    objective = ObjectiveArguments()
    temperature, momentum = objective.temperature, defaults.momentum

    from transformers import AutoModel

    class Encoder(nn.Module):
        """Backbone -> global average pool -> MoCo v2 MLP head (C -> hidden -> d)."""

        def __init__(self):
            super().__init__()
            self.backbone = AutoModel.from_config(backbone_config)
            width = defaults.hidden_size
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

        def forward(self, x):
            feature_map = self.backbone(pixel_values=x).last_hidden_state
            return self.head(feature_map.float().mean(dim=(2, 3)))

    encoder_q = Encoder().to(device)
    encoder_k = copy.deepcopy(encoder_q)
    for p in encoder_k.parameters():
        p.requires_grad_(False)
    if args.channels_last:
        encoder_q, encoder_k = encoder_q.to(memory_format=torch.channels_last), encoder_k.to(memory_format=torch.channels_last)
    forward_q, forward_k = (torch.compile(encoder_q), torch.compile(encoder_k)) if args.compile else (encoder_q, encoder_k)
    queue = F.normalize(torch.randn(args.queue_size, dim, device=device), dim=1)
    queue_ptr = 0
    optimizer = torch.optim.SGD(encoder_q.parameters(), lr=args.learning_rate, momentum=0.9,
                                weight_decay=args.weight_decay)
    augment = objective.augmentation(args.image_size).to(device)

    data = load_splits(args.dataset_name, args.image_size, eval_split="none")
    loader = torch.utils.data.DataLoader(data.train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate_uint8, pin_memory=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step(images):
        nonlocal queue, queue_ptr
        v1, v2 = augment(images.to(device, non_blocking=True))
        if args.channels_last:
            v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
        with autocast:
            q = F.normalize(forward_q(v1).float(), dim=1)
            with torch.no_grad():  # momentum update of the key encoder, then the keys of shuffled views
                for pq, pk in zip(encoder_q.parameters(), encoder_k.parameters()):
                    pk.mul_(momentum).add_(pq.detach(), alpha=1 - momentum)
                order = torch.randperm(v2.shape[0], device=device)
                k = F.normalize(forward_k(v2[order]).float(), dim=1)[torch.argsort(order)]
            if args.queue_size:
                logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], dim=1) / temperature
                labels = torch.zeros(q.shape[0], dtype=torch.long, device=device)
            else:
                logits, labels = q @ k.t() / temperature, torch.arange(q.shape[0], device=device)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder_q.parameters(), 1.0)
        optimizer.step()
        if args.queue_size:  # enqueue (the batch divides the queue in the recipes; wrap around otherwise)
            idx = (queue_ptr + torch.arange(k.shape[0], device=device)) % args.queue_size
            queue[idx] = k.detach()
            queue_ptr = int((queue_ptr + k.shape[0]) % args.queue_size)
        return loss

    def batches():
        while True:
            yield from loader

    stream = batches()
    for _ in range(args.warmup):
        step(next(stream)["pixel_values"])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(next(stream)["pixel_values"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    result = {"step_seconds": seconds, "final_loss": float(loss.detach())}
    if device.type == "cuda":
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return result


# --------------------------------------------------------------------------------------------- the two sides


def run_child(argv: list[str], env=None) -> tuple[int, int]:
    """Run a child process to its end; (exit code, its own peak RSS in bytes, from os.wait4)."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"child failed ({code}): {' '.join(argv[:6])} ...\n{stderr[-3000:]}")
    return code, usage.ru_maxrss * 1024


def fgssl_argv(args: argparse.Namespace, max_steps: int, output_dir: str) -> list[str]:
    argv = [sys.executable, "-m", "fgssl.training.pretrain", "--dataset_name", args.dataset_name,
            "--backbone", args.backbone, "--image_size", str(args.image_size), "--method", "plain",
            "--per_device_train_batch_size", str(args.batch_size), "--queue_size", str(args.queue_size),
            "--optim", "sgd", "--optim_args", "momentum=0.9", "--learning_rate", str(args.learning_rate),
            "--weight_decay", str(args.weight_decay), "--lr_scheduler_type", "constant", "--warmup_steps", "0",
            "--max_steps", str(max_steps), "--save_steps", "1000000", "--logging_steps", "1000000",
            "--picture_steps", "1000000", "--knn_monitor_steps", "0", "--no_run_evaluation",
            "--no_compare_with_start", "--eval_split", "none", "--report_to", "none", "--disable_tqdm", "true",
            "--dataloader_drop_last", "true", "--seed", "0", "--output_dir", output_dir]
    if args.channels_last:
        argv += ["--channels_last", "true"]
    if args.compile:
        argv += ["--torch_compile", "true"]
    if args.bf16:
        argv += ["--bf16", "true"]
    if args.device == "cpu":
        argv += ["--use_cpu", "true"]
    return argv


def time_fgssl(args: argparse.Namespace, scratch: Path, repeat: int) -> dict:
    """Step time of the command from two runs of W and W + N steps (the difference of their train_runtime)."""
    runtimes, peaks = {}, []
    for steps in (args.warmup, args.warmup + args.steps):
        out = scratch / f"fgssl-r{repeat}-s{steps}"
        _, peak = run_child(fgssl_argv(args, steps, str(out)))
        runtimes[steps] = json.loads((out / "train_results.json").read_text())["train_runtime"]
        peaks.append(peak)
    return {"step_seconds": (runtimes[args.warmup + args.steps] - runtimes[args.warmup]) / args.steps,
            "peak_rss_bytes": max(peaks), "train_runtime": runtimes}


def time_peer(args: argparse.Namespace, scratch: Path, repeat: int) -> dict:
    result_file = scratch / f"peer-r{repeat}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--side", "peer", "--result_file", str(result_file)]
    for name in ("dataset_name", "backbone", "image_size", "batch_size", "queue_size", "learning_rate",
                 "weight_decay", "warmup", "steps", "device"):
        argv += [f"--{name}", str(getattr(args, name))]
    argv += [f"--{flag}" for flag in ("channels_last", "compile", "bf16") if getattr(args, flag)]
    _, peak = run_child(argv)
    return {**json.loads(result_file.read_text()), "peak_rss_bytes": peak}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def machine() -> str:
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def markdown(result: dict) -> str:
    f, p = result["fgssl"], result["peer"]
    ms = lambda s: f"{1000 * s['median']:.1f} ms ({1000 * s['min']:.1f}-{1000 * s['max']:.1f})"  # noqa: E731
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    ratio = result["ratio"]
    lines = [f"# fgssl-pretrain --method plain against a plain PyTorch MoCo v2 loop ({result['machine']})", "",
             f"Setting: {result['setting']}. Each side in fresh subprocesses, alternating, {result['repeats']} "
             "repeats; median (min-max).", "",
             "| side | step | steps/s | peak RSS |", "|---|---:|---:|---:|",
             f"| plain loop (moco/builder.py structure) | {ms(p['step_seconds'])} | "
             f"{1 / p['step_seconds']['median']:.2f} | {mib(p['peak_rss_bytes']['median'])} |",
             f"| fgssl-pretrain --method plain | {ms(f['step_seconds'])} | "
             f"{1 / f['step_seconds']['median']:.2f} | {mib(f['peak_rss_bytes']['median'])} |", "",
             f"Ratio fgssl / plain: **{ratio['median']:.3f} x** (per-repeat {ratio['min']:.3f}-{ratio['max']:.3f}); "
             f"target <= {TARGET_RATIO:.2f} x: {'met' if ratio['median'] <= TARGET_RATIO else 'MISSED'}.",
             "", "Peak RSS includes the decoded dataset held by each process (the same images on both sides); the "
             "command's also counts what the Trainer, accelerate and the evaluation imports load.",
             "", f"Command: `{result['command']}`; took {result['minutes']:.1f} min."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_cli(argv)
    import torch

    from fgssl.training.host_memory import keep_freed_memory
    from fgssl.training.portable import portable_command

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.side == "peer":
        # The allocator setting the command applies to itself (training/host_memory.py), so that the two sides
        # differ by the harness only; FGSSL_KEEP_FREED_MEMORY=0 in the environment turns it off for both.
        keep_freed_memory()
        result = plain_moco_step(args)
        Path(args.result_file).write_text(json.dumps(result))
        return result
    started = time.time()
    records = {"fgssl": [], "peer": []}
    with tempfile.TemporaryDirectory(prefix="peer_step_") as tmp:
        scratch = Path(tmp)
        for repeat in range(args.repeats):
            sides = ("peer", "fgssl") if repeat % 2 == 0 else ("fgssl", "peer")
            for side in sides:
                record = time_peer(args, scratch, repeat) if side == "peer" else time_fgssl(args, scratch, repeat)
                records[side].append(record)
                print(f"repeat {repeat} {side}: {1000 * record['step_seconds']:.1f} ms/step, "
                      f"peak RSS {record['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    ratios = [f["step_seconds"] / p["step_seconds"] for f, p in zip(records["fgssl"], records["peer"])]
    tags = "".join(t for t, on in (("_channelslast", args.channels_last), ("_compile", args.compile),
                                    ("_bf16", args.bf16)) if on)
    name = f"peer_step_{args.backbone.split('/')[-1]}_{args.image_size}px_b{args.batch_size}_{args.device}{tags}"
    result = {
        "machine": machine(), "repeats": args.repeats, "minutes": (time.time() - started) / 60,
        "setting": f"{Path(args.dataset_name).name}, {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
                   f"queue {args.queue_size or 'in-batch'}, SGD, {args.device}{tags.replace('_', ', ')}, "
                   f"W={args.warmup} warm-up + N={args.steps} measured steps, freed host memory kept for reuse "
                   f"on both sides (training/host_memory.py): {'yes' if keep_freed_memory() else 'no'}",
        "command": portable_command(["python", "benchmarks/peer_step.py",
                                     *(argv if argv is not None else sys.argv[1:])]),
        "ratio": spread(ratios),
        **{side: {"step_seconds": spread([r["step_seconds"] for r in rs]),
                  "peak_rss_bytes": spread([r["peak_rss_bytes"] for r in rs]), "runs": rs}
           for side, rs in records.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
