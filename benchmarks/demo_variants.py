"""Why does the demo not learn its classes? One demo run on a variant of the embedded dataset, with recipe overrides.

    python benchmarks/demo_variants.py --name L1 --nuisance_levels 1 -- --method moco --backbone convnext-s16-cpu
    python benchmarks/demo_variants.py --name L3 --nuisance_levels 3

The variant is `make_fine_grained_dataset(nuisance_levels=N)` (training/synthetic.py: each colour, the rotation and
the texture seed drawn from N fixed values, so many images share one nuisance combination and instance
discrimination needs the class mark), saved with `save_to_disk` under outputs/demo_variants/data/<name>; the run is
`python -m fgssl.training.pretrain --dataset_name <that folder> --seed S <overrides>` into
outputs/demo_variants/runs/<name>, which ends with its table against the random-init encoder (comparison.md). The
table and the command are appended to benchmarks/results/demo/variants.md (paths relative to the repository).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="Variant name (data folder, run folder, row label).")
    parser.add_argument("--nuisance_levels", type=int, default=None, help="None: the default dataset's factors.")
    parser.add_argument("--background_types", type=int, default=6, help="The first k background kinds (1: plain).")
    parser.add_argument("--fixed_geometry", action="store_true",
                        help="Diagnostic: every bird at the centre, scale 1, no rotation (only the mark, the facing "
                             "and the colours left to tell images apart).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/demo/variants.md")
    parser.add_argument("overrides", nargs="*", help="pretrain arguments after --, e.g. -- --method moco")
    args = parser.parse_args(argv)

    from fgssl.training import synthetic
    from fgssl.training.synthetic import make_fine_grained_dataset

    if args.fixed_geometry:
        import dataclasses

        draw = synthetic.sample_factors
        synthetic.sample_factors = lambda *a, **k: dataclasses.replace(draw(*a, **k), x=0.5, y=0.5, scale=1.0,
                                                                        rotation=0.0)

    data = Path("outputs/demo_variants/data") / f"{args.name}"
    if not (REPO / data / "dataset_dict.json").is_file():
        make_fine_grained_dataset(nuisance_levels=args.nuisance_levels,
                                  background_types=args.background_types).save_to_disk(str(REPO / data))
    run = Path("outputs/demo_variants/runs") / f"{args.name}-seed{args.seed}"
    command = ["python", "-m", "fgssl.training.pretrain", "--dataset_name", str(data), "--output_dir", str(run),
               "--seed", str(args.seed), "--overwrite_output_dir", "true", "--disable_tqdm", "true", *args.overrides]
    start = time.perf_counter()
    with open(REPO / "outputs/demo_variants" / f"{args.name}-seed{args.seed}.log", "w") as log:
        code = subprocess.call([sys.executable, *command[1:]], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    comparison = REPO / run / "comparison.md"
    if code != 0 or not comparison.is_file():
        print(f"run failed (exit {code}); log: outputs/demo_variants/{args.name}-seed{args.seed}.log", file=sys.stderr)
        return 1
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    entry = (f"\n## {args.name}, nuisance_levels {args.nuisance_levels}, background_types {args.background_types}, "
             f"{'fixed geometry, ' if args.fixed_geometry else ''}"
             f"seed {args.seed}\n\n`{' '.join(command)}` "
             f"({seconds:.0f} s, torch threads: {threads}; load average after: "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())})\n\n{comparison.read_text().strip()}\n")
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as handle:
        handle.write(entry)
    print(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
