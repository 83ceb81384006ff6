"""The image processor saved with every fgssl model: what a user runs to feed the encoder as it was trained.

Training decodes each image once (`training.decoding.decode_image`: any mode to RGB, shorter side resized to S with
bicubic, centre S x S crop, uint8) and `training.augment.eval_transform` scales it to [0, 1] and normalises it with
ImageNet's mean and std. transformers' `BitImageProcessor` does exactly these steps (shortest-edge resize, centre
crop, rescale, normalise, RGB conversion with transparency on white), so it is the processor for every backbone:

    processor = build_image_processor(64)
    processor.save_pretrained(folder)          # preprocessor_config.json
    AutoImageProcessor.from_pretrained(folder)  # BitImageProcessor (torchvision) or BitImageProcessorPil

It needs no fgssl code: the saved `preprocessor_config.json` names a transformers class.

With a cache with room (training.data `cache_size_factor` > 1) the whole image is kept, and evaluation resizes its
shorter side to S / crop_pct and centre-crops S (crop_pct 0.875); `build_image_processor(S, crop_pct=0.875)` saves
those steps (shortest_edge int(S / 0.875), crop S).

The normalisation is the starting checkpoint's own: when `--backbone` or `--model_name_or_path` names a checkpoint
with an image processor (a ViT, CLIP, SigLIP or DINOv2 checkpoint, or an fgssl folder), `source_processor_settings`
reads its mean and std (and its input side), and the training views, the evaluation and the saved processor use
them; without one, ImageNet's statistics:

    settings = source_processor_settings("google/vit-base-patch16-224")   # {"image_mean": [0.5]*3, ...} or None
    processor = build_image_processor(224, **normalization_kwargs(settings))
"""

from __future__ import annotations

import json
from pathlib import Path

from .augment import IMAGENET_MEAN, IMAGENET_STD, eval_resize_side

PROCESSOR_CONFIG_NAME = "preprocessor_config.json"


def build_image_processor(image_size: int, image_mean=None, image_std=None, crop_pct: float = 1.0):
    """The image processor for an encoder trained at `image_size` (the cached training resolution S), normalising
    with `image_mean` / `image_std` (3 floats each; default ImageNet's).

    `crop_pct` < 1 (a cache with room, training.data `cache_size_factor` > 1, is evaluated so): the shorter side is
    resized to int(S / crop_pct) before the centre S x S crop (256 -> 224 at 0.875), as the evaluation did.

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
        size={"shortest_edge": eval_resize_side(size, crop_pct)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(_three(image_mean, IMAGENET_MEAN, "image_mean")),
        image_std=list(_three(image_std, IMAGENET_STD, "image_std")),
        do_convert_rgb=True,
    )


def _three(values, default, name: str) -> tuple[float, float, float]:
    """`values` as 3 floats (one float: the same for every channel); `default` when None."""
    if values is None:
        return tuple(float(v) for v in default)
    values = [values] if isinstance(values, (int, float)) else list(values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{name} must hold 3 values (one per RGB channel), got {values}.")
    return tuple(float(v) for v in values)


def _side(config: dict) -> int | None:
    """The input side of a processor config: its crop size, else its (shortest-edge or square) resize."""
    crop = config.get("crop_size") or {}
    size = config.get("size") or {}
    if isinstance(size, int):
        return size
    if isinstance(crop, int):
        return crop
    value = (crop.get("height") if config.get("do_center_crop", True) else None) or size.get("shortest_edge") or (
        size.get("height")) or crop.get("height")
    return int(value) if value else None


def processor_crop_pct(config_or_processor) -> float | None:
    """crop / shortest-edge resize of a processor config (dict) or image processor that resizes the shorter side and
    centre-crops (fgssl's, timm-style ones): the evaluation crop it describes; None for any other kind (or None)."""
    if config_or_processor is None:
        return None
    if not isinstance(config_or_processor, dict):  # an image processor: its saved form (sizes as plain dicts)
        config_or_processor = config_or_processor.to_dict()
    get = config_or_processor.get
    size, crop = get("size") or {}, get("crop_size") or {}
    if not get("do_center_crop") or not isinstance(size, dict) or not isinstance(crop, dict):
        return None
    edge, side = size.get("shortest_edge"), crop.get("height")
    if not edge or not side or side > edge:
        return None
    return float(side) / float(edge)


def processor_image_size(folder) -> int | None:
    """The input side recorded in `folder`'s preprocessor_config.json (its crop size), or None without one."""
    path = Path(folder) / PROCESSOR_CONFIG_NAME
    if not path.is_file():
        return None
    return _side(json.loads(path.read_text()))


def read_processor_config(name_or_path: str | None, local_files_only: bool = False) -> dict | None:
    """The preprocessor_config.json of a local folder or a Hub id (from the cache, else downloaded unless
    `local_files_only` or offline), or None: no name, no processor there, or the Hub unreachable."""
    if not name_or_path:
        return None
    folder = Path(str(name_or_path)).expanduser()
    if folder.is_dir():
        path = folder / PROCESSOR_CONFIG_NAME
        return json.loads(path.read_text()) if path.is_file() else None
    if folder.exists():
        return None
    try:
        from transformers.utils import cached_file

        path = cached_file(str(name_or_path), PROCESSOR_CONFIG_NAME, local_files_only=local_files_only,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:  # noqa: BLE001  (not a repository, gated, unreachable: no processor to follow)
        return None
    return json.loads(Path(path).read_text()) if path else None


def source_processor_settings(name_or_path: str | None, local_files_only: bool = False) -> dict | None:
    """What fgssl takes from the image processor of the checkpoint a run starts from: {"image_mean", "image_std"
    (3 floats each), "image_size" (its input side, or None), "source"}; None when it has no processor (then
    ImageNet's statistics are used) or the processor does not normalise."""
    config = read_processor_config(name_or_path, local_files_only=local_files_only)
    if not config or config.get("do_normalize") is False:
        return None
    if config.get("image_mean") is None or config.get("image_std") is None:
        return None
    std = _three(config["image_std"], IMAGENET_STD, "image_std")
    if not all(v > 0 for v in std):
        raise ValueError(f"The image processor of {name_or_path} has a non-positive image_std {list(std)}.")
    return {"image_mean": list(_three(config["image_mean"], IMAGENET_MEAN, "image_mean")), "image_std": list(std),
            "image_size": _side(config), "source": str(name_or_path)}


def normalization_kwargs(settings_or_processor) -> dict:
    """{"image_mean", "image_std"} of `source_processor_settings`' dict or of an image processor ({} for None)."""
    if settings_or_processor is None:
        return {}
    get = settings_or_processor.get if isinstance(settings_or_processor, dict) else (
        lambda name: getattr(settings_or_processor, name, None))
    mean, std = get("image_mean"), get("image_std")
    if mean is None or std is None:
        return {}
    return {"image_mean": list(_three(mean, IMAGENET_MEAN, "image_mean")),
            "image_std": list(_three(std, IMAGENET_STD, "image_std"))}


def describe_normalization(image_mean=None, image_std=None) -> str:
    """"ImageNet normalisation" or "normalisation with mean (...) and std (...)" for cards and logs."""
    mean, std = _three(image_mean, IMAGENET_MEAN, "image_mean"), _three(image_std, IMAGENET_STD, "image_std")
    if all(abs(a - b) < 1e-6 for a, b in zip(mean + std, IMAGENET_MEAN + IMAGENET_STD)):
        return "ImageNet normalisation"
    show = lambda v: ", ".join(f"{x:g}" for x in v)  # noqa: E731
    return f"normalisation with mean ({show(mean)}) and std ({show(std)})"


__all__ = ["PROCESSOR_CONFIG_NAME", "build_image_processor", "describe_normalization", "normalization_kwargs",
           "processor_crop_pct", "processor_image_size", "read_processor_config", "source_processor_settings"]
