"""What the synthesized pairs of trained fgssl runs look like to their own encoder (a diagnostic for cub100.py).

    python benchmarks/synth_pairs.py outputs/bench/cub100/equal_epochs/fgssl-seed*  \
        outputs/bench/cub100/equal_epochs/fgssl-random-seed*

For each run folder (a finished `training.pretrain` run with a decoder), on the test split's images (no labels used):

- decoder quality: R^2 of D(h) against the input resized to the decoder's size S, for clean views, against two
  baselines: the dataset-mean image (R^2 = 0) and each image's own mean colour (`flat_r2`). A decoder whose R^2 is
  not far above `flat_r2` draws coloured blobs, and a synthesized pair can only teach invariance to what it draws.
- what the perturbation changes: the mask recomputed as in training (running variance saved with the model -> V;
  Grad-CAM of InfoNCE on augmented batches of the training batch size -> G_i; the run's mask mode), h' = perturbed
  h, and `pixel_change` = |D(h') - D(h)|^2 / |D(h) - mean image|^2.
- how hard the synthesized pair is: InfoNCE of q(up(D(h'))) against the momentum keys of up(D(h)) with in-batch
  negatives (chance: log B), and its top-1 pair accuracy; beside it the same for the real two-view pair.
- domain gap: cosine between q(x) and q(up(D(h))) of the same image, and of different images.

Writes benchmarks/results/cub100/synth_pairs.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.mechanism import load_pretraining_run  # noqa: E402
from fgssl.training.evaluation import json_safe  # noqa: E402


def r2(pred, target, baseline) -> float:
    """1 - SSE(pred) / SSE(baseline), over every pixel of the batch."""
    return float(1 - ((pred - target) ** 2).sum() / ((baseline - target) ** 2).sum())


def pair_stats(q, k, temperature: float) -> tuple[float, float]:
    """InfoNCE of (q_i, k_i) against the other k_j of the batch, and how often k_i is q_i's nearest key."""
    import torch
    import torch.nn.functional as F

    logits = q @ k.T / temperature
    labels = torch.arange(len(q))
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def analyse(run_dir: Path, data, num_images: int, batch_size: int, seed: int) -> dict:
    import torch
    import torch.nn.functional as F

    from fgssl.training import objective as obj
    from fgssl.training.augment import eval_transform
    from fgssl.training.trainer import ObjectiveArguments

    config = json.loads((run_dir / "training_config.json").read_text())
    known = set(ObjectiveArguments.__dataclass_fields__)
    oa = ObjectiveArguments(**{k: v for k, v in config["objective"].items() if k in known})
    image_size = config["model"]["image_size"]
    model, saved_var = load_pretraining_run(run_dir)
    if model.decoder is None or saved_var is None:
        raise SystemExit(f"{run_dir}: not an fgssl run with a decoder and saved running variance.")
    std = saved_var.clamp_min(0).sqrt()
    var_mask = obj.variance_mask(saved_var, oa.rho_variance)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    augment = oa.augmentation(image_size)
    up = lambda x: F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)  # noqa: E731

    pixels = torch.from_numpy(np.ascontiguousarray(
        data.with_format("numpy", columns=["pixel_values"])[:num_images]["pixel_values"], dtype=np.uint8))
    stats = {k: [] for k in ("recon_r2", "flat_r2", "pixel_change", "synth_loss", "synth_top1", "real_loss",
                             "real_top1", "cos_same", "cos_other", "frac_perturbed")}
    for start in range(0, len(pixels) - batch_size + 1, batch_size):
        batch = pixels[start:start + batch_size]
        with torch.no_grad():
            x = eval_transform(batch, image_size)
            h = model.encode(x).pooler_output
            recon = model.decode(h)
            size = recon.shape[-2:]
            target = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            mean_image = target.mean(0, keepdim=True).expand_as(target)
            stats["recon_r2"].append(r2(recon, target, mean_image))
            stats["flat_r2"].append(r2(target.mean((2, 3), keepdim=True).expand_as(target), target, mean_image))
            q_x = model.project(h)
            q_rec = model.project(model.encode(up(recon)).pooler_output)
            cos = q_x @ q_rec.T
            stats["cos_same"].append(cos.diag().mean().item())
            stats["cos_other"].append(((cos.sum() - cos.diag().sum()) / (len(cos) ** 2 - len(cos))).item())
            # The mask as in training: augmented view, Grad-CAM of the SSL loss through the projector.
            v1, v2 = augment(batch)
            h1 = model.encode(v1).pooler_output
            k2 = model.momentum_encode(v2)
        h1 = h1.detach().requires_grad_(True)
        loss = obj.info_nce(model.project(h1), k2, None, oa.temperature)
        grad_mask = obj.gradcam_mask(obj.gradcam_scores(loss, h1), oa.rho_gradcam)
        mask = obj.nuisance_mask(var_mask, grad_mask, oa.mask_mode, generator=generator)
        with torch.no_grad():
            h1 = h1.detach()
            h_pert = obj.perturb_features(h1, mask, oa.perturbation, oa.sigma, std=std, generator=generator)
            d, d_pert = model.decode(h1), model.decode(h_pert)
            spread = ((d - d.mean(0, keepdim=True)) ** 2).sum()
            stats["pixel_change"].append(float(((d_pert - d) ** 2).sum() / spread))
            q_s = model.project(model.encode(up(d_pert)).pooler_output)
            k_s = model.momentum_encode(up(d))
            for name, (qq, kk) in {"synth": (q_s, k_s), "real": (model.project(h1), k2)}.items():
                loss_value, top1 = pair_stats(qq, kk, oa.temperature)
                stats[f"{name}_loss"].append(loss_value)
                stats[f"{name}_top1"].append(top1)
            stats["frac_perturbed"].append(mask.float().mean().item())
    if not stats["recon_r2"]:
        raise SystemExit(f"fewer than {batch_size} images: nothing analysed")
    summary = {k: float(np.mean(v)) for k, v in stats.items()}
    summary.update(run_dir=str(run_dir), mask_mode=oa.mask_mode, sigma=oa.sigma,
                   decoder_size=int(recon.shape[-1]), chance_loss=math.log(batch_size),
                   num_images=len(stats["recon_r2"]) * batch_size,
                   decoder=config["model"]["decoder_block_out_channels"])
    return summary


COLUMNS = [("recon_r2", "D(h) R^2"), ("flat_r2", "flat-colour R^2"), ("pixel_change", "pixel change"),
           ("frac_perturbed", "dims perturbed"), ("synth_loss", "synth pair InfoNCE"),
           ("synth_top1", "synth pair top-1"), ("real_loss", "real pair InfoNCE"), ("real_top1", "real pair top-1"),
           ("cos_same", "cos q(x), q(D(h))"), ("cos_other", "same, other image")]


def markdown(rows: list[dict]) -> str:
    lines = ["| run | decoder (S) | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for row in rows:
        path = REPO / row["run_dir"]  # absolute paths stay as they are
        runs = REPO / "outputs" / "bench"
        name = str(path.relative_to(runs)) if path.is_relative_to(runs) else f"{path.parent.name}/{path.name}"
        lines.append(f"| {name} | {row['decoder']} ({row['decoder_size']}) | "
                     + " | ".join(f"{row[key]:.3f}" for key, _ in COLUMNS) + " |")
    chance = rows[0]["chance_loss"] if rows else math.nan
    lines += ["", (f"InfoNCE with in-batch negatives; chance = log B = {chance:.2f}. Pixel change = "
                   "|D(h') - D(h)|^2 / |D(h) - batch mean|^2. R^2 against the dataset-mean image at the decoder's "
                   "size S.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "cub100"))
    parser.add_argument("--num_images", type=int, default=1024, help="Test images analysed (first N).")
    parser.add_argument("--batch_size", type=int, default=64, help="As in training: the in-batch negatives.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cub100")
    args = parser.parse_args(argv)
    from fgssl.training.data import load_splits

    image_size = json.loads((args.run_dirs[0] / "training_config.json").read_text())["model"]["image_size"]
    data = load_splits(args.dataset, image_size)
    split = data.eval if data.eval is not None else data.train
    rows = []
    for run_dir in args.run_dirs:
        rows.append(analyse(run_dir, split, args.num_images, args.batch_size, args.seed))
        print(json.dumps({k: rows[-1][k] for k, _ in COLUMNS}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "synth_pairs.json").write_text(json.dumps(json_safe(rows), indent=2) + "\n")
    (args.out / "synth_pairs.md").write_text(markdown(rows))
    print(markdown(rows))
    print(f"wrote {args.out / 'synth_pairs.md'}")
    return rows


if __name__ == "__main__":
    main()
