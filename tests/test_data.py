"""training.data: loading from every accepted form, column detection, decode-once caching, corrupt images."""

import io
import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from fgssl.training import data, decoding
from fgssl.training.data import collate_uint8, find_columns, load_raw_dataset, load_splits, prepare_images

# Expected RGB of each test image after decoding (all images are one flat colour).
WHITE = (255, 255, 255)


def _save_cmyk_jpeg(path):
    """A CMYK JPEG of pure cyan (C = 255, M = Y = K = 0)."""
    Image.new("CMYK", (30, 40), (255, 0, 0, 0)).save(path, "JPEG", quality=95)


def _save_16bit_png(path, value):
    Image.fromarray(np.full((36, 24), value, dtype=np.uint16)).save(path)  # mode I;16


def _save_palette_png(path, rgb):
    img = Image.new("P", (20, 28), 0)
    img.putpalette(list(rgb) + [0, 0, 0] * 255)
    img.save(path)


@pytest.fixture
def image_folder(tmp_path):
    """train/{a,b}/ and test/{a,b}/ of flat-colour images in several PIL modes, plus one corrupt .jpg.

    Returns (root, expected): expected maps label -> list of expected RGB colours of its readable train images.
    """
    root = tmp_path / "folder"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "train/a/rgb.png")
    Image.new("L", (30, 50), 100).save(root / "train/a/gray.png")
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(root / "train/a/transparent.png")  # alpha 0 -> white
    _save_palette_png(root / "train/a/palette.png", (0, 200, 0))
    _save_cmyk_jpeg(root / "train/b/cmyk.jpg")
    _save_16bit_png(root / "train/b/deep.png", 30000)  # 30000 / 257 -> 117
    (root / "train/b/corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg " * 20)
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "test/a/one.png")
    Image.new("RGB", (20, 20), (4, 5, 6)).save(root / "test/b/two.png")
    expected = {0: [(200, 10, 10), (100, 100, 100), WHITE, (0, 200, 0)], 1: [(0, 255, 255), (117, 117, 117)]}
    return root, expected


def _colours(ds):
    """Mean RGB of each row of a prepared split, and its label."""
    rows = ds.with_format("numpy")
    return [(tuple(rows[i]["pixel_values"].reshape(3, -1).mean(1)), int(rows[i]["labels"])) for i in range(len(rows))]


def test_image_folder_any_mode_to_rgb_and_corrupt_skipped(image_folder, tmp_path):
    root, expected = image_folder
    raw = load_raw_dataset(str(root), cache_dir=tmp_path / "cache")
    assert set(raw) == {"train", "test"}
    assert find_columns(raw["train"]) == ("image", "label")

    ds, skipped = prepare_images(raw["train"], "image", "label", image_size=16)

    assert skipped == 1
    assert len(ds) == 6
    assert ds.features["pixel_values"] == datasets.Array3D((3, 16, 16), "uint8")
    assert ds[0]["pixel_values"].shape == (3, 16, 16) and ds[0]["labels"].dtype == torch.int64
    got = _colours(ds)
    for label, colours in expected.items():
        for colour in colours:  # every image is found once, with its label (JPEG: a few levels of error)
            assert any(lab == label and np.allclose(c, colour, atol=4) for c, lab in got), (colour, got)
    assert sorted(lab for _, lab in got) == [0, 0, 0, 0, 1, 1]


def test_decode_resizes_shorter_side_then_centre_crops():
    # A 40 x 20 image: left quarter red, middle half green, right quarter blue. Shorter side 20 -> 8, so the
    # centre 8 x 8 crop of the 16 x 8 resize is all green.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:30] = (0, 255, 0)
    arr[:, 30:] = (0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = decoding.decode_image({"bytes": buf.getvalue(), "path": None}, 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8
    assert (out[1] > 200).all() and (out[0] < 40).all() and (out[2] < 40).all()


def test_second_prepare_reads_the_cache_instead_of_decoding(image_folder, tmp_path, monkeypatch):
    root, _ = image_folder
    raw = load_raw_dataset(str(root), cache_dir=tmp_path / "cache")
    first, _ = prepare_images(raw["train"], "image", "label", image_size=16)

    calls = []
    real_decode = data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    second, skipped = prepare_images(raw["train"], "image", "label", image_size=16)
    assert calls == []
    assert skipped == 1
    assert torch.equal(first[:]["pixel_values"], second[:]["pixel_values"])

    prepare_images(raw["train"], "image", "label", image_size=12)  # new size: must decode (the counter works)
    assert len(calls) == 7


def test_load_splits_defaults_to_test_split_and_checks_split_names(image_folder, tmp_path):
    root, _ = image_folder
    prepared = load_splits(str(root), 8, cache_dir=tmp_path / "cache")
    assert prepared.label_names == ["a", "b"]
    assert prepared.num_skipped == {"train": 1, "test": 0}
    assert (prepared.image_column, prepared.label_column) == ("image", "label")
    assert len(prepared.train) == 6 and len(prepared.eval) == 2
    assert sorted(prepared.eval[:]["labels"].tolist()) == [0, 1]

    with pytest.raises(ValueError, match=r"'nope'.*Available splits: \['train', 'test'\]"):
        load_splits(str(root), 8, eval_split="nope", cache_dir=tmp_path / "cache")


def test_max_samples_takes_a_fixed_subset(image_folder, tmp_path):
    root, _ = image_folder
    raw = load_raw_dataset(str(root), cache_dir=tmp_path / "cache")
    a, _ = prepare_images(raw["test"], "image", "label", 8, max_samples=1)
    b, _ = prepare_images(raw["test"], "image", "label", 8, max_samples=1)
    assert len(a) == 1 and torch.equal(a[:]["pixel_values"], b[:]["pixel_values"])


def test_all_images_corrupt_is_an_error(tmp_path):
    (tmp_path / "bad" / "x").mkdir(parents=True)
    for i in range(2):
        (tmp_path / "bad" / "x" / f"{i}.jpg").write_bytes(b"garbage" * 10)
    raw = load_raw_dataset(str(tmp_path / "bad"), cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="None of the 2 images could be decoded"):
        prepare_images(raw["train"], *find_columns(raw["train"]), 8)
    with pytest.raises(ValueError, match=r"'label' does not exist.*\['image'\]"):  # one class folder: no labels
        prepare_images(raw["train"], "image", "label", 8)


def _tiny_dataset(n=4, label=True):
    columns = {"image": [Image.new("RGB", (10, 12), (10 * i, 0, 0)) for i in range(n)]}
    features = {"image": datasets.Image()}
    if label:
        columns["label"] = [i % 2 for i in range(n)]
        features["label"] = datasets.ClassLabel(names=["x", "y"])
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_save_to_disk_dict_and_bare_dataset(tmp_path):
    datasets.DatasetDict({"train": _tiny_dataset(4), "validation": _tiny_dataset(2)}).save_to_disk(tmp_path / "dd")
    _tiny_dataset(3).save_to_disk(tmp_path / "bare")

    dd = load_raw_dataset(str(tmp_path / "dd"))
    assert {k: len(v) for k, v in dd.items()} == {"train": 4, "validation": 2}
    bare = load_raw_dataset(str(tmp_path / "bare"))
    assert list(bare) == ["train"] and len(bare["train"]) == 3

    prepared = load_splits(str(tmp_path / "dd"), 8)  # no "test": falls back to "validation"
    assert len(prepared.eval) == 2 and prepared.label_names == ["x", "y"]
    assert load_splits(str(tmp_path / "bare"), 8).eval is None


def test_unlabelled_data_gets_label_minus_one(tmp_path):
    _tiny_dataset(3, label=False).save_to_disk(tmp_path / "unlabelled")
    prepared = load_splits(str(tmp_path / "unlabelled"), 8)
    assert prepared.label_column is None and prepared.label_names is None
    assert prepared.train[:]["labels"].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("missing", ["does/not/exist/here", "./nope", "/no/such/dir"])
def test_missing_path_names_it_and_the_accepted_forms(tmp_path, missing):
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        load_raw_dataset(missing)
    assert missing in str(err.value) and "image folder" in str(err.value) and "save_to_disk" in str(err.value)


def test_a_file_is_not_a_dataset(tmp_path):
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="is a file"):
        load_raw_dataset(str(tmp_path / "file.txt"))


def test_find_columns_by_feature_by_name_and_errors():
    img = Image.new("RGB", (4, 4))
    by_name = datasets.Dataset.from_dict({"img": ["a.png"], "labels": [0], "other": [1]})
    assert find_columns(by_name) == ("img", "labels")
    cifar100_like = datasets.Dataset.from_dict(
        {"picture": [img], "coarse_label": [0], "fine_label": [1]},
        features=datasets.Features({
            "picture": datasets.Image(),
            "coarse_label": datasets.ClassLabel(names=["c0", "c1"]),
            "fine_label": datasets.ClassLabel(names=["f0", "f1"]),
        }),
    )
    assert find_columns(cifar100_like) == ("picture", "fine_label")
    assert find_columns(cifar100_like, label_column="coarse_label") == ("picture", "coarse_label")
    unlabelled = datasets.Dataset.from_dict({"image": [img]}, features=datasets.Features({"image": datasets.Image()}))
    assert find_columns(unlabelled) == ("image", None)

    two_images = datasets.Dataset.from_dict(
        {"left": [img], "right": [img]},
        features=datasets.Features({"left": datasets.Image(), "right": datasets.Image()}),
    )
    with pytest.raises(ValueError, match=r"\['left', 'right'\].*--image_column"):
        find_columns(two_images)
    assert find_columns(two_images, image_column="right") == ("right", None)

    two_labels = datasets.Dataset.from_dict(
        {"image": [img], "species": [0], "genus": [0]},
        features=datasets.Features({
            "image": datasets.Image(),
            "species": datasets.ClassLabel(names=["s"]),
            "genus": datasets.ClassLabel(names=["g"]),
        }),
    )
    with pytest.raises(ValueError, match=r"\['image', 'species', 'genus'\].*--label_column"):
        find_columns(two_labels)

    no_image = datasets.Dataset.from_dict({"text": ["x"], "label": [0]})
    with pytest.raises(ValueError, match=r"No image column.*\['text', 'label'\].*--image_column"):
        find_columns(no_image)
    with pytest.raises(ValueError, match=r"'pixels'.*--image_column.*\['text', 'label'\]"):
        find_columns(no_image, image_column="pixels")
    with pytest.raises(ValueError, match=r"'klass'.*--label_column.*\['img', 'labels', 'other'\]"):
        find_columns(by_name, label_column="klass")


def test_collate_uint8(tmp_path):
    _tiny_dataset(4).save_to_disk(tmp_path / "d")
    prepared = load_splits(str(tmp_path / "d"), 8)
    batch = collate_uint8([prepared.train[i] for i in range(3)])
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (3, 3, 8, 8)
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [0, 1, 0]
    assert batch["pixel_values"][2, 0].float().mean().item() == pytest.approx(20, abs=1)  # red of image 2
    assert collate_uint8([{"pixel_values": np.zeros((3, 2, 2), np.uint8)}])["labels"].tolist() == [-1]


def test_none_is_the_synthetic_default(tmp_path):
    raw = load_raw_dataset(None, cache_dir=tmp_path)
    assert set(raw) == {"train", "test"}
    assert find_columns(raw["train"]) == ("image", "label")
    assert raw["train"].features["label"].num_classes == 10


def test_cub100_subset_has_the_folder_class_names(cub100, tmp_path):
    prepared = load_splits(str(cub100), 32, max_train_samples=12, max_eval_samples=6, cache_dir=tmp_path)
    class_folders = sorted(p.name for p in (cub100 / "train").iterdir() if p.is_dir())
    assert prepared.label_names == class_folders
    assert len(prepared.train) == 12 and len(prepared.eval) == 6
    assert prepared.num_skipped == {"train": 0, "test": 0}
    labels = prepared.train[:]["labels"]
    assert labels.min() >= 0 and labels.max() < len(class_folders) and len(set(labels.tolist())) > 1
    batch = collate_uint8([prepared.train[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["pixel_values"].float().std() > 10  # real photographs, not blank
    assert os.path.isdir(cub100 / "test")


def test_holdout_carves_every_class_of_train_and_never_loads_test(tmp_path):
    train = datasets.Dataset.from_dict(  # 20 images of each of two classes, red = 5 x index
        {"image": [Image.new("RGB", (10, 12), (5 * i, 0, 0)) for i in range(40)], "label": [i % 2 for i in range(40)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])}))
    test = _tiny_dataset(6)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "dd")
    rest, held = data.carve_holdout(train, "label", 0.15)
    assert len(held) == 6 and len(rest) == 34  # round(0.15 * 20) = 3 per class
    assert sorted(held["label"]) == [0, 0, 0, 1, 1, 1]
    reds = lambda ds: {img.getpixel((0, 0))[0] for img in ds["image"]}  # noqa: E731
    assert not reds(held) & reds(rest) and len(reds(held) | reds(rest)) == 40
    again = data.carve_holdout(train, "label", 0.15)[1]
    assert reds(again) == reds(held)  # a fixed seed: the same carve-out every run
    prepared = load_splits(str(tmp_path / "dd"), 8, holdout_fraction=0.15)
    assert len(prepared.train) == 34 and len(prepared.eval) == 6  # the test split's 6 images are not used
    assert set(prepared.num_skipped) == {"train", "holdout"}
    with pytest.raises(ValueError, match="holdout_fraction"):
        data.carve_holdout(train, "label", 1.5)


@pytest.mark.parametrize("name", [".hidden", "..x"])
def test_hidden_class_folders_with_images_are_refused_not_dropped(image_folder, tmp_path, name):
    root, _ = image_folder
    (root / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder without images is no class: fine
    data.load_raw_dataset(str(root), cache_dir=tmp_path / "cache0")
    (root / "train" / name).mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(root / "train" / name / "x.png")
    with pytest.raises(ValueError, match=r"start with '\.'.*" + name.replace(".", r"\.")):
        data.load_raw_dataset(str(root), cache_dir=tmp_path / "cache1")
