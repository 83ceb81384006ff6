"""A cache with room (`--cache_size_factor` F > 1): whole images at their aspect ratio in an F*S box, crops drawn in
each image's valid region, evaluation with the processor's crop_pct; F = 1 is today's cache, bit for bit."""

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from fgssl.training import data
from fgssl.training.augment import (
    DEFAULT_CROP_PCT,
    TwoViewAugment,
    eval_resize_side,
    eval_transform,
    eval_transform_regions,
    normalize_images,
)
from fgssl.training.decoding import boxed_output_size, decode_image, decode_image_boxed

REPO = Path(__file__).resolve().parents[1]
#: The commit before the cache with room: F = 1 must reproduce its decode and its views exactly.
BEFORE = "e99f06d"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _photo(width, height, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // 20 + 2, width // 20 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(cells).resize((width, height), Image.Resampling.BICUBIC))


# --------------------------------------------------------------------------------------------- decoding


def test_boxed_decode_keeps_the_aspect_and_records_the_valid_region():
    # 200 x 100 (w x h): left half red, right half blue; into a 64 box -> 64 x 32 at the top-left.
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100] = (255, 0, 0)
    arr[:, 100:] = (0, 0, 255)
    out, (h, w) = decode_image_boxed({"bytes": _png(arr), "path": None}, 64)
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8 and (h, w) == (32, 64)
    assert (out[0, :32, :30] > 230).all() and (out[2, :32, 34:64] > 230).all()  # the whole image, both halves
    # Outside the region: the region's last row / column repeated (edge padding).
    assert (out[:, 32:, :] == out[:, 31:32, :]).all()
    # Portrait: the longer side (height) becomes the box side.
    out, hw = decode_image_boxed(_png(np.zeros((90, 30, 3), np.uint8)), 60)
    assert hw == (60, 20)


def test_boxed_decode_never_upsamples_and_matches_a_plain_resize():
    small = _photo(50, 40)
    out, hw = decode_image_boxed(_png(small), 128)
    assert hw == (40, 50) and np.array_equal(out[:, :40, :50], small.transpose(2, 0, 1))  # as stored
    big = _photo(500, 375, seed=1)
    out, hw = decode_image_boxed(_png(big), 128)
    assert hw == (96, 128) == boxed_output_size(500, 375, 128)[::-1]
    reference = np.asarray(Image.fromarray(big).resize((128, 96), Image.Resampling.BICUBIC, reducing_gap=3))
    assert np.abs(out[:, :96, :128].astype(int) - reference.transpose(2, 0, 1)).max() <= 2
    # A JPEG decoded in draft mode still covers the box (no upsampling from a too-small draft).
    buf = io.BytesIO()
    Image.fromarray(_photo(1600, 1200, seed=2)).save(buf, "JPEG", quality=95)
    out, hw = decode_image_boxed(buf.getvalue(), 128)
    assert hw == (96, 128)


def test_prepare_images_with_room_keys_the_cache_by_the_factor(tmp_path):
    images = [Image.fromarray(_photo(60 + 10 * i, 40, seed=i)) for i in range(4)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["a", "b"])}))
    square, _ = data.prepare_images(ds, "image", "label", 16)
    same, _ = data.prepare_images(ds, "image", "label", 16, cache_size_factor=1.0)
    room, _ = data.prepare_images(ds, "image", "label", 16, cache_size_factor=2.0)
    room3, _ = data.prepare_images(ds, "image", "label", 16, cache_size_factor=3.0)
    assert same._fingerprint == square._fingerprint  # F = 1: today's cache key
    assert len({square._fingerprint, room._fingerprint, room3._fingerprint}) == 3  # F is in the key
    assert not data.has_room(square) and data.has_room(room)
    assert room.features["pixel_values"] == datasets.Array3D((3, 32, 32), "uint8")
    assert [tuple(room[i]["valid_hw"].tolist()) for i in range(4)] == [(21, 32), (18, 32), (16, 32), (14, 32)]
    batch = data.collate_uint8([room[i] for i in range(3)])
    assert batch["valid_hw"].dtype == torch.int64 and batch["valid_hw"].shape == (3, 2)
    assert "valid_hw" not in data.collate_uint8([square[i] for i in range(3)])
    with pytest.raises(ValueError, match="cache_size_factor"):
        data.cache_box_side(16, 0.5)


def _module_before(name: str):
    """training/<name>.py as it was at BEFORE (skip when git or the commit is not there)."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:training/{name}.py"], cwd=REPO, capture_output=True,
                                check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {BEFORE} not available")
    spec = importlib.util.spec_from_loader(f"_before_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{BEFORE}:training/{name}.py", "exec"), module.__dict__)
    return module


def test_factor_one_matches_before():
    before_decoding, before_augment = _module_before("decoding"), _module_before("augment")
    buf = io.BytesIO()
    Image.fromarray(_photo(640, 480, seed=3)).save(buf, "JPEG", quality=90)
    values = [{"bytes": _png(_photo(90, 70, seed=4)), "path": None}, buf.getvalue(), Image.fromarray(_photo(33, 50))]
    for value in values:
        assert np.array_equal(decode_image(value, 24), before_decoding.decode_image(value, 24))
    x = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for geometric in (False, True):
        torch.manual_seed(7)
        ours = TwoViewAugment(16)(x, return_geometric=geometric)
        torch.manual_seed(7)
        theirs = before_augment.TwoViewAugment(16)(x, return_geometric=geometric)
        # The same draws and the same sums; since then the views' arithmetic was regrouped for speed (the grid built
        # directly, the normalisation folded into the colour map, the blur as matrix products): float rounding only.
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ours, theirs))
    assert torch.equal(eval_transform(x, 16), before_augment.eval_transform(x, 16))


# --------------------------------------------------------------------------------------------- views


def test_views_from_room_stay_inside_each_valid_region():
    # Each image: its valid region grey 200 and one row / column of edge padding (what bilinear sampling at the
    # region's border reads, as at an image's border), the rest of the box black: any deeper leak would show.
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    valid = torch.tensor([[32, 32], [16, 32], [32, 10], [8, 8]])
    for i, (h, w) in enumerate(valid.tolist()):
        x[i, :, : h + 1, : w + 1] = 200
    aug = TwoViewAugment(16, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    torch.manual_seed(0)
    for _ in range(20):
        v1, v2 = aug(x, valid_hw=valid)
        for v in (v1, v2):
            assert torch.allclose(v, normalize_images(torch.full_like(x[:, :, :16, :16], 200)), atol=1e-4)


def test_eval_on_room_resizes_the_shorter_side_and_centre_crops():
    assert eval_resize_side(224, DEFAULT_CROP_PCT) == 256 and eval_resize_side(64, 0.875) == 73
    assert eval_resize_side(64, 64 / 73) == 73  # a crop_pct read back from a saved processor
    # Region 40 x 80 (h x w) in a 96 box; crop_pct 0.5 at S 20: shorter side -> 40 (no resize), centre 20 crop.
    x = torch.zeros(1, 3, 96, 96, dtype=torch.uint8)
    x[0, 0, :40, :80] = torch.arange(80, dtype=torch.uint8).expand(40, 80)  # red = column
    x[0, 1, :40, :80] = torch.arange(40, dtype=torch.uint8)[:, None].expand(40, 80)  # green = row
    out = eval_transform_regions(x, torch.tensor([[40, 80]]), 20, 0.5)
    expected = x[:, :, 10:30, 30:50]
    assert torch.allclose(out, normalize_images(expected), atol=1e-5)
    # crop_pct 1 of a square region of side S is the region itself, as the square cache's eval.
    y = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    assert torch.allclose(eval_transform_regions(y, torch.tensor([[20, 20], [20, 20]]), 20, 1.0),
                          eval_transform(y[:, :, :20, :20], 20), atol=1e-6)


def test_embed_and_processor_use_crop_pct_on_room(tmp_path):
    from fgssl.training.evaluation import embed_dataset
    from fgssl.training.processor import build_image_processor, processor_crop_pct

    processor = build_image_processor(64, crop_pct=DEFAULT_CROP_PCT)
    assert processor.size == {"shortest_edge": 73} and processor.crop_size == {"height": 64, "width": 64}
    assert processor_crop_pct(processor) == pytest.approx(64 / 73)
    square = build_image_processor(64)
    assert square.size == {"shortest_edge": 64} and processor_crop_pct(square) == 1.0

    seen = []

    class Probe(torch.nn.Module):  # records the inputs; pooler_output = their mean colour
        def forward(self, pixel_values):
            seen.append(pixel_values)
            return type("Out", (), {"pooler_output": pixel_values.mean(dim=(2, 3))})()

    images = [Image.fromarray(_photo(80, 60, seed=i)) for i in range(3)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=["a", "b"])}))
    room, _ = data.prepare_images(ds, "image", "label", 16, cache_size_factor=2.0)
    import fgssl.training.evaluation as evaluation

    original = evaluation.as_encoder
    evaluation.as_encoder = lambda model: model
    try:
        embed_dataset(Probe(), room, device="cpu", image_size=16)
        embed_dataset(Probe(), room, device="cpu", image_size=16, crop_pct=1.0)
        with pytest.raises(ValueError, match="image_size"):
            embed_dataset(Probe(), room, device="cpu")
    finally:
        evaluation.as_encoder = original
    pixels = torch.stack([torch.as_tensor(room[i]["pixel_values"]) for i in range(3)]).to(torch.uint8)
    valid = torch.stack([torch.as_tensor(room[i]["valid_hw"]) for i in range(3)])
    assert torch.allclose(seen[0], eval_transform_regions(pixels, valid, 16, DEFAULT_CROP_PCT))
    assert torch.allclose(seen[1], eval_transform_regions(pixels, valid, 16, 1.0))
    assert not torch.allclose(seen[0], seen[1])


def test_run_fingerprint_names_the_factor_only_when_on():
    from fgssl.training.arguments import DataArguments, PretrainingDataArguments  # noqa: F401
    from fgssl.training.runinfo import _cache_room

    assert _cache_room(PretrainingDataArguments()) == {}
    assert _cache_room(PretrainingDataArguments(cache_size_factor=2.0)) == {"cache_size_factor": 2.0}


def test_finetune_collator_on_room():
    from fgssl.training.finetuning import ClassificationCollator

    x = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    valid = [[32, 20], [12, 32], [16, 16]]
    for i, (h, w) in enumerate(valid):
        x[i, :, : h + 1, : w + 1] = 100  # the region and its one row / column of edge padding
    examples = [{"pixel_values": x[i], "valid_hw": torch.tensor(valid[i]), "labels": i} for i in range(3)]
    flat = normalize_images(torch.full((3, 3, 16, 16), 100, dtype=torch.uint8))
    train = ClassificationCollator(16, train=True)(examples)["pixel_values"]
    test = ClassificationCollator(16, train=False)(examples)["pixel_values"]
    assert train.shape == test.shape == (3, 3, 16, 16)
    assert torch.allclose(train, flat, atol=1e-4) and torch.allclose(test, flat, atol=1e-4)


def test_tiny_pretrain_eval_finetune_with_room(tmp_path, monkeypatch):
    """fgssl-pretrain, fgssl-eval and fgssl-finetune with --cache_size_factor 2 on the embedded dataset: the run's
    fingerprint names the factor, the saved processor says the evaluation crop, and evaluation records it."""
    import json

    from fgssl.training import eval as eval_cli
    from fgssl.training import finetune, pretrain

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    run = tmp_path / "run"
    common = ["--max_train_samples", "48", "--image_size", "32", "--cache_size_factor", "2"]
    pretrain.main(["--method", "plain", "--max_steps", "2", *common, "--max_eval_samples", "24",
                   "--per_device_train_batch_size", "16", "--output_dir", str(run), "--report_to", "none",
                   "--disable_tqdm", "true", "--save_steps", "100", "--use_cpu", "true"])
    info = json.loads((run / "fgssl_run.json").read_text())
    assert info["fingerprint"]["cache_size_factor"] == 2.0
    processor = json.loads((run / "encoder" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 36} and processor["crop_size"] == {"height": 32, "width": 32}
    results = json.loads((run / "eval_results.json").read_text())
    assert results["settings"]["crop_pct"] == pytest.approx(32 / 36)
    assert results["settings"]["cache_size_factor"] == 2.0
    assert json.loads((run / "training_config.json").read_text())["data"]["cache_size_factor"] == 2.0
    evaluated = eval_cli.main(["--model_name_or_path", str(run / "encoder"), "--dataset_name", "synthetic",
                               "--protocols", "knn", *common, "--max_eval_samples", "16", "--device", "cpu",
                               "--output_dir", str(tmp_path / "eval")])
    assert evaluated["settings"]["crop_pct"] == pytest.approx(32 / 36)
    finetune.main(["--model_name_or_path", str(run), "--dataset_name", "synthetic", "--method", "full",
                   "--max_steps", "1", *common, "--max_eval_samples", "16", "--per_device_train_batch_size", "8",
                   "--use_cpu", "true", "--output_dir", str(tmp_path / "ft"), "--eval_strategy", "steps",
                   "--eval_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none"])
    tuned = json.loads((tmp_path / "ft" / "model" / "preprocessor_config.json").read_text())
    assert tuned["size"] == {"shortest_edge": 36}
