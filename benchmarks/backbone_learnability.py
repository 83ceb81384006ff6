"""Can a CPU backbone preset learn the embedded dataset's class at all in the demo's length? A supervised check.

    python benchmarks/backbone_learnability.py                      # the demo's dataset, 450 steps per backbone
    python benchmarks/backbone_learnability.py --steps 150 --backbones resnet-tiny-cpu

Each preset (random init, as `fgssl-pretrain --backbone` builds it) gets a linear head and is trained WITH the labels
on the demo's training views (DEMO_RECIPE's crops, flips, colour jitter; one view per image), batch 64, AdamW 1e-3,
for the demo's 450 steps; test-split accuracy every 150 steps. A backbone that cannot learn the wing mark with labels
in this budget cannot learn it self-supervised: the reason the demo trains resnet-tiny-cpu (issue 11,
results/demo/variants.md). Writes results/demo/backbones.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import REPO  # noqa: E402


def uint8_tensors(split):
    import torch

    images = np.stack([np.asarray(image.convert("RGB")) for image in split["image"]])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(split["label"])


def train_supervised(backbone: str, data, steps: int, seed: int, every: int = 150) -> list[dict]:
    """Test accuracy of `backbone` + a linear head trained with labels, every `every` steps."""
    import torch

    from fgssl.training.arguments import ModelArguments
    from fgssl.training.backbones import build_model
    from fgssl.training.pretrain import parse_args

    torch.manual_seed(seed)
    model_args = ModelArguments(backbone=backbone, image_size=64)
    encoder = build_model(model_args, "plain").fgssl
    _, _, _, objective = parse_args([])  # the demo recipe's augmentation
    augment = objective.augmentation(64)
    x_train, y_train = uint8_tensors(data["train"])
    x_test, y_test = uint8_tensors(data["test"])
    head = torch.nn.Linear(encoder.config.hidden_size, int(y_train.max()) + 1)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.05)
    from fgssl.training.processor import build_image_processor

    processor = build_image_processor(64)
    test_pixels = processor(images=list(data["test"]["image"]), return_tensors="pt")["pixel_values"]
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(x_train), (64,))
        view, _ = augment(x_train[index])
        loss = torch.nn.functional.cross_entropy(head(encoder(pixel_values=view).pooler_output), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            encoder.eval()
            with torch.no_grad():
                accuracy = (head(encoder(pixel_values=test_pixels).pooler_output).argmax(1) == y_test).float().mean()
            encoder.train()
            curve.append({"step": step, "train_loss": round(loss.item(), 3), "test_top1": round(float(accuracy), 3),
                          "seconds": round(time.perf_counter() - start, 1)})
            print(backbone, curve[-1], flush=True)
    return curve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="convnext-tiny-cpu,convnext-s16-cpu,resnet-tiny-cpu")
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/demo/backbones")
    args = parser.parse_args(argv)

    from fgssl.training.synthetic import make_fine_grained_dataset

    data = make_fine_grained_dataset()  # the demo's dataset (seed-0 draw)
    results = {b: train_supervised(b, data, args.steps, args.seed) for b in args.backbones.split(",")}
    lines = ["# Supervised check: can each CPU backbone learn the embedded dataset's class in the demo's length?", "",
             f"Labels, one demo-recipe view per image, batch 64, AdamW 1e-3, {args.steps} steps, seed {args.seed}; "
             "test-split top-1 (chance 10 %). `python benchmarks/backbone_learnability.py`.", "",
             "| backbone | " + " | ".join(f"step {p['step']}" for p in next(iter(results.values()))) + " | s |",
             "|---|" + "---:|" * (len(next(iter(results.values()))) + 1)]
    for backbone, curve in results.items():
        lines.append(f"| {backbone} | " + " | ".join(f"{100 * p['test_top1']:.1f} %" for p in curve)
                     + f" | {curve[-1]['seconds']:.0f} |")
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"steps": args.steps, "seed": args.seed, "curves": results},
                                                   indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
