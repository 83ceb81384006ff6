"""Data pipeline throughput, raw JPEG to an augmented device batch, beside the rate a training step consumes.

    python benchmarks/pipeline.py --data ../shared/data/cub100 --backbone convnext-tiny-cpu --image_size 64

Stages (images per second, median over batches where it applies):

1. **JPEG decode** (`training.decoding.decode_image`): open, draft-decode, RGB, resize shorter side, centre crop to
   S, one process. In training this runs ONCE: `load_splits` caches the uint8 pixels in an Arrow file.
2. **Prepare** (`load_splits` into an empty cache directory): the whole one-time cost, image-folder scan + decode +
   Arrow write, per training image.
3. **Loader** (`trainer.get_train_dataloader()`, the Trainer's own: sampler, `collate_uint8`, accelerate's device
   placement, `dataloader_num_workers` of the run): cached uint8 batches on the device, every epoch.
4. **Augment** (`trainer.augment`, two MoCo v2 views, on the device): part of the training step in this design
   (it runs inside `compute_loss`), shown to split the step's time.
5. **Loader + augment**: both in sequence, as the training loop runs them.

Step consumption: batch / median step time of each method, from the step_cost JSON of the same backbone, size,
batch and device when there is one (else measured here with a few steps). With `dataloader_num_workers=0` the loader
runs in the training process between steps, so its time per batch adds to the step: the report gives that share.

Outputs (under --out): `pipeline_<backbone>_<size>px_b<batch>_<device>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

import torch  # noqa: E402

from benchmarks.common import REPO  # noqa: E402
from benchmarks.step_cost import (  # noqa: E402
    BenchSettings,
    available_cores,
    build_trainer,
    device_batch,
    machine_info,
    make_batch,
    result_tag,
    synchronize,
    timed,
    training_step,
)
from fgssl.training.portable import portable_path  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cub100"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def jpeg_files(data_dir: Path, split: str = "train") -> list[Path]:
    root = data_dir / split if (data_dir / split).is_dir() else data_dir
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"No images under {root}; pass --data <image folder with train/<class>/*.jpg>.")
    return files


def measure_decode(files: list[Path], image_size: int, limit: int) -> dict:
    """Images/s of decode_image (raw file -> uint8 3 x S x S) in this process, on up to `limit` files."""
    from fgssl.training.decoding import decode_image

    chosen = files[:: max(1, len(files) // limit)][:limit]  # spread over classes
    start = time.perf_counter()
    for path in chosen:
        decode_image(str(path), image_size)
    seconds = time.perf_counter() - start
    return {"images": len(chosen), "seconds": round(seconds, 3), "images_per_s": round(len(chosen) / seconds, 1)}


def measure_prepare(data_dir: Path, image_size: int, max_train_samples: int | None, cache_dir: str):
    """(stats, train split): the one-time `load_splits` cost into an empty cache (the eval split cut to 1 image)."""
    from fgssl.training.data import load_splits

    start = time.perf_counter()
    data = load_splits(str(data_dir), image_size, max_train_samples=max_train_samples, max_eval_samples=1,
                       cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    stats = {"images": len(data.train), "seconds": round(seconds, 2),
             "images_per_s": round(len(data.train) / seconds, 1)}
    return stats, data.train


def loader_batches(trainer, batches: int):
    """Yield up to `batches` device batches from the Trainer's own train dataloader (epochs chained)."""
    produced = 0
    while produced < batches:
        for batch in trainer.get_train_dataloader():
            yield batch
            produced += 1
            if produced >= batches:
                return


def measure_loader(trainer, batches: int, device: str, augment: bool) -> dict:
    """Images/s of the Trainer's dataloader (and the two-view augmentation after it when `augment`)."""
    times, sizes = [], []
    iterator = loader_batches(trainer, batches + 1)
    next(iterator)  # the first batch pays the worker / iterator start-up; not a steady-state cost
    while True:
        synchronize(device)
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        if augment:
            trainer.augment(batch["pixel_values"])
        synchronize(device)
        times.append(time.perf_counter() - start)
        sizes.append(batch["pixel_values"].shape[0])
    per_batch = statistics.median(times)
    return {"batches": len(times), "median_ms_per_batch": round(per_batch * 1e3, 2),
            "images_per_s": round(statistics.median(sizes) / per_batch, 1),
            "on_device": str(batch["pixel_values"].device), "dtype": str(batch["pixel_values"].dtype)}


def measure_augment(trainer, settings: BenchSettings, reps: int) -> dict:
    batch = device_batch(make_batch(settings), settings)["pixel_values"]
    trainer.augment(batch)
    times = [timed(lambda: trainer.augment(batch), settings.device) for _ in range(reps)]
    per_batch = statistics.median(times)
    return {"median_ms_per_batch": round(per_batch * 1e3, 2),
            "images_per_s": round(settings.batch_size / per_batch, 1)}


def step_consumption(settings: BenchSettings, results_dir: Path, trainer_factory, reps: int) -> dict:
    """{variant: {"median_ms", "images_per_s", "source"}}: from the step_cost JSON, else a few steps measured here."""
    path = results_dir / f"step_cost_{result_tag(vars(settings))}.json"
    if path.is_file():
        variants = json.loads(path.read_text())["variants"]
        return {name: {"median_ms": v["median_ms"], "images_per_s": v["images_per_s"], "source": str(path.name)}
                for name, v in variants.items()}
    out = {}
    for variant in ("moco", "fgssl-1.0"):
        trainer = trainer_factory(variant)
        batch = device_batch(make_batch(settings), settings)
        training_step(trainer, batch)
        ms = 1e3 * statistics.median(timed(lambda: training_step(trainer, batch), settings.device)
                                     for _ in range(reps))
        out[variant] = {"median_ms": round(ms, 1), "images_per_s": round(settings.batch_size / ms * 1e3, 1),
                        "source": f"measured here, {reps} steps"}
    return out


def run_pipeline_benchmark(settings: BenchSettings, data_dir: Path = DEFAULT_DATA, batches: int = 30,
                           decode_images: int = 300, max_train_samples: int | None = None, num_workers: int = 0,
                           results_dir: Path | None = None, step_reps: int = 5, log=print) -> dict:
    """All stages of the module docstring; returns the JSON-ready result."""
    from fgssl.training.data import collate_uint8

    import datasets

    datasets.disable_progress_bars()
    torch.set_num_threads(available_cores())
    data_dir = Path(data_dir)
    results_dir = Path(results_dir or REPO / "benchmarks" / "results")
    log(f"[pipeline] decoding {decode_images} JPEGs of {data_dir}")
    decode = measure_decode(jpeg_files(data_dir), settings.image_size, decode_images)
    with tempfile.TemporaryDirectory() as tmp:
        log("[pipeline] load_splits into a fresh cache")
        prepare, train = measure_prepare(data_dir, settings.image_size, max_train_samples, str(Path(tmp) / "cache"))

        def factory(variant, dataset=None):
            trainer = build_trainer(variant, settings, tmp)
            if dataset is not None:
                trainer.train_dataset = dataset
                trainer.data_collator = collate_uint8
                trainer.args.dataloader_num_workers = num_workers
                trainer.args.dataloader_drop_last = True
            return trainer

        trainer = factory("moco", train)
        log(f"[pipeline] loader: {batches} batches of {settings.batch_size}, {num_workers} workers")
        loader = measure_loader(trainer, batches, settings.device, augment=False)
        augment = measure_augment(trainer, settings, reps=batches)
        loader_augment = measure_loader(trainer, batches, settings.device, augment=True)
        log("[pipeline] step consumption")
        steps = step_consumption(settings, results_dir, factory, step_reps)

    fastest = min(steps.values(), key=lambda s: s["median_ms"])
    result = {
        "benchmark": "pipeline",
        # Relative to the repository (e.g. ../shared/data/cub100): results are committed.
        "settings": {**vars(settings), "data": portable_path(data_dir, REPO, parents=1),
                     "dataloader_num_workers": num_workers},
        "machine": machine_info(settings.device),
        "stages": {
            "jpeg_decode (one-time)": decode,
            "load_splits prepare (one-time)": prepare,
            "loader (cached uint8 -> device batch)": loader,
            "augment (2 views, in the step)": augment,
            "loader + augment": loader_augment,
        },
        "step_consumption": steps,
        "verdict": {
            "loader_images_per_s": loader["images_per_s"],
            "fastest_step_images_per_s": fastest["images_per_s"],
            "loader_over_fastest_step": round(loader["images_per_s"] / fastest["images_per_s"], 1),
            "loader_share_of_fastest_step_pct": round(100 * loader["median_ms_per_batch"] / fastest["median_ms"], 2),
            "loader_is_bottleneck": loader["images_per_s"] < fastest["images_per_s"],
        },
    }
    return result


def to_markdown(result: dict) -> str:
    s, m, v = result["settings"], result["machine"], result["verdict"]
    lines = [
        f"# Data pipeline: {s['backbone']} settings, {s['image_size']} px, batch {s['batch_size']}, {s['device']}",
        "",
        f"Machine: {m.get('gpu') or m['cpu']}; {m['cores_available']} cores; load average at the end "
        f"{m['load_average_1_5_15']}; torch {m['torch']}. Data: `{Path(s['data']).name}`, "
        f"dataloader_num_workers={s['dataloader_num_workers']}.",
        "",
        "| stage | images/s | notes |",
        "|---|---|---|",
    ]
    for name, st in result["stages"].items():
        note = ", ".join(f"{k}={st[k]}" for k in ("images", "seconds", "median_ms_per_batch", "on_device")
                         if k in st)
        lines.append(f"| {name} | {st['images_per_s']:.0f} | {note} |")
    lines += ["", "| training step | ms / step | images/s consumed | source |", "|---|---|---|---|"]
    for name, st in result["step_consumption"].items():
        lines.append(f"| {name} | {st['median_ms']:.1f} | {st['images_per_s']:.0f} | {st['source']} |")
    lines += [
        "",
        f"The loader delivers {v['loader_images_per_s']:.0f} images/s, {v['loader_over_fastest_step']}x what the "
        f"fastest step consumes ({v['fastest_step_images_per_s']:.0f} images/s); run in the training process "
        f"(no workers) it adds {v['loader_share_of_fastest_step_pct']} % to that step. "
        + ("The loader IS the bottleneck." if v["loader_is_bottleneck"] else "The loader is not the bottleneck."),
        "JPEG decoding happens once (the Arrow cache); every later epoch only runs the loader.",
    ]
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = result["settings"]
    stem = out / f"pipeline_{Path(s['backbone']).name}_{s['image_size']}px_b{s['batch_size']}_{s['device']}"
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md")}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(to_markdown(result))
    return paths


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Image folder (train/<class>/*.jpg).")
    p.add_argument("--backbone", default="convnext-tiny-cpu")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--batches", type=int, default=30, help="Loader batches timed (median reported).")
    p.add_argument("--decode_images", type=int, default=300, help="JPEGs decoded for the decode rate.")
    p.add_argument("--max_train_samples", type=int, default=None, help="Cut the prepared train split (default all).")
    p.add_argument("--num_workers", type=int, default=0, help="dataloader_num_workers (the CPU config uses 0).")
    p.add_argument("--step_reps", type=int, default=5, help="Steps timed when no step_cost JSON is found.")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = BenchSettings(backbone=args.backbone, batch_size=args.batch_size, image_size=args.image_size,
                             device=args.device, bf16=args.bf16)
    result = run_pipeline_benchmark(settings, Path(args.data), batches=args.batches, decode_images=args.decode_images,
                                    max_train_samples=args.max_train_samples, num_workers=args.num_workers,
                                    results_dir=Path(args.out), step_reps=args.step_reps)
    paths = write_results(result, args.out)
    print(to_markdown(result))
    print("Wrote " + ", ".join(str(p) for p in paths.values()))
    return result


if __name__ == "__main__":
    main()
