"""Why does (or did) the demo not learn its classes? One demo run on a variant of the embedded dataset, with recipe
overrides (issue 11's diagnosis; the results and what was chosen from them: benchmarks/results/demo/variants.md).

    python benchmarks/demo_variants.py --name L1 --nuisance_levels 1 -- --method moco --backbone convnext-s16-cpu
    python benchmarks/demo_variants.py --name S8 --scenes 8 -- --backbone resnet-tiny-cpu --queue_size 512
    python benchmarks/demo_variants.py --name V2 --nuisance_levels 1 --background_types 1 --palette turned -- \
        --backbone resnet-tiny-cpu --queue_size 512 --crop_scale_min 0.4 --blur_p 0 --hue_jitter 0.5

The script's dataset defaults are version 1's (every factor continuous, 6 backgrounds, independent colours);
the last line is the version 2 default dataset with the demo recipe (DEMO_RECIPE) written out, the decoder aside.

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
    parser.add_argument("--palette", default="independent", choices=("independent", "turned"),
                        help="Colours (sample_factors). The defaults of this script are version 1's dataset "
                             "(continuous factors, 6 backgrounds, independent colours), so that earlier rows rerun.")
    parser.add_argument("--scenes", type=int, default=None,
                        help="Every image in one of k scenes (shared background, colours, rotation; "
                             "see sample_scenes).")
    parser.add_argument("--fixed_geometry", action="store_true",
                        help="Diagnostic: every bird at the centre, scale 1, no rotation (only the mark, the facing "
                             "and the colours left to tell images apart).")
    parser.add_argument("--tie_hues", action="store_true",
                        help="Diagnostic: the body hue is the background hue + 0.5 (one colour scheme up to a global "
                             "hue rotation, which hue jitter spans).")
    parser.add_argument("--mark_radius", type=float, default=None,
                        help="Diagnostic: the class mark's radius in bird lengths (synthetic.MARK_RADIUS).")
    parser.add_argument("--wide_geometry", action="store_true",
                        help="Diagnostic: scale drawn from 0.65-1.05 and the centre from +-0.12 of the side.")
    parser.add_argument("--global_hue", action="store_true",
                        help="Diagnostic: every image's colour scheme turned by its own hue (uniform), the body hue "
                             "the background's + 0.5 (hue jitter 0.5 spans it).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_seed", type=int, default=0,
                        help="The dataset draw (make_fine_grained_dataset's seed; the demo's is 0).")
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

    if args.wide_geometry:
        import dataclasses

        draw_narrow = synthetic.sample_factors

        def wide(rng, *a, **k):
            f = draw_narrow(rng, *a, **k)
            u = (f.scale - 0.85) / 0.25  # the default draw, mapped onto the wider ranges
            return dataclasses.replace(f, scale=0.65 + 0.4 * u, x=0.5 + (f.x - 0.5) * 1.5, y=0.5 + (f.y - 0.5) * 1.5)

        synthetic.sample_factors = wide
    if args.global_hue:
        import dataclasses

        import numpy as np

        draw_one_hue = synthetic.sample_factors
        hue_rng = np.random.default_rng(12345)

        def turned(*a, **k):
            f = draw_one_hue(*a, **k)
            h = float(hue_rng.uniform())
            return dataclasses.replace(f, background_hue=h, body_hue=(h + 0.5) % 1.0)

        synthetic.sample_factors = turned
    if args.mark_radius is not None:
        synthetic.MARK_RADIUS = args.mark_radius
    if args.tie_hues:
        import dataclasses

        draw_tied = synthetic.sample_factors

        def tied(*a, **k):
            f = draw_tied(*a, **k)
            return dataclasses.replace(f, body_hue=(f.background_hue + 0.5) % 1.0)

        synthetic.sample_factors = tied

    data = Path("outputs/demo_variants/data") / f"{args.name}"
    if not (REPO / data / "dataset_dict.json").is_file():
        make_fine_grained_dataset(nuisance_levels=args.nuisance_levels, background_types=args.background_types,
                                  palette=args.palette, scenes=args.scenes,
                                  seed=args.data_seed).save_to_disk(str(REPO / data))
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
             f"{f'scenes {args.scenes}, ' if args.scenes else ''}"
             f"{'palette turned, ' if args.palette == 'turned' else ''}"
             f"{f'data seed {args.data_seed}, ' if args.data_seed else ''}"
             f"{'fixed geometry, ' if args.fixed_geometry else ''}{'tied hues, ' if args.tie_hues else ''}"
             f"{f'mark radius {args.mark_radius}, ' if args.mark_radius else ''}"
             f"{'wide geometry, ' if args.wide_geometry else ''}{'global hue, ' if args.global_hue else ''}"
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
