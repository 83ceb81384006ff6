"""Generic initialisation: this machine's stand-in for ImageNet weights (issue 19, step 1).

Every fine-grained SSL paper (the seed paper, LCR) starts from an ImageNet-pretrained ResNet-50 and then
pre-trains on the fine-grained images. At 64 px on 2 CPU cores, a backbone preset trained with the labels of
`../shared/data/tinyimagenet200` (202 generic ImageNet classes) plays the role of torchvision's `pretrained=True`:

    python benchmarks/generic_init.py                                  # resnet-s16-cpu, supervised, ~25 min
    python benchmarks/generic_init.py --backbone resnet-s16-cpu --epochs 1 --tag pilot   # a quick pilot

What it does, each step cached (a rerun does no work; an interrupted step starts that step again):
  1. the preset's random-init backbone, seeded, saved as a plain transformers folder (`random/`);
  2. `fgssl-finetune --method full` on tinyimagenet200 `train` with its labels, evaluated on `validation`
     (top-1; the official 50 images a class; tinyimagenet200 has no test split with labels) -> `finetune/`;
  3. the trained backbone exported as a plain transformers backbone folder with its image processor
     (`backbone/`: `config.json`, `model.safetensors`, `preprocessor_config.json`), the kind of folder a user
     gets from the Hub (`microsoft/resnet-50`). Every cub100 run of `benchmarks/cub100.py --init <that folder>`
     starts from it with `--backbone <folder>`: the user's own path.

Results: a row per backbone in `<out>/init.json` and `<out>/init.md` (backbone, data, labels, validation top-1,
minutes, the exact command). Run folders under `outputs/bench/generic_init/` (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import fgssl_command, machine_summary, repo_relative_paths, run_logged, write_json  # noqa: E402

DEFAULT_DATASET = "../shared/data/tinyimagenet200"
#: The recipe (AdamW, cosine schedule): batch 128 as in the issue's first try; the rest chosen on validation of
#: the pilots (benchmarks/results/cub100_init/init.md lists them).
DEFAULT_RECIPE = {"epochs": 18, "learning_rate": 2e-3, "batch_size": 128, "weight_decay": 0.05}


def parse_cli(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet-s16-cpu", help="A backbone preset of fgssl-pretrain.")
    parser.add_argument("--dataset_name", default=DEFAULT_DATASET, help="Labelled generic images (train, validation).")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=DEFAULT_RECIPE["epochs"])
    parser.add_argument("--learning_rate", type=float, default=DEFAULT_RECIPE["learning_rate"])
    parser.add_argument("--batch_size", type=int, default=DEFAULT_RECIPE["batch_size"])
    parser.add_argument("--weight_decay", type=float, default=DEFAULT_RECIPE["weight_decay"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="sup", help="Names the run folder (e.g. pilot); the row says it.")
    parser.add_argument("--runs_dir", default="outputs/bench/generic_init", help="Run folders (keep under outputs/).")
    parser.add_argument("--out", default="benchmarks/results/cub100_init", help="Where init.json / init.md go.")
    args = parser.parse_args(argv)
    from fgssl.training.backbones import backbone_presets

    if args.backbone not in backbone_presets():
        parser.error(f"--backbone {args.backbone!r} is not a preset; choose from {', '.join(backbone_presets())}")
    if not (args.epochs > 0 and args.learning_rate > 0 and args.batch_size >= 1):
        parser.error("--epochs and --learning_rate must be > 0 and --batch_size >= 1")
    return args


def run_name(args: argparse.Namespace) -> str:
    return f"{args.backbone}-{args.tag}-e{args.epochs:g}-lr{args.learning_rate:g}-s{args.seed}"


def save_random_backbone(backbone: str, image_size: int, seed: int, folder: Path) -> None:
    """The preset's untrained backbone (seeded) as a plain transformers folder with fgssl's image processor."""
    from transformers import AutoModel, set_seed

    from fgssl.training.backbones import backbone_presets
    from fgssl.training.processor import build_image_processor

    set_seed(seed)
    model = AutoModel.from_config(backbone_presets()[backbone](image_size))
    model.save_pretrained(folder)
    build_image_processor(image_size).save_pretrained(folder)


def finetune_argv(args: argparse.Namespace, random_dir: Path, finetune_dir: Path) -> list[str]:
    """fgssl-finetune with every weight trained (the labels' role: torchvision's pretrained=True)."""
    return ["--model_name_or_path", str(random_dir), "--dataset_name", args.dataset_name, "--method", "full",
            "--output_dir", str(finetune_dir), "--image_size", str(args.image_size), "--eval_split", "validation",
            "--num_train_epochs", f"{args.epochs:g}", "--per_device_train_batch_size", str(args.batch_size),
            "--per_device_eval_batch_size", "256", "--learning_rate", f"{args.learning_rate:g}",
            "--weight_decay", f"{args.weight_decay:g}", "--lr_scheduler_type", "cosine", "--warmup_steps", "0.05",
            "--eval_strategy", "no", "--save_strategy", "epoch", "--save_total_limit", "1", "--logging_steps", "50",
            "--seed", str(args.seed), "--disable_tqdm", "true"]


def export_backbone(finetune_dir: Path, folder: Path, image_size: int) -> None:
    """The fine-tuned classifier's backbone as a plain transformers backbone folder with its image processor."""
    from fgssl import modeling  # noqa: F401  (registers the fgssl Auto classes)
    from fgssl.modeling import FGSSLForImageClassification
    from fgssl.training.processor import build_image_processor

    FGSSLForImageClassification.from_pretrained(finetune_dir / "model").export_backbone(folder)
    build_image_processor(image_size).save_pretrained(folder)


def generic_init(args: argparse.Namespace) -> dict:
    """Steps 1-3 for one backbone, each skipped when its output exists; returns the row."""
    run_dir = Path(args.runs_dir) / run_name(args)
    random_dir, finetune_dir, backbone_dir = run_dir / "random", run_dir / "finetune", run_dir / "backbone"
    row_path = run_dir / "row.json"
    if row_path.is_file() and (backbone_dir / "model.safetensors").is_file():
        print(f"[cached] {backbone_dir}", flush=True)
        return json.loads(row_path.read_text())
    if not (random_dir / "model.safetensors").is_file():
        save_random_backbone(args.backbone, args.image_size, args.seed, random_dir)
    results_path = finetune_dir / "finetune_results.json"
    argv = finetune_argv(args, random_dir, finetune_dir)
    command = fgssl_command("finetune", argv)
    if not results_path.is_file():
        finetune_dir.mkdir(parents=True, exist_ok=True)
        print(f"[run] {shlex.join(command)}\n      log: {finetune_dir}/log.txt", flush=True)
        code, seconds = run_logged(command, finetune_dir / "log.txt")
        if code != 0:
            raise SystemExit(f"fgssl-finetune failed (exit {code}); see {finetune_dir}/log.txt")
        write_json(finetune_dir / "minutes.json", {"minutes": seconds / 60, "machine": machine_summary()}, indent=None)
    timing = json.loads((finetune_dir / "minutes.json").read_text()) if (finetune_dir / "minutes.json").is_file() else {}
    if not (backbone_dir / "model.safetensors").is_file():
        export_backbone(finetune_dir, backbone_dir, args.image_size)
    results = json.loads(results_path.read_text())
    row = {
        "backbone": args.backbone, "data": Path(args.dataset_name).name, "labels": True, "tag": args.tag,
        "epochs": args.epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "weight_decay": args.weight_decay, "seed": args.seed, "image_size": args.image_size,
        "validation_top1": results["accuracy"], "minutes": timing.get("minutes"), "machine": timing.get("machine"),
        "num_images": results["num_images"], "backbone_dir": str(backbone_dir),
        "command": shlex.join(command),
    }
    row = repo_relative_paths(row)
    write_json(row_path, row)
    return row


def write_table(row: dict, out: Path) -> None:
    """Add (or replace) the row in <out>/init.json and re-render <out>/init.md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "init.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    key = lambda r: (r["backbone"], r["tag"], r["epochs"], r["learning_rate"], r["seed"])  # noqa: E731
    rows = [r for r in rows if key(r) != key(row)] + [row]
    write_json(path, {"rows": rows})
    lines = ["# Generic initialisation on tinyimagenet200 (the stand-in for ImageNet weights)", "",
             "Trained with `python benchmarks/generic_init.py` (fgssl-finetune --method full, AdamW, cosine, "
             "64 px, train split: 250 images a class, 202 classes); top-1 on the validation split (50 a class, "
             "chance 0.5 %). Minutes: the whole fine-tuning process, 2 CPU cores (shared when the load says so).", "",
             "| backbone | run | data | labels | epochs | lr | validation top-1 | minutes | machine |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        minutes = "" if r.get("minutes") is None else f"{r['minutes']:.1f}"
        lines.append(f"| {r['backbone']} | {r['tag']} | {r['data']} | {'yes' if r['labels'] else 'no'} | "
                     f"{r['epochs']:g} | {r['learning_rate']:g} | {100 * r['validation_top1']:.2f} % | {minutes} | "
                     f"{r.get('machine') or ''} |")
    (out / "init.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    args = parse_cli(argv)
    row = generic_init(args)
    write_table(row, Path(args.out))
    print(f"{row['backbone']} ({row['tag']}): validation top-1 {100 * row['validation_top1']:.2f} %, "
          f"backbone folder {row['backbone_dir']}")
    return row


if __name__ == "__main__":
    main()
