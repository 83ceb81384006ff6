"""training.synthetic: the embedded fine-grained dataset (same bird, classes differ only in a wing mark)."""

from collections import Counter
from dataclasses import asdict, replace

import numpy as np
import pytest

from fgssl.training import synthetic
from fgssl.training.synthetic import (
    NuisanceFactors,
    class_names,
    default_dataset,
    make_fine_grained_dataset,
    part_mask,
    render_image,
    sample_factors,
)

BACKGROUND_STRIPES = synthetic.BACKGROUNDS.index("stripes")
SMALL = dict(num_classes=4, train_per_class=3, test_per_class=2, image_size=32)


def _pixels(image):
    return np.asarray(image, dtype=np.float64)


def _mean_abs(a, b):
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = make_fine_grained_dataset(**SMALL, seed=3)
    b = make_fine_grained_dataset(**SMALL, seed=3)
    c = make_fine_grained_dataset(**SMALL, seed=4)
    for split in ("train", "test"):
        assert a[split]["label"][:] == b[split]["label"][:]
        assert a[split]["x"][:] == b[split]["x"][:]
        assert all(np.array_equal(_pixels(p), _pixels(q)) for p, q in zip(a[split]["image"], b[split]["image"]))
    assert not np.array_equal(_pixels(a["train"][0]["image"]), _pixels(c["train"][0]["image"]))


def test_splits_columns_and_class_balance():
    ds = make_fine_grained_dataset(**SMALL)
    assert set(ds) == {"train", "test"}
    for column in ("image", "label", "background", "body_hue", "x", "y", "scale", "rotation", "facing"):
        assert column in ds["train"].column_names
    assert ds["train"].features["label"].names == class_names(4)
    assert Counter(ds["train"]["label"][:]) == {c: 3 for c in range(4)}
    assert Counter(ds["test"]["label"][:]) == {c: 2 for c in range(4)}
    assert ds["train"][0]["image"].size == (32, 32) and ds["train"][0]["image"].mode == "RGB"
    labels = ds["train"]["label"][:]
    assert labels != sorted(labels)  # shuffled: a prefix of the split covers several classes


def test_rows_are_rerendered_from_their_columns():
    ds = make_fine_grained_dataset(**SMALL)["test"]
    factor_names = [f for f in asdict(sample_factors(np.random.default_rng(0)))]
    for row in ds.select(range(3)):
        factors = NuisanceFactors(**{name: row[name] for name in factor_names})
        # float32 columns round the factors a little; the rendering is the same bird, pixel for pixel almost.
        assert _mean_abs(render_image(row["label"], factors, 32), row["image"]) < 1.0


def test_classes_differ_only_in_a_small_detail():
    rng = np.random.default_rng(0)
    between, within = [], []
    for _ in range(8):
        f, g = sample_factors(rng), sample_factors(rng)
        a, b = render_image(0, f, 64), render_image(1, f, 64)
        changed = (np.abs(_pixels(a) - _pixels(b)).max(-1) > 0).mean()
        assert 0 < changed < 0.05  # a different class changes a few percent of the pixels at most
        between.append(_mean_abs(a, b))  # different class, same nuisance
        within.append(_mean_abs(a, render_image(0, g, 64)))  # same class, different nuisance
    assert max(between) < min(within) / 5, (between, within)


def test_the_bird_and_its_mark_are_in_the_frame():
    rng = np.random.default_rng(0)
    for i in range(100):
        f = sample_factors(rng)
        label = i % 10
        bird, mark = part_mask(label, f, 64, "bird"), part_mask(label, f, 64, "mark")
        centred = replace(f, x=0.5, y=0.5)
        assert 0.10 < bird.mean() < 0.40, f  # a bird, not a speck and not the whole frame
        assert bird.sum() >= 0.9 * part_mask(label, centred, 64, "bird").sum(), f  # at most a tip leaves the frame
        whole_mark = part_mask(label, centred, 64, "mark").sum()
        assert whole_mark > 15 and mark.sum() >= 0.75 * whole_mark, f  # the whole mark (thin strokes round differently per position)
        assert (mark & ~bird).sum() == 0  # the mark is on the bird


def test_the_marks_are_small_next_to_the_nuisance():
    rng = np.random.default_rng(1)
    marks = [part_mask(i % 10, sample_factors(rng), 64, "mark").mean() for i in range(50)]
    assert max(marks) < 0.06  # the class is a detail: a few percent of the frame at most


def test_training_views_hold_the_mark():
    """The demo recipe's random crops (its crop_scale_min) keep at least half of the mark in almost every view of the
    default dataset's images."""
    import torch

    from fgssl.training.augment import sample_crop_boxes
    from fgssl.training.arguments import DEMO_RECIPE

    rng, n = np.random.default_rng(2), 200
    masks = [part_mask(i % 10, sample_factors(rng, levels=1, background_types=1, palette="turned"), 64, "mark")
             for i in range(n)]
    torch.manual_seed(0)
    scale = (float(DEMO_RECIPE["crop_scale_min"]), 1.0)
    boxes = sample_crop_boxes(4 * n, 64, 64, scale=scale).int().tolist()
    kept = [masks[j % n][y0 : y0 + h, x0 : x0 + w].sum() / masks[j % n].sum() for j, (x0, y0, w, h) in enumerate(boxes)]
    assert np.mean(np.array(kept) >= 0.5) > 0.95


def test_every_class_has_its_own_mark():
    f = sample_factors(np.random.default_rng(1))
    images = [_pixels(render_image(c, f, 64)) for c in range(synthetic.MAX_CLASSES)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).max() > 40, (class_names(synthetic.MAX_CLASSES)[i], j)


def test_nuisance_factors_move_the_bird():
    f = sample_factors(np.random.default_rng(2))
    base = render_image(0, f, 64)
    for change in (dict(x=f.x + 0.1), dict(scale=f.scale * 0.8), dict(body_hue=f.body_hue + 0.5),
                   dict(background=(f.background + 1) % len(synthetic.BACKGROUNDS)), dict(facing=-f.facing)):
        assert _mean_abs(base, render_image(0, replace(f, **change), 64)) > 2, change
    assert np.array_equal(_pixels(base), _pixels(render_image(0, asdict(f), 64)))  # a dict works, same pixels


def test_invalid_class_counts_are_rejected():
    with pytest.raises(ValueError, match="num_classes must be in 1..30"):
        make_fine_grained_dataset(num_classes=31)
    with pytest.raises(ValueError, match="label must be in"):
        render_image(30, sample_factors(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="part must be"):
        part_mask(0, sample_factors(np.random.default_rng(0)), part="wing")


def test_default_dataset_is_generated_once_then_loaded(tmp_path, monkeypatch):
    first = default_dataset(cache_dir=tmp_path, **SMALL)
    [saved] = [p for p in tmp_path.iterdir() if p.name.startswith("synthetic-")]

    def must_not_run(**kwargs):
        raise AssertionError("regenerated instead of loading the saved copy")

    monkeypatch.setattr(synthetic, "make_fine_grained_dataset", must_not_run)
    second = default_dataset(cache_dir=tmp_path, **SMALL)
    assert second["train"]["label"][:] == first["train"]["label"][:]
    assert second["train"].cache_files[0]["filename"].startswith(str(saved))  # on disk: decoding is cacheable

    monkeypatch.undo()
    default_dataset(cache_dir=tmp_path, **{**SMALL, "seed": 1})
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("synthetic-")]) == 2  # other params, other dir
    with pytest.raises(TypeError):
        default_dataset(cache_dir=tmp_path, num_clases=3)


def test_nuisance_levels_draw_each_factor_from_that_many_values():
    rng = np.random.default_rng(0)
    drawn = [sample_factors(rng, levels=2) for _ in range(200)]
    assert {f.background_hue for f in drawn} == {0.0, 0.5}
    assert {f.body_hue for f in drawn} == {0.25, 0.75}  # between the background hues
    assert {f.rotation for f in drawn} == {-15.0, 15.0}
    assert {f.texture_seed for f in drawn} == {0, 1}
    # Background type, position, scale and facing stay as without levels.
    assert len({f.background for f in drawn}) == 6 and len({round(f.x, 6) for f in drawn}) == 200
    continuous = [sample_factors(rng) for _ in range(50)]
    assert len({f.background_hue for f in continuous}) == 50 and len({f.texture_seed for f in continuous}) == 50
    assert {sample_factors(rng, levels=1).rotation for _ in range(5)} == {0.0}
    with pytest.raises(ValueError, match="levels must be >= 1"):
        sample_factors(rng, levels=0)


def test_dataset_with_nuisance_levels_records_the_levelled_factors():
    ds = make_fine_grained_dataset(**SMALL, nuisance_levels=3, palette="independent")["train"]
    assert set(np.round(ds["background_hue"], 4)) <= {0.0, 0.3333, 0.6667}
    assert set(ds["texture_seed"]) <= {0, 1, 2}
    # Version 1's dataset: every factor continuous, every image its own texture.
    v1 = make_fine_grained_dataset(**SMALL, nuisance_levels=None, background_types=6, palette="independent")["train"]
    assert len(set(v1["texture_seed"])) == len(v1) and len(set(v1["background"])) > 1


def test_default_dataset_turns_one_colour_scheme_per_image():
    """The default: a plain background, no rotation, one texture seed; every image its own hue (the body opposite
    the background), position, scale and facing."""
    ds = make_fine_grained_dataset(**{**SMALL, "train_per_class": 10})["train"]
    assert set(ds["background"]) == {0} and set(ds["rotation"]) == {0.0} and set(ds["texture_seed"]) == {0}
    hues = np.array(ds["background_hue"])
    assert len(set(np.round(hues, 4))) == len(ds) and hues.min() < 0.2 and hues.max() > 0.8
    assert np.allclose((hues + 0.5) % 1.0, ds["body_hue"], atol=1e-4)
    assert len({round(x, 5) for x in ds["x"]}) == len(ds) and set(ds["facing"]) == {-1, 1}
    with pytest.raises(ValueError, match="palette must be one of"):
        sample_factors(np.random.default_rng(0), palette="grey")


def test_background_types_keep_the_first_kinds_only():
    rng = np.random.default_rng(1)
    assert {sample_factors(rng, background_types=2).background for _ in range(100)} == {0, 1}
    ds = make_fine_grained_dataset(**SMALL, background_types=1)["train"]
    assert set(ds["background"]) == {0}  # plain
    with pytest.raises(ValueError, match="background_types must be in 1..6"):
        sample_factors(rng, background_types=7)


def test_make_dataset_takes_a_factor_sampler_and_a_renderer():
    """The building block of the variants (benchmarks/demo_variants.py): any factor sampler, a dataclass extending
    NuisanceFactors adds its fields as columns, and the renderer is an argument (here a larger mark)."""
    from dataclasses import dataclass
    from functools import partial

    @dataclass(frozen=True)
    class Tagged(NuisanceFactors):
        tag: int = 0

    def draw(rng):
        return Tagged(**asdict(sample_factors(rng, levels=1, background_types=1, palette="turned")), tag=7)

    ds = synthetic.make_dataset(draw, **SMALL)
    assert ds["train"].column_names[-1] == "tag" and set(ds["train"]["tag"]) == {7}
    assert ds["train"].features["tag"].dtype == "int32"
    default = make_fine_grained_dataset(**SMALL)  # the same stream: sample_factors with the default dataset's options
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(ds["test"]["image"], default["test"]["image"]))
    larger = synthetic.make_dataset(draw, **SMALL, render=partial(render_image, mark_radius=0.25))["test"][0]
    factors = NuisanceFactors(**{name: larger[name] for name in asdict(sample_factors(np.random.default_rng(0)))})
    assert part_mask(larger["label"], factors, 32, "mark", mark_radius=0.25).sum() > part_mask(
        larger["label"], factors, 32, "mark").sum()
    assert _mean_abs(render_image(larger["label"], factors, 32, mark_radius=0.25), larger["image"]) < 1.0


def test_the_background_moves_with_the_bird():
    """The texture is anchored to the bird: shifting the bird shifts its background by as many pixels, so a random
    crop (which moves both together) cannot tell apart two images of one scene by where the bird sits."""
    f = replace(sample_factors(np.random.default_rng(3)), background=BACKGROUND_STRIPES, x=0.45, y=0.5, scale=1.0,
                rotation=0.0)
    shift = 8  # pixels at 64 px: x + 0.125
    a = _pixels(render_image(0, f, 64))
    b = _pixels(render_image(0, replace(f, x=f.x + shift / 64), 64))
    top = slice(0, 6)  # rows above the bird: background only
    moved = np.abs(a[top, 4:40] - b[top, 4 + shift:40 + shift]).mean()
    unmoved = np.abs(a[top, 4:40] - b[top, 4:40]).mean()
    assert moved < 0.3 * unmoved and unmoved > 5, (moved, unmoved)  # what is left is the pixel noise
