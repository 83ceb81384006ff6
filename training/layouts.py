"""The three fine-grained benchmarks in the layouts their authors distribute, as `datasets.DatasetDict`s.

    CUB-200-2011   CUB_200_2011/: images/<class>/*.jpg, images.txt, image_class_labels.txt,
                   train_test_split.txt, classes.txt, bounding_boxes.txt (optional)
    Stanford Cars  cars_train/*.jpg, cars_test/*.jpg and the devkit's cars_meta.mat, cars_train_annos.mat, plus
                   cars_test_annos_withlabels.mat (each .mat in the folder itself or in devkit/)
    FGVC-Aircraft  fgvc-aircraft-2013b/ (or its data/ folder): data/images/*.jpg,
                   data/images_<level>_{train,val,test}.txt, data/{variants,families,manufacturers}.txt,
                   data/images_box.txt (optional)

Every loader returns splits "train" and "test" ("validation" too for Aircraft), taken from the dataset's own
split files, with the columns

    image  datasets.Image holding the file's path (decoded lazily; save_to_disk / push_to_hub embed the bytes)
    label  datasets.ClassLabel with the dataset's class names, in its own class order
    bbox   only when the boxes are on disk: [x_min, y_min, x_max, y_max] float32 pixels of the stored image,
           0-based, right / bottom edge exclusive (PIL's crop box)

The splits are written once into the datasets cache (`Dataset.from_generator`), so the decode cache built on top of
them (training.data.prepare_images) is reused by the next run instead of decoding every JPEG again.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

LAYOUT_TITLES = {"cub": "CUB-200-2011", "cars": "Stanford Cars", "aircraft": "FGVC-Aircraft"}
#: Values of --dataset_format: a known layout, or "imagefolder" to skip detection.
DATASET_FORMATS = (*LAYOUT_TITLES, "imagefolder")
AIRCRAFT_LEVELS = ("variant", "family", "manufacturer")
#: The box column every loader writes and `crop_to_bbox` reads.
BBOX_COLUMN = "bbox"
BBOX_FEATURE = datasets.List(datasets.Value("float32"), length=4)
#: Crops of JPEG photographs are stored as JPEG at this quality with 4:4:4 chroma (colour tells birds apart).
CROP_JPEG_QUALITY = 95

#: Files of each layout: (what the messages call it, where it may be, relative to the folder, in order of preference).
LAYOUT_FILES = {
    "cub": [
        ("images/", ("images",)),
        ("images.txt", ("images.txt",)),
        ("image_class_labels.txt", ("image_class_labels.txt",)),
        ("train_test_split.txt", ("train_test_split.txt",)),
        ("classes.txt", ("classes.txt",)),
    ],
    "cars": [
        ("cars_train/", ("cars_train",)),
        ("cars_test/", ("cars_test",)),
        ("cars_meta.mat", ("devkit/cars_meta.mat", "cars_meta.mat")),
        ("cars_train_annos.mat", ("devkit/cars_train_annos.mat", "cars_train_annos.mat")),
        ("cars_test_annos_withlabels.mat",
         ("devkit/cars_test_annos_withlabels.mat", "cars_test_annos_withlabels.mat")),
    ],
    # Users point at fgvc-aircraft-2013b/ or at its data/ folder: both are accepted.
    "aircraft": [
        ("data/images/", ("data/images", "images")),
        *[(f"data/images_variant_{s}.txt", (f"data/images_variant_{s}.txt", f"images_variant_{s}.txt"))
          for s in ("train", "val", "test")],
        ("data/variants.txt", ("data/variants.txt", "variants.txt")),
    ],
}
#: Files that only this layout has: one of them present while others are missing is a broken download, not an
#: image folder (generic names such as classes.txt or images/ are not evidence).
LAYOUT_SIGNATURES = {
    "cub": ("image_class_labels.txt", "train_test_split.txt"),
    "cars": ("cars_meta.mat", "cars_train_annos.mat", "cars_test_annos_withlabels.mat"),
    "aircraft": tuple(f"data/images_variant_{s}.txt" for s in ("train", "val", "test")),
}
#: Optional box files (the Cars boxes are inside its .mat files).
BOX_FILES = {"cub": ("bounding_boxes.txt",), "aircraft": ("data/images_box.txt", "images_box.txt")}
#: Sub-folders that make a folder an image folder with splits (training.data reads those).
_SPLIT_FOLDERS = ("train", "test", "val", "validation")


# --------------------------------------------------------------------------------------------- finding files


def _first_existing(root: Path, candidates) -> Path | None:
    """The first of `candidates` (paths relative to root) that exists, else None."""
    return next((root / c for c in candidates if (root / c).exists()), None)


def layout_files(root, layout: str) -> dict[str, Path | None]:
    """Each file of `layout` (by its name in LAYOUT_FILES) -> its absolute path under `root`, or None when missing.

    Absolute, because the image paths go into the datasets cache, which is shared by runs from other directories.
    """
    root = Path(root).expanduser().resolve()
    return {name: _first_existing(root, candidates) for name, candidates in LAYOUT_FILES[layout]}


def require_layout(root, layout: str) -> dict[str, Path]:
    """`layout_files`, or FileNotFoundError naming the missing files when the folder is incomplete."""
    found = layout_files(root, layout)
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"{str(root)!r} is not a complete {LAYOUT_TITLES[layout]} folder: missing {', '.join(missing)} "
            f"(expected: {', '.join(found)}). Point --dataset_name at the folder as downloaded, or pass "
            f"--dataset_format imagefolder to read it as an image folder."
        )
    return found


def detect_layout(path) -> str | None:
    """"cub", "cars" or "aircraft" when `path` holds that layout's files, None for anything else (image folders).

    Raises:
        FileNotFoundError: files only one layout has are present but others are missing (a partial download or
            extraction), unless the folder also has train/ or test/ sub-folders (then it is an image folder).
    """
    path = Path(path)
    for layout in LAYOUT_TITLES:
        if all(found is not None for found in layout_files(path, layout).values()):
            return layout
    if any((path / name).is_dir() for name in _SPLIT_FOLDERS):
        return None
    for layout, signatures in LAYOUT_SIGNATURES.items():
        if any(_first_existing(path, dict(LAYOUT_FILES[layout])[name]) for name in signatures):
            require_layout(path, layout)  # raises: it names what is missing
    return None


# --------------------------------------------------------------------------------------------- shared helpers


def _read_table(path: Path, num_fields: int) -> list[list[str]]:
    """Rows of a whitespace-separated index file, split into `num_fields` fields (the last keeps its spaces).

    Raises:
        ValueError: a non-empty line with fewer fields; the message names the file and the line.
    """
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=num_fields - 1)
        if len(fields) < num_fields:
            raise ValueError(f"{path}, line {number}: expected {num_fields} fields, got {line!r}.")
        rows.append([f.strip() for f in fields])
    return rows


def _lookup(table: dict, key: str, source: Path):
    """table[key], or ValueError naming the index file that lacks the entry."""
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"{source} has no entry for image {key!r}; the download looks incomplete.") from None


def _inclusive_box(x_min, y_min, x_max, y_max) -> list[float]:
    """A 1-based box with inclusive corners (Cars, Aircraft) as BBOX_FEATURE's 0-based, end-exclusive box."""
    return [float(x_min) - 1.0, float(y_min) - 1.0, float(x_max), float(y_max)]


def _examples(rows):
    """datasets generator: the rows as they are ({"image": path, "label": int[, "bbox": 4 floats]})."""
    yield from rows


#: Share of the images a layout's lists name that may be absent before the folder counts as a partial download (a
#: few missing files are skipped and counted like unreadable ones; more means the archive was not fully extracted).
MISSING_IMAGES_TOLERATED = 0.01


def refuse_partial_download(splits: dict[str, list[dict]]) -> None:
    """FileNotFoundError when more than MISSING_IMAGES_TOLERATED of the listed image files are not on disk."""
    listed = [row["image"] for rows in splits.values() for row in rows]
    missing = [path for path in listed if not Path(path).is_file()]
    if listed and len(missing) > MISSING_IMAGES_TOLERATED * len(listed):
        raise FileNotFoundError(
            f"{len(missing)} of the {len(listed)} images the dataset's lists name are missing (e.g. {missing[0]}): a "
            "partial download or extraction. Extract the archive again (all of it), then rerun."
        )


def _dataset_dict(splits: dict[str, list[dict]], class_names: list[str], cache_dir=None) -> datasets.DatasetDict:
    """Split name -> rows, as a DatasetDict written once into the datasets cache (keyed by the rows themselves).

    Raises:
        FileNotFoundError: a partial download (`refuse_partial_download`).
    """
    refuse_partial_download(splits)
    has_bbox = all(BBOX_COLUMN in row for rows in splits.values() for row in rows)
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)}
    if has_bbox:
        features[BBOX_COLUMN] = BBOX_FEATURE
    features = datasets.Features(features)
    out = {}
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"The {split!r} split is empty: the split file lists no images.")
        rows = [{k: row[k] for k in features} for row in rows]
        out[split] = datasets.Dataset.from_generator(
            _examples, features=features, gen_kwargs={"rows": rows}, cache_dir=cache_dir, split=split
        )
    return datasets.DatasetDict(out)


# --------------------------------------------------------------------------------------------- the three layouts


def load_cub200(root, cache_dir=None) -> datasets.DatasetDict:
    """CUB-200-2011 as downloaded: train 5,994 / test 5,794 images of 200 species, split by train_test_split.txt.

    Class names come from classes.txt without the number prefix ("001.Black_footed_Albatross" ->
    "Black_footed_Albatross"); boxes from bounding_boxes.txt (x, y, width, height) when it exists.
    """
    root = Path(root)
    files = require_layout(root, "cub")
    classes = {cid: re.sub(r"^\d+\.", "", name) for cid, name in _read_table(files["classes.txt"], 2)}
    class_ids = sorted(classes, key=int)
    class_names = [classes[cid] for cid in class_ids]
    label_of_class = {cid: i for i, cid in enumerate(class_ids)}
    labels = dict(_read_table(files["image_class_labels.txt"], 2))
    is_train = dict(_read_table(files["train_test_split.txt"], 2))
    box_file = _first_existing(root, BOX_FILES["cub"])
    boxes = {}
    if box_file is not None:
        for image_id, x, y, w, h in _read_table(box_file, 5):
            boxes[image_id] = [float(x), float(y), float(x) + float(w), float(y) + float(h)]

    splits = {"train": [], "test": []}
    for image_id, relative in _read_table(files["images.txt"], 2):
        class_id = _lookup(labels, image_id, files["image_class_labels.txt"])
        row = {"image": str(files["images/"] / relative),
               "label": _lookup(label_of_class, class_id, files["classes.txt"])}
        if box_file is not None:
            row[BBOX_COLUMN] = _lookup(boxes, image_id, box_file)
        flag = _lookup(is_train, image_id, files["train_test_split.txt"])
        splits["train" if flag == "1" else "test"].append(row)
    return _dataset_dict(splits, class_names, cache_dir)


def _load_mat_array(path: Path, key: str) -> np.ndarray:
    """Variable `key` of a MATLAB file as a 1-D array (a 1 x N struct array -> N records, a cell array -> N items)."""
    from scipy.io import loadmat

    contents = loadmat(path, squeeze_me=True)
    if key not in contents:
        raise ValueError(f"{path} has no variable {key!r} (found: {sorted(k for k in contents if k[:2] != '__')}).")
    return np.atleast_1d(contents[key])


def _cars_rows(annotations_file: Path, image_dir: Path) -> list[dict]:
    """The rows of one Stanford Cars split from its devkit annotations (fname, class 1..196, bbox_x1..bbox_y2)."""
    annotations = _load_mat_array(annotations_file, "annotations")
    needed = ("fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
    missing = [name for name in needed if name not in (annotations.dtype.names or ())]
    if missing:
        raise ValueError(
            f"{annotations_file}: the annotations lack {missing} (cars_test_annos.mat has no labels: use "
            f"cars_test_annos_withlabels.mat)."
        )
    return [
        {"image": str(image_dir / str(a["fname"])), "label": int(a["class"]) - 1,
         BBOX_COLUMN: _inclusive_box(a["bbox_x1"], a["bbox_y1"], a["bbox_x2"], a["bbox_y2"])}
        for a in annotations
    ]


def _cars_image_dir(folder: Path) -> Path:
    """cars_train/ or cars_test/; some re-distributions nest the images once more (cars_train/cars_train/)."""
    nested = folder / folder.name
    return nested if nested.is_dir() else folder


def load_stanford_cars(root, cache_dir=None) -> datasets.DatasetDict:
    """Stanford Cars as downloaded: train 8,144 / test 8,041 images of 196 models; boxes always present.

    Class names come from cars_meta.mat ("AM General Hummer SUV 2000", ...); labels and boxes from
    cars_train_annos.mat and cars_test_annos_withlabels.mat (the devkit's cars_test_annos.mat has no labels).
    """
    files = require_layout(root, "cars")
    class_names = [str(name) for name in _load_mat_array(files["cars_meta.mat"], "class_names")]
    splits = {
        "train": _cars_rows(files["cars_train_annos.mat"], _cars_image_dir(files["cars_train/"])),
        "test": _cars_rows(files["cars_test_annos_withlabels.mat"], _cars_image_dir(files["cars_test/"])),
    }
    return _dataset_dict(splits, class_names, cache_dir)


#: Aircraft: level -> file listing its class names in the dataset's order.
AIRCRAFT_CLASS_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}


def load_fgvc_aircraft(root, level: str = "variant", cache_dir=None) -> datasets.DatasetDict:
    """FGVC-Aircraft (2013b) as downloaded: train 3,334 / validation 3,333 / test 3,333 images.

    `level` chooses the labels: "variant" (100 classes, e.g. "737-400"), "family" (70) or "manufacturer" (30),
    each from data/images_<level>_<split>.txt with its class order from variants.txt / families.txt /
    manufacturers.txt. Boxes come from data/images_box.txt (xmin ymin xmax ymax) when it exists.
    """
    if level not in AIRCRAFT_LEVELS:
        raise ValueError(f"--aircraft_level must be one of {', '.join(AIRCRAFT_LEVELS)}, got {level!r}.")
    root = Path(root)
    data_dir = require_layout(root, "aircraft")["data/images/"].parent
    class_file = data_dir / AIRCRAFT_CLASS_FILES[level]
    split_files = {split: data_dir / f"images_{level}_{name}.txt"
                   for split, name in (("train", "train"), ("validation", "val"), ("test", "test"))}
    missing = [p.name for p in (class_file, *split_files.values()) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{str(data_dir)!r} lacks {', '.join(missing)}, needed for --aircraft_level {level}.")
    class_names = [line.strip() for line in class_file.read_text().splitlines() if line.strip()]
    label_of_name = {name: i for i, name in enumerate(class_names)}
    box_file = _first_existing(root, BOX_FILES["aircraft"])
    boxes = {row[0]: _inclusive_box(*row[1:]) for row in _read_table(box_file, 5)} if box_file else {}

    splits = {}
    for split, split_file in split_files.items():
        splits[split] = []
        for image_id, name in _read_table(split_file, 2):
            row = {"image": str(data_dir / "images" / f"{image_id}.jpg"),
                   "label": _lookup(label_of_name, name, class_file)}
            if box_file is not None:
                row[BBOX_COLUMN] = _lookup(boxes, image_id, box_file)
            splits[split].append(row)
    return _dataset_dict(splits, class_names, cache_dir)


def load_layout(path, layout: str, aircraft_level: str = "variant", cache_dir=None) -> datasets.DatasetDict:
    """Load `path` with the loader of `layout` ("cub", "cars" or "aircraft")."""
    if layout == "cub":
        return load_cub200(path, cache_dir)
    if layout == "cars":
        return load_stanford_cars(path, cache_dir)
    if layout == "aircraft":
        return load_fgvc_aircraft(path, aircraft_level, cache_dir)
    raise ValueError(f"Unknown layout {layout!r}; known: {', '.join(LAYOUT_TITLES)}.")


# --------------------------------------------------------------------------------------------- box crops


def _crop_bytes(value: dict, box) -> dict:
    """One stored image ({"bytes", "path"}) cropped to `box`, re-encoded: JPEG sources as JPEG (quality
    CROP_JPEG_QUALITY, 4:4:4, EXIF kept so the decoder still applies the camera orientation), others as PNG."""
    with Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]) as img:
        width, height = img.size
        # Clamp to the image and keep at least one pixel: annotation boxes sometimes overshoot the border.
        left, top = min(max(0, int(box[0])), width - 1), min(max(0, int(box[1])), height - 1)
        right, bottom = max(left + 1, min(width, round(box[2]))), max(top + 1, min(height, round(box[3])))
        source_format, exif = img.format, img.info.get("exif")
        crop = img.crop((left, top, right, bottom))
        crop.load()
    buffer = io.BytesIO()
    if source_format == "JPEG" and crop.mode in ("RGB", "L", "CMYK"):
        crop.save(buffer, "JPEG", quality=CROP_JPEG_QUALITY, subsampling=0, **({"exif": exif} if exif else {}))
    else:
        if crop.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            crop = crop.convert("RGB")  # modes PNG cannot hold (CMYK, YCbCr, F...)
        crop.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _crop_batch(batch: dict, image_column: str) -> dict:
    """datasets.map function: crop each image to its box; an unreadable image is kept as it is, so the decoder
    skips and counts it like any other unreadable image."""
    images = []
    for value, box in zip(batch[image_column], batch[BBOX_COLUMN]):
        try:
            images.append(_crop_bytes(value, box) if box is not None else value)
        except Exception:  # noqa: BLE001  (PIL raises many types for corrupt data; see training.data)
            images.append(value)
    return {image_column: images}


def crop_to_bbox(raw: datasets.DatasetDict, image_column: str = "image", num_proc=None) -> datasets.DatasetDict:
    """Every split's images cropped to their `bbox` box; the box column is dropped (it described the full image).

    The crops are written once into the datasets cache, like every other map. Images are re-encoded
    (see `_crop_bytes`): at quality 95 and 4:4:4 the loss is far below what resizing to 224 px removes.

    Raises:
        ValueError: a split has no `bbox` column of BBOX_FEATURE's format (the message says where boxes come from).
    """
    out = {}
    for split, ds in raw.items():
        if ds.features.get(BBOX_COLUMN) != BBOX_FEATURE:
            raise ValueError(
                f"--crop_to_bbox needs a {BBOX_COLUMN!r} column of [x_min, y_min, x_max, y_max] boxes, and split "
                f"{split!r} has none (columns: {ds.column_names}). Boxes come with CUB-200-2011 "
                f"(bounding_boxes.txt), Stanford Cars, FGVC-Aircraft (data/images_box.txt) and their fgssl-prepare "
                f"folders; drop --crop_to_bbox for other data."
            )
        if image_column not in ds.column_names:
            raise ValueError(f"Column {image_column!r} does not exist. Available columns: {ds.column_names}.")
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
        features = datasets.Features({c: f for c, f in ds.features.items() if c != BBOX_COLUMN})
        out[split] = ds.map(
            _crop_batch, batched=True, batch_size=64, fn_kwargs={"image_column": image_column},
            remove_columns=[BBOX_COLUMN], features=features,
            num_proc=num_proc if num_proc and len(ds) >= 2 * num_proc else None,
            desc=f"Cropping {split} to the boxes",
        ).cast_column(image_column, datasets.Image())
    return datasets.DatasetDict(out)
