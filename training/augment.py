"""Batched image augmentation on the accelerator (kornia), from the cached uint8 batches of training.data.

The MoCo v2 recipe (METHOD.md): random resized crop (scale 0.2-1), colour jitter 0.4/0.4/0.4/0.1 with
p 0.8, grayscale p 0.2, Gaussian blur p 0.5 (sigma 0.1-2), horizontal flip, then ImageNet normalisation.
Every strength is a constructor argument so that it can be ablated. Randomness comes from torch's
generator on the batch's device, so `torch.manual_seed` makes the views reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia import augmentation as K

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_float01(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float 0..1; a float tensor is taken to be in [0, 1] already."""
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as 1 x 3 x 1 x 1 tensors on x's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """(x / 255 - mean) / std for uint8 input, (x - mean) / std for float input in [0, 1].

    x: B x 3 x H x W (or 3 x H x W). Returns float32 of the same shape.
    """
    mean, std = _channel_stats(x)
    return ((_to_float01(x) - mean) / std).reshape(x.shape)


def denormalize_images(x: torch.Tensor) -> torch.Tensor:
    """Inverse of normalize_images: x * std + mean, clamped to [0, 1] (for saving pictures).

    x: B x 3 x H x W (or 3 x H x W) normalised float. Returns float in [0, 1], same shape.
    """
    mean, std = _channel_stats(x)
    return (x.float() * std + mean).clamp(0.0, 1.0).reshape(x.shape)


def _resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a float B x 3 x H x W batch to image_size x image_size (no-op if equal)."""
    if x.shape[-2:] == (image_size, image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


def eval_transform(x_uint8: torch.Tensor, image_size: int) -> torch.Tensor:
    """Deterministic evaluation view: resize to image_size and normalise.

    x_uint8: uint8 B x 3 x S x S (already centre-cropped by training.data). Returns normalised float
    B x 3 x image_size x image_size.
    """
    return normalize_images(_resize(_to_float01(x_uint8), image_size))


def _blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel of about 10% of the image side (MoCo v2: 23 px at 224), at least 3."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 == 1 else k + 1


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
        crop_ratio: aspect ratio range of the random resized crop.

    forward(x_uint8: uint8 B x 3 x S x S) -> (v1, v2), each normalised float B x 3 x image_size x image_size.
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
    ):
        super().__init__()
        self.image_size = int(image_size)
        # align_corners=False: the same pixel grid as F.interpolate in eval_transform (torchvision's convention).
        crop = K.RandomResizedCrop(
            (self.image_size, self.image_size), scale=tuple(crop_scale), ratio=tuple(crop_ratio), align_corners=False
        )
        steps = [crop]
        if hflip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        # A step with probability 0 is left out rather than kept as a no-op: fewer kernels, and with
        # everything off a view is exactly the cropped input (what the tests check).
        if jitter_p > 0 and any(j > 0 for j in jitter):
            steps.append(K.ColorJitter(*jitter, p=jitter_p))
        if grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=grayscale_p))
        if blur_p > 0:
            kernel = _blur_kernel_size(self.image_size)
            steps.append(K.RandomGaussianBlur((kernel, kernel), tuple(blur_sigma), p=blur_p))
        self.pipeline = K.AugmentationSequential(*steps)

    def view(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """One random view: uint8 B x 3 x S x S -> normalised float B x 3 x image_size x image_size."""
        return normalize_images(self.pipeline(_to_float01(x_uint8)))

    def forward(self, x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views with independent random parameters (two draws from the generator)."""
        return self.view(x_uint8), self.view(x_uint8)
