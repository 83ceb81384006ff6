"""A backbone keeps its own preprocessing (issue 23, item 2): a checkpoint whose image processor normalises with
mean/std 0.5 (ViT, CLIP, SigLIP style) is trained, evaluated and saved with 0.5, not ImageNet's statistics."""

import json

import numpy as np
import pytest
import torch

from fgssl.training.augment import IMAGENET_MEAN, TwoViewAugment, eval_transform
from fgssl.training.processor import build_image_processor, normalization_kwargs, source_processor_settings

HALF = [0.5, 0.5, 0.5]
#: What google/vit-base-patch16-224 ships (at a tiny size): square resize, no crop, mean/std 0.5.
VIT_PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
                 "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": HALF, "image_std": HALF}


def vit_folder(root):
    """A plain ViT backbone folder with its 0.5-normalising image processor."""
    from conftest import tiny_vit_config
    from transformers import ViTModel

    torch.manual_seed(0)
    ViTModel(tiny_vit_config(), add_pooling_layer=False).save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    return root


def png_folder(root, num_classes=3, per_class=6, size=40):
    """An image folder (train/ and test/ of class folders) of small coloured PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(num_classes):
            for i in range(per_class):
                path = root / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                base = np.zeros((size, size, 3), np.uint8) + np.uint8(60 * c + 20)
                noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(path)
    return root


def test_settings_are_read_from_the_processor_and_imagenet_stays_the_default(tmp_path):
    folder = vit_folder(tmp_path / "vit")
    settings = source_processor_settings(str(folder))
    assert settings["image_mean"] == HALF and settings["image_std"] == HALF and settings["image_size"] == 32
    processor = build_image_processor(32, **normalization_kwargs(settings))
    assert list(processor.image_mean) == HALF and list(processor.image_std) == HALF
    # No processor: nothing to follow, ImageNet's statistics.
    assert source_processor_settings(str(tmp_path)) is None and source_processor_settings(None) is None
    assert list(build_image_processor(32).image_mean) == list(IMAGENET_MEAN)


def test_views_and_evaluation_view_use_the_given_statistics():
    grey = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)  # white: (1 - 0.5) / 0.5 = 1 with 0.5 stats
    torch.testing.assert_close(eval_transform(grey, 16, HALF, HALF), torch.ones(2, 3, 16, 16))
    augment = TwoViewAugment(16, jitter_p=0, grayscale_p=0, blur_p=0, mean=HALF, std=HALF)
    v1, v2 = augment(grey)
    torch.testing.assert_close(v1, torch.ones_like(v1))
    assert not torch.allclose(eval_transform(grey, 16), torch.ones(2, 3, 16, 16))  # ImageNet's by default


def test_pretraining_from_a_half_normalised_vit_trains_evaluates_and_saves_with_its_statistics(tmp_path, monkeypatch):
    from fgssl.training import pretrain
    from fgssl.training.trainer import FGSSLTrainer

    seen = {}
    original_init = FGSSLTrainer.__init__

    def spy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        seen["views"] = (self.augment.mean, self.augment.std)

    monkeypatch.setattr(FGSSLTrainer, "__init__", spy)
    import fgssl.training.evaluation as evaluation

    original_transform = evaluation.eval_transform
    used = []

    def eval_spy(x, size, mean=None, std=None):
        used.append((mean, std))
        return original_transform(x, size, mean, std)

    monkeypatch.setattr(evaluation, "eval_transform", eval_spy)
    out = tmp_path / "run"
    pretrain.main(["--backbone", str(vit_folder(tmp_path / "vit")), "--method", "plain", "--queue_size", "32",
                   "--max_steps", "1", "--max_train_samples", "32", "--max_eval_samples", "12", "--image_size", "32",
                   "--per_device_train_batch_size", "16", "--report_to", "none", "--disable_tqdm", "true",
                   "--compare_with_start", "false", "--linear_backend", "torch", "--output_dir", str(out)])
    assert seen["views"] == (tuple(HALF), tuple(HALF))
    assert used and all(list(mean) == HALF and list(std) == HALF for mean, std in used)
    for folder in (out, out / "encoder"):
        saved = json.loads((folder / "preprocessor_config.json").read_text())
        assert saved["image_mean"] == HALF and saved["image_std"] == HALF, folder
    settings = json.loads((out / "eval_results.json").read_text())["settings"]
    assert settings["image_mean"] == HALF and settings["image_std"] == HALF
    assert "mean (0.5, 0.5, 0.5)" in (out / "README.md").read_text()


def test_fgssl_eval_follows_the_model_processor(tmp_path):
    from fgssl.training import eval as eval_cli

    results = eval_cli.main(["--model_name_or_path", str(vit_folder(tmp_path / "vit")), "--dataset_name",
                             str(png_folder(tmp_path / "data")), "--protocols", "retrieval",
                             "--output_dir", str(tmp_path / "eval"), "--device", "cpu"])
    assert results["settings"]["image_mean"] == HALF and results["settings"]["image_std"] == HALF
    assert results["settings"]["image_size"] == 32  # the processor's side (no --image_size given)


def test_finetuning_follows_the_backbone_processor(tmp_path):
    from fgssl.training import finetune

    out = tmp_path / "ft"
    finetune.main(["--model_name_or_path", str(vit_folder(tmp_path / "vit")), "--dataset_name",
                   str(png_folder(tmp_path / "data")), "--output_dir", str(out), "--per_device_train_batch_size",
                   "6", "--max_steps", "1", "--use_cpu", "--disable_tqdm", "true", "--eval_strategy", "no",
                   "--save_strategy", "no"])
    for name in ("adapter", "merged"):
        saved = json.loads((out / name / "preprocessor_config.json").read_text())
        assert saved["image_mean"] == HALF and saved["crop_size"] == {"height": 32, "width": 32}, name
