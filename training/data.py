"""Load an image dataset from anywhere `datasets` can read it, decode and resize it ONCE, and collate it.

The pipeline is:

    load_raw_dataset   Hub id | image folder | save_to_disk dir | None (embedded synthetic default)
    find_columns       which column holds the image, which the label
    prepare_images     decode (any PIL mode -> RGB), resize shorter side + centre crop to S, store as a
                       uint8 3 x S x S "pixel_values" column + int64 "labels"; corrupt images are skipped
                       and counted. The result is an Arrow cache file keyed by datasets' fingerprint, so
                       the second run (or the next epoch, or the eval script) never decodes a JPEG again.
    load_splits        all of the above for a train and an optional eval split -> PreparedData
    collate_uint8      batch of examples -> {"pixel_values": uint8 B x 3 x S x S, "labels": int64 B}

Augmentation is not done here: it runs batched on the accelerator (training.augment) on the uint8 batch.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

#: Column names recognised automatically, in order of preference.
IMAGE_COLUMN_NAMES = ("image", "img")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label")
#: The name that selects the embedded synthetic dataset (as does `None`).
SYNTHETIC_NAME = "synthetic"
#: Seed of the fixed random subset taken by `max_samples`.
SUBSET_SEED = 0
#: Part of the decode cache key: datasets hashes `_decode_batch` but not the helpers it calls, so bump this
#: whenever `decode_image` (or a helper) changes its output, or stale cached pixels would be reused.
DECODE_VERSION = 1

ACCEPTED_FORMS = (
    "accepted forms: None or 'synthetic' (the embedded synthetic dataset); a local image folder "
    "(train/ and test/ subfolders of class folders, or class folders directly); a directory written by "
    "Dataset.save_to_disk / DatasetDict.save_to_disk; or a Hugging Face Hub dataset id (needs network "
    "access or the dataset in the local datasets cache)"
)


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
    return {split: splits[split] for split in order if split in splits} or {"train": str(path / "**")}


def load_raw_dataset(name_or_path: str | None, cache_dir=None) -> datasets.DatasetDict:
    """Load a dataset as a DatasetDict of raw (undecoded-on-disk) examples.

    Args:
        name_or_path: None or "synthetic" -> the embedded synthetic fine-grained dataset
            (training.synthetic, generated once and cached); a local image-folder directory (the
            "imagefolder" builder; labels from the class-folder names; split sub-folders train/,
            validation/ (or val/, valid/, dev/), test/ become splits, otherwise all is "train"); a
            ``save_to_disk`` directory (a bare Dataset becomes ``{"train": ds}``); otherwise a Hub id.
        cache_dir: passed to ``load_dataset`` (the datasets cache), or where the synthetic dataset is kept.

    Raises:
        FileNotFoundError: a local path that does not exist, or a Hub id that cannot be loaded; the
            message names the path and the accepted forms.
    """
    if name_or_path is None or (name_or_path == SYNTHETIC_NAME and not Path(name_or_path).exists()):
        from .synthetic import default_dataset

        return default_dataset(cache_dir=cache_dir)

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if _is_save_to_disk_dir(path):
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        try:
            return datasets.load_dataset(
                "imagefolder", data_files=_image_folder_data_files(path), cache_dir=cache_dir
            )
        except (FileNotFoundError, ValueError) as err:
            raise FileNotFoundError(
                f"Could not read {str(path)!r} as an image folder ({err}); {ACCEPTED_FORMS}."
            ) from err
    if path.exists():
        raise FileNotFoundError(f"{str(path)!r} is a file, not a dataset directory; {ACCEPTED_FORMS}.")
    if _looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"Dataset path {name_or_path!r} does not exist; {ACCEPTED_FORMS}.")
    try:
        loaded = datasets.load_dataset(name_or_path, cache_dir=cache_dir)
    except Exception as err:  # network, auth, not found: many error types, one message with the fix
        raise FileNotFoundError(
            f"Could not load {name_or_path!r}: it is not a local directory and loading it as a Hub dataset "
            f"failed ({type(err).__name__}: {err}); {ACCEPTED_FORMS}."
        ) from err
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


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


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent pixels are composited on white (their stored colour is arbitrary, often black);
    16-bit and 32-bit integer / float grey images are rescaled to 0..255 instead of being clipped.
    """
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        elif arr.max(initial=0.0) > 255.0:
            arr = arr / 257.0  # 16-bit range 0..65535 -> 0..255
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size` (antialiased bicubic), then take the centre size x size crop."""
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(value, size: int) -> np.ndarray:
    """Decode one stored image to a uint8 array 3 x size x size (RGB, shorter side resized, centre-cropped).

    `value` is what an `Image(decode=False)` column holds ({"bytes", "path"}), a path, raw bytes, or a
    PIL image. Raises whatever PIL raises for a corrupt or unreadable file.
    """
    if isinstance(value, Image.Image):
        img = value
    else:
        if isinstance(value, dict):
            value = value["bytes"] if value.get("bytes") is not None else value["path"]
        img = Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value)
        # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers size x size (much faster).
        img.draft(None, (size, size))
        img.load()  # truncated / corrupt data raises here, not later
    img = _to_rgb(ImageOps.exif_transpose(img))  # camera orientation first, while the EXIF data is there
    arr = np.asarray(_resize_center_crop(img, size), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


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


def _fixed_subset(ds: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    """A fixed random subset (seed SUBSET_SEED) of `max_samples` rows, in storage order: covers all classes
    of a class-sorted folder, and is the same subset on every run (so it stays cached)."""
    if max_samples is None or max_samples >= len(ds):
        return ds
    rng = np.random.default_rng(SUBSET_SEED)
    return ds.select(np.sort(rng.permutation(len(ds))[:max_samples]))


def prepare_images(ds, image_column, label_column, image_size: int, max_samples=None, num_proc=None):
    """Decode and resize every image once into a fixed-size uint8 column.

    Args:
        ds: a `datasets.Dataset` with an image column (any Image feature, or paths / bytes).
        image_column, label_column: see `find_columns`; label_column None gives labels -1.
        image_size: S, side of the square output.
        max_samples: keep a fixed random subset of this many rows (before decoding).
        num_proc: worker processes for the decoding map.

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
    features = datasets.Features(
        {
            **{c: f for c, f in ds.features.items() if c not in (image_column, label_column)},
            "pixel_values": datasets.Array3D((3, image_size, image_size), "uint8"),
            "labels": datasets.Value("int64"),
            "_error": datasets.Value("string"),
        }
    )
    decoded = ds.map(
        _decode_batch,
        batched=True,
        batch_size=64,
        fn_kwargs={
            "image_column": image_column,
            "label_column": label_column,
            "image_size": image_size,
            "decode_version": DECODE_VERSION,
        },
        remove_columns=[c for c in (image_column, label_column) if c is not None],
        features=features,
        num_proc=num_proc if num_proc and num_proc > 1 and len(ds) >= 2 * num_proc else None,
        desc=f"Decoding images to {image_size}x{image_size}",
    )
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


#: Seed of the fixed per-class validation carve-out (`holdout_fraction`).
HOLDOUT_SEED = 0


def carve_holdout(ds: datasets.Dataset, label_column: str, fraction: float, seed: int = HOLDOUT_SEED):
    """Split `ds` into (rest, holdout): `fraction` of every class (rounded, at least one image per class with two
    or more), drawn with a fixed seed. The validation part of train on which knobs are chosen, so that the test
    split is only ever scored (METHOD.md, evaluation protocol)."""
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
    """The eval split: the one asked for, else "test", else "validation", else none."""
    if eval_split is not None:
        return eval_split
    for candidate in ("test", "validation"):
        if candidate in raw and candidate != train_split:
            return candidate
    return None


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
    holdout_fraction: float = 0.0,
) -> PreparedData:
    """Load, find columns, and decode the train split and the eval split (see the module docstring).

    With `holdout_fraction` > 0, a fixed per-class part of the train split (`carve_holdout`) becomes the eval
    split and the rest is trained on; the dataset's own test split is not loaded at all (choosing knobs).

    Raises:
        ValueError: an unknown split name (the message lists the splits) or an unusable column.
    """
    raw = load_raw_dataset(name_or_path, cache_dir=cache_dir)
    if holdout_fraction:
        _, label_col = find_columns(raw[train_split], image_column, label_column)
        if label_col is None:
            raise ValueError("holdout_fraction needs labels to carve a per-class validation part; the dataset has "
                             "no label column (pass --label_column, or drop --holdout_fraction).")
        rest, held = carve_holdout(raw[train_split], label_col, holdout_fraction)
        raw = datasets.DatasetDict({train_split: rest, "holdout": held})
        eval_split = "holdout"
    eval_split = _resolve_eval_split(raw, train_split, eval_split)
    for split in (train_split, eval_split):
        if split is not None and split not in raw:
            raise ValueError(f"Split {split!r} not found in {name_or_path!r}. Available splits: {list(raw)}.")

    image_column, label_column = find_columns(raw[train_split], image_column, label_column)
    label_feature = raw[train_split].features[label_column] if label_column else None
    label_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None

    train, skipped_train = prepare_images(
        raw[train_split], image_column, label_column, image_size, max_train_samples, num_proc
    )
    num_skipped = {train_split: skipped_train}
    eval_ds = None
    if eval_split is not None:
        eval_ds, num_skipped[eval_split] = prepare_images(
            raw[eval_split], image_column, label_column, image_size, max_eval_samples, num_proc
        )
    for split, count in num_skipped.items():
        logger.info("Split %r: skipped %d unreadable image(s)", split, count)
    return PreparedData(train, eval_ds, label_names, num_skipped, image_column, label_column)


# --------------------------------------------------------------------------------------------- batching


def collate_uint8(examples) -> dict[str, torch.Tensor]:
    """Stack examples into {"pixel_values": uint8 B x 3 x S x S, "labels": int64 B} (labels -1 if absent)."""
    # torch-formatted datasets hand out int64 pixels (see prepare_images); values are 0..255, the cast is exact.
    pixel_values = torch.stack([torch.as_tensor(e["pixel_values"]).to(torch.uint8) for e in examples])
    labels = torch.tensor([int(e.get("labels", -1)) for e in examples], dtype=torch.int64)
    return {"pixel_values": pixel_values, "labels": labels}
