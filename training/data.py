"""Load an image dataset from anywhere `datasets` can read it, decode and resize it ONCE, and collate it.

The pipeline is:

    load_raw_dataset   Hub id | image folder | save_to_disk dir | None (embedded synthetic default) | a
                       CUB-200-2011, Stanford Cars or FGVC-Aircraft folder as downloaded (training.layouts,
                       detected from its files); optionally cropped to the bounding boxes
    find_columns       which column holds the image, which the label
    prepare_images     decode (any PIL mode -> RGB), resize shorter side + centre crop to S, store as a
                       uint8 3 x S x S "pixel_values" column + int64 "labels" (a cache with room,
                       cache_size_factor F > 1: the whole image at its aspect ratio in an F*S box, plus its
                       valid (height, width) in "valid_hw"); corrupt images are skipped
                       and counted. The result is an Arrow cache file keyed by datasets' fingerprint, so
                       the second run (or the next epoch, or the eval script) never decodes a JPEG again.
    load_splits        all of the above for a train and an optional eval split -> PreparedData; refuses
                       data without a test split when evaluation is asked for (require_eval)
    collate_uint8      batch of examples -> {"pixel_values": uint8 B x 3 x S x S, "labels": int64 B}

Decoding one image (any PIL mode, EXIF orientation, big images reduced first) is training.decoding's
`decode_image`. Augmentation is not done here: it runs batched on the accelerator (training.augment) on the uint8
batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from . import layouts
from .decoding import DECODE_VERSION, decode_image, decode_image_boxed

logger = logging.getLogger(__name__)

#: Column names recognised automatically, in order of preference.
IMAGE_COLUMN_NAMES = ("image", "img")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label")
#: The column of a cache with room (`cache_size_factor` > 1): each image's valid region (height, width) in its box.
VALID_HW_COLUMN = "valid_hw"
#: Bump when `decode_image_boxed` changes its output (part of the boxed cache's fingerprint, as DECODE_VERSION).
BOXED_DECODE_VERSION = 1
#: The name that selects the embedded synthetic dataset (as does `None`).
SYNTHETIC_NAME = "synthetic"
#: Seed of the fixed random subset taken by `max_samples`.
SUBSET_SEED = 0
#: --eval_split value that asks for no evaluation split at all.
NO_EVAL_SPLIT = "none"

ACCEPTED_FORMS = (
    "accepted forms: None or 'synthetic' (the embedded synthetic dataset); a local image folder "
    "(train/ and test/ subfolders of class folders, or class folders directly); a CUB-200-2011, Stanford Cars "
    "or FGVC-Aircraft folder as downloaded; a directory written by "
    "Dataset.save_to_disk / DatasetDict.save_to_disk; or a Hugging Face Hub dataset id (needs network "
    "access or the dataset in the local datasets cache)"
)


# --------------------------------------------------------------------------------------------- arguments


@dataclass(kw_only=True)
class DatasetFormatArguments:
    """How a local dataset folder is read: the data fields fgssl-pretrain, fgssl-eval and fgssl-finetune share.

    Their argument dataclasses inherit from this one (keyword-only, so it may precede required fields) and pass
    `format_kwargs()` to `load_splits`.
    """

    dataset_format: str | None = field(
        default=None,
        metadata={"help": "Layout of a local --dataset_name folder: cub (CUB-200-2011), cars (Stanford Cars), "
                          "aircraft (FGVC-Aircraft), each as downloaded, or imagefolder (class folders, optionally "
                          "under train/ and test/). Default: detected from the folder's files.",
                  "choices": list(layouts.DATASET_FORMATS)},
    )
    aircraft_level: str = field(
        default="variant",
        metadata={"help": "FGVC-Aircraft labels: variant (100 classes), family (70) or manufacturer (30).",
                  "choices": list(layouts.AIRCRAFT_LEVELS)},
    )
    crop_to_bbox: bool = field(
        default=False,
        metadata={"help": "Crop every image to its bounding box first (CUB, Cars, Aircraft). Off by default; "
                          "results record the setting."},
    )

    def format_kwargs(self) -> dict:
        """The keyword arguments of `load_splits` these fields set."""
        return {"dataset_format": self.dataset_format, "aircraft_level": self.aircraft_level,
                "crop_to_bbox": self.crop_to_bbox}


# --------------------------------------------------------------------------------------------- loading


def _is_save_to_disk_dir(path: Path) -> bool:
    """True if `path` was written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _looks_like_local_path(name: str) -> bool:
    """A string that can only mean a local path (a Hub id is `name` or `namespace/name`)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


#: Sub-folder names of an image folder that are splits (the rest of the layout is class folders).
SPLIT_FOLDER_NAMES = {
    "train": "train", "training": "train",
    "test": "test", "testing": "test",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
}


def _image_folder_data_files(path: Path) -> dict[str, str]:
    """Split -> glob pattern for an image folder: its split sub-folders, or the whole folder as "train".

    Explicit patterns spare datasets its split inference, which globs the tree once per known split
    name (8 s instead of 1 s on a 6k-image folder, on every call, cached or not).
    """
    splits = {}
    for child in sorted(path.iterdir()):
        split = SPLIT_FOLDER_NAMES.get(child.name.lower()) if child.is_dir() else None
        if split is not None and split not in splits:
            splits[split] = str(child / "**")
    order = ("train", "validation", "test")
    files = {split: splits[split] for split in order if split in splits} or {"train": str(path / "**")}
    _refuse_hidden_class_folders([Path(pattern).parent for pattern in files.values()])
    return files


#: File endings datasets' imagefolder reads as images (the common ones; enough to tell a class folder).
_IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _refuse_hidden_class_folders(split_folders: list[Path]) -> None:
    """datasets' imagefolder skips folders whose names start with "." (`.hidden`, `..x`): a class of images there
    would vanish without a word. Refuse, naming them (folders without images, e.g. .ipynb_checkpoints, are fine)."""
    hidden = [child for folder in split_folders if folder.is_dir() for child in sorted(folder.iterdir())
              if child.is_dir() and child.name.startswith(".")
              and any(f.suffix.lower() in _IMAGE_ENDINGS for f in child.rglob("*"))]
    if hidden:
        names = ", ".join(str(h) for h in hidden[:3]) + (" ..." if len(hidden) > 3 else "")
        raise ValueError(f"Class folders whose names start with '.' hold images but would be skipped (datasets "
                         f"ignores hidden folders): {names}. Rename them without the leading dot.")


def resolve_dataset_format(name_or_path: str | None, dataset_format: str | None = None) -> str:
    """How `name_or_path` will be read: "synthetic", "save_to_disk", "cub", "cars", "aircraft", "imagefolder" or
    "hub". A local folder's layout is detected from its files unless `dataset_format` names one.

    Raises:
        ValueError: an unknown `dataset_format`, or one given for something that is not a plain local folder.
        FileNotFoundError: a local path that does not exist or is a file; a folder that lacks files of the layout
            it names or partly has (the message lists them).
    """
    if dataset_format is not None and dataset_format not in layouts.DATASET_FORMATS:
        raise ValueError(
            f"--dataset_format must be one of {', '.join(layouts.DATASET_FORMATS)}, got {dataset_format!r}."
        )
    if name_or_path is None or (name_or_path == SYNTHETIC_NAME and not Path(name_or_path).exists()):
        found = "synthetic"
    else:
        path = Path(name_or_path).expanduser()
        if path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is a file, not a dataset directory; {ACCEPTED_FORMS}.")
        if not path.is_dir() and _looks_like_local_path(name_or_path):
            raise FileNotFoundError(f"Dataset path {name_or_path!r} does not exist; {ACCEPTED_FORMS}.")
        if not path.is_dir():
            found = "hub"
        elif _is_save_to_disk_dir(path):
            found = "save_to_disk"
        elif dataset_format in layouts.LAYOUT_TITLES:
            layouts.require_layout(path, dataset_format)
            return dataset_format
        elif dataset_format == "imagefolder":
            _warn_if_layout_read_as_image_folder(path)
            return dataset_format
        else:
            return layouts.detect_layout(path) or "imagefolder"
    if dataset_format is not None:
        what = {"synthetic": "the embedded synthetic dataset", "save_to_disk": "a save_to_disk folder",
                "hub": "a Hub dataset id (there is no such local folder)"}[found]
        raise ValueError(
            f"--dataset_format {dataset_format} names the layout of a local folder, and {name_or_path!r} is {what}; "
            f"drop --dataset_format."
        )
    return found


def _warn_if_layout_read_as_image_folder(path: Path) -> None:
    """Say so when a known layout is forced through the image-folder reader (its split files are then ignored)."""
    for layout, title in layouts.LAYOUT_TITLES.items():
        if all(found is not None for found in layouts.layout_files(path, layout).values()):
            logger.warning(
                "%s has the %s layout but --dataset_format imagefolder ignores its split files: without train/ and "
                "test/ sub-folders all its images, test images included, are one 'train' split.", path, title
            )


def _read_dataset(name_or_path, dataset_format: str, aircraft_level: str, cache_dir) -> datasets.DatasetDict:
    """The DatasetDict of `name_or_path` read as `dataset_format` (a value of `resolve_dataset_format`)."""
    if dataset_format == "synthetic":
        from .synthetic import default_dataset

        return default_dataset(cache_dir=cache_dir)
    path = Path(name_or_path).expanduser()
    if dataset_format == "save_to_disk":
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if dataset_format in layouts.LAYOUT_TITLES:
        return layouts.load_layout(path, dataset_format, aircraft_level, cache_dir=cache_dir)
    if dataset_format == "imagefolder":
        data_files = _image_folder_data_files(path)  # refuses hidden class folders in its own words
        try:
            return datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
        except (FileNotFoundError, ValueError) as err:
            raise FileNotFoundError(
                f"Could not read {str(path)!r} as an image folder ({err}); {ACCEPTED_FORMS}."
            ) from err
    try:
        loaded = datasets.load_dataset(name_or_path, cache_dir=cache_dir)
    except Exception as err:  # network, auth, not found: many error types, one message with the fix
        raise FileNotFoundError(
            f"Could not load {name_or_path!r}: it is not a local directory and loading it as a Hub dataset "
            f"failed ({type(err).__name__}: {err}); {ACCEPTED_FORMS}."
        ) from err
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _load_raw(name_or_path, cache_dir, dataset_format, aircraft_level, crop_to_bbox, num_proc):
    """(raw DatasetDict, the format it was read as): `load_raw_dataset` plus what `load_splits` records."""
    resolved = resolve_dataset_format(name_or_path, dataset_format)
    raw = _read_dataset(name_or_path, resolved, aircraft_level, cache_dir)
    if crop_to_bbox:
        raw = layouts.crop_to_bbox(raw, num_proc=num_proc)
    return raw, resolved


def load_raw_dataset(
    name_or_path: str | None,
    cache_dir=None,
    dataset_format: str | None = None,
    aircraft_level: str = "variant",
    crop_to_bbox: bool = False,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Load a dataset as a DatasetDict of raw (undecoded-on-disk) examples.

    Args:
        name_or_path: None or "synthetic" -> the embedded synthetic fine-grained dataset
            (training.synthetic, generated once and cached); a ``save_to_disk`` directory (a bare Dataset
            becomes ``{"train": ds}``); a CUB-200-2011, Stanford Cars or FGVC-Aircraft folder as downloaded
            (training.layouts: train / test, and validation for Aircraft, from the dataset's split files;
            image, label (ClassLabel with the class names), bbox); any other local directory is an image folder
            (the "imagefolder" builder; labels from the class-folder names; split sub-folders train/,
            validation/ (or val/, valid/, dev/), test/ become splits, otherwise all is "train"); otherwise a Hub id.
        cache_dir: passed to ``load_dataset`` (the datasets cache), or where the synthetic dataset is kept.
        dataset_format: None (detect) or a value of training.layouts.DATASET_FORMATS naming the folder's layout.
        aircraft_level: FGVC-Aircraft's label level: "variant", "family" or "manufacturer".
        crop_to_bbox: crop every image to its "bbox" box (training.layouts.crop_to_bbox).
        num_proc: worker processes for the crop.

    Raises:
        FileNotFoundError: a local path that does not exist, a known layout with files missing, or a Hub id that
            cannot be loaded; the message names the path and the accepted forms or the missing files.
        ValueError: a bad `dataset_format`, or `crop_to_bbox` on data without boxes.
    """
    return _load_raw(name_or_path, cache_dir, dataset_format, aircraft_level, crop_to_bbox, num_proc)[0]


# --------------------------------------------------------------------------------------------- columns


def _pick_column(ds: datasets.Dataset, kind: str, by_feature: list[str], names: tuple[str, ...], flag: str):
    """Choose one column: the only one with the right feature type, else a known name, else None/ambiguous."""
    if len(by_feature) == 1:
        return by_feature[0]
    pool = by_feature if by_feature else ds.column_names
    for name in names:  # several candidates (e.g. CIFAR-100's fine_label / coarse_label): prefer known names
        if name in pool:
            return name
    if len(by_feature) > 1:
        raise ValueError(
            f"Cannot tell which column holds the {kind}: several candidates {by_feature}. "
            f"Available columns: {ds.column_names}. Pass {flag}."
        )
    return None


def find_columns(ds: datasets.Dataset, image_column=None, label_column=None) -> tuple[str, str | None]:
    """Find the image column and the label column (None if the dataset has no labels).

    Automatic when obvious: the only `Image` feature, else a column named image/img; the only
    `ClassLabel` feature, else a column named label/labels/fine_label. Given names are checked.

    Raises:
        ValueError: a given column does not exist, no image column is found, or the choice is
            ambiguous; the message lists the available columns and the flag to pass.
    """
    columns = ds.column_names
    for given, flag in ((image_column, "--image_column"), (label_column, "--label_column")):
        if given is not None and given not in columns:
            raise ValueError(f"Column {given!r} ({flag}) does not exist. Available columns: {columns}.")

    if image_column is None:
        image_features = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
        image_column = _pick_column(ds, "image", image_features, IMAGE_COLUMN_NAMES, "--image_column")
        if image_column is None:
            raise ValueError(
                f"No image column found (no Image feature, no column named {list(IMAGE_COLUMN_NAMES)}). "
                f"Available columns: {columns}. Pass --image_column."
            )
    if label_column is None:
        label_features = [c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)]
        label_column = _pick_column(ds, "label", label_features, LABEL_COLUMN_NAMES, "--label_column")
    if label_column == image_column:
        raise ValueError(f"Image and label column are both {image_column!r}. Available columns: {columns}.")
    return image_column, label_column


# --------------------------------------------------------------------------------------------- decoding


def _decode_batch(
    batch: dict, image_column: str, label_column: str | None, image_size: int, decode_version: int
) -> dict:
    """datasets.map function: decode a batch; a failed image becomes zeros + its error message (then dropped).

    `decode_version` is unused here; it only makes DECODE_VERSION part of the cache fingerprint.
    """
    images = batch[image_column]
    pixel_values = np.zeros((len(images), 3, image_size, image_size), dtype=np.uint8)
    errors = []
    for i, value in enumerate(images):
        try:
            pixel_values[i] = decode_image(value, image_size)
            errors.append("")
        # PIL reports corrupt data with many error types (UnidentifiedImageError, OSError, SyntaxError,
        # ValueError, DecompressionBombError, ...); every one means "skip this image", and the message is kept.
        except Exception as err:  # noqa: BLE001
            where = value.get("path") if isinstance(value, dict) else None
            errors.append(f"{where or '<bytes>'}: {type(err).__name__}: {err}")
    labels = batch[label_column] if label_column is not None else [-1] * len(images)
    return {"pixel_values": pixel_values, "labels": [int(x) for x in labels], "_error": errors}


def _decode_batch_boxed(
    batch: dict, image_column: str, label_column: str | None, box_side: int, boxed_decode_version: int
) -> dict:
    """`_decode_batch` for a cache with room: each image whole in a box_side x box_side box, plus its valid
    (height, width); `boxed_decode_version` only makes BOXED_DECODE_VERSION part of the cache fingerprint."""
    images = batch[image_column]
    pixel_values = np.zeros((len(images), 3, box_side, box_side), dtype=np.uint8)
    valid = np.zeros((len(images), 2), dtype=np.int32)
    errors = []
    for i, value in enumerate(images):
        try:
            pixel_values[i], valid[i] = decode_image_boxed(value, box_side)
            errors.append("")
        except Exception as err:  # noqa: BLE001  (as _decode_batch: every PIL error means "skip this image")
            where = value.get("path") if isinstance(value, dict) else None
            errors.append(f"{where or '<bytes>'}: {type(err).__name__}: {err}")
    labels = batch[label_column] if label_column is not None else [-1] * len(images)
    return {"pixel_values": pixel_values, VALID_HW_COLUMN: valid, "labels": [int(x) for x in labels],
            "_error": errors}


def cache_box_side(image_size: int, cache_size_factor: float = 1.0) -> int:
    """The side of the cached images: S for factor 1, else round(factor x S) (the box of a cache with room)."""
    factor = float(cache_size_factor)
    if not factor >= 1.0:
        raise ValueError(f"cache_size_factor must be >= 1 (1: the S x S centre crop), got {cache_size_factor}.")
    return int(image_size) if factor == 1.0 else int(round(factor * image_size))


def has_room(dataset) -> bool:
    """True for a split decoded into a cache with room (it has the valid-region column)."""
    return dataset is not None and VALID_HW_COLUMN in dataset.column_names


def _fixed_subset(ds: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    """A fixed random subset (seed SUBSET_SEED) of `max_samples` rows, in storage order: covers all classes
    of a class-sorted folder, and is the same subset on every run (so it stays cached)."""
    if max_samples is None or max_samples >= len(ds):
        return ds
    rng = np.random.default_rng(SUBSET_SEED)
    return ds.select(np.sort(rng.permutation(len(ds))[:max_samples]))


def prepare_images(ds, image_column, label_column, image_size: int, max_samples=None, num_proc=None,
                   cache_size_factor: float = 1.0):
    """Decode and resize every image once into a fixed-size uint8 column.

    Args:
        ds: a `datasets.Dataset` with an image column (any Image feature, or paths / bytes).
        image_column, label_column: see `find_columns`; label_column None gives labels -1.
        image_size: S, side of the square output.
        max_samples: keep a fixed random subset of this many rows (before decoding).
        num_proc: worker processes for the decoding map.
        cache_size_factor: 1 (default): the S x S centre crop. F > 1: a cache with room, each image whole at its
            aspect ratio in an F*S x F*S box (`decode_image_boxed`), with its valid (height, width) in the int32
            column "valid_hw"; F is part of the cache's fingerprint.

    Returns:
        (dataset, num_skipped): the dataset in torch format with "pixel_values" (stored as uint8 3 x S x S)
        and "labels" (int64) plus the other non-image columns; corrupt / unreadable images are dropped and
        counted in num_skipped. The decoded data is cached by datasets' fingerprint: a second call on the
        same data and arguments reads the cache instead of decoding.

    Note: datasets' torch and numpy formatters return every integer array as int64, so `ds[i]["pixel_values"]`
    is an int64 tensor with values 0..255; `collate_uint8` casts batches back to uint8. For bulk reads at
    8x less memory use `ds.with_format("numpy", columns=["pixel_values"], dtype=np.uint8)` (that dtype
    would also apply to "labels", where -1 would wrap, hence the columns=).
    """
    for column in (image_column, label_column):
        if column is not None and column not in ds.column_names:
            raise ValueError(f"Column {column!r} does not exist. Available columns: {ds.column_names}.")
    ds = _fixed_subset(ds, max_samples)
    if isinstance(ds.features[image_column], datasets.Image):
        # Decode ourselves, so that a corrupt file is one caught error instead of a crash inside datasets.
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    side = cache_box_side(image_size, cache_size_factor)
    kept = {c: f for c, f in ds.features.items() if c not in (image_column, label_column)}
    map_kwargs = dict(
        batched=True,
        batch_size=64,
        remove_columns=[c for c in (image_column, label_column) if c is not None],
        num_proc=num_proc if num_proc and num_proc > 1 and len(ds) >= 2 * num_proc else None,
    )
    common = {"image_column": image_column, "label_column": label_column}
    if side == image_size and float(cache_size_factor) == 1.0:  # today's cache, its fingerprint unchanged
        decode, extra_features, desc = _decode_batch, {}, f"Decoding images to {image_size}x{image_size}"
        fn_kwargs = {**common, "image_size": image_size, "decode_version": DECODE_VERSION}
    else:
        decode, desc = _decode_batch_boxed, f"Decoding whole images into {side}x{side} boxes"
        extra_features = {VALID_HW_COLUMN: datasets.Sequence(datasets.Value("int32"), length=2)}
        fn_kwargs = {**common, "box_side": side, "boxed_decode_version": BOXED_DECODE_VERSION}
    # The features' order is part of the cache's fingerprint: pixel_values, [valid_hw,] labels, _error.
    features = datasets.Features({**kept, "pixel_values": datasets.Array3D((3, side, side), "uint8"), **extra_features,
                                  "labels": datasets.Value("int64"), "_error": datasets.Value("string")})
    decoded = ds.map(decode, fn_kwargs=fn_kwargs, features=features, desc=desc, **map_kwargs)
    errors = decoded["_error"][:]
    bad = [i for i, e in enumerate(errors) if e]
    if bad and len(bad) == len(errors):
        raise ValueError(f"None of the {len(errors)} images could be decoded; first error: {errors[bad[0]]}")
    for i in bad[:5]:
        logger.warning("Skipping unreadable image %s", errors[i])
    if bad:
        bad_set = set(bad)
        decoded = decoded.select([i for i in range(len(errors)) if i not in bad_set])
    decoded = decoded.remove_columns("_error")
    return decoded.with_format("torch"), len(bad)


# --------------------------------------------------------------------------------------------- splits


@dataclass
class PreparedData:
    """Decoded train / eval splits plus what the rest of the pipeline needs to know about them."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    label_names: list[str] | None
    num_skipped: dict[str, int] = field(default_factory=dict)
    image_column: str = "image"
    label_column: str | None = "label"
    #: How the data was read, for results files: {"dataset_format", "crop_to_bbox"[, "aircraft_level"]
    #: [, "cache_size_factor" when not 1]}.
    source: dict = field(default_factory=dict)


def _split_parts(split: str) -> list[str]:
    """The splits a split expression names: "train" -> ["train"], "train+validation" -> ["train", "validation"]."""
    return [part.strip() for part in split.split("+")]


def select_split(raw: datasets.DatasetDict, split: str, name_or_path=None) -> datasets.Dataset:
    """One split of `raw`, or several joined with "+" (e.g. "train+validation", FGVC-Aircraft's trainval).

    Raises:
        ValueError: a named split does not exist; the message lists the available splits.
    """
    parts = _split_parts(split)
    for part in parts:
        if part not in raw:
            raise ValueError(f"Split {part!r} not found in {name_or_path!r}. Available splits: {list(raw)}.")
    return raw[parts[0]] if len(parts) == 1 else datasets.concatenate_datasets([raw[part] for part in parts])


#: Seed of the fixed per-class validation carve-out (`holdout_fraction`).
HOLDOUT_SEED = 0


def carve_holdout(ds: datasets.Dataset, label_column: str, fraction: float, seed: int = HOLDOUT_SEED):
    """Split `ds` into (rest, holdout): `fraction` of every class (rounded, at least one image per class with two
    or more), drawn with a fixed seed. The validation part of train on which knobs are chosen, so that the test
    split is only ever scored (docs/method.md, evaluation protocol)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), e.g. 0.15; got {fraction}.")
    labels = np.asarray(ds[label_column])
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = int(round(fraction * len(members)))
        n = min(max(n, 1), len(members) - 1) if len(members) > 1 else 0
        held.extend(rng.permutation(members)[:n].tolist())
    held_set = set(held)
    rest = [i for i in range(len(ds)) if i not in held_set]
    return ds.select(rest), ds.select(sorted(held))


def _resolve_eval_split(raw: datasets.DatasetDict, train_split: str, eval_split: str | None) -> str | None:
    """The eval split: the one asked for ("none": no eval split), else "test", else "validation", else none."""
    if eval_split is not None:
        return None if eval_split.lower() == NO_EVAL_SPLIT else eval_split
    for candidate in ("test", "validation"):
        if candidate in raw and candidate not in _split_parts(train_split):
            return candidate
    return None


def no_test_split_message(name_or_path, splits) -> str:
    """The one-line error for data without a test split when evaluation is asked for, with the three fixes."""
    return (
        f"{name_or_path!r} has no test split (splits: {list(splits)}), so evaluation would have nothing to score "
        f"and every image would be trained on. Give a folder with train/ and test/ sub-folders, a CUB-200-2011, "
        f"Stanford Cars or FGVC-Aircraft folder as downloaded (detected, or --dataset_format cub|cars|aircraft), "
        f"or pass --eval_split {NO_EVAL_SPLIT} to train without evaluation."
    )


def load_splits(
    name_or_path,
    image_size,
    image_column=None,
    label_column=None,
    max_train_samples=None,
    max_eval_samples=None,
    train_split="train",
    eval_split=None,
    num_proc=None,
    cache_dir=None,
    dataset_format=None,
    aircraft_level="variant",
    crop_to_bbox=False,
    require_eval=False,
    holdout_fraction: float = 0.0,
    cache_size_factor: float = 1.0,
) -> PreparedData:
    """Load, find columns, and decode the train split and the eval split (see the module docstring).

    `train_split` / `eval_split` may join splits with "+"; `eval_split` "none" means no eval split, None the
    first of "test", "validation" that is not trained on. `dataset_format`, `aircraft_level`, `crop_to_bbox`:
    see `load_raw_dataset`. With `require_eval`, labelled data without an eval split is an error instead of a
    run that silently skips evaluation, unless `eval_split` is "none" (unlabelled data cannot be evaluated and
    is not refused). With `holdout_fraction` > 0, a fixed per-class part of the train split (`carve_holdout`)
    becomes the eval split and the rest is trained on; the dataset's own test split is not used at all (for
    choosing knobs). `cache_size_factor`: see `prepare_images` (both splits are decoded the same way).

    Raises:
        ValueError: an unknown split name (the message lists the splits), a split both trained on and evaluated
            on, no eval split under `require_eval` (the message names the fixes), or an unusable column.
    """
    raw, resolved_format = _load_raw(name_or_path, cache_dir, dataset_format, aircraft_level, crop_to_bbox, num_proc)
    if holdout_fraction:
        train_all = select_split(raw, train_split, name_or_path)
        _, label_col = find_columns(train_all, image_column, label_column)
        if label_col is None:
            raise ValueError("holdout_fraction needs labels to carve a per-class validation part; the dataset has "
                             "no label column (pass --label_column, or drop --holdout_fraction).")
        rest, held = carve_holdout(train_all, label_col, holdout_fraction)
        raw, train_split, eval_split = datasets.DatasetDict({"train": rest, "holdout": held}), "train", "holdout"
    no_eval_asked = eval_split is not None and eval_split.lower() == NO_EVAL_SPLIT
    eval_split = _resolve_eval_split(raw, train_split, eval_split)
    train_raw = select_split(raw, train_split, name_or_path)
    eval_raw = select_split(raw, eval_split, name_or_path) if eval_split is not None else None
    shared = set(_split_parts(train_split)) & set(_split_parts(eval_split or ""))
    if shared:
        raise ValueError(
            f"Split(s) {sorted(shared)} are in both --train_split {train_split!r} and --eval_split {eval_split!r}: "
            f"their images would be trained on and then scored. Evaluate on a split that is not trained on."
        )

    image_column, label_column = find_columns(train_raw, image_column, label_column)
    if require_eval and eval_raw is None and label_column is not None and not no_eval_asked:
        raise ValueError(no_test_split_message(name_or_path, raw))
    label_feature = train_raw.features[label_column] if label_column else None
    label_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None

    train, skipped_train = prepare_images(
        train_raw, image_column, label_column, image_size, max_train_samples, num_proc, cache_size_factor
    )
    num_skipped = {train_split: skipped_train}
    eval_ds = None
    if eval_raw is not None:
        eval_ds, num_skipped[eval_split] = prepare_images(
            eval_raw, image_column, label_column, image_size, max_eval_samples, num_proc, cache_size_factor
        )
    for split, count in num_skipped.items():
        logger.info("Split %r: skipped %d unreadable image(s)", split, count)
    source = {"dataset_format": resolved_format, "crop_to_bbox": bool(crop_to_bbox)}
    if resolved_format == "aircraft":
        source["aircraft_level"] = aircraft_level
    if float(cache_size_factor) != 1.0:  # a cache with room: part of every result (absent: the square cache)
        source["cache_size_factor"] = float(cache_size_factor)
    return PreparedData(train, eval_ds, label_names, num_skipped, image_column, label_column, source)


def load_splits_from_args(args, image_size: int, dataset_name: str | None = None, **overrides) -> PreparedData:
    """`load_splits` with the fields of a command's `training.arguments.DataArguments` (dataset, columns, sample
    caps, splits, decoding processes, layout); `overrides` win (fgssl-pretrain: its `holdout_fraction`)."""
    kwargs = dict(
        image_column=args.image_column, label_column=args.label_column, max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples, train_split=args.train_split, eval_split=args.eval_split,
        num_proc=args.num_proc, **args.format_kwargs(),
    )
    if float(getattr(args, "cache_size_factor", 1.0)) != 1.0:
        kwargs["cache_size_factor"] = float(args.cache_size_factor)
    kwargs.update(overrides)
    return load_splits(dataset_name or args.dataset_name, image_size, **kwargs)


# --------------------------------------------------------------------------------------------- batching


def collate_uint8(examples) -> dict[str, torch.Tensor]:
    """Stack examples into {"pixel_values": uint8 B x 3 x S x S, "labels": int64 B} (labels -1 if absent); from a
    cache with room also "valid_hw": int64 B x 2, each image's valid (height, width) in its box."""
    # torch-formatted datasets hand out int64 pixels (see prepare_images); values are 0..255, the cast is exact.
    pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]).to(torch.uint8) for e in examples])
    labels = torch.tensor([int(e.get("labels", -1)) for e in examples], dtype=torch.int64)
    batch = {"pixel_values": pixel_values, "labels": labels}
    if examples and VALID_HW_COLUMN in examples[0]:
        batch[VALID_HW_COLUMN] = torch.stack([torch.as_tensor(e[VALID_HW_COLUMN]).to(torch.int64) for e in examples])
    return batch
