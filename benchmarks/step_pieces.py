"""The views' Gaussian blur against what it replaced, timed interleaved in one process (issue 24):

    python benchmarks/step_pieces.py            # 2 CPU cores: about a minute

kornia's `gaussian_blur2d` with a per-image sigma (a grouped convolution, one group per image channel) against
`training.augment.blur_selected` (two batched matrix products per image), on the same views (2 x batch 64, 64 px,
about half of them drawn for the blur, sigma 0.1-2, MoCo v2's kernel of 10 % of the side).

It runs with the allocator setting of the commands (`training/host_memory.py`). Median of `--reps` interleaved
calls after 5 warm-up calls. Writes `<out>/step_pieces_<device>.{json,md}`, naming the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a plain checkout (no pip install)
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.step_cost import cpu_model_name  # noqa: E402


def interleaved_ms(fns: dict, reps: int, warmup: int = 5) -> dict:
    """{name: median ms} of the calls, every name once per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: round(1e3 * statistics.median(t), 3) for name, t in times.items()}


def blur_pieces(batch: int, size: int, device: str) -> dict:
    from kornia.filters import gaussian_blur2d

    from fgssl.training.augment import TwoViewAugment, blur_selected

    torch.manual_seed(0)
    views = torch.rand(2 * batch, 3, size, size, device=device)
    selected = torch.rand(2 * batch, device=device) < 0.5
    sigma = torch.rand(2 * batch, device=device) * 1.9 + 0.1
    kernel = TwoViewAugment(size).blur_kernel
    idx = selected.nonzero().squeeze(1)

    def with_kornia():
        x = views.clone()
        x[idx] = gaussian_blur2d(x[idx], (kernel, kernel), sigma[idx].unsqueeze(1).expand(-1, 2), border_type="reflect")
        return x

    def with_matrices():
        return blur_selected(views.clone(), selected, sigma, kernel)

    difference = float((with_kornia() - with_matrices()).abs().max())
    return {"fns": {"blur, kornia gaussian_blur2d": with_kornia, "blur, matrix products (blur_selected)": with_matrices},
            "max_abs_difference": difference, "views": 2 * batch, "blurred": int(idx.numel()), "kernel": kernel}


def main(argv=None) -> dict:
    from fgssl.training.host_memory import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "step_floor"))
    args = parser.parse_args(argv)
    kept = keep_freed_memory()
    blur = blur_pieces(args.batch_size, args.image_size, args.device)
    blur_ms = interleaved_ms(blur.pop("fns"), args.reps)
    names = list(blur_ms)
    result = {"machine": f"{cpu_model_name()}, {common.machine_summary()}", "torch": torch.__version__,
              "freed_host_memory_kept": kept,
              "reps": args.reps, "command": common.repo_relative(" ".join(["python", "benchmarks/step_pieces.py",
                                                                          *(argv or sys.argv[1:])])),
              "blur": {**blur, "median_ms": blur_ms}}
    old_blur, new_blur = blur_ms[names[0]], blur_ms[names[1]]
    lines = [f"# The views' blur against what it replaced ({result['machine']})", "",
             f"torch {torch.__version__}; freed host memory kept (training/host_memory.py): {'yes' if kept else 'no'}; "
             f"median of {args.reps} interleaved calls after 5 warm-up calls. Command: `{result['command']}`.", "",
             "| piece | before | now | now / before |", "|---|---:|---:|---:|",
             f"| blur of {blur['blurred']} of {blur['views']} views, {args.image_size} px, kernel {blur['kernel']} "
             f"(kornia gaussian_blur2d -> blur_selected) | {old_blur:.3f} ms | {new_blur:.3f} ms | "
             f"{new_blur / old_blur:.2f} x |",
             "", f"The two blurs agree to {blur['max_abs_difference']:.1e} (largest absolute difference)."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common.write_json(out / f"step_pieces_{args.device}.json", result)
    (out / f"step_pieces_{args.device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
