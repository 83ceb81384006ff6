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
    "reconstruction": "D(h)",
    "perturbed": "D(h') perturbed",
    "difference": "|D(h) - D(h')|",
    "gradcam": "Grad-CAM of -L_C",
}


def _as_rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised B x 3 x s x s -> B x size x size x 3 in [0, 1]."""
    images = denormalize_images(images.float())
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.permute(0, 2, 3, 1).clamp(0, 1)


def save_pair_sheet(pictures: dict[str, torch.Tensor], path: str | Path, title: str = "") -> Path:
    """One column per image; rows: input, reconstruction, perturbed reconstruction, their difference, Grad-CAM.

    `pictures` holds `input` (B x 3 x H x W normalised) and any of `reconstruction`, `perturbed` (B x 3 x S x S)
    and `gradcam` (B x h x w, non-negative).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = pictures["input"].shape[-1]
    rows: list[tuple[str, torch.Tensor, dict]] = [("input", _as_rgb(pictures["input"], size), {})]
    if "reconstruction" in pictures:
        rows.append(("reconstruction", _as_rgb(pictures["reconstruction"], size), {}))
    if "perturbed" in pictures:
        rows.append(("perturbed", _as_rgb(pictures["perturbed"], size), {}))
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


def plot_training_curves(log_history: list[dict], path: str | Path) -> Path | None:
    """Every logged loss term against the optimiser step, one panel per term."""
    keys = [k for k in ("loss", "loss_ssl", "loss_recon", "loss_synth", "loss_lcr", "frac_perturbed", "learning_rate")
            if any(k in row for row in log_history)]
    if not keys:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(row["step"], row[key]) for row in log_history if key in row and "step" in row]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
