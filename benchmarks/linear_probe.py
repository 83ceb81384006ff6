"""The linear probe in torch against sklearn's, on the same frozen features (issue 24): top-1 and seconds.

    python benchmarks/linear_probe.py --encoder outputs/bench/generic_init/<run>/backbone      # cub100, CPU
    python benchmarks/linear_probe.py --encoder <folder> --device cuda                        # on a GPU

Embeds the train and test splits of `--dataset_name` once with the encoder (an fgssl checkpoint or a plain
transformers backbone, mean-pooled final map), then runs the fixed protocol's linear probe (standardised features,
L2-regularised multinomial logistic regression, C chosen on a validation part of train) with each backend,
alternating them `--repeats` times; prints and writes <out>/linear_probe_<dataset>_<device>.{json,md}: each
backend's top-1, chosen C and median seconds, the difference in points and the time ratio, the machine named.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import write_json  # noqa: E402


def parse_cli(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="fgssl checkpoint or plain transformers backbone folder.")
    parser.add_argument("--dataset_name", default="../shared/data/cub100")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="Timed fits per backend, alternating.")
    parser.add_argument("--out", default="benchmarks/results/linear_probe")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    from fgssl.training.data import load_splits
    from fgssl.training.evaluation import embed_dataset, linear_probe_top1, load_encoder

    args = parse_cli(argv)
    device = torch.device(args.device)
    encoder = load_encoder(args.encoder)
    data = load_splits(args.dataset_name, image_size=args.image_size)
    train_x, train_y = embed_dataset(encoder, data.train, device=device, image_size=args.image_size)
    test_x, test_y = embed_dataset(encoder, data.eval, device=device, image_size=args.image_size)
    times = {"sklearn": [], "torch": []}
    results = {}
    for _ in range(args.repeats):
        for backend in times:  # alternating: both see the same machine load
            start = time.perf_counter()
            top1, info = linear_probe_top1(train_x, train_y, test_x, test_y, backend=backend, device=device)
            times[backend].append(time.perf_counter() - start)
            results[backend] = {"top1": top1, "linear_c": info["linear_c"], "linear_val_top1": info["linear_val_top1"]}
    for backend, seconds in times.items():
        results[backend]["median_seconds"] = statistics.median(seconds)
        results[backend]["seconds"] = seconds
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
               f"{torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.1f}")
    summary = {
        "dataset": Path(args.dataset_name).name, "encoder": Path(args.encoder).name, "device": str(device),
        "machine": machine, "features": list(train_x.shape), "test_images": int(len(test_y)), "results": results,
        "difference_points": 100 * (results["torch"]["top1"] - results["sklearn"]["top1"]),
        "time_ratio_torch_over_sklearn": results["torch"]["median_seconds"] / results["sklearn"]["median_seconds"],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"linear_probe_{summary['dataset']}_{device.type}"
    write_json(stem.with_suffix(".json"), summary)
    lines = [f"# Linear probe: torch vs sklearn ({summary['dataset']}, {summary['encoder']}, {device.type})", "",
             f"Machine: {machine}. Features: train {summary['features'][0]} x {summary['features'][1]}, test "
             f"{summary['test_images']}. The same protocol (C from {{0.001, 0.01, 0.1, 1, 10}} on a validation "
             f"part of train, refit, test once); median of {args.repeats} alternating fits each.", "",
             "| backend | top-1 | chosen C | validation top-1 | median s |", "|---|---:|---:|---:|---:|"]
    for backend, r in results.items():
        lines.append(f"| {backend} | {100 * r['top1']:.2f} % | {r['linear_c']:g} | {100 * r['linear_val_top1']:.2f} % "
                     f"| {r['median_seconds']:.2f} |")
    lines += ["", f"torch - sklearn: {summary['difference_points']:+.2f} points (target: within 0.5); time "
                  f"torch / sklearn: {summary['time_ratio_torch_over_sklearn']:.2f} x (target on CPU: <= 1)."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
