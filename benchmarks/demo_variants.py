"""Why does (or did) the demo not learn its classes? One demo run on a variant of the embedded dataset, with recipe
overrides (issue 11's diagnosis; the results and what was chosen from them: benchmarks/results/demo/variants.md).

    python benchmarks/demo_variants.py --name L1 --nuisance_levels 1 -- --method plain --backbone convnext-s16-cpu
    python benchmarks/demo_variants.py --name S8 --scenes 8 -- --backbone resnet-tiny-cpu --queue_size 512
    python benchmarks/demo_variants.py --name V2 --nuisance_levels 1 --background_types 1 --palette turned -- \
        --backbone resnet-tiny-cpu --queue_size 512 --crop_scale_min 0.4 --blur_p 0 --hue_jitter 0.5

The script's dataset defaults are version 1's (every factor continuous, 6 backgrounds, independent colours);
the last line is the version 2 default dataset with the demo recipe (DEMO_RECIPE) written out, the decoder aside.

The variant is built here through training/synthetic.py's public pieces: `make_dataset` with a factor sampler
(`sample_factors(rng, nuisance_levels, background_types, palette)`: with N levels each colour, the rotation and the
texture seed are drawn from N fixed values, so many images share one nuisance combination and instance
discrimination needs the class mark), wrapped by this script's scenes and diagnostics (`variant_sampler`), and
`render_image` with the chosen mark radius. It is saved with `save_to_disk` under outputs/demo_variants/data/<name>;
the run is `python -m fgssl.training.pretrain --dataset_name <that folder> --seed S <overrides>` into
outputs/demo_variants/runs/<name>, which ends with its table against the random-init encoder (comparison.md). The
table and the command are appended to benchmarks/results/demo/variants.md (paths relative to the repository).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import REPO, fgssl_command, run_logged  # noqa: E402
from fgssl.training import synthetic  # noqa: E402

#: The factors a scene fixes (a habitat and a plumage shared by many images); position, scale and facing stay per image.
SCENE_FIELDS = ("background", "background_hue", "body_hue", "rotation", "texture_seed")
#: The draw of --global_hue's hues, its own stream (one for the whole dataset: scenes, then train, then test).
GLOBAL_HUE_SEED = 12345


@dataclasses.dataclass(frozen=True)
class SceneFactors(synthetic.NuisanceFactors):
    """The factors of an image in a scene, and which scene (a "scene" column of the dataset)."""

    scene: int = 0


# --------------------------------------------------------------------------------------------- factor samplers
# A sampler is `draw(rng, levels, background_types, palette="independent") -> NuisanceFactors`, like
# synthetic.sample_factors; each diagnostic wraps one.


def fixed_geometry(draw):
    """Every bird at the centre, scale 1, no rotation."""
    def fixed(*a, **k):
        return dataclasses.replace(draw(*a, **k), x=0.5, y=0.5, scale=1.0, rotation=0.0)
    return fixed


def wide_geometry(draw):
    """Scale from 0.65-1.05 and the centre from +-0.12 of the side: the default draw mapped onto wider ranges."""
    def wide(rng, *a, **k):
        f = draw(rng, *a, **k)
        u = (f.scale - 0.85) / 0.25
        return dataclasses.replace(f, scale=0.65 + 0.4 * u, x=0.5 + (f.x - 0.5) * 1.5, y=0.5 + (f.y - 0.5) * 1.5)
    return wide


def global_hue(draw, seed: int = GLOBAL_HUE_SEED):
    """Every image's colour scheme turned by its own hue (uniform, from a stream of its own), the body hue the
    background's + 0.5."""
    hue_rng = np.random.default_rng(seed)

    def turned(*a, **k):
        f = draw(*a, **k)
        h = float(hue_rng.uniform())
        return dataclasses.replace(f, background_hue=h, body_hue=(h + 0.5) % 1.0)
    return turned


def tied_hues(draw):
    """The body hue is the background hue + 0.5."""
    def tied(*a, **k):
        f = draw(*a, **k)
        return dataclasses.replace(f, body_hue=(f.background_hue + 0.5) % 1.0)
    return tied


def variant_sampler(args: argparse.Namespace):
    """synthetic.sample_factors wrapped by the diagnostics the flags ask for."""
    draw = synthetic.sample_factors
    for wanted, wrap in ((args.fixed_geometry, fixed_geometry), (args.wide_geometry, wide_geometry),
                         (args.global_hue, global_hue), (args.tie_hues, tied_hues)):
        if wanted:
            draw = wrap(draw)
    return draw


def sample_scenes(num_scenes: int, seed: int, background_types: int, draw=synthetic.sample_factors
                  ) -> list[synthetic.NuisanceFactors]:
    """num_scenes scenes: each fixes the background (kinds in turn, so scenes differ in kind first), its colours and
    texture, the body colour and the rotation. They belong to the dataset's seed, shared by its train and test
    splits, like the habitats of a real collection."""
    if int(num_scenes) < 1:
        raise ValueError(f"scenes must be >= 1 (or None for a scene per image), got {num_scenes}.")
    rng = np.random.default_rng([seed, 2])
    return [dataclasses.replace(draw(rng, None, background_types), background=k % int(background_types))
            for k in range(int(num_scenes))]


def in_scene(factors: synthetic.NuisanceFactors, scene: synthetic.NuisanceFactors) -> synthetic.NuisanceFactors:
    """factors with the scene's SCENE_FIELDS (the bird's position, scale and facing are kept)."""
    return dataclasses.replace(factors, **{name: getattr(scene, name) for name in SCENE_FIELDS})


def make_variant_dataset(args: argparse.Namespace, **sizes):
    """The variant's DatasetDict (sizes: make_dataset's num_classes, train_per_class, ... ; default the demo's)."""
    draw = variant_sampler(args)
    scenes = None if args.scenes is None else sample_scenes(args.scenes, args.data_seed, args.background_types, draw)

    def draw_factors(rng: np.random.Generator):
        factors = draw(rng, args.nuisance_levels, args.background_types, args.palette)
        if scenes is None:
            return factors
        k = int(rng.integers(len(scenes)))
        return SceneFactors(**dataclasses.asdict(in_scene(factors, scenes[k])), scene=k)

    render = synthetic.render_image
    if args.mark_radius is not None:
        render = functools.partial(synthetic.render_image, mark_radius=args.mark_radius)
    return synthetic.make_dataset(draw_factors, seed=args.data_seed, render=render, **sizes)


# --------------------------------------------------------------------------------------------- command

#: The diagnostics that change the factor draw (variant_sampler applies them), as --flags.
DIAGNOSTIC_FLAGS = {
    "fixed_geometry": "every bird at the centre, scale 1, no rotation (only the mark, the facing and the colours "
                      "left to tell images apart).",
    "tie_hues": "the body hue is the background hue + 0.5 (one colour scheme up to a global hue rotation, which hue "
                "jitter spans).",
    "wide_geometry": "scale drawn from 0.65-1.05 and the centre from +-0.12 of the side.",
    "global_hue": "every image's colour scheme turned by its own hue (uniform), the body hue the background's + 0.5 "
                  "(hue jitter 0.5 spans it).",
}


def parse_cli(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="Variant name (data folder, run folder, row label).")
    parser.add_argument("--nuisance_levels", type=int, default=None, help="None: the default dataset's factors.")
    parser.add_argument("--background_types", type=int, default=6, help="The first k background kinds (1: plain).")
    parser.add_argument("--palette", default="independent", choices=synthetic.PALETTES,
                        help="Colours (sample_factors). The defaults of this script are version 1's dataset "
                             "(continuous factors, 6 backgrounds, independent colours), so that earlier rows rerun.")
    parser.add_argument("--scenes", type=int, default=None,
                        help="Every image in one of k scenes (shared background, colours, rotation; see sample_scenes).")
    for flag, help_text in DIAGNOSTIC_FLAGS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"Diagnostic: {help_text}")
    parser.add_argument("--mark_radius", type=float, default=None,
                        help="Diagnostic: the class mark's radius in bird lengths (synthetic.MARK_RADIUS).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_seed", type=int, default=0,
                        help="The dataset draw (make_fine_grained_dataset's seed; the demo's is 0).")
    parser.add_argument("--out", default="benchmarks/results/demo/variants.md")
    parser.add_argument("overrides", nargs="*", help="pretrain arguments after --, e.g. -- --method plain")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_cli(argv)
    data = Path("outputs/demo_variants/data") / f"{args.name}"
    if not (REPO / data / "dataset_dict.json").is_file():
        make_variant_dataset(args).save_to_disk(str(REPO / data))
    run = Path("outputs/demo_variants/runs") / f"{args.name}-seed{args.seed}"
    pretrain_argv = ["--dataset_name", str(data), "--output_dir", str(run), "--seed", str(args.seed),
             "--overwrite_output_dir", "true", "--disable_tqdm", "true", *args.overrides]
    command = fgssl_command("pretrain", pretrain_argv)
    log = f"outputs/demo_variants/{args.name}-seed{args.seed}.log"
    code, seconds = run_logged(command, REPO / log, mode="w")
    comparison = REPO / run / "comparison.md"
    if code != 0 or not comparison.is_file():
        print(f"run failed (exit {code}); log: {log}", file=sys.stderr)
        return 1
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    entry = (f"\n## {args.name}, nuisance_levels {args.nuisance_levels}, background_types {args.background_types}, "
             f"{f'scenes {args.scenes}, ' if args.scenes else ''}"
             f"{'palette turned, ' if args.palette == 'turned' else ''}"
             f"{f'data seed {args.data_seed}, ' if args.data_seed else ''}"
             f"{'fixed geometry, ' if args.fixed_geometry else ''}{'tied hues, ' if args.tie_hues else ''}"
             f"{f'mark radius {args.mark_radius}, ' if args.mark_radius else ''}"
             f"{'wide geometry, ' if args.wide_geometry else ''}{'global hue, ' if args.global_hue else ''}"
             f"seed {args.seed}\n\n`{' '.join(['python', *command[1:]])}` "
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
