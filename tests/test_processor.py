"""The image processor saved with every model reproduces the training pipeline (decode once, then eval view)."""

import numpy as np
import pytest
import torch
from PIL import Image

from fgssl.training.augment import eval_transform
from fgssl.training.decoding import decode_image
from fgssl.training.processor import build_image_processor, processor_image_size


def smooth_image(width, height, mode="RGB", seed=0):
    """A photo-like image (smooth colour blobs) in any mode."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 4), dtype=np.uint8)
    return Image.fromarray(cells, "RGBA").resize((width, height), Image.Resampling.BICUBIC).convert(mode)


def training_view(image, size):
    """What the encoder saw in training: decode once (training.data), then the evaluation view."""
    return eval_transform(torch.from_numpy(decode_image(image, size))[None], size)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
@pytest.mark.parametrize("width, height", [(50, 70), (123, 457), (90, 33)])
def test_processor_output_is_the_training_view(mode, width, height):
    image = smooth_image(width, height, mode)
    processor = build_image_processor(32)
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pixel_values, training_view(image, 32), atol=1e-5, rtol=0)


def test_processor_stays_close_on_big_images():
    # Decoding pre-shrinks big images with a box filter (Pillow's reducing_gap) that the processor does not use.
    image = smooth_image(1000, 1400, "RGB")
    difference = (build_image_processor(48)(images=image, return_tensors="pt")["pixel_values"]
                  - training_view(image, 48)).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.15


def test_processor_size_round_trips(tmp_path):
    build_image_processor(40).save_pretrained(tmp_path)
    assert processor_image_size(tmp_path) == 40 and processor_image_size(tmp_path / "none") is None
    with pytest.raises(ValueError, match="image_size"):
        build_image_processor(0)


def test_finetuned_folders_carry_the_processor_and_no_path(tmp_path):
    from transformers import AutoImageProcessor

    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel
    from fgssl.training.finetuning import apply_lora, build_classifier, save_finetuned

    FGSSLModel(tiny_fgssl_config("vit")).save_pretrained(tmp_path / "encoder")
    model = apply_lora(build_classifier(str(tmp_path / "encoder"), num_labels=3))
    paths = save_finetuned(model, tmp_path / "ft", build_image_processor(32))
    assert set(paths) == {"adapter", "merged"}
    for path in paths.values():
        assert AutoImageProcessor.from_pretrained(path).crop_size == {"height": 32, "width": 32}
    # peft writes the base model's path into adapter_config.json and its card: made portable first.
    leaks = [p.name for p in (tmp_path / "ft").rglob("*") if p.is_file() and str(tmp_path).encode() in p.read_bytes()]
    assert leaks == []
