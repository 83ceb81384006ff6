"""fgssl-prepare: convert a dataset folder once into a `save_to_disk` folder or a Hub dataset everyone loads by id.

    fgssl-prepare data/CUB_200_2011 data/cub200                       # a save_to_disk folder
    fgssl-prepare data/fgvc-aircraft-2013b data/aircraft-family --aircraft_level family
    fgssl-prepare data/stanford_cars your-org/stanford-cars --push_to_hub [--private] [--token T]

The source is a CUB-200-2011, Stanford Cars or FGVC-Aircraft folder as downloaded (detected, or named with
--dataset_format), an image folder, or a save_to_disk folder; it is read exactly as fgssl-pretrain reads it
(training.data.load_raw_dataset), so the result has the same splits and columns (image, label with the class
names, bbox where the dataset has boxes). Both outputs carry the image bytes, not paths into the source folder.
Pushing checks the token and the network before reading any image, and leaves nothing behind when it fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import datasets

from .cli import SimpleArgumentParser, console_entry
from .data import load_raw_dataset
from .layouts import AIRCRAFT_LEVELS, DATASET_FORMATS
from .push import HubPushError, _network_error_types, check_hub_access


def build_parser() -> SimpleArgumentParser:
    parser = SimpleArgumentParser(
        prog="fgssl-prepare",
        description="Convert a CUB-200-2011, Stanford Cars or FGVC-Aircraft folder (as downloaded), an image folder "
                    "or a save_to_disk folder into a datasets save_to_disk folder, or push it as a Hub dataset.",
    )
    parser.add_argument("source", help="The dataset folder to convert.")
    parser.add_argument("destination", help="A new folder for save_to_disk, or with --push_to_hub a Hub dataset id "
                                            "(namespace/name).")
    parser.add_argument("--dataset_format", choices=DATASET_FORMATS, default=None,
                        help="Layout of the source folder (default: detected from its files).")
    parser.add_argument("--aircraft_level", choices=AIRCRAFT_LEVELS, default="variant",
                        help="FGVC-Aircraft labels: variant (100 classes), family (70) or manufacturer (30).")
    parser.add_argument("--crop_to_bbox", action="store_true",
                        help="Store the images cropped to their bounding boxes (the box column is then dropped).")
    parser.add_argument("--push_to_hub", action="store_true", help="Push to the Hub instead of saving locally.")
    parser.add_argument("--private", action="store_true", help="Create the Hub dataset as private.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`).")
    parser.add_argument("--num_proc", type=int, default=None, help="Processes for --crop_to_bbox and saving.")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder (default: the datasets default).")
    return parser


def load_source(source, dataset_format=None, aircraft_level="variant", crop_to_bbox=False, cache_dir=None,
                num_proc=None) -> datasets.DatasetDict:
    """The source folder as a DatasetDict, read like fgssl-pretrain reads it; a non-folder is a FileNotFoundError."""
    if not Path(source).expanduser().is_dir():
        raise FileNotFoundError(f"{source!r} is not a local folder; fgssl-prepare converts dataset folders.")
    return load_raw_dataset(str(source), cache_dir=cache_dir, dataset_format=dataset_format,
                            aircraft_level=aircraft_level, crop_to_bbox=crop_to_bbox, num_proc=num_proc)


def save_prepared(raw: datasets.DatasetDict, destination, num_proc=None) -> Path:
    """`raw.save_to_disk(destination)` (the image files are embedded); refuses to write into a non-empty folder."""
    destination = Path(destination).expanduser()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"{str(destination)!r} already exists and is not an empty folder; choose a new "
                              f"destination or delete it first.")
    raw.save_to_disk(str(destination), num_proc=num_proc)
    return destination


def push_prepared(raw: datasets.DatasetDict, repo_id: str, token: str, private: bool = False) -> str:
    """`raw.push_to_hub(repo_id)` (the image files are embedded); returns the dataset's URL.

    Raises:
        HubPushError: the Hub could not be reached or refused the upload; the message says what to check.
    """
    try:
        raw.push_to_hub(repo_id, token=token, private=private)
    except _network_error_types() as err:
        raise HubPushError(f"Pushing {repo_id!r} failed ({type(err).__name__}: {err}). Check the network and that the "
                           "token may write to that namespace (`hf auth whoami`).") from err
    return f"https://huggingface.co/datasets/{repo_id}"


def _summary(raw: datasets.DatasetDict) -> str:
    """"train 5994, test 5794 images; 200 classes; columns image, label, bbox"."""
    splits = ", ".join(f"{name} {len(ds)}" for name, ds in raw.items())
    first = next(iter(raw.values()))
    label = first.features.get("label")
    classes = f"; {label.num_classes} classes" if isinstance(label, datasets.ClassLabel) else ""
    return f"{splits} images{classes}; columns {', '.join(first.column_names)}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of fgssl-prepare; prints where the dataset went. Exits with status 1 and the reason on bad input
    or when pushing is impossible (checked before any image is read).

    Returns None: the console script passes the return value to sys.exit, where anything else is a failure.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)  # bad flags: UsageError
    try:
        token = check_hub_access(args.token, check_network=True) if args.push_to_hub else None
        raw = load_source(args.source, args.dataset_format, args.aircraft_level, args.crop_to_bbox, args.cache_dir,
                          args.num_proc)
        if args.push_to_hub:
            where = push_prepared(raw, args.destination, token, args.private)
        else:
            where = str(save_prepared(raw, args.destination, args.num_proc))
    except (HubPushError, OSError, ValueError) as err:
        print(f"fgssl-prepare: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    print(f"Prepared {args.source}: {_summary(raw)}.\nWrote {where}; load it with --dataset_name {args.destination}")


cli = console_entry(main, "fgssl-prepare")

if __name__ == "__main__":
    sys.exit(cli())
