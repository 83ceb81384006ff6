"""training.layouts and fgssl-prepare: CUB-200-2011, Stanford Cars and FGVC-Aircraft in their download layouts.

Each fixture fabricates a tiny copy of one layout: a few generated JPEGs and the dataset's own index files (Cars'
annotations are .mat files written with scipy in the devkit's struct layout). Every image is blue with a red
rectangle exactly where its box says, so a crop to the box is all red.
"""

import shutil

import datasets
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fgssl.training import data, prepare
from fgssl.training.layouts import (
    BBOX_FEATURE,
    crop_to_bbox,
    detect_layout,
    load_cub200,
    load_fgvc_aircraft,
    load_stanford_cars,
)

RED, BLUE = (220, 20, 20), (20, 20, 220)
#: The box of every fabricated image, in BBOX_FEATURE's format (0-based, right / bottom exclusive).
BOX = [10.0, 6.0, 34.0, 26.0]
SIZE = (48, 32)


def _photo(path, shade=0):
    """A SIZE JPEG, blue with a red rectangle on BOX; `shade` makes images of one class differ."""
    arr = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    arr[:] = BLUE
    x0, y0, x1, y1 = map(int, BOX)
    arr[y0:y1, x0:x1] = RED
    arr[0, 0] = (shade, shade, shade)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=95)


def _write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _image_paths(ds):
    """The file name of each row's image, without decoding it."""
    return [v["path"].rsplit("/", 1)[-1] for v in ds.cast_column("image", datasets.Image(decode=False))["image"]]


# --------------------------------------------------------------------------------------------- fixtures

# Class ids are not in name order, so a loader that sorted the names would get the labels wrong.
CUB_CLASSES = ["003.Sooty_Albatross", "001.Black_footed_Albatross", "002.Laysan_Albatross"]


@pytest.fixture
def cub_dir(tmp_path):
    """CUB_200_2011/: 3 classes x 3 images; images 1 and 2 of a class are train, image 3 is test.

    Returns (root, {split: [file names]}).
    """
    root = tmp_path / "CUB_200_2011"
    images, labels, split_flags, boxes, expected = [], [], [], [], {"train": [], "test": []}
    classes = sorted(CUB_CLASSES)  # ids 1, 2, 3 in classes.txt
    for class_id, folder in enumerate(classes, start=1):
        for k in range(3):
            image_id = len(images) + 1
            name = f"{folder.split('.', 1)[1]}_{k}.jpg"
            _photo(root / "images" / folder / name, shade=image_id)
            images.append(f"{image_id} {folder}/{name}")
            labels.append(f"{image_id} {class_id}")
            is_train = int(k < 2)
            split_flags.append(f"{image_id} {is_train}")
            x, y, x1, y1 = BOX
            boxes.append(f"{image_id} {x:.1f} {y:.1f} {x1 - x:.1f} {y1 - y:.1f}")  # x y width height
            expected["train" if is_train else "test"].append(name)
    _write_lines(root / "classes.txt", [f"{i} {name}" for i, name in enumerate(classes, start=1)])
    _write_lines(root / "images.txt", images)
    _write_lines(root / "image_class_labels.txt", labels)
    _write_lines(root / "train_test_split.txt", split_flags)
    _write_lines(root / "bounding_boxes.txt", boxes)
    (root / "attributes").mkdir()  # the download has more folders; they must not matter
    return root, expected


CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Volvo XC90 SUV 2007"]


def _cars_annotations(rows):
    """A 1 x N MATLAB struct array with the devkit's fields, from (fname, class 1-based) rows."""
    dtype = [(name, "O") for name in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    annotations = np.zeros((1, len(rows)), dtype=dtype)
    x0, y0, x1, y1 = BOX
    for i, (fname, cls) in enumerate(rows):
        # The devkit's boxes are 1-based with inclusive corners.
        annotations[0, i] = (np.uint16(x0 + 1), np.uint16(y0 + 1), np.uint16(x1), np.uint16(y1), np.uint8(cls), fname)
    return {"annotations": annotations}


@pytest.fixture
def cars_dir(tmp_path):
    """stanford_cars/: 5 train and 4 test images of 3 models, devkit/ .mat files, the labelled test annotations at
    the top (where users put the separate download). Returns (root, {split: [(fname, label)]})."""
    root = tmp_path / "stanford_cars"
    expected = {
        "train": [("00001.jpg", 0), ("00002.jpg", 2), ("00003.jpg", 1), ("00004.jpg", 0), ("00005.jpg", 2)],
        "test": [("00001.jpg", 1), ("00002.jpg", 0), ("00003.jpg", 2), ("00004.jpg", 1)],
    }
    for split, rows in expected.items():
        for i, (fname, _) in enumerate(rows):
            _photo(root / f"cars_{split}" / fname, shade=10 * i + (split == "test"))
    (root / "devkit").mkdir()
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array([CARS_CLASSES], dtype=object)})
    savemat(root / "devkit" / "cars_train_annos.mat",
            _cars_annotations([(f, label + 1) for f, label in expected["train"]]))
    savemat(root / "cars_test_annos_withlabels.mat",
            _cars_annotations([(f, label + 1) for f, label in expected["test"]]))
    return root, expected


AIRCRAFT = {  # variant -> (family, manufacturer); names with spaces and slashes, as in the real files
    "737-400": ("Boeing 737", "Boeing"),
    "F-16A/B": ("F-16", "Lockheed Martin"),
    "Cessna 172": ("Cessna 172", "Cessna"),
    "737-800": ("Boeing 737", "Boeing"),
}


@pytest.fixture
def aircraft_dir(tmp_path):
    """fgvc-aircraft-2013b/data/: 4 variants x 3 images, one each in train, val and test.

    Returns (root, {split: [(image id, variant)]}).
    """
    root = tmp_path / "fgvc-aircraft-2013b"
    data_dir = root / "data"
    variants = list(AIRCRAFT)
    expected = {"train": [], "val": [], "test": []}
    boxes = []
    for v, variant in enumerate(variants):
        for s, split in enumerate(expected):
            image_id = f"{1000000 + 10 * v + s:07d}"
            _photo(data_dir / "images" / f"{image_id}.jpg", shade=10 * v + s)
            expected[split].append((image_id, variant))
            boxes.append(f"{image_id} {int(BOX[0]) + 1} {int(BOX[1]) + 1} {int(BOX[2])} {int(BOX[3])}")
    levels = {"variant": lambda v: v, "family": lambda v: AIRCRAFT[v][0], "manufacturer": lambda v: AIRCRAFT[v][1]}
    # Class lists in the dataset's order, which is not sorted order.
    _write_lines(data_dir / "variants.txt", variants)
    _write_lines(data_dir / "families.txt", ["F-16", "Cessna 172", "Boeing 737"])
    _write_lines(data_dir / "manufacturers.txt", ["Lockheed Martin", "Cessna", "Boeing"])
    for level, name_of in levels.items():
        for split, rows in expected.items():
            _write_lines(data_dir / f"images_{level}_{split}.txt", [f"{i} {name_of(v)}" for i, v in rows])
    _write_lines(data_dir / "images_box.txt", boxes)
    return root, expected


# --------------------------------------------------------------------------------------------- loaders


def test_cub_splits_class_names_boxes_and_no_test_image_in_train(cub_dir, tmp_path):
    root, expected = cub_dir
    raw = load_cub200(root, cache_dir=tmp_path / "cache")

    assert list(raw) == ["train", "test"]
    assert {split: len(ds) for split, ds in raw.items()} == {"train": 6, "test": 3}
    assert raw["train"].features["label"].names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert sorted(_image_paths(raw["train"])) == sorted(expected["train"])
    assert sorted(_image_paths(raw["test"])) == sorted(expected["test"])
    assert not set(_image_paths(raw["train"])) & set(_image_paths(raw["test"]))
    # The label is the class of the image's folder.
    for split in raw:
        for name, label in zip(_image_paths(raw[split]), raw[split]["label"]):
            assert name.startswith(raw[split].features["label"].names[label])
    assert raw["train"].features["bbox"] == BBOX_FEATURE and raw["test"][0]["bbox"] == BOX


def test_cub_without_box_file_has_no_bbox_column(cub_dir, tmp_path):
    root, _ = cub_dir
    (root / "bounding_boxes.txt").unlink()
    raw = load_cub200(root, cache_dir=tmp_path / "cache")
    assert raw["train"].column_names == ["image", "label"]


def test_cars_splits_class_names_labels_and_boxes(cars_dir, tmp_path):
    root, expected = cars_dir
    raw = load_stanford_cars(root, cache_dir=tmp_path / "cache")

    assert {split: len(ds) for split, ds in raw.items()} == {"train": 5, "test": 4}
    assert raw["train"].features["label"].names == CARS_CLASSES
    for split, rows in expected.items():
        paths = [v["path"] for v in raw[split].cast_column("image", datasets.Image(decode=False))["image"]]
        assert all(f"/cars_{split}/" in path for path in paths)  # no test image reaches train
        assert list(zip(_image_paths(raw[split]), raw[split]["label"])) == rows
    assert raw["test"][0]["bbox"] == BOX  # 1-based inclusive corners -> 0-based, end-exclusive


def test_cars_without_labelled_test_annotations_names_the_file(cars_dir, tmp_path):
    root, _ = cars_dir
    # The devkit's own test annotations have no class field: they cannot stand in.
    shutil.move(root / "cars_test_annos_withlabels.mat", root / "devkit" / "cars_test_annos.mat")
    with pytest.raises(FileNotFoundError, match=r"Stanford Cars.*missing cars_test_annos_withlabels\.mat"):
        data.load_raw_dataset(str(root), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "level, names",
    [
        ("variant", list(AIRCRAFT)),
        ("family", ["F-16", "Cessna 172", "Boeing 737"]),
        ("manufacturer", ["Lockheed Martin", "Cessna", "Boeing"]),
    ],
)
def test_aircraft_levels_splits_and_class_order(aircraft_dir, tmp_path, level, names):
    root, expected = aircraft_dir
    raw = load_fgvc_aircraft(root, level=level, cache_dir=tmp_path / "cache")

    assert list(raw) == ["train", "validation", "test"]
    assert {split: len(ds) for split, ds in raw.items()} == {"train": 4, "validation": 4, "test": 4}
    assert raw["train"].features["label"].names == names
    for split, file_split in (("train", "train"), ("validation", "val"), ("test", "test")):
        assert _image_paths(raw[split]) == [f"{image_id}.jpg" for image_id, _ in expected[file_split]]
        got = [names[label] for label in raw[split]["label"]]
        want = [{"variant": v, "family": AIRCRAFT[v][0], "manufacturer": AIRCRAFT[v][1]}[level]
                for _, v in expected[file_split]]
        assert got == want
    assert raw["validation"][0]["bbox"] == BOX


def test_aircraft_data_folder_itself_is_accepted_and_bad_level_refused(aircraft_dir, tmp_path):
    root, _ = aircraft_dir
    assert detect_layout(root / "data") == "aircraft"
    assert len(load_fgvc_aircraft(root / "data", cache_dir=tmp_path / "cache")["test"]) == 4
    with pytest.raises(ValueError, match="--aircraft_level must be one of variant, family, manufacturer"):
        load_fgvc_aircraft(root, level="model")


# --------------------------------------------------------------------------------------------- detection


def test_detect_layout_of_each_download_and_of_image_folders(cub_dir, cars_dir, aircraft_dir, tmp_path):
    assert detect_layout(cub_dir[0]) == "cub"
    assert detect_layout(cars_dir[0]) == "cars"
    assert detect_layout(aircraft_dir[0]) == "aircraft"
    folder = tmp_path / "folder"
    _photo(folder / "train" / "a" / "1.jpg")
    (folder / "classes.txt").write_text("a\n")  # cub100 has one: a generic name is no evidence of CUB
    assert detect_layout(folder) is None


def test_partial_download_names_the_missing_files(cub_dir, aircraft_dir):
    root, _ = cub_dir
    (root / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"CUB-200-2011 folder: missing train_test_split\.txt"):
        detect_layout(root)
    (aircraft_dir[0] / "data" / "images_variant_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"FGVC-Aircraft.*data/images_variant_test\.txt"):
        detect_layout(aircraft_dir[0])


def test_dataset_format_names_or_overrides_the_layout(cub_dir, cars_dir, tmp_path):
    cache = tmp_path / "cache"
    assert data.resolve_dataset_format(str(cub_dir[0])) == "cub"
    assert data.resolve_dataset_format(str(cub_dir[0]), "cub") == "cub"
    with pytest.raises(FileNotFoundError, match=r"not a complete Stanford Cars folder: missing cars_train/"):
        data.resolve_dataset_format(str(cub_dir[0]), "cars")
    with pytest.raises(ValueError, match="--dataset_format must be one of cub, cars, aircraft, imagefolder"):
        data.resolve_dataset_format(str(cub_dir[0]), "coco")
    with pytest.raises(ValueError, match="drop --dataset_format"):
        data.resolve_dataset_format(None, "cub")
    # imagefolder reads CUB's images/ tree as one train split; asking for evaluation then fails (no leak).
    raw = data.load_raw_dataset(str(cub_dir[0]), cache_dir=cache, dataset_format="imagefolder")
    assert list(raw) == ["train"] and len(raw["train"]) == 9
    with pytest.raises(ValueError, match="has no test split"):
        data.load_splits(str(cub_dir[0]), 8, cache_dir=cache, dataset_format="imagefolder", require_eval=True)


# --------------------------------------------------------------------------------------------- load_splits


@pytest.mark.parametrize("layout", ["cub", "cars", "aircraft"])
def test_load_splits_reads_each_layout_with_its_test_split(layout, cub_dir, cars_dir, aircraft_dir, tmp_path):
    root, counts = {"cub": (cub_dir[0], (6, 3)), "cars": (cars_dir[0], (5, 4)),
                    "aircraft": (aircraft_dir[0], (4, 4))}[layout]
    prepared = data.load_splits(str(root), 16, cache_dir=tmp_path / "cache", require_eval=True)
    assert (len(prepared.train), len(prepared.eval)) == counts
    assert prepared.num_skipped == {"train": 0, "test": 0}
    assert prepared.source == {"dataset_format": layout, "crop_to_bbox": False,
                               **({"aircraft_level": "variant"} if layout == "aircraft" else {})}
    assert len(prepared.label_names) == 3 if layout != "aircraft" else 4


def test_aircraft_trainval_joins_train_and_validation(aircraft_dir, tmp_path):
    root, _ = aircraft_dir
    prepared = data.load_splits(str(root), 8, cache_dir=tmp_path / "cache", train_split="train+validation")
    assert (len(prepared.train), len(prepared.eval)) == (8, 4)
    with pytest.raises(ValueError, match=r"\['validation'\] are in both --train_split"):
        data.load_splits(str(root), 8, cache_dir=tmp_path / "cache", train_split="train+validation",
                         eval_split="validation")


def test_folder_without_test_split_fails_clearly_unless_eval_split_none(tmp_path):
    folder = tmp_path / "birds"
    for cls in ("a", "b"):
        for i in range(2):
            _photo(folder / cls / f"{i}.jpg", shade=i)
    with pytest.raises(ValueError) as err:
        data.load_splits(str(folder), 8, cache_dir=tmp_path / "cache", require_eval=True)
    message = str(err.value)
    assert "has no test split" in message and "\n" not in message
    assert "train/ and test/" in message and "--dataset_format cub|cars|aircraft" in message
    assert "--eval_split none" in message

    prepared = data.load_splits(str(folder), 8, cache_dir=tmp_path / "cache", require_eval=True, eval_split="none")
    assert prepared.eval is None and len(prepared.train) == 4


def test_fgssl_pretrain_refuses_a_folder_without_test_split_before_training(tmp_path, monkeypatch):
    from fgssl.training import pretrain
    from fgssl.training.trainer import FGSSLTrainer

    folder = tmp_path / "birds"
    for cls in ("a", "b"):
        _photo(folder / cls / "0.jpg")
    monkeypatch.setattr(FGSSLTrainer, "train", lambda *a, **k: pytest.fail("training started"))
    args = pretrain.parse_args(["--dataset_name", str(folder), "--output_dir", str(tmp_path / "out"),
                                "--report_to", "none"])
    with pytest.raises(ValueError, match="--eval_split none"):
        pretrain.run_pretraining(*args)


def test_cli_arguments_reach_the_loader(cub_dir):
    from transformers import HfArgumentParser, TrainingArguments

    from fgssl.training import pretrain
    from fgssl.training.arguments import EvalArguments, FinetuneArguments

    extra = ["--dataset_format", "aircraft", "--aircraft_level", "family", "--crop_to_bbox", "--eval_split", "none"]
    _, data_args, _, _ = pretrain.parse_args(["--dataset_name", "x", *extra])
    (eval_args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(
        ["--model_name_or_path", "m", "--dataset_name", "x", *extra])
    finetune_args, _ = HfArgumentParser((FinetuneArguments, TrainingArguments)) \
        .parse_args_into_dataclasses(["--model_name_or_path", "m", "--dataset_name", "x", "--output_dir", "o", *extra])
    for args in (data_args, eval_args, finetune_args):
        assert args.format_kwargs() == {"dataset_format": "aircraft", "aircraft_level": "family", "crop_to_bbox": True}
        assert args.eval_split == "none"
    with pytest.raises(ValueError, match="--dataset_format"):  # a UsageError: one line, exit status 2
        pretrain.parse_args(["--dataset_format", "coco"])


def test_fgssl_eval_on_a_cub_download(cub_dir, tmp_path):
    from conftest import tiny_fgssl_config

    from fgssl.modeling import FGSSLModel
    from fgssl.training import eval as eval_cli

    FGSSLModel(tiny_fgssl_config()).save_pretrained(tmp_path / "model")
    results = eval_cli.main(["--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(cub_dir[0]),
                             "--image_size", "32", "--protocols", "retrieval,knn", "--device", "cpu",
                             "--output_dir", str(tmp_path / "eval")])
    assert results["num_images"]["test"] == 3 and results["num_images"]["train"] == 6
    assert results["settings"]["dataset_format"] == "cub" and results["settings"]["crop_to_bbox"] is False


@pytest.mark.parametrize(
    "config, layout, counts",
    [
        ("cub200_vit_s16_gpu.yaml", "cub", (6, 3)),
        ("cub200_convnext_t_gpu.yaml", "cub", (6, 3)),
        ("cars_convnext_t_gpu.yaml", "cars", (5, 4)),
        ("aircraft_convnext_t_gpu.yaml", "aircraft", (8, 4)),  # trainval: train + validation
    ],
)
def test_gpu_configs_read_the_download_layouts(config, layout, counts, cub_dir, cars_dir, aircraft_dir, tmp_path,
                                               monkeypatch):
    from conftest import REPO_ROOT

    from fgssl.training.pretrain import parse_args

    config_path = REPO_ROOT / "configs" / config
    _, data_args, _, _ = parse_args([str(config_path), "--bf16", "false"])
    # The download, where the config expects it relative to the working directory (data/<folder as extracted>).
    root = {"cub": cub_dir, "cars": cars_dir, "aircraft": aircraft_dir}[layout][0]
    assert data_args.dataset_name == f"data/{root.name}"
    (tmp_path / "run" / "data").mkdir(parents=True)
    shutil.move(root, tmp_path / "run" / data_args.dataset_name)
    monkeypatch.chdir(tmp_path / "run")
    prepared = data.load_splits(data_args.dataset_name, 8, train_split=data_args.train_split,
                                eval_split=data_args.eval_split, cache_dir=tmp_path / "cache",
                                require_eval=data_args.run_evaluation, **data_args.format_kwargs())
    assert (len(prepared.train), len(prepared.eval)) == counts
    assert prepared.source["dataset_format"] == layout and "estimate" in config_path.read_text()


# --------------------------------------------------------------------------------------------- crops


def _mean_rgb(prepared_split):
    return prepared_split.with_format("numpy")["pixel_values"][:].reshape(-1, 3, 16 * 16).mean(axis=(0, 2))


def test_crop_to_bbox_keeps_only_the_box(cub_dir, tmp_path):
    root, _ = cub_dir
    whole = data.load_splits(str(root), 16, cache_dir=tmp_path / "cache")
    cropped = data.load_splits(str(root), 16, cache_dir=tmp_path / "cache", crop_to_bbox=True)
    assert np.allclose(_mean_rgb(cropped.train), RED, atol=12)  # the box is all red
    assert _mean_rgb(whole.train)[2] > 60  # the whole image is partly blue
    assert cropped.source["crop_to_bbox"] is True and "bbox" not in cropped.train.column_names
    assert len(cropped.train) == 6 and len(cropped.eval) == 3

    no_boxes = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"image": [str(root / "images" / "001.Black_footed_Albatross" / "Black_footed_Albatross_0.jpg")]},
        features=datasets.Features({"image": datasets.Image()}))})
    with pytest.raises(ValueError, match=r"--crop_to_bbox needs a 'bbox' column.*drop --crop_to_bbox"):
        crop_to_bbox(no_boxes)


# --------------------------------------------------------------------------------------------- fgssl-prepare


@pytest.mark.parametrize("layout", ["cub", "cars", "aircraft"])
def test_prepare_save_to_disk_embeds_images_and_loads_the_same(layout, cub_dir, cars_dir, aircraft_dir, tmp_path,
                                                               capsys):
    root = {"cub": cub_dir, "cars": cars_dir, "aircraft": aircraft_dir}[layout][0]
    original = data.load_raw_dataset(str(root), cache_dir=tmp_path / "cache")
    out = tmp_path / f"{layout}-prepared"
    # None: the console script hands main's return value to sys.exit, where anything else means failure.
    assert prepare.main([str(root), str(out), "--cache_dir", str(tmp_path / "cache")]) is None
    assert f"Wrote {out}; load it with --dataset_name {out}" in capsys.readouterr().out

    shutil.rmtree(root)  # the prepared folder must not need the source
    loaded = data.load_raw_dataset(str(out))
    assert {k: len(v) for k, v in loaded.items()} == {k: len(v) for k, v in original.items()}
    assert loaded["train"].features == original["train"].features
    assert loaded["test"]["label"] == original["test"]["label"]
    assert loaded["test"][0]["image"].size == SIZE
    prepared = data.load_splits(str(out), 8, require_eval=True)
    assert prepared.source["dataset_format"] == "save_to_disk" and len(prepared.eval) == len(original["test"])

    with pytest.raises(SystemExit) as exit_info:  # never writes into an existing dataset
        prepare.main([str(out), str(out)])
    assert exit_info.value.code == 1 and "already exists" in capsys.readouterr().err


def test_prepare_push_without_token_fails_before_reading_images(cub_dir, monkeypatch, capsys):
    from fgssl.training import push

    monkeypatch.setattr(push, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(prepare, "load_source", lambda *a, **k: pytest.fail("images were read"))
    with pytest.raises(SystemExit) as exit_info:
        prepare.main([str(cub_dir[0]), "someone/cub200", "--push_to_hub"])
    assert exit_info.value.code == 1
    assert "No Hugging Face token found" in capsys.readouterr().err


def test_prepare_push_with_unreachable_hub_fails_with_the_reason(cub_dir, monkeypatch, capsys):
    import httpx2
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(self, *args, **kwargs):
        raise httpx2.ConnectError("Name or service not known")

    monkeypatch.setattr(HfApi, "whoami", unreachable)
    monkeypatch.setattr(prepare, "load_source", lambda *a, **k: pytest.fail("images were read"))
    with pytest.raises(SystemExit):
        prepare.main([str(cub_dir[0]), "someone/cub200", "--push_to_hub", "--token", "hf_dummy"])
    assert "Cannot reach the Hugging Face Hub" in capsys.readouterr().err


def test_prepare_help_and_no_abbreviations(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0 and "fgssl-prepare" in capsys.readouterr().out
    assert prepare.cli(["a", "b", "--push"]) == 2
    assert "unrecognized option --push" in capsys.readouterr().err


def test_cub_folder_with_most_images_missing_is_refused_as_a_partial_download(cub_dir, tmp_path):
    root, _ = cub_dir
    images = sorted((root / "images").rglob("*.jpg"))
    for path in images[: len(images) * 3 // 4]:  # 75 % of the images never extracted
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"6 of the 9 images .* missing .* partial download"):
        data.load_raw_dataset(str(root), cache_dir=tmp_path / "cache")
