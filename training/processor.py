"""The image processor saved with every fgssl model: what a user runs to feed the encoder as it was trained.

Training decodes each image once (`training.data.decode_image`: any mode to RGB, shorter side resized to S with
bicubic, centre S x S crop, uint8) and `training.augment.eval_transform` scales it to [0, 1] and normalises it with
ImageNet's mean and std. transformers' `BitImageProcessor` does exactly these steps (shortest-edge resize, centre
crop, rescale, normalise, RGB conversion with transparency on white), so it is the processor for every backbone:

    processor = build_image_processor(64)
    processor.save_pretrained(folder)          # preprocessor_config.json
    AutoImageProcessor.from_pretrained(folder)  # BitImageProcessor (torchvision) or BitImageProcessorPil

It needs no fgssl code: the saved `preprocessor_config.json` names a transformers class.
"""

from __future__ import annotations

import json
from pathlib import Path

from .augment import IMAGENET_MEAN, IMAGENET_STD

PROCESSOR_CONFIG_NAME = "preprocessor_config.json"


def build_image_processor(image_size: int):
    """The image processor for an encoder trained at `image_size` (the cached training resolution S).

    The PIL backend is built (it needs no torchvision); the saved config names `BitImageProcessor`, so
    `AutoImageProcessor` picks the torchvision backend where torchvision is installed, with the same steps.
    """
    from transformers import BitImageProcessorPil
    from transformers.image_utils import PILImageResampling

    size = int(image_size)
    if size <= 0:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
    return BitImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def processor_image_size(folder) -> int | None:
    """The input side recorded in `folder`'s preprocessor_config.json (its crop size), or None without one."""
    path = Path(folder) / PROCESSOR_CONFIG_NAME
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    crop = config.get("crop_size") or {}
    size = config.get("size") or {}
    value = crop.get("height") or size.get("shortest_edge") or size.get("height")
    return int(value) if value else None


__all__ = ["PROCESSOR_CONFIG_NAME", "build_image_processor", "processor_image_size"]
