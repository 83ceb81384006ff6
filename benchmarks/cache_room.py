"""The cache with room (`--cache_size_factor`, training.data) against today's square cache: one-time decode, cache
memory, loader images/s and loader + two-view augmentation images/s, one factor at a time, on an image folder's
train split (default ../shared/data/cub100), plus the 224 px cache size by arithmetic.

    python benchmarks/cache_room.py                       # 64 px, F = 1 and 2, cub100 train
    python benchmarks/cache_room.py --factors 1,1.5,2 --batches 40

Each factor decodes into its own fresh datasets cache (a temporary folder, removed after), so the decode time is
the first run's and the cache size is the Arrow file's. The loader is a plain DataLoader over the prepared split
with `collate_uint8` (the Trainer's collator; batch 64, shuffled, no workers: the CPU recipe's); the augmentation is
`TwoViewAugment` on the batch (with `valid_hw` for F > 1: crops in each image's region, supersampled). Writes
benchmarks/results/cache_room/cache_room_<data>_<S>px_cpu.{json,md} naming the machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

RESULTS = common.REPO / "benchmarks" / "results" / "cache_room"


def cache_bytes(dataset) -> int:
    """Bytes of the Arrow cache files behind a prepared split."""
    return sum(Path(f["filename"]).stat().st_size for f in dataset.cache_files)


def measure_factor(data_dir: Path, image_size: int, factor: float, batch_size: int, batches: int, seed: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from fgssl.training.augment import TwoViewAugment
    from fgssl.training.data import cache_box_side, collate_uint8, load_splits

    cache_dir = tempfile.mkdtemp(prefix=f"cache_room_{factor:g}_")
    try:
        start = time.perf_counter()
        data = load_splits(str(data_dir), image_size, eval_split="none", cache_dir=cache_dir,
                           cache_size_factor=factor)
        prepare = time.perf_counter() - start
        train = data.train
        side = cache_box_side(image_size, factor)
        row = {"factor": factor, "box_side": side, "images": len(train),
               "prepare_seconds": round(prepare, 2), "prepare_images_per_s": round(len(train) / prepare, 1),
               "cache_mb": round(cache_bytes(train) / 2**20, 2),
               "pixel_bytes_per_image": 3 * side * side}
        if factor != 1.0:
            valid = torch.as_tensor(train.with_format("numpy", columns=["valid_hw"])[:]["valid_hw"])
            row["valid_fraction_of_box"] = round(float((valid[:, 0] * valid[:, 1]).float().mean()) / side**2, 3)
            row["median_valid_hw"] = [int(v) for v in valid.float().median(0).values.tolist()]
        augment = TwoViewAugment(image_size)
        torch.manual_seed(seed)
        loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate_uint8, drop_last=True)
        load_times, both_times = [], []
        iterator = iter(loader)
        next(iterator)  # start-up
        for _ in range(batches):
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            t1 = time.perf_counter()
            augment(batch["pixel_values"], valid_hw=batch.get("valid_hw"))
            t2 = time.perf_counter()
            load_times.append(t1 - t0)
            both_times.append(t2 - t0)
        load, both = statistics.median(load_times), statistics.median(both_times)
        row.update(loader_ms_per_batch=round(load * 1e3, 2), loader_images_per_s=round(batch_size / load, 1),
                   loader_augment_ms_per_batch=round(both * 1e3, 2),
                   loader_augment_images_per_s=round(batch_size / both, 1))
        return row
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def original_sizes(data_dir: Path) -> list[tuple[int, int]]:
    """(width, height) of every train image, from the file headers."""
    from PIL import Image

    sizes = []
    for path in sorted((data_dir / "train").rglob("*")):
        if path.is_file():
            with Image.open(path) as img:
                sizes.append(img.size)
    return sizes


def estimate_224(rows: list[dict], images: int, sizes, full_cub_train: int = 5994) -> list[dict]:
    """The cache at 224 px by arithmetic: 3 (F*224)^2 bytes an image; the share of the box the images fill (their
    longer side capped by their own size: never upsampled); the loader's time taken to scale with the bytes it
    copies (its measured MB/s at 64 px kept)."""
    from fgssl.training.decoding import boxed_output_size

    out = []
    for row in rows:
        side = int(round(row["factor"] * 224))
        per_image = 3 * side * side
        if row["factor"] == 1.0:
            filled = 1.0
        else:
            filled = statistics.mean(w * h for w, h in (boxed_output_size(*s, side) for s in sizes)) / side**2
        mb_per_s = row["pixel_bytes_per_image"] * row["loader_images_per_s"] / 2**20
        out.append({"factor": row["factor"], "box_side": side, "bytes_per_image": per_image,
                    "valid_fraction_of_box": round(filled, 3),
                    "cache_gb_this_split": round(per_image * images / 2**30, 2),
                    "cache_gb_cub_train": round(per_image * full_cub_train / 2**30, 2),
                    "loader_images_per_s_if_bytes_bound": round(mb_per_s * 2**20 / per_image, 1)})
    return out


def write_markdown(path: Path, result: dict) -> None:
    s = result["settings"]
    lines = [f"# Cache with room: {s['data']} train, {s['image_size']} px", "",
             f"Machine: {result['machine']}. Batch {s['batch_size']}, median of {s['batches']} batches, DataLoader "
             "without workers, collate_uint8; augmentation: TwoViewAugment (MoCo v2 recipe) on the CPU. "
             "Command: `" + result["command"] + "`.", "",
             "| F | box | images | decode (one-time) s | img/s | cache MB | bytes / image | valid / box | "
             "loader img/s | loader + 2 views img/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['factor']:g} | {r['box_side']} | {r['images']} | {r['prepare_seconds']} | "
                     f"{r['prepare_images_per_s']} | {r['cache_mb']} | {r['pixel_bytes_per_image']} | "
                     f"{r.get('valid_fraction_of_box', 1.0)} | {r['loader_images_per_s']} | "
                     f"{r['loader_augment_images_per_s']} |")
    sizes = result["original_sizes"]
    lines += ["", f"Original train images: {sizes['images']}, median {sizes['median_width']} x "
                  f"{sizes['median_height']} (w x h), {sizes['square_fraction']:.0%} square.", "",
              "## 224 px, by arithmetic", "",
              "3 (F x 224)^2 bytes an image; the loader's rate if it stays bound by the bytes it copies (its MB/s "
              "measured above at the same F).", "",
              "| F | box | bytes / image | valid / box | cache GB (this split) | cache GB (CUB-200 train, 5994) | "
              "loader img/s |",
              "|---|---|---|---|---|---|---|"]
    for e in result["estimate_224"]:
        lines.append(f"| {e['factor']:g} | {e['box_side']} | {e['bytes_per_image']} | {e['valid_fraction_of_box']} | "
                     f"{e['cache_gb_this_split']} | "
                     f"{e['cache_gb_cub_train']} | {e['loader_images_per_s_if_bytes_bound']} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/cub100", help="image folder with train/<class>/*.jpg")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--factors", default="1,2", help="comma-separated cache_size_factor values")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    data_dir = common.resolve_path(args.data)
    rows = []
    for factor in common.comma_list(args.factors, float):  # one at a time
        rows.append(measure_factor(data_dir, args.image_size, factor, args.batch_size, args.batches, args.seed))
        print(rows[-1], flush=True)
    name = data_dir.name
    sizes = original_sizes(data_dir)
    result = {"machine": common.machine_summary(), "torch_threads": 1,
              "command": common.repo_relative(" ".join(["python", "benchmarks/cache_room.py", *(argv or sys.argv[1:])])),
              "settings": {"data": name, "image_size": args.image_size, "batch_size": args.batch_size,
                           "batches": args.batches},
              "original_sizes": {"images": len(sizes),
                                 "median_width": statistics.median(w for w, _ in sizes),
                                 "median_height": statistics.median(h for _, h in sizes),
                                 "square_fraction": round(sum(w == h for w, h in sizes) / len(sizes), 3)},
              "rows": rows, "estimate_224": estimate_224(rows, rows[0]["images"], sizes)}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cache_room_{name}_{args.image_size}px_cpu"
    common.write_json(out / f"{stem}.json", result)
    write_markdown(out / f"{stem}.md", result)
    print(f"Wrote {out / stem}.md")
    return result


if __name__ == "__main__":
    main()
