"""training.augment: two-view MoCo v2 augmentation on uint8 batches, normalisation, evaluation transform."""

import pytest
import torch

from fgssl.training.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TwoViewAugment,
    denormalize_images,
    eval_transform,
    normalize_images,
)

CROP_ONLY = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, hflip=False)


def _batch(b=4, s=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g)


def _coordinate_image(s=64):
    """uint8 1 x 3 x s x s whose red channel is 4 * column and green channel 4 * row (s <= 64)."""
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    return torch.stack([cols * 4, rows * 4, torch.zeros_like(rows)]).to(torch.uint8)[None]


def test_two_views_shapes_dtypes_and_independent_draws():
    x = _batch()
    v1, v2 = TwoViewAugment(32)(x)
    for v in (v1, v2):
        assert v.shape == (4, 3, 32, 32) and v.dtype == torch.float32
    assert not torch.allclose(v1, v2)  # two independent draws
    assert x.dtype == torch.uint8  # the input batch is not modified in place


def test_views_are_reproducible_under_manual_seed():
    x, aug = _batch(), TwoViewAugment(32)
    torch.manual_seed(123)
    a1, a2 = aug(x)
    torch.manual_seed(123)
    b1, b2 = aug(x)
    torch.manual_seed(124)
    c1, _ = aug(x)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)


def test_normalize_denormalize_round_trip():
    x = _batch()
    z = normalize_images(x)
    assert z.dtype == torch.float32
    assert torch.allclose(z, normalize_images(x.float() / 255))  # uint8 is divided by 255, float taken as 0..1
    assert torch.allclose(denormalize_images(z) * 255, x.float(), atol=1e-3)
    mean_image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert torch.allclose(normalize_images(mean_image), torch.zeros(1, 3, 4, 4), atol=1e-6)
    one_std_up = mean_image + torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(normalize_images(one_std_up), torch.ones(1, 3, 4, 4), atol=1e-6)
    assert denormalize_images(torch.full((1, 3, 2, 2), 100.0)).max() == 1.0  # clamped
    assert normalize_images(x[0]).shape == (3, 48, 48)  # unbatched input keeps its shape


def test_full_crop_without_other_augmentations_is_the_resized_input():
    x = _batch(s=48)
    same_size = TwoViewAugment(48, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **CROP_ONLY)
    v1, v2 = same_size(x)
    assert torch.equal(v1, normalize_images(x)) and torch.equal(v2, v1)
    upsized = TwoViewAugment(64, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **CROP_ONLY)
    assert torch.allclose(upsized(x)[0], eval_transform(x, 64), atol=1e-4)


@pytest.mark.parametrize("scale", [(0.2, 0.3), (0.6, 0.8)])
def test_crop_area_follows_crop_scale(scale):
    # With square crops and no flip, the span of the coordinate-coded pixels of a view is the crop's side.
    x = _coordinate_image(64).expand(16, -1, -1, -1)
    aug = TwoViewAugment(64, crop_scale=scale, crop_ratio=(1.0, 1.0), **CROP_ONLY)
    torch.manual_seed(0)
    view = denormalize_images(aug(x)[0]) * 255 / 4  # back to pixel coordinates of the input
    width = view[:, 0].amax((1, 2)) - view[:, 0].amin((1, 2)) + 1
    height = view[:, 1].amax((1, 2)) - view[:, 1].amin((1, 2)) + 1
    area = width * height / 64**2
    assert area.min() >= scale[0] - 0.04 and area.max() <= scale[1] + 0.04, area
    assert area.max() - area.min() > 0.01  # drawn at random within the range, not a fixed crop


def test_hflip_only_mirrors():
    x = _coordinate_image(32).expand(64, -1, -1, -1)
    aug = TwoViewAugment(32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0, grayscale_p=0, blur_p=0)
    torch.manual_seed(0)
    view = aug(x)[0]
    flipped = torch.isclose(view, normalize_images(x.flip(-1)), atol=1e-5).flatten(1).all(1)
    unchanged = torch.isclose(view, normalize_images(x), atol=1e-5).flatten(1).all(1)
    assert (flipped | unchanged).all() and flipped.any() and unchanged.any()


def test_grayscale_with_probability_one_gives_equal_channels():
    aug = TwoViewAugment(32, grayscale_p=1.0, jitter_p=0.0, blur_p=0.0)
    v = denormalize_images(aug(_batch())[0])
    assert torch.allclose(v[:, 0], v[:, 1], atol=1e-5) and torch.allclose(v[:, 1], v[:, 2], atol=1e-5)


def test_eval_transform_is_deterministic_resize_and_normalise():
    x = _batch(s=48)
    a, b = eval_transform(x, 32), eval_transform(x, 32)
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    assert torch.equal(eval_transform(x, 48), normalize_images(x))
    flat = torch.full((1, 3, 48, 48), 128, dtype=torch.uint8)
    assert torch.allclose(eval_transform(flat, 20), normalize_images(flat)[..., :20, :20], atol=1e-5)
