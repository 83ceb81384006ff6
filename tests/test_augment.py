"""training.augment: two-view MoCo v2 augmentation on uint8 batches, normalisation, evaluation transform."""

import pytest
import torch

import math

from fgssl.training.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TwoViewAugment,
    apply_color,
    blur_selected,
    color_transforms,
    crop_flip_resize,
    denormalize_images,
    eval_transform,
    hue_rotation,
    normalize_images,
    sample_color_params,
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
    # One affine grid_sample does crop + flip + resize: the identity crop is exact up to float rounding.
    assert torch.allclose(v1, normalize_images(x), atol=1e-4) and torch.allclose(v2, v1, atol=1e-4)
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


# ---------------------------------------------------------------------------------------------------------------
# The fused implementation against the kornia chain it replaced (the reference recipe)
# ---------------------------------------------------------------------------------------------------------------
RECIPE = dict(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2, blur_p=0.5)


def _kornia_reference_params(n: int, size: int = 16) -> dict:
    """Draw n views with the kornia chain of the same recipe (the previous implementation) and read its draws."""
    seq = TwoViewAugment(size, **RECIPE).kornia_reference()
    torch.manual_seed(0)
    seq(torch.rand(n, 3, size, size))
    p = {item.name.rsplit("_", 1)[0]: item.data for item in seq._params}
    src = p["RandomResizedCrop"]["src"]  # n x 4 corners (x, y)
    w = src[:, 1, 0] - src[:, 0, 0] + 1
    h = src[:, 2, 1] - src[:, 1, 1] + 1
    jit = p["ColorJitter"]
    return dict(
        area=(w * h / size**2), aspect=(w / h), flip=p["RandomHorizontalFlip"]["batch_prob"].float(),
        jitter=jit["batch_prob"].float(), brightness=jit["brightness_factor"], contrast=jit["contrast_factor"],
        saturation=jit["saturation_factor"], hue=jit["hue_factor"], grayscale=p["RandomGrayscale"]["batch_prob"].float(),
        blur=p["RandomGaussianBlur"]["batch_prob"].float(), sigma=p["RandomGaussianBlur"]["sigma"],
    )


def _fused_params(n: int, size: int = 16) -> dict:
    aug = TwoViewAugment(size, **RECIPE)
    torch.manual_seed(1)
    p = aug.sample_params(n, size, size)
    x0, y0, w, h = p.boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= size).all() and (y0 + h <= size).all()
    c = p.color
    return dict(area=w * h / size**2, aspect=w / h, flip=p.flip.float(), jitter=c.jitter.float(),
                brightness=c.brightness, contrast=c.contrast, saturation=c.saturation, hue=c.hue,
                grayscale=c.grayscale.float(), blur=p.blur.float(), sigma=p.blur_sigma)


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (max distance between the empirical CDFs)."""
    grid = torch.cat([a, b]).sort().values
    cdf = lambda v: torch.searchsorted(v.sort().values.contiguous(), grid, right=True).float() / len(v)  # noqa: E731
    return float((cdf(a) - cdf(b)).abs().max())


def test_view_distribution_matches_the_kornia_recipe():
    n = 4000
    ref, ours = _kornia_reference_params(n), _fused_params(n)
    # Crop scale and aspect histograms: the same distribution (KS distance well under what n = 4000 would show
    # for a real difference; 0.03 is about the 5 % critical value).
    for name in ("area", "aspect"):
        assert _ks(ref[name], ours[name]) < 0.035, name
    # Jitter factors: same ranges and the same (uniform) distribution.
    for name in ("brightness", "contrast", "saturation", "hue", "sigma"):
        assert _ks(ref[name], ours[name]) < 0.035, name
        assert abs(float(ref[name].min()) - float(ours[name].min())) < 0.02, name
        assert abs(float(ref[name].max()) - float(ours[name].max())) < 0.02, name
    # Rates of flip, jitter, grayscale and blur.
    for name in ("flip", "jitter", "grayscale", "blur"):
        assert abs(float(ref[name].mean()) - float(ours[name].mean())) < 0.03, name


def _torchvision_rrc_params(n: int, height: int, width: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's `RandomResizedCrop.get_params`, as written there (one draw at a time), on a height x width
    image: the reference for crops of the ORIGINAL image. Returns area fractions and aspects (w / h)."""
    area, aspect = [], []
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(n):
        for _ in range(10):
            target = height * width * torch.empty(1).uniform_(scale[0], scale[1]).item()
            r = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
            w, h = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
            if 0 < w <= width and 0 < h <= height:
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
        area.append(w * h / (height * width))
        aspect.append(w / h)
    return torch.tensor(area), torch.tensor(aspect)


@pytest.mark.parametrize("original", [(375, 500), (500, 333), (100, 1000)])
def test_crops_from_a_cache_with_room_follow_random_resized_crop_on_the_original(original):
    """The cache with room (training.data, cache_size_factor 2 at S = 64: the whole image in a 128 box) draws its
    crops in each image's valid region; their scale and aspect follow torchvision's RandomResizedCrop on the original
    image (the last case mostly takes the centre-crop fallback), and they stay inside the region."""
    from fgssl.training.augment import sample_region_boxes
    from fgssl.training.decoding import boxed_output_size

    n = 4000
    height, width = original
    w_box, h_box = boxed_output_size(width, height, 128)
    torch.manual_seed(0)
    ref_area, ref_aspect = _torchvision_rrc_params(n, height, width)
    aug = TwoViewAugment(64, **RECIPE)
    torch.manual_seed(1)
    valid = torch.tensor([[h_box, w_box]]).expand(n, 2)
    boxes = aug.sample_params(n, 128, 128, valid_hw=valid).boxes
    assert torch.equal(boxes, boxes.round())
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= w_box).all() and (y0 + h <= h_box).all()
    area, aspect = w * h / (h_box * w_box), w / h
    # Rounding to whole pixels of a 2.6 - 7.8 x smaller region moves scale and aspect by a few percent at most.
    if float(ref_area.std()) > 1e-3:  # (the fallback alone is one point: compared by its value below)
        assert _ks(ref_area, area) < 0.04 and _ks(ref_aspect, aspect) < 0.04
    assert abs(float(ref_area.mean()) - float(area.mean())) < 0.02
    assert abs(float(ref_aspect.log().mean()) - float(aspect.log().mean())) < 0.03
    # Mixed regions in one batch: each draw inside its own.
    mixed = torch.tensor([[h_box, w_box], [128, 128], [30, 128], [128, 7]]).repeat(500, 1)
    x0, y0, w, h = aug.sample_params(len(mixed), 128, 128, valid_hw=mixed).boxes.unbind(1)
    assert (x0 + w <= mixed[:, 1]).all() and (y0 + h <= mixed[:, 0]).all() and (w >= 1).all() and (h >= 1).all()


def test_fused_colour_steps_follow_torchvision_formulas():
    from kornia.enhance import (
        adjust_brightness_accumulative,
        adjust_contrast_with_mean_subtraction,
        adjust_hue,
        adjust_saturation_with_gray_subtraction,
    )

    torch.manual_seed(0)
    x = torch.rand(16, 3, 12, 12) * 0.5 + 0.25  # mid-range: no clamping inside the chain
    params = sample_color_params(16, jitter=(0.3, 0.3, 0.3, 0.0), jitter_p=1.0, grayscale_p=0.0)
    params.order = torch.tensor([0, 1, 2, 3]).expand(16, 4)  # brightness, contrast, saturation, hue
    m, t = color_transforms(params, x.mean(dim=(2, 3)))
    expected = adjust_brightness_accumulative(x, params.brightness)
    expected = adjust_contrast_with_mean_subtraction(expected, params.contrast)
    expected = adjust_saturation_with_gray_subtraction(expected, params.saturation)
    assert torch.allclose(apply_color(x, m, t), expected.clamp(0, 1), atol=1e-5)
    # Without clamping, brightness, contrast and saturation commute (each keeps or scales the grey mean), so any
    # order of them gives the same image; only the hue rotation (which moves luma) makes the order matter.
    params.order = torch.tensor([2, 1, 0, 3]).expand(16, 4)
    assert torch.allclose(apply_color(x, *color_transforms(params, x.mean(dim=(2, 3)))), expected, atol=1e-5)
    # Grayscale: equal channels equal to the luma of the jittered image.
    params.grayscale = torch.ones(16, dtype=torch.bool)
    g = apply_color(x, *color_transforms(params, x.mean(dim=(2, 3))))
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
    # Hue: a rotation about the grey axis, keeps grey, turns red towards green like the exact HSV shift, and is
    # closer to it than the error of doing nothing.
    theta = torch.full((16,), 0.05 * 2 * math.pi)
    rot = hue_rotation(theta)
    grey = torch.full((16, 3, 2, 2), 0.4)
    assert torch.allclose(apply_color(grey, rot, torch.zeros(16, 3)), grey, atol=1e-6)
    exact = adjust_hue(x, theta)
    ours = apply_color(x, rot, torch.zeros(16, 3))
    assert (ours - exact).abs().mean() < (x - exact).abs().mean()
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1).expand(16, 3, 1, 1)
    shifted = apply_color(red.contiguous(), rot, torch.zeros(16, 3))
    assert (shifted[:, 1] > red[:, 1]).all()  # green grows, as torchvision's positive hue shift


def test_geometric_view_is_v1_without_photometric_steps():
    x = _batch(b=8, s=32)
    photometric_off = TwoViewAugment(32, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    full = TwoViewAugment(32)
    torch.manual_seed(5)
    v1_plain, _ = photometric_off(x)
    torch.manual_seed(5)
    v1, v2, geometric = full(x, return_geometric=True)
    # The same draws of crop and flip come first, so the geometric view equals the crop-only view ...
    assert torch.allclose(geometric, v1_plain, atol=1e-6)
    # ... and differs from v1 where a photometric step applied.
    assert not torch.allclose(geometric, v1, atol=1e-3)


# --------------------------------------------------------------------------------------------- the fast pieces
def test_blur_as_matrix_products_is_kornias_reflect_blur_with_per_image_sigma():
    from kornia.filters import gaussian_blur2d

    torch.manual_seed(0)
    for h, w, k in ((16, 16, 3), (64, 64, 7), (20, 24, 5)):
        x = torch.rand(6, 3, h, w)
        sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 1.5, 0.7])
        selected = torch.tensor([True, True, False, True, True, False])
        ours = blur_selected(x.clone(), selected, sigma, k)
        theirs = gaussian_blur2d(x[selected], (k, k), sigma[selected].unsqueeze(1).expand(-1, 2), border_type="reflect")
        assert torch.allclose(ours[selected], theirs, atol=1e-5)
        assert torch.equal(ours[~selected], x[~selected])  # the others untouched
    flat = torch.full((2, 3, 16, 16), 0.3)  # rows sum to one: a constant image stays (so it commutes with normalising)
    assert torch.allclose(blur_selected(flat, torch.ones(2, dtype=torch.bool), torch.tensor([2.0, 0.5]), 7), flat)


def test_colour_with_the_normalisation_folded_in_is_colour_then_normalise():
    torch.manual_seed(1)
    x = torch.rand(8, 3, 10, 12)
    params = sample_color_params(8, jitter=(0.8, 0.8, 0.8, 0.1), jitter_p=1.0, grayscale_p=0.3)
    m, t = color_transforms(params, x.mean(dim=(2, 3)))
    assert (apply_color(x, m, t) == 1).any()  # strong enough that the clamp bites
    for mean, std in ((IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))):
        expected = normalize_images(apply_color(x, m, t), mean, std)
        assert torch.allclose(apply_color(x, m, t, mean, std), expected, atol=1e-5)


def test_crop_grid_is_affine_grid_of_the_box():
    import torch.nn.functional as F

    torch.manual_seed(2)
    x = torch.rand(5, 3, 30, 40)
    boxes = torch.tensor([[0, 0, 40, 30], [3, 4, 10, 20], [10, 5, 30, 25], [0, 0, 1, 1], [39, 29, 1, 1]]).float()
    flip = torch.tensor([False, True, False, True, False])
    x0, y0, w, h = boxes.unbind(1)
    sx, sy = torch.where(flip, -w / 40, w / 40), h / 30
    zero = torch.zeros(5)
    theta = torch.stack([torch.stack([sx, zero, (2 * x0 + w) / 40 - 1], 1), torch.stack([zero, sy, (2 * y0 + h) / 30 - 1], 1)], 1)
    for size, supersample in ((16, 1), (8, 2)):
        grid = F.affine_grid(theta, [5, 3, size * supersample, size * supersample], align_corners=False)
        expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        expected = F.avg_pool2d(expected, supersample) if supersample > 1 else expected
        assert torch.allclose(crop_flip_resize(x, boxes, flip, size, supersample), expected, atol=1e-5)


def test_views_are_float32_under_an_outer_autocast():
    # The trainer computes the views inside its bf16 autocast; the augmentation's matrix products stay in float32.
    x = _batch(b=6, s=32)
    aug = TwoViewAugment(32)
    torch.manual_seed(3)
    plain = aug(x)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = aug(x)
    assert all(v.dtype == torch.float32 and torch.equal(v, w) for v, w in zip(under, plain))
