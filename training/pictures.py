"""Pictures a user would rather look at than read: synthesized pairs with Grad-CAM maps, and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from .augment import denormalize_images  # noqa: E402

ROW_TITLES = {
    "input": "input view v1",
    "target": "L_R target",
    "reconstruction": "D(h)",
    "perturbed": "D(h') perturbed",
    "difference": "|D(h) - D(h')|",
    "gradcam": "Grad-CAM of -L_C",
}


def _as_rgb(images: torch.Tensor, size: int, mean=None, std=None) -> torch.Tensor:
    """Normalised B x 3 x s x s (with `mean` / `std`, default ImageNet's) -> B x size x size x 3 in [0, 1]."""
    images = denormalize_images(images.float(), mean, std)
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.permute(0, 2, 3, 1).clamp(0, 1)


def save_pair_sheet(pictures: dict[str, torch.Tensor], path: str | Path, title: str = "", mean=None,
                    std=None) -> Path:
    """One column per image; rows: input, reconstruction, perturbed reconstruction, their difference, Grad-CAM.

    `pictures` holds `input` (B x 3 x H x W normalised) and any of `target` (L_R's target, when it is not the input
    view: B x 3 x H x W), `reconstruction`, `perturbed` (B x 3 x S x S) and `gradcam` (B x h x w, non-negative).
    `mean` / `std`: the normalisation of the images (default ImageNet's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = pictures["input"].shape[-1]
    rows: list[tuple[str, torch.Tensor, dict]] = [("input", _as_rgb(pictures["input"], size, mean, std), {})]
    if "target" in pictures:
        rows.append(("target", _as_rgb(pictures["target"], size, mean, std), {}))
    if "reconstruction" in pictures:
        rows.append(("reconstruction", _as_rgb(pictures["reconstruction"], size, mean, std), {}))
    if "perturbed" in pictures:
        rows.append(("perturbed", _as_rgb(pictures["perturbed"], size, mean, std), {}))
        if "reconstruction" in pictures:
            diff = (pictures["reconstruction"] - pictures["perturbed"]).abs().mean(1, keepdim=True)
            diff = F.interpolate(diff, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            rows.append(("difference", diff / diff.amax().clamp_min(1e-8), {"cmap": "magma", "vmin": 0, "vmax": 1}))
    if "gradcam" in pictures:
        cam = pictures["gradcam"].unsqueeze(1)
        cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
        rows.append(("gradcam", cam, {"cmap": "jet", "alpha": 0.45, "vmin": 0, "vmax": 1, "overlay": True}))
    n = pictures["input"].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.2, 1.35 * len(rows) + 0.4), squeeze=False)
    base = rows[0][1]
    for r, (name, images, style) in enumerate(rows):
        style = dict(style)
        overlay = style.pop("overlay", False)
        for c in range(n):
            ax = axes[r][c]
            if overlay:
                ax.imshow(base[c].numpy())
            ax.imshow(images[c].numpy(), **style)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(ROW_TITLES[name], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: Panels of training_curves.png, in order (those never logged are left out).
CURVE_KEYS = ("loss", "loss_ssl", "loss_recon", "loss_synth", "loss_lcr", "frac_perturbed", "monitor_knn_top1",
              "learning_rate")
#: Terms drawn raw (faint) plus smoothed: per-batch losses are noisy.
SMOOTHED_KEYS = ("loss", "loss_ssl", "loss_recon", "loss_synth", "loss_lcr")


def smooth(values, weight: float | None = None) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing).

    `weight` defaults to one that averages over about a tenth of the points (at most 0.9), so short and long runs
    both show the trend.
    """
    values = [float(v) for v in values]
    if weight is None:
        weight = min(0.9, max(0.0, 1.0 - 10.0 / max(len(values), 1)))
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1.0 - weight) * value
        out.append(average / (1.0 - weight**i) if weight > 0 else value)
    return out


def _mark_synth_schedule(ax, synth_schedule, last_step) -> None:
    """Shade the synthesized-pair warm-up (L_Cp off) and the ramp of its weight from 0 to nu."""
    warmup, ramp = synth_schedule
    if warmup > 0:
        ax.axvspan(0, min(warmup, last_step), color="0.85", lw=0, zorder=0, label="L_Cp off (warm-up)")
    if ramp > 0 and warmup < last_step:
        ax.axvspan(warmup, min(warmup + ramp, last_step), color="0.93", lw=0, zorder=0, label="L_Cp weight ramp")


def plot_training_curves(log_history: list[dict], path: str | Path,
                         synth_schedule: tuple[int, int] | None = None) -> Path | None:
    """Every logged loss term (and the kNN monitor) against the optimiser step, one panel per term.

    Noisy loss terms are drawn faint with their smoothed curve on top; `synth_schedule` = (warm-up steps, ramp
    steps) of the synthesized-pair loss shades both phases in every panel.
    """
    keys = [k for k in CURVE_KEYS if any(k in row for row in log_history)]
    if not keys:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    last_step = max((row.get("step", 0) for row in log_history), default=0)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        if synth_schedule and last_step > 0:
            _mark_synth_schedule(ax, synth_schedule, last_step)
        points = [(row["step"], row[key]) for row in log_history if key in row and "step" in row]
        if points:
            xs, ys = zip(*points)
            if key in SMOOTHED_KEYS and len(xs) >= 5:
                ax.plot(xs, ys, color="C0", alpha=0.3, lw=0.8)
                ax.plot(xs, smooth(ys), color="C0", lw=1.5)
            else:
                ax.plot(xs, ys, color="C0", marker="." if len(xs) < 30 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    if synth_schedule and last_step > 0 and any(synth_schedule):
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
            fig.tight_layout(rect=(0, 0.08, 1, 1))
        else:
            fig.tight_layout()
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
