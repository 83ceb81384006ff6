"""What the synthesized pairs of trained fgssl runs look like to their own encoder (a diagnostic for cub100.py).

    python benchmarks/synth_pairs.py outputs/bench/cub100/equal_epochs/fgssl-seed*  \
        outputs/bench/cub100/equal_epochs/fgssl-random-seed*

For each run folder (a finished `training.pretrain` run with a decoder), on held-out images (the eval split:
test, or the validation carve-out with --holdout_fraction; no labels used):

- decoder quality: R^2 of D(h) (or D(A), the run's decoder input) against the clean image resized to the decoder's
  size S, against two baselines: the batch-mean image (R^2 = 0) and each image's own mean colour (`flat_r2`, the
  floor of a decoder that draws blobs). A synthesized pair can only teach invariance to what the decoder draws.
- what the perturbation changes: the trainer's own steps 2-5 (`methods.perturbation_step`; the Grad-CAM loss
  against the model's queue, as in training) on augmented batches of the training batch size, with the running
  statistics saved with the model, the run's mask mode, perturbation, sigma and noise scale; `pixel_change` =
  |D(h') - D(h)|^2 / |image - batch mean image|^2, the change as a share of the images' own spread.
- how hard the synthesized pair is: InfoNCE of q(up(D(h'))) against the momentum keys of up(D(h)) with in-batch
  negatives (chance: log B), and its top-1 pair accuracy; beside it the same for the real two-view pair.
- domain gap: cosine between q(x) and q(up(D(h))) of the same image, and of different images.

Writes benchmarks/results/cub100/synth_pairs.{json,md} (numbers only) under --out, and one pairs sheet per run
(`<name>.png`: held-out image / D / D' / difference) into that run's own folder (under outputs/): the sheets show
dataset images, and pictures of shared data stay in run folders, never in benchmarks/results/ (git).
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
from benchmarks.common import repo_relative_paths  # noqa: E402
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


def analyse(run_dir: Path, data, num_images: int, batch_size: int, seed: int, sheet: Path | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from fgssl.training.augment import eval_transform
    from fgssl.training.bases import build_base_objective
    from fgssl.training.methods import perturbation_step
    from fgssl.training.trainer import ObjectiveArguments

    oa = ObjectiveArguments.from_run_folder(run_dir)
    image_size = json.loads((run_dir / "training_config.json").read_text())["model"]["image_size"]
    model = load_pretraining_run(run_dir)
    if model.decoder is None or int(model.variance_tracker.num_updates) == 0:
        raise SystemExit(f"{run_dir}: not an fgssl run (no decoder, or running statistics never updated).")
    base = build_base_objective(oa, model)
    by_map = model.config.decoder_input == "feature_map"
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    augment = oa.augmentation(image_size)
    up = lambda x: F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)  # noqa: E731
    decoded = lambda out: out.feature_map if by_map else out.pooler_output  # noqa: E731

    pixels = torch.from_numpy(np.ascontiguousarray(
        data.with_format("numpy", columns=["pixel_values"])[:num_images]["pixel_values"], dtype=np.uint8))
    stats = {k: [] for k in ("recon_r2", "flat_r2", "pixel_change", "synth_loss", "synth_top1", "real_loss",
                             "real_top1", "cos_same", "cos_other", "frac_perturbed")}
    for start in range(0, len(pixels) - batch_size + 1, batch_size):
        batch = pixels[start:start + batch_size]
        with torch.no_grad():
            x = eval_transform(batch, image_size)
            out = model.encode(x)
            recon = model.decode(decoded(out))
            size = recon.shape[-2:]
            target = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            mean_image = target.mean(0, keepdim=True).expand_as(target)
            stats["recon_r2"].append(r2(recon, target, mean_image))
            stats["flat_r2"].append(r2(target.mean((2, 3), keepdim=True).expand_as(target), target, mean_image))
            q_x = model.project(out.pooler_output)
            q_rec = model.project(model.encode(up(recon)).pooler_output)
            cos = q_x @ q_rec.T
            stats["cos_same"].append(cos.diag().mean().item())
            stats["cos_other"].append(((cos.sum() - cos.diag().sum()) / (len(cos) ** 2 - len(cos))).item())
            # The mask and perturbation as in training: augmented views, the trainer's steps 2-5.
            v1, v2 = augment(batch)
        cam = base.frozen_gradcam_inputs(model, v1, v2)
        h1 = cam.features
        pert = perturbation_step(model, cam, oa, update_statistics=False, generator=generator)
        with torch.no_grad():
            k2 = model.momentum_encode(v2)
            d = model.decode(cam.feature_map if by_map else h1.detach())
            d_pert = model.decode(pert.feature_map if by_map else pert.features)
            view_target = F.interpolate(v1, size=d.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            spread = ((view_target - view_target.mean(0, keepdim=True)) ** 2).sum()
            stats["pixel_change"].append(float(((d_pert - d) ** 2).sum() / spread))
            q_s = model.project(model.encode(up(d_pert)).pooler_output)
            k_s = model.momentum_encode(up(d))
            for name, (qq, kk) in {"synth": (q_s, k_s), "real": (model.project(h1), k2)}.items():
                loss_value, top1 = pair_stats(qq, kk, oa.temperature)
                stats[f"{name}_loss"].append(loss_value)
                stats[f"{name}_top1"].append(top1)
            stats["frac_perturbed"].append(pert.mask.float().mean().item())
            if sheet is not None and start == 0:
                from fgssl.training.pictures import save_pair_sheet

                save_pair_sheet({"input": v1[:8], "reconstruction": d[:8], "perturbed": d_pert[:8]}, sheet,
                                title=f"{run_dir.name}: evaluation images (view v1), decoded, perturbed and decoded")
    if not stats["recon_r2"]:
        raise SystemExit(f"fewer than {batch_size} images: nothing analysed")
    summary = {k: float(np.mean(v)) for k, v in stats.items()}
    summary.update(run_dir=relative_to_repo(run_dir), mask_mode=oa.mask_mode, sigma=oa.sigma,
                   noise_scale=oa.noise_scale, recon_target=oa.recon_target, decoder_input=model.config.decoder_input,
                   decoder_size=int(recon.shape[-1]), chance_loss=math.log(batch_size),
                   num_images=len(stats["recon_r2"]) * batch_size,
                   decoder=list(model.config.decoder_block_out_channels))
    return summary


RESULTS = REPO / "benchmarks" / "results"


def sheet_path(run_dir: Path, name: str) -> Path:
    """Where the pairs sheet of `run_dir` goes: inside the run folder itself. The sheet shows dataset images
    (shared data may not be redistributed), so it is refused anywhere under benchmarks/results/ (committed)."""
    path = Path(run_dir) / f"{name}.png"
    if path.resolve().is_relative_to(RESULTS.resolve()):
        raise SystemExit(f"{run_dir}: a run folder under benchmarks/results/; pictures of dataset images stay in run "
                         "folders under outputs/, not in the committed results.")
    return path


def relative_to_repo(path: Path) -> str:
    """The path relative to the repository when it lies inside it (results never record this machine's paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else f"{path.parent.name}/{path.name}"


COLUMNS = [("recon_r2", "D(h) R^2"), ("flat_r2", "flat-colour R^2"), ("pixel_change", "pixel change"),
           ("frac_perturbed", "dims perturbed"), ("synth_loss", "synth pair InfoNCE"),
           ("synth_top1", "synth pair top-1"), ("real_loss", "real pair InfoNCE"), ("real_top1", "real pair top-1"),
           ("cos_same", "cos q(x), q(D(h))"), ("cos_other", "same, other image")]


def markdown(rows: list[dict]) -> str:
    lines = ["| run | decoder input, blocks (S) | knobs | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for row in rows:
        path = Path(row["run_dir"])
        name = f"{path.parent.name}/{path.name}"
        knobs = f"{row['mask_mode']}, sigma {row['sigma']}, {row['noise_scale']}, L_R {row['recon_target']}"
        lines.append(f"| {name} | {row['decoder_input']} {row['decoder']} ({row['decoder_size']}) | {knobs} | "
                     + " | ".join(f"{row[key]:.3f}" for key, _ in COLUMNS) + " |")
    chance = rows[0]["chance_loss"] if rows else math.nan
    lines += ["", (f"InfoNCE with in-batch negatives; chance = log B = {chance:.2f}. Pixel change = "
                   "|D' - D|^2 / |image - batch mean image|^2 (a share of the images' spread). R^2 of D of the "
                   "clean held-out image against the batch-mean image at the decoder's size S; flat-colour R^2 is "
                   "each image's own mean colour (the blob floor).")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "cub100"))
    parser.add_argument("--num_images", type=int, default=1024, help="Test images analysed (first N).")
    parser.add_argument("--batch_size", type=int, default=64, help="As in training: the in-batch negatives.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout_fraction", type=float, default=0.0,
                        help="Analyse the validation carve-out of train (as the knob grid does) instead of test.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cub100")
    parser.add_argument("--name", default="synth_pairs", help="Basename of the results files.")
    args = parser.parse_args(argv)
    from fgssl.training.data import load_splits

    image_size = json.loads((args.run_dirs[0] / "training_config.json").read_text())["model"]["image_size"]
    data = load_splits(args.dataset, image_size, holdout_fraction=args.holdout_fraction)
    split = data.eval if data.eval is not None else data.train
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for run_dir in args.run_dirs:
        sheet = sheet_path(run_dir, args.name)
        rows.append(analyse(run_dir, split, args.num_images, args.batch_size, args.seed, sheet=sheet))
        print(json.dumps({k: rows[-1][k] for k, _ in COLUMNS}), flush=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(json_safe(repo_relative_paths(rows)), indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(rows))
    print(markdown(rows))
    print(f"wrote {args.out / (args.name + '.md')}")
    return rows


if __name__ == "__main__":
    main()
