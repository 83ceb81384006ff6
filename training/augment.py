"""Batched image augmentation on the training device, from the cached uint8 batches of training.data.

The MoCo v2 recipe (docs/method.md): random resized crop (scale 0.2-1), colour jitter 0.4/0.4/0.4/0.1 with
p 0.8, grayscale p 0.2, Gaussian blur p 0.5 (sigma 0.1-2), horizontal flip, then ImageNet normalisation.
Every strength is a constructor argument so that it can be ablated.

Why it is written out instead of chained kornia modules: at CPU scale the chain (crop, flip, jitter, grayscale,
blur, each a pass over the batch with its own parameter bookkeeping) cost half of a MoCo step
(benchmarks/results/step_cost_*). Here the two views of the whole batch are drawn together and each piece is one
batched op:

    sample_crop_boxes      torchvision's RandomResizedCrop parameters, vectorised (10 tries, centre fallback)
    sample_region_boxes    the same, each draw inside its own image's valid region (a cache with room,
                           training.data `cache_size_factor` > 1: whole images at their aspect ratio in a box)
    crop_flip_resize       crop + flip + resize of all 2B views in ONE affine grid_sample
    color_transforms       brightness, contrast, saturation, hue (per image, random order) and grayscale as ONE
                           per-image 3 x 3 matrix + offset (torchvision's formulas are affine in RGB; hue is a
                           rotation about the grey axis), applied in one batched matmul, clamped once
    blur_selected          separable Gaussian blur with per-image sigma as two batched matmuls (reflect border
                           folded into the matrices), only on the images drawn for it

Randomness comes from torch's default generator on the batch's device, so `torch.manual_seed` makes the views
reproducible. `TwoViewAugment` also returns the *geometric* view (the same crop and flip, no photometric jitter)
when asked: the target of docs/method.md's `recon_target: geometric`, at the cost of one more matmul-free copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The evaluation crop of a cache with room (`cache_size_factor` > 1): resize the shorter side to S / crop_pct,
#: centre-crop S x S (the usual 0.875: 256 -> 224). A square cache (factor 1) is evaluated whole (crop_pct 1).
DEFAULT_CROP_PCT = 0.875
#: ITU-R 601 luma weights, as torchvision's rgb_to_grayscale (and kornia's) use.
LUMA = (0.299, 0.587, 0.114)


def _to_float01(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float 0..1; a float tensor is taken to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()  # .float() of uint8 is a new tensor


def _channel_stats(x: torch.Tensor, mean=None, std=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`mean` and `std` (3 floats each; default ImageNet's) as 1 x 3 x 1 x 1 tensors on x's device."""
    mean = torch.tensor(IMAGENET_MEAN if mean is None else tuple(mean), device=x.device, dtype=torch.float32)
    std = torch.tensor(IMAGENET_STD if std is None else tuple(std), device=x.device, dtype=torch.float32)
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


def normalize_images(x: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """(x / 255 - mean) / std for uint8 input, (x - mean) / std for float input in [0, 1].

    x: B x 3 x H x W (or 3 x H x W). mean, std: 3 floats each (default ImageNet's; the starting checkpoint's
    image processor's when it has one, training.processor). Returns float32 of the same shape.
    """
    mean, std = _channel_stats(x, mean, std)
    return ((_to_float01(x) - mean) / std).reshape(x.shape)


def denormalize_images(x: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Inverse of normalize_images: x * std + mean, clamped to [0, 1] (for saving pictures).

    x: B x 3 x H x W (or 3 x H x W) normalised float. Returns float in [0, 1], same shape.
    """
    mean, std = _channel_stats(x, mean, std)
    return (x.float() * std + mean).clamp(0.0, 1.0).reshape(x.shape)


def _resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a float B x 3 x H x W batch to image_size x image_size (no-op if equal)."""
    if x.shape[-2:] == (image_size, image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


def eval_transform(x_uint8: torch.Tensor, image_size: int, mean=None, std=None) -> torch.Tensor:
    """Deterministic evaluation view: resize to image_size and normalise (with `mean` / `std`, default ImageNet's).

    x_uint8: uint8 B x 3 x S x S (already centre-cropped by training.data). Returns normalised float
    B x 3 x image_size x image_size.
    """
    return normalize_images(_resize(_to_float01(x_uint8), image_size), mean, std)


def eval_resize_side(image_size: int, crop_pct: float) -> int:
    """The shorter side an evaluation view is resized to before its centre image_size crop: int(S / crop_pct)
    (timm's rule: 256 for 224 at 0.875; 73 for 64). A hair of slack absorbs a crop_pct read back as crop / side."""
    if not 0.0 < float(crop_pct) <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
    return int(image_size / float(crop_pct) + 1e-6)


def eval_transform_regions(x_uint8: torch.Tensor, valid_hw: torch.Tensor, image_size: int, crop_pct: float,
                           mean=None, std=None) -> torch.Tensor:
    """Evaluation view of a cache with room: each image's valid region resized (antialiased bilinear) so its
    shorter side is `eval_resize_side(image_size, crop_pct)` (the longer side truncated, as transformers'
    shortest-edge resize), then the centre image_size x image_size crop, normalised.

    x_uint8: uint8 B x 3 x H x W boxes; valid_hw: B x 2 (height, width) of each image's region at the top-left.
    Images sharing a region size are resized together. Returns normalised float B x 3 x image_size x image_size.
    """
    side = eval_resize_side(image_size, crop_pct)
    x = _to_float01(x_uint8)
    out = torch.empty(x.shape[0], 3, image_size, image_size, device=x.device, dtype=x.dtype)
    sizes = valid_hw.to("cpu", torch.int64)
    for hw in torch.unique(sizes, dim=0).tolist():
        h, w = hw
        idx = ((sizes[:, 0] == h) & (sizes[:, 1] == w)).nonzero().squeeze(1).to(x.device)
        scale = side / min(h, w)
        new_h, new_w = max(side, int(h * scale)), max(side, int(w * scale))
        region = x[idx, :, :h, :w]
        if (new_h, new_w) != (h, w):
            region = F.interpolate(region, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
        out[idx] = region[:, :, top : top + image_size, left : left + image_size]
    return normalize_images(out, mean, std)


def _blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel of about 10% of the image side (MoCo v2: 23 px at 224), at least 3."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 == 1 else k + 1


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


# --------------------------------------------------------------------------------------------- geometry


def first_fitting_candidate(n: int, tries: int, height, width, scale, ratio, device):
    """RandomResizedCrop's candidates: per draw, `tries` (area fraction ~ U(scale), log aspect w / h ~ U(log ratio))
    sizes; returns (w, h, found), each of length n: the first candidate that fits in height x width (floats, or
    n x 1 tensors of per-image sizes) and whether any did."""
    area = (torch.rand(n, tries, device=device) * (scale[1] - scale[0]) + scale[0]) * (height * width)
    log_ratio = torch.rand(n, tries, device=device) * (math.log(ratio[1]) - math.log(ratio[0])) + math.log(ratio[0])
    aspect = log_ratio.exp()
    w = (area * aspect).sqrt().round()
    h = (area / aspect).sqrt().round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = (fits.int().cumsum(1) == 1) & fits  # one-hot of the first candidate that fits
    pick = first.int().argmax(1, keepdim=True)
    return w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1), first.any(1)


def sample_crop_boxes(n: int, height: int, width: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), device=None,
                      tries: int = 10) -> torch.Tensor:
    """torchvision's `RandomResizedCrop.get_params`, vectorised over `n` draws.

    Per draw: up to `tries` candidates of area fraction ~ U(scale) and log aspect (w / h) ~ U(log ratio); the
    first that fits is taken, at an integer position drawn uniformly; if none fits, the centre crop of the
    ratio-clamped whole image.

    Returns:
        n x 4 float tensor of boxes (x0, y0, w, h) in input pixels (integers, as torchvision's).
    """
    w, h, found = first_fitting_candidate(n, tries, height, width, scale, ratio, device)
    # Fallback, as torchvision: keep the whole image, clamped to the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(found, w, torch.full_like(w, fw)).clamp(1, width)
    h = torch.where(found, h, torch.full_like(h, fh)).clamp(1, height)
    x0 = (torch.rand(n, device=device) * (width - w + 1)).floor()
    y0 = (torch.rand(n, device=device) * (height - h + 1)).floor()
    x0 = torch.where(found, x0, ((width - w) / 2).round())
    y0 = torch.where(found, y0, ((height - h) / 2).round())
    return torch.stack([x0, y0, w, h], dim=1)


def sample_region_boxes(valid_hw: torch.Tensor, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """`sample_crop_boxes` with each draw inside its own image's valid region (height, width), i.e. torchvision's
    `RandomResizedCrop.get_params` on each image as it is (a cache with room keeps whole images at their aspect ratio
    at the top-left of a box): area fraction ~ U(scale) of the region's area, log aspect ~ U(log ratio), the first
    of `tries` candidates that fits, at an integer position drawn uniformly; else the centre crop of the
    ratio-clamped region (torchvision's integer halving).

    valid_hw: N x 2 (height, width), one row per draw, on the device the boxes are drawn on.
    Returns N x 4 float boxes (x0, y0, w, h) in box pixels.
    """
    device = valid_hw.device
    n = valid_hw.shape[0]
    height, width = valid_hw[:, 0:1].float(), valid_hw[:, 1:2].float()  # N x 1
    w, h, found = first_fitting_candidate(n, tries, height, width, scale, ratio, device)
    height, width = height.squeeze(1), width.squeeze(1)
    in_ratio = width / height
    fw = torch.where(in_ratio > ratio[1], (height * ratio[1]).round(), width)
    fh = torch.where(in_ratio < ratio[0], (width / ratio[0]).round(), height)
    w = torch.where(found, w, fw).clamp(min=1).minimum(width)
    h = torch.where(found, h, fh).clamp(min=1).minimum(height)
    x0 = (torch.rand(n, device=device) * (width - w + 1)).floor()
    y0 = (torch.rand(n, device=device) * (height - h + 1)).floor()
    x0 = torch.where(found, x0, torch.div(width - w, 2, rounding_mode="floor"))
    y0 = torch.where(found, y0, torch.div(height - h, 2, rounding_mode="floor"))
    return torch.stack([x0, y0, w, h], dim=1)


def crop_flip_resize(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int,
                     supersample: int = 1) -> torch.Tensor:
    """Crop each image to its box, mirror it where `flip`, and resize it to `size` x `size`: one grid_sample.

    The sampling grid is torchvision's `resized_crop` (crop, then bilinear resize with align_corners=False):
    output pixel i samples input x0 + (i + 0.5) * w / size - 0.5. Crops are at most the input's size and mostly
    upsample, where bilinear needs no antialiasing.

    Args:
        x: float N x 3 x H x W (the images, already repeated for each view).
        boxes: N x 4 (x0, y0, w, h) in input pixels (`sample_crop_boxes`).
        flip: bool N, horizontal flip.
        supersample: k > 1 samples a k*size grid and averages k x k blocks: antialiasing for crops up to k x the
            output (a cache with room: crops are mostly larger than the output).
    Returns:
        N x 3 x size x size.
    """
    n, _, height, width = x.shape
    x0, y0, w, h = boxes.to(x.dtype).unbind(1)
    # Normalised coordinates (align_corners=False): pixel edge 0 is -1, edge W is +1.
    sx, sy = w / width, h / height
    tx, ty = (2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1
    sx = torch.where(flip.to(x.device), -sx, sx)
    # F.affine_grid's grid for the axis-aligned map [[sx, 0, tx], [0, sy, ty]], built directly: x depends on the
    # column only and y on the row only (affine_grid's general bmm and base-grid copies cost as much as the sampling).
    side = size * supersample
    base = (torch.arange(side, device=x.device, dtype=x.dtype) * 2 + 1) / side - 1  # pixel centres in [-1, 1]
    grid_x, grid_y = sx.unsqueeze(1) * base + tx.unsqueeze(1), sy.unsqueeze(1) * base + ty.unsqueeze(1)  # N x side
    grid = torch.stack([grid_x.unsqueeze(1).expand(n, side, side), grid_y.unsqueeze(2).expand(n, side, side)], -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


# --------------------------------------------------------------------------------------------- colour


def _luma(device, dtype) -> torch.Tensor:
    return torch.tensor(LUMA, device=device, dtype=dtype)


def hue_rotation(theta: torch.Tensor) -> torch.Tensor:
    """B x 3 x 3 RGB matrices that rotate colours about the grey axis (1, 1, 1) by `theta` radians.

    The linear stand-in for torchvision's HSV hue shift (the CSS `hue-rotate` construction): grey stays grey,
    the mean of the three channels is kept, and the direction matches torchvision's (red towards green for a
    positive shift). It is affine, so it fuses with the other colour steps; measured against kornia's exact HSV
    shift on random colours it is closer than the YIQ rotation (tests/test_augment.py).
    """
    cos, sin = theta.cos(), theta.sin()
    k, q = 1.0 / 3.0, math.sqrt(1.0 / 3.0)
    diag, lo, hi = cos + (1 - cos) * k, k * (1 - cos) - q * sin, k * (1 - cos) + q * sin
    return torch.stack([torch.stack([diag, lo, hi], -1),
                        torch.stack([hi, diag, lo], -1),
                        torch.stack([lo, hi, diag], -1)], -2)


@dataclass
class ColorParams:
    """Per-image photometric draws (B each): whether jitter applies, its four factors and order, grayscale."""

    jitter: torch.Tensor  # bool B
    brightness: torch.Tensor  # B, multiplier
    contrast: torch.Tensor  # B, blend weight with the grey mean
    saturation: torch.Tensor  # B, blend weight with the grey image
    hue: torch.Tensor  # B, fraction of a turn
    order: torch.Tensor  # B x 4 permutation of (brightness, contrast, saturation, hue)
    grayscale: torch.Tensor  # bool B


def sample_color_params(n: int, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2, device=None) -> ColorParams:
    """torchvision's ColorJitter ranges: factors ~ U(max(0, 1 - s), 1 + s), hue ~ U(-s, s); a random order per image."""
    b, c, s, hue = jitter
    return ColorParams(
        jitter=torch.rand(n, device=device) < jitter_p,
        brightness=_uniform(n, max(0.0, 1 - b), 1 + b, device),
        contrast=_uniform(n, max(0.0, 1 - c), 1 + c, device),
        saturation=_uniform(n, max(0.0, 1 - s), 1 + s, device),
        hue=_uniform(n, -hue, hue, device),
        order=torch.rand(n, 4, device=device).argsort(1),
        grayscale=torch.rand(n, device=device) < grayscale_p,
    )


def color_transforms(params: ColorParams, mean_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole photometric chain of each image as one affine map `rgb -> M @ rgb + t`.

    torchvision's formulas, each affine in RGB: brightness `b * x`; contrast `c * x + (1 - c) * mean(gray(x))`
    (the image's mean luma at that point of the chain, carried through exactly from `mean_rgb`); saturation
    `s * x + (1 - s) * gray(x)`; hue a rotation about the grey axis; then grayscale `gray(x)` in every channel. Unlike
    torchvision, values are clamped to [0, 1] once at the end rather than after every step.

    Args:
        mean_rgb: B x 3, each image's mean colour (before the chain).
    Returns:
        M: B x 3 x 3, t: B x 3.
    """
    n, device, dtype = mean_rgb.shape[0], mean_rgb.device, mean_rgb.dtype
    eye = torch.eye(3, device=device, dtype=dtype).expand(n, 3, 3)
    luma = _luma(device, dtype)
    gray = torch.ones(3, 1, device=device, dtype=dtype) * luma  # 3 x 3: every channel <- luma
    m, t = eye.clone(), torch.zeros(n, 3, device=device, dtype=dtype)
    b = params.brightness.to(dtype).view(n, 1, 1)
    c = params.contrast.to(dtype).view(n, 1, 1)
    s = params.saturation.to(dtype).view(n, 1, 1)
    hue = hue_rotation(params.hue.to(dtype) * 2 * math.pi)
    on = params.jitter.to(device)
    # The four steps' matrices do not depend on their position in the order; only contrast's offset does (it blends
    # with the mean grey level reached so far).
    candidates_m = torch.stack([b * eye, c * eye, s * eye + (1 - s) * gray, hue])  # 4 x B x 3 x 3
    idx = torch.arange(n, device=device)
    for position in range(4):
        step = params.order[:, position]
        mean_luma = ((m @ mean_rgb.unsqueeze(-1)).squeeze(-1) + t) @ luma  # B: mean grey level at this point
        step_m = torch.where(on.view(n, 1, 1), candidates_m[step, idx], eye)
        step_t = ((1 - c).view(n, 1) * mean_luma.view(n, 1)).expand(n, 3)  # contrast's offset ...
        step_t = torch.where((on & (step == 1)).view(n, 1), step_t, torch.zeros_like(t))  # ... only there
        m, t = step_m @ m, (step_m @ t.unsqueeze(-1)).squeeze(-1) + step_t
    gray_rows = params.grayscale.to(device).view(n, 1, 1)
    m = torch.where(gray_rows, gray @ m, m)
    t = torch.where(gray_rows.view(n, 1), (gray @ t.unsqueeze(-1)).squeeze(-1), t)
    return m, t


def apply_color(x: torch.Tensor, m: torch.Tensor, t: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """x: B x 3 x H x W in [0, 1]; per-image `M @ rgb + t`, clamped to [0, 1].

    With `mean` and `std` (3 floats each) the result is also normalised, `(clamped - mean) / std`, in the same
    pass: the normalisation is folded into M, t and the clamp's per-channel bounds (std > 0), so the view costs
    one matmul and one clamp instead of four passes over the batch.
    """
    b, c, h, w = x.shape
    lo, hi = 0.0, 1.0
    if mean is not None or std is not None:
        mean, std = (s.view(1, 3, 1) for s in _channel_stats(x, mean, std))
        m, t = m / std, (t.unsqueeze(-1) - mean) / std
        lo, hi = -mean / std, (1.0 - mean) / std
    else:
        t = t.unsqueeze(-1)
    out = torch.bmm(m, x.reshape(b, c, h * w)).add_(t)
    return out.clamp_(lo, hi).view(b, c, h, w)


def gaussian_blur_matrices(sigma: torch.Tensor, size: int, kernel_size: int) -> torch.Tensor:
    """n x size x size: row i holds the 1-D Gaussian of `sigma[j]` (`kernel_size` taps, normalised to sum 1)
    centred on pixel i, the taps past the border reflected back in (`... 2 1 | 0 1 2 ...`, kornia's and torch's
    "reflect" border). Blurring an axis of image j is then one product with matrix j.

    Why matrices and not kornia's `gaussian_blur2d`: a per-image sigma makes kornia run a grouped convolution
    with one group per image channel, which oneDNN runs slowly on the CPU (0.58 x its time for 128 views at 64 px,
    2 cores: benchmarks/step_pieces.py); the matrix product is the same sum (tests/test_augment.py checks it
    against kornia).
    """
    half = kernel_size // 2
    taps = torch.arange(-half, half + 1, device=sigma.device)
    weights = torch.exp(-(taps.to(sigma.dtype) ** 2) / (2 * sigma.unsqueeze(1) ** 2))
    weights = weights / weights.sum(1, keepdim=True)  # n x k
    source = (torch.arange(size, device=sigma.device).unsqueeze(1) + taps).abs()  # size x k, reflected at 0
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source).clamp(0, size - 1)  # and at the end
    matrices = torch.zeros(sigma.shape[0], size, size, device=sigma.device, dtype=sigma.dtype)
    return matrices.scatter_add_(2, source.expand(sigma.shape[0], -1, -1), weights.unsqueeze(1).expand(-1, size, -1))


def blur_selected(x: torch.Tensor, selected: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur (reflect border) with per-image sigma, applied only where `selected` (in place).

    x: B x C x H x W; selected: bool B; sigma: B. Linear with rows summing to 1, so it commutes with a per-channel
    affine map such as the normalisation (the views are blurred after it)."""
    idx = selected.nonzero().squeeze(1)
    if idx.numel():
        chosen = x[idx]
        n, c, h, w = chosen.shape
        s = sigma[idx].to(x.dtype)
        across = gaussian_blur_matrices(s, w, kernel_size)
        down = across if h == w else gaussian_blur_matrices(s, h, kernel_size)
        chosen = torch.bmm(chosen.reshape(n, c * h, w), across.transpose(1, 2).contiguous()).view(n, c, h, w)  # along W
        x[idx] = torch.matmul(down.unsqueeze(1), chosen)  # along H
    return x


# --------------------------------------------------------------------------------------------- two views


@dataclass
class ViewParams:
    """Every random draw of N views: crop boxes (N x 4: x0, y0, w, h), flips, colour, blur (bool N, sigma N)."""

    boxes: torch.Tensor
    flip: torch.Tensor
    color: ColorParams | None
    blur: torch.Tensor
    blur_sigma: torch.Tensor


class TwoViewAugment(torch.nn.Module):
    """Two independent random views of a uint8 batch, MoCo v2 recipe, on the batch's device.

    Args:
        image_size: side of the output views.
        crop_scale: area fraction range of the random resized crop.
        jitter: (brightness, contrast, saturation, hue) strengths of the colour jitter.
        jitter_p: probability of applying the colour jitter.
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of the Gaussian blur; blur_sigma its sigma range (pixels of the output).
        hflip: random horizontal flip with p 0.5.
        crop_ratio: aspect ratio (w / h) range of the random resized crop.
        mean, std: the normalisation of the views (3 floats each; default ImageNet's).

    forward(x_uint8: uint8 B x 3 x S x S, return_geometric=False, valid_hw=None) -> (v1, v2), each normalised
    float B x 3 x image_size x image_size; with `return_geometric`, also v1's crop and flip without the photometric
    steps (the `geometric` reconstruction target of docs/method.md step 6). With `valid_hw` (B x 2: a cache with
    room, training.data), the crops are drawn in each image's valid region (`sample_region_boxes`) and sampled
    with ceil(box side / image_size) x supersampling (crops larger than the output are then antialiased).
    """

    def __init__(
        self,
        image_size,
        crop_scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=0.5,
        blur_sigma=(0.1, 2.0),
        hflip=True,
        crop_ratio=(3.0 / 4.0, 4.0 / 3.0),
        mean=None,
        std=None,
    ):
        super().__init__()
        self.mean = tuple(float(v) for v in (IMAGENET_MEAN if mean is None else mean))
        self.std = tuple(float(v) for v in (IMAGENET_STD if std is None else std))
        self.image_size = int(image_size)
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.crop_ratio = tuple(float(v) for v in crop_ratio)
        self.jitter = tuple(float(v) for v in jitter)
        # A step with probability 0 (or strength 0) is left out: with everything off, a view is exactly the
        # cropped input (what the tests check).
        self.jitter_p = float(jitter_p) if any(j > 0 for j in self.jitter) else 0.0
        self.grayscale_p = float(grayscale_p)
        self.blur_p = float(blur_p)
        self.blur_sigma = tuple(float(v) for v in blur_sigma)
        self.hflip = bool(hflip)
        self.blur_kernel = _blur_kernel_size(self.image_size)

    def kornia_reference(self):
        """The same recipe as a chain of kornia modules (the implementation this class replaced): the reference
        that tests check the view distribution against and that `benchmarks/step_cost.py` times beside it."""
        from kornia import augmentation as K

        size = (self.image_size, self.image_size)
        steps = [K.RandomResizedCrop(size, scale=self.crop_scale, ratio=self.crop_ratio, align_corners=False)]
        if self.hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if self.jitter_p > 0:
            steps.append(K.ColorJitter(*self.jitter, p=self.jitter_p))
        if self.grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=self.grayscale_p))
        if self.blur_p > 0:
            steps.append(K.RandomGaussianBlur((self.blur_kernel,) * 2, self.blur_sigma, p=self.blur_p))
        return K.AugmentationSequential(*steps)

    def sample_params(self, n: int, height: int, width: int, device=None, valid_hw: torch.Tensor | None = None
                      ) -> ViewParams:
        """Draw the random parameters of `n` views of `height` x `width` images; with `valid_hw` (n x 2), each
        view's crop inside its image's valid region (a cache with room)."""
        # Geometry first, so views with and without the photometric steps share their crops under one seed.
        if valid_hw is None:
            boxes = sample_crop_boxes(n, height, width, self.crop_scale, self.crop_ratio, device=device)
        else:
            boxes = sample_region_boxes(valid_hw.to(device), self.crop_scale, self.crop_ratio)
        flip = torch.rand(n, device=device) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool, device=device)
        color = None
        if self.jitter_p > 0 or self.grayscale_p > 0:
            color = sample_color_params(n, self.jitter, self.jitter_p, self.grayscale_p, device=device)
        return ViewParams(
            boxes=boxes,
            flip=flip,
            color=color,
            blur=torch.rand(n, device=device) < self.blur_p,
            blur_sigma=_uniform(n, *self.blur_sigma, device),
        )

    def render(self, x: torch.Tensor, params: ViewParams, repeats: int = 1, geometric_views: int = 0,
               supersample: int = 1):
        """The views of float images `x` (B x 3 x H x W in [0, 1]) under `params` (for `repeats * B` views, the
        images taken in turn). Returns the normalised views and the first `geometric_views` of them before the
        photometric steps (normalised too). `supersample`: see `crop_flip_resize`."""
        if supersample == 1:
            views = crop_flip_resize(x if repeats == 1 else x.repeat(repeats, 1, 1, 1), params.boxes, params.flip,
                                     self.image_size)
        else:  # a cache with room: its boxes are large, each view's share sampled from them without a repeated copy
            b = x.shape[0]
            views = torch.cat([crop_flip_resize(x, params.boxes[i * b : (i + 1) * b], params.flip[i * b : (i + 1) * b],
                                                self.image_size, supersample) for i in range(repeats)])
        geometric = normalize_images(views[:geometric_views], self.mean, self.std)
        if params.color is not None:  # colour, clamp and normalisation in one pass
            m, t = color_transforms(params.color, views.mean(dim=(2, 3)))
            views = apply_color(views, m, t, self.mean, self.std)
        else:
            views = normalize_images(views, self.mean, self.std)
        if self.blur_p > 0:  # after the normalisation: the blur is linear and keeps constants, the two commute
            views = blur_selected(views, params.blur, params.blur_sigma, self.blur_kernel)
        return views, geometric

    def forward(self, x_uint8: torch.Tensor, return_geometric: bool = False, valid_hw: torch.Tensor | None = None):
        # In float32 whatever autocast is on around it (the trainer's bf16 step): its matrix products would
        # otherwise round the views to bf16 before the encoder sees them.
        with torch.autocast(x_uint8.device.type, enabled=False):
            return self._views(x_uint8, return_geometric, valid_hw)

    def _views(self, x_uint8: torch.Tensor, return_geometric: bool, valid_hw: torch.Tensor | None):
        b, _, height, width = x_uint8.shape
        supersample = 1
        if valid_hw is not None:  # a cache with room: crops of each image's region, antialiased by supersampling
            valid_hw = valid_hw.to(x_uint8.device).repeat(2, 1)
            supersample = max(1, math.ceil(max(height, width) / self.image_size))
        params = self.sample_params(2 * b, height, width, device=x_uint8.device, valid_hw=valid_hw)
        if supersample == 1:  # both views' copies of the batch made in uint8, converted to float in one pass
            images, repeats = _to_float01(x_uint8.repeat(2, 1, 1, 1)), 1
        else:  # a cache with room samples each view's crops from the one float copy
            images, repeats = _to_float01(x_uint8), 2
        views, geometric = self.render(images, params, repeats=repeats,
                                       geometric_views=b if return_geometric else 0, supersample=supersample)
        v1, v2 = views[:b], views[b:]
        return (v1, v2, geometric) if return_geometric else (v1, v2)
