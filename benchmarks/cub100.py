"""Accuracy benchmark on cub100: moco, lcr, fgssl and fgssl with the random mask, from scratch, several seeds;
the same four on the SimSiam base (simsiam, simsiam-lcr, simsiam-fgssl, simsiam-fgssl-random).

    # the full comparison (hours on 2 CPU cores; resumable: re-running continues where it stopped)
    python benchmarks/cub100.py --methods moco,lcr,fgssl,fgssl-random --seeds 0,1,2
    # the SimSiam rows (the per-run output_std says whether a run collapsed: ~0 collapsed, ~1/sqrt(d) healthy)
    python benchmarks/cub100.py --methods simsiam,simsiam-lcr,simsiam-fgssl,simsiam-fgssl-random \
        --equal_time_reference simsiam --seeds 0,1,2
    # choose epochs first: moco (+ fgssl, the slowest) and the random-init encoder, one seed; prints whether moco
    # clearly learns (linear_top1 >= random init + 5 points) and how long each run took
    python benchmarks/cub100.py --calibrate --calibrate_methods fgssl --extra="--num_train_epochs 30"
    # what would run, without running it
    python benchmarks/cub100.py --dry_run

Every pre-training run is a subprocess `python -m fgssl.training.pretrain <config> <extra> --method M --seed S
--output_dir <runs_dir>/<budget>/<method>-seed<S>`, so a crash or a kill loses only that run; a run whose
eval_results.json exists is skipped, one with checkpoints is resumed by pretrain itself. The evaluation is the
run's own final evaluation (pretrain evaluates the LAST checkpoint on the test split with the fixed protocol of
docs/method.md; the linear probe chooses its C on a validation part of the train split): nothing is selected on test.

Choosing knobs first, never on test (docs/method.md's protocol):

    python benchmarks/cub100.py --grid          # seed 0, a small one-knob-at-a-time grid around the default

  Every grid run trains on the train split minus a fixed 15 % of every class (`--holdout_fraction 0.15`) and is
  evaluated on that 15 %; the test split is not even loaded. Results and the choice: <out>/grid/grid.{md,json}.

Budgets:
  equal_epochs  every method trains for the config's epochs (the issue's "same number of epochs").
  equal_time    each of --equal_time_methods (default: every method but --equal_time_reference, which defaults to
                moco; fgssl first) is trained AGAIN from scratch with
                --max_steps = reference steps x (reference seconds per step / method seconds per step), the
                seconds per step measured on the equal_epochs runs (mean over seeds, training time only), so its
                training takes as long as the reference's and its learning-rate schedule still completes. With
                --equal_time_reference fgssl the cheaper methods get MORE steps instead (the stronger baseline).
  continued     every method starts from ONE common moco checkpoint (by default the equal_epochs moco run of the
                first seed; --continued_base) and trains --continued_epochs more epochs with its seed: the stand-in,
                on this machine, for the paper's ImageNet-initialised encoders.
  random_init   the untrained encoder of the same config (built with the same seed, mean pooling), evaluated the
                same way; one row per seed.

Outputs in --out (default benchmarks/results/cub100): results.json (every run: metrics, steps, times, paths),
results.md (mean ± std per method and budget, seeds, the goal check, total time), results.png (bars with seed
std), and the per-run logs stay in the run folders (under outputs/, ignored by git).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import (  # noqa: E402
    REPO,
    comma_list,
    fgssl_command,
    knob_argv,
    repo_relative,
    repo_relative_paths,
    resolve_path,
    run_logged,
    write_json,
)
from benchmarks.summarize import METRICS, write_summary  # noqa: E402

DEFAULT_CONFIG = "configs/cub100_cpu.yaml"
#: Benchmark method name -> pretrain arguments. The simsiam rows: the same methods on the SimSiam base.
METHOD_ARGS = {
    "moco": ["--method", "plain"],
    "lcr": ["--method", "lcr"],
    "fgssl": ["--method", "fgssl"],
    "fgssl-random": ["--method", "fgssl", "--mask_mode", "random"],
    "simsiam": ["--base", "simsiam", "--method", "plain"],
    "simsiam-lcr": ["--base", "simsiam", "--method", "lcr"],
    "simsiam-fgssl": ["--base", "simsiam", "--method", "fgssl"],
    "simsiam-fgssl-random": ["--base", "simsiam", "--method", "fgssl", "--mask_mode", "random"],
}
#: The knob grid (seed 0, holdout): one knob at a time around GRID_CENTER; moco and the random mask as references.
GRID_CENTER = {"decoder_input": "feature_map", "noise_scale": "global", "recon_target": "geometric",
               "mask_mode": "union", "sigma": "1.0"}
# Kept small for the 2-core machine (an fgssl run is ~15-30 min there): the `variance` mask is left out (the
# mechanism check found V picks dims with less nuisance than random ones) and sigma is only raised (the old
# synthesized pairs were too easy, top-1 0.98, not too hard).
GRID_VARIATIONS = {
    "decoder_input": ["pooled"],
    "noise_scale": ["per_dim"],
    "recon_target": ["view"],
    "mask_mode": ["gradcam"],
    "sigma": ["2.0"],
}
GRID_HOLDOUT = 0.15
#: The issue's bar for "moco clearly learns": linear_top1 this many points above the random-init encoder.
CALIBRATION_MARGIN = 0.05
RUN_ARGS_FILE = "bench_args.json"


@dataclass
class RunSpec:
    """One pre-training run (or the random-init evaluation) of the benchmark."""

    method: str
    seed: int
    budget: str  # equal_epochs | equal_time | random_init
    run_dir: Path
    max_steps: int | None = None

    @property
    def name(self) -> str:
        steps = f" ({self.max_steps} steps)" if self.max_steps else ""
        return f"{self.budget}/{self.method}/seed{self.seed}{steps}"


# --------------------------------------------------------------------------------------------- commands


def run_dir_for(runs_dir: Path, budget: str, method: str, seed: int) -> Path:
    return Path(runs_dir) / budget / f"{method}-seed{seed}"


def pretrain_argv(config: str, extra: list[str], spec: RunSpec) -> list[str]:
    """Arguments of training.pretrain for a run: the config, the overrides, then what the benchmark fixes."""
    if spec.method not in METHOD_ARGS:
        raise ValueError(f"Unknown method {spec.method!r}; choose from {', '.join(METHOD_ARGS)}.")
    argv = [config, *extra, *METHOD_ARGS[spec.method], "--seed", str(spec.seed), "--output_dir", str(spec.run_dir)]
    if spec.max_steps is not None:
        argv += ["--max_steps", str(spec.max_steps)]
    return argv


def check_run_dir(spec: RunSpec, argv: list[str], write: bool = True) -> None:
    """Refuse to resume or reuse a run folder that was started with different arguments (a changed --extra);
    record the arguments of a new one (when `write`)."""
    record = spec.run_dir / RUN_ARGS_FILE
    if record.is_file():
        previous = json.loads(record.read_text())["argv"]
        if previous != argv:
            raise SystemExit(
                f"{spec.run_dir} holds a run started with different arguments:\n  before: {shlex.join(previous)}\n"
                f"  now:    {shlex.join(argv)}\nUse another --runs_dir (or delete that folder) to start over."
            )
    elif write:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(record, {"argv": argv})


def _last_global_step(run_dir: Path) -> int | None:
    """The global step of the latest checkpoint-*/trainer_state.json (pretrain's final save writes none)."""
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return int(json.loads(states[-1].read_text())["global_step"]) if states else None


def collect_record(spec: RunSpec) -> dict:
    """The record of a finished run from the files it wrote (train_results.json, eval_results.json, logs)."""
    record = {"method": spec.method, "seed": spec.seed, "budget": spec.budget, "run_dir": repo_relative(spec.run_dir),
              "max_steps": spec.max_steps}
    meta_path = spec.run_dir / "bench_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    record.update({k: meta.get(k) for k in ("process_seconds", "resumed", "command")})
    eval_path = spec.run_dir / "eval_results.json"
    train_path = spec.run_dir / "train_results.json"
    if not eval_path.is_file():
        record.update(status="failed", error=meta.get("error") or f"no {eval_path}")
        return record
    evaluation = json.loads(eval_path.read_text())
    record["metrics"] = {m: evaluation.get(m) for m in METRICS}
    record["linear_c"] = evaluation.get("settings", {}).get("linear_c")
    if train_path.is_file():
        train = json.loads(train_path.read_text())
        record.update(train_runtime=train.get("train_runtime"), wall_seconds=train.get("wall_seconds"),
                      train_loss=train.get("train_loss"), epoch=train.get("epoch"),
                      num_train_images=train.get("num_train_images"), output_std=train.get("output_std"))
    config_path = spec.run_dir / "training_config.json"  # pretrain's record of the run (planned max_steps)
    planned = json.loads(config_path.read_text()).get("max_steps") if config_path.is_file() else None
    record["global_step"] = _last_global_step(spec.run_dir) or meta.get("global_step") or planned
    if record.get("train_runtime") and record.get("global_step"):
        record["seconds_per_step"] = record["train_runtime"] / record["global_step"]
    record["status"] = "done"
    return record


def launch(spec: RunSpec, config: str, extra: list[str], dry_run: bool = False,
           keep_checkpoints: bool = False) -> dict:
    """Run one pre-training subprocess unless its evaluation already exists; return its record."""
    return launch_argv(spec, pretrain_argv(config, extra, spec), dry_run, keep_checkpoints)


def launch_argv(spec: RunSpec, argv: list[str], dry_run: bool = False, keep_checkpoints: bool = False) -> dict:
    """Run `fgssl.training.pretrain argv` for `spec` unless its evaluation already exists; return its record."""
    # The benchmark evaluates the random-init encoders itself (one row per seed): no second evaluation per run.
    command = fgssl_command("pretrain", [*argv, "--compare_with_start", "false"])
    if (spec.run_dir / "eval_results.json").is_file():
        check_run_dir(spec, argv, write=False)
        print(f"[skip] {spec.name}: {spec.run_dir}/eval_results.json exists", flush=True)
        return collect_record(spec)
    if dry_run:
        print(f"[dry run] {spec.name}: {shlex.join(command)}", flush=True)
        return {"method": spec.method, "seed": spec.seed, "budget": spec.budget, "status": "dry_run",
                "command": repo_relative(shlex.join(command))}
    check_run_dir(spec, argv)
    resumed = any(spec.run_dir.glob("checkpoint-*"))
    print(f"[run] {spec.name}{' (resuming)' if resumed else ''}: log in {spec.run_dir}/log.txt", flush=True)
    code, seconds = run_logged(command, spec.run_dir / "log.txt", echo=True)
    meta = {"process_seconds": round(seconds, 1), "resumed": resumed,
            "command": repo_relative(shlex.join(command)), "returncode": code}
    if code != 0:
        meta["error"] = f"exit code {code}; see {spec.run_dir}/log.txt"
    meta["global_step"] = _last_global_step(spec.run_dir)
    if code == 0 and not keep_checkpoints:
        # The final model, encoder and decoder stay; the Trainer checkpoints (optimizer state) only served resuming.
        for checkpoint in spec.run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    write_json(spec.run_dir / "bench_meta.json", meta)
    record = collect_record(spec)
    shown = ", ".join(f"{m}={100 * v:.2f}" for m, v in record.get("metrics", {}).items() if v is not None)
    print(f"      {record['status']} in {meta['process_seconds'] / 60:.1f} min {shown}", flush=True)
    return record


# --------------------------------------------------------------------------------------------- random init


def evaluate_random_init(spec: RunSpec, config: str, extra: list[str], dry_run: bool = False) -> dict:
    """Evaluate the untrained encoder of the config (mean pooling, initialised with the run's seed)."""
    argv = random_init_argv(config, extra, spec)
    if (spec.run_dir / "eval_results.json").is_file():
        check_run_dir(spec, argv, write=False)
        print(f"[skip] {spec.name}: {spec.run_dir}/eval_results.json exists", flush=True)
    elif dry_run:
        print(f"[dry run] {spec.name}: evaluate the untrained encoder of {config} {shlex.join(extra)}", flush=True)
        return {"method": spec.method, "seed": spec.seed, "budget": spec.budget, "status": "dry_run"}
    else:
        check_run_dir(spec, argv)
        print(f"[run] {spec.name}", flush=True)
        started = time.time()
        random_init_evaluation(argv, spec.run_dir)
        meta = {"process_seconds": round(time.time() - started, 1), "resumed": False, "command": "in-process"}
        write_json(spec.run_dir / "bench_meta.json", meta)
    record = collect_record(spec)
    record.update(train_runtime=0.0, global_step=0)
    return record


def start_row_name(config: str, extra: list[str]) -> str:
    """What the untrained-on-cub100 encoder of these arguments is: `random-init` for a backbone preset, else
    `generic-init` (pretrained weights named by --backbone, e.g. the generic initialisation of --init)."""
    from fgssl.training.backbones import backbone_presets
    from fgssl.training.pretrain import parse_args

    model_args = parse_args([config, *extra])[0]
    return "random-init" if model_args.backbone in backbone_presets() else "generic-init"


def random_init_argv(config: str, extra: list[str], spec: RunSpec) -> list[str]:
    """Pretrain arguments whose (untrained) model is the random-init encoder: moco, i.e. mean pooling."""
    return [config, *extra, "--method", "plain", "--seed", str(spec.seed), "--output_dir", str(spec.run_dir)]


def random_init_model(pretrain_argv_: list[str]):
    """The model pretrain would build for these arguments (same config and seed), untrained, and its data.

    Returns (FGSSLForPreTraining, model_args, data): data is training.data.PreparedData of the config's dataset.
    """
    from transformers import set_seed

    from fgssl.training.data import load_splits_from_args
    from fgssl.training.backbones import build_model
    from fgssl.training.pretrain import parse_args

    model_args, data_args, training_args, objective_args = parse_args(pretrain_argv_)
    set_seed(training_args.seed)
    model = build_model(model_args, objective_args.method)
    dataset = data_args.dataset_name
    if dataset and not Path(dataset).is_absolute() and (REPO / dataset).exists():
        dataset = str(REPO / dataset)  # config paths are relative to the repo root, where the subprocess runs run
    data = load_splits_from_args(data_args, model_args.image_size, dataset_name=dataset)
    return model, model_args, data


def random_init_evaluation(pretrain_argv_: list[str], output_dir: Path) -> dict:
    """Evaluate the untrained encoder with the fixed protocol; writes eval_results.json/.md into output_dir."""
    from fgssl.training.evaluation import evaluate_encoder, write_results

    model, model_args, data = random_init_model(pretrain_argv_)
    results = evaluate_encoder(model.fgssl, data, image_size=model_args.image_size)
    write_results(results, output_dir)
    return results


# --------------------------------------------------------------------------------------------- equal time


def seconds_per_step(records: list[dict], method: str) -> float | None:
    """Mean training seconds per optimiser step of a method's equal-epoch runs (resumed runs left out if possible)."""
    done = [r for r in records if r["method"] == method and r["budget"] == "equal_epochs"
            and r.get("status") == "done" and r.get("seconds_per_step")]
    fresh = [r for r in done if not r.get("resumed")] or done
    return sum(r["seconds_per_step"] for r in fresh) / len(fresh) if fresh else None


def equal_time_steps(records: list[dict], method: str, reference: str,
                     step_cost: dict[str, float] | None = None) -> int | None:
    """Steps that give `method` the training time of `reference`'s equal-epoch runs (None until both ran).

    The seconds per step are the measured ones (mean over the equal-epoch runs) unless `step_cost` gives relative
    costs per method (e.g. step_cost.py's "x moco" column: {"moco": 1, "fgssl": 1.76, ...}); use that when the
    machine was shared during the runs, since contention can change the measured step times many times over.
    """
    ref = [r for r in records if r["method"] == reference and r["budget"] == "equal_epochs"
           and r.get("status") == "done" and r.get("global_step")]
    if step_cost and method in step_cost and reference in step_cost:
        ref_rate, rate = step_cost[reference], step_cost[method]
    else:
        ref_rate, rate = seconds_per_step(records, reference), seconds_per_step(records, method)
    if not ref or ref_rate is None or rate is None:
        return None
    ref_steps = sum(r["global_step"] for r in ref) / len(ref)
    return max(1, int(round(ref_steps * ref_rate / rate)))


def started_max_steps(run_dir: Path) -> int | None:
    """The --max_steps a run folder was started with (from its bench_args.json), if any."""
    record = Path(run_dir) / RUN_ARGS_FILE
    if not record.is_file():
        return None
    argv = json.loads(record.read_text())["argv"]
    # The last --max_steps wins (the benchmark's own comes after the config and --extra).
    positions = [i for i, a in enumerate(argv[:-1]) if a == "--max_steps"]
    return int(argv[positions[-1] + 1]) if positions else None


# --------------------------------------------------------------------------------------------- continued


def continued_base(args: argparse.Namespace) -> Path:
    """The common moco checkpoint every continued run starts from."""
    if args.continued_base:
        return resolve_path(args.continued_base)
    return run_dir_for(Path(args.runs_dir), "equal_epochs", "moco", args.seeds[0])


def continued_extra(args: argparse.Namespace, base: Path) -> list[str]:
    """Pretrain overrides of a continued run: the base's weights, --continued_epochs more epochs."""
    return ["--model_name_or_path", str(base), "--num_train_epochs", str(args.continued_epochs)]


# --------------------------------------------------------------------------------------------- knob grid


def grid_points() -> list[tuple[str, list[str]]]:
    """(name, pretrain overrides) of the grid: the centre, each knob varied alone, and the two references."""
    # The references and the centre first: a grid cut short still holds the comparison that matters most.
    points = [("moco", ["--method", "plain"]), ("center", ["--method", "fgssl", *knob_argv(GRID_CENTER)]),
              ("center+random-mask", ["--method", "fgssl", *knob_argv({**GRID_CENTER, "mask_mode": "random"})])]
    for knob, values in GRID_VARIATIONS.items():
        for value in values:
            points.append((f"{knob}={value}", ["--method", "fgssl", *knob_argv({**GRID_CENTER, knob: value})]))
    return points


#: The grid from a generic initialisation (`--grid --init`), in two stages on the holdout: first the learning rate of
#: the continued training for moco, scored against the initialisation alone (the first bar: does pre-training on
#: the fine-grained images help at all?); then the method's knobs at that learning rate, scored against moco.
#: Stage 1: recipes of the continued training (moco), each scored against the initialisation alone. The learning
#: rate first, then around 1e-4 (the best of the first three): a smaller one, 3 x the epochs, a queue of negatives.
INIT_GRID_RECIPES = {
    "lr=1e-4": {"learning_rate": "1e-4"},
    "lr=3e-4": {"learning_rate": "3e-4"},
    "lr=1e-3": {"learning_rate": "1e-3"},
    "lr=3e-5": {"learning_rate": "3e-5"},
    "lr=1e-4,epochs=30": {"learning_rate": "1e-4", "num_train_epochs": "30"},
    "lr=1e-4,queue=1024": {"learning_rate": "1e-4", "queue_size": "1024"},
}
# One variation only on the 2-core machine (an fgssl run is ~5 min there): the decoder input, the knob the
# from-scratch grid chose (benchmarks/results/cub100_s16/grid); sigma, mask, noise scale and L_R's target keep the
# centre's values. Add entries here to search more.
INIT_GRID_VARIATIONS = {"decoder_input": ["pooled"]}
#: Stage 3 ("which layers train", the first bar's last question): the chosen recipe with the stem and the first N
#: backbone stages frozen (`--freeze_stages`), scored against the initialisation alone like stage 1. Reported beside
#: the choice; it does not change the knobs the test rows were run with (they were chosen before it was added).
INIT_GRID_LAYERS = {"freeze=1": {"freeze_stages": "1"}, "freeze=2": {"freeze_stages": "2"}}


def recipe_tag(name: str) -> str:
    """A stage-1 recipe's name as a folder tag: "lr=1e-4,epochs=30" -> "lr1e-4-epochs30"."""
    return name.replace("=", "").replace(",", "-")


def init_grid_points(recipe: dict) -> list[tuple[str, list[str]]]:
    """Stage 2 of the init grid with the chosen recipe: the centre, its random mask, one knob at a time."""
    base = ["--method", "fgssl", *knob_argv(recipe)]
    points = [("center", [*base, *knob_argv(GRID_CENTER)]),
              ("center+random-mask", [*base, *knob_argv({**GRID_CENTER, "mask_mode": "random"})])]
    for knob, values in INIT_GRID_VARIATIONS.items():
        for value in values:
            points.append((f"{knob}={value}", [*base, *knob_argv({**GRID_CENTER, knob: value})]))
    return points


def relative_gain(metrics: dict, reference: dict) -> float:
    """The grid's selection score: mean over the goal metrics of metric / moco's metric - 1 (on holdout)."""
    return sum(metrics[m] / reference[m] - 1 for m in ("retrieval_map", "linear_top1")) / 2


def run_grid(args: argparse.Namespace) -> dict:
    """Seed 0 (the first --seeds), train minus a per-class holdout, evaluated on the holdout; write the choice."""
    seed, runs_dir = args.seeds[0], Path(args.runs_dir) / "grid"
    holdout = ["--holdout_fraction", str(GRID_HOLDOUT)]
    records = {}
    for name, overrides in grid_points():
        spec = RunSpec(name, seed, "grid", runs_dir / f"{name.replace('=', '-')}-seed{seed}")
        argv = [args.config, *args.extra, *holdout, *overrides, "--seed", str(seed), "--output_dir", str(spec.run_dir)]
        records[name] = launch_argv(spec, argv, args.dry_run, args.keep_checkpoints)
    if args.dry_run:
        return {"runs": list(records.values())}
    done = {n: r for n, r in records.items() if r.get("status") == "done"}
    result = {"seed": seed, "holdout_fraction": GRID_HOLDOUT, "center": GRID_CENTER, "variations": GRID_VARIATIONS,
              "runs": list(records.values())}
    if "moco" in done:
        scores = {n: relative_gain(r["metrics"], done["moco"]["metrics"]) for n, r in done.items()
                  if n not in ("moco", "center+random-mask")}
        best = max(scores, key=scores.get)
        chosen = dict(GRID_CENTER)
        if best != "center":
            knob, value = best.split("=", 1)
            chosen[knob] = value
        result.update(scores=scores, best=best, chosen=chosen)
        # How much one holdout measurement moves by chance: the binomial standard error of moco's linear top-1.
        evaluation = json.loads((resolve_path(done["moco"]["run_dir"]) / "eval_results.json").read_text())
        n, p = evaluation["num_images"]["test"], done["moco"]["metrics"]["linear_top1"]
        result.update(holdout_images=n, linear_top1_standard_error=math.sqrt(p * (1 - p) / n))
    out = Path(args.out) / "grid"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "grid.json", result, default=str)
    (out / "grid.md").write_text(grid_markdown(result, done))
    print((out / "grid.md").read_text())
    return result


def run_init_grid(args: argparse.Namespace) -> dict:
    """The grid from --init (seed 0, holdout): stage 1 moco's learning rate against the initialisation alone,
    stage 2 fgssl's knobs at that learning rate against moco. Writes <out>/grid/grid.{json,md} with `chosen`."""
    seed, runs_dir = args.seeds[0], Path(args.runs_dir) / "grid"
    holdout = ["--holdout_fraction", str(GRID_HOLDOUT)]
    start = RunSpec("generic-init", seed, "random_init", runs_dir / f"generic-init-seed{seed}")
    records = {"generic-init": evaluate_random_init(start, args.config, [*args.extra, *holdout], args.dry_run)}
    for recipe, knobs in INIT_GRID_RECIPES.items():
        name = f"moco {recipe}"
        spec = RunSpec(name, seed, "grid", runs_dir / f"moco-{recipe_tag(recipe)}-seed{seed}")
        argv = [args.config, *args.extra, *holdout, "--method", "plain", *knob_argv(knobs), "--seed", str(seed),
                "--output_dir", str(spec.run_dir)]
        records[name] = launch_argv(spec, argv, args.dry_run, args.keep_checkpoints)
    if args.dry_run:
        return {"runs": list(records.values())}
    done = {n: r for n, r in records.items() if r.get("status") == "done"}
    result = {"seed": seed, "holdout_fraction": GRID_HOLDOUT, "center": GRID_CENTER,
              "variations": INIT_GRID_VARIATIONS, "learning_rates": INIT_GRID_RECIPES}
    lr_scores = {n: relative_gain(r["metrics"], done["generic-init"]["metrics"]) for n, r in done.items()
                 if n.startswith("moco ")} if "generic-init" in done else {}
    if lr_scores:
        best_recipe = max(lr_scores, key=lr_scores.get).split(" ", 1)[1]
        chosen = {**INIT_GRID_RECIPES[best_recipe], **GRID_CENTER}
        for name, overrides in init_grid_points(INIT_GRID_RECIPES[best_recipe]):
            spec = RunSpec(name, seed, "grid", runs_dir / f"{name.replace('=', '-')}-{recipe_tag(best_recipe)}-seed{seed}")
            argv = [args.config, *args.extra, *holdout, *overrides, "--seed", str(seed), "--output_dir",
                    str(spec.run_dir)]
            records[name] = launch_argv(spec, argv, args.dry_run, args.keep_checkpoints)
        done = {n: r for n, r in records.items() if r.get("status") == "done"}
        moco = done[f"moco {best_recipe}"]
        scores = {n: relative_gain(r["metrics"], moco["metrics"]) for n, r in done.items()
                  if n not in ("center+random-mask", "generic-init") and not n.startswith("moco ")}
        best = max(scores, key=scores.get) if scores else "center"
        if best != "center":
            knob, value = best.split("=", 1)
            chosen[knob] = value
        evaluation = json.loads((resolve_path(moco["run_dir"]) / "eval_results.json").read_text())
        n, p = evaluation["num_images"]["test"], moco["metrics"]["linear_top1"]
        result.update(learning_rate_scores=lr_scores, scores=scores, best=best, chosen=chosen, holdout_images=n,
                      linear_top1_standard_error=math.sqrt(p * (1 - p) / n))
        if args.layers:
            layer_scores = {}
            for layers, knobs in INIT_GRID_LAYERS.items():
                name = f"moco {best_recipe},{layers}"
                spec = RunSpec(name, seed, "grid", runs_dir / f"moco-{recipe_tag(best_recipe)}-{recipe_tag(layers)}-seed{seed}")
                argv = [args.config, *args.extra, *holdout, "--method", "plain",
                        *knob_argv({**INIT_GRID_RECIPES[best_recipe], **knobs}), "--seed", str(seed),
                        "--output_dir", str(spec.run_dir)]
                records[name] = launch_argv(spec, argv, args.dry_run, args.keep_checkpoints)
                if records[name].get("status") == "done":
                    layer_scores[name] = relative_gain(records[name]["metrics"], done["generic-init"]["metrics"])
                    done[name] = records[name]
            result.update(layers=INIT_GRID_LAYERS, layer_scores=layer_scores)
    result["runs"] = list(records.values())
    out = Path(args.out) / "grid"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "grid.json", repo_relative_paths(result), default=str)
    (out / "grid.md").write_text(grid_markdown(result, done))
    print((out / "grid.md").read_text())
    return result


def knobs_from_grid(path: Path) -> list[str]:
    """The `chosen` knobs of a grid.json as pretrain arguments (the choice made on the holdout, never on test)."""
    result = json.loads(Path(path).read_text())
    if "chosen" not in result:
        raise SystemExit(f"{path} holds no choice yet (the grid did not finish); run the grid first.")
    return knob_argv(result["chosen"])


def grid_markdown(result: dict, done: dict) -> str:
    lines = [f"# Knob grid on the holdout (seed {result['seed']}, {int(100 * result['holdout_fraction'])} % of every "
             "class of train held out; the test split is not loaded)", "",
             f"Centre: {result['center']}. Each row changes one knob. Score = mean over retrieval mAP and linear "
             "top-1 of (metric / moco's - 1); one seed, so differences of a few % are within noise."
             + (" From a generic initialisation: the `moco ...` rows (recipes of the continued training) are "
                "scored against `generic-init` (the initialisation alone) and choose the recipe; the fgssl rows run "
                "with that recipe and are scored against its moco row." if "learning_rates" in result else ""), "",
             "| run | " + " | ".join(METRICS) + " | score | steps | train min |", "|---" * (len(METRICS) + 4) + "|"]
    for name, r in done.items():
        score = result.get("scores", {}).get(name, result.get("learning_rate_scores", {}).get(
            name, result.get("layer_scores", {}).get(name)))
        lines.append(f"| {name} | " + " | ".join(f"{100 * r['metrics'][m]:.2f}" for m in METRICS)
                     + f" | {'' if score is None else f'{100 * score:+.1f} %'} | {r.get('global_step')} | "
                     f"{(r.get('train_runtime') or 0) / 60:.1f} |")
    if "chosen" in result:
        lines += ["", f"{result['holdout_images']} holdout images: one measurement of linear top-1 has a binomial "
                      f"standard error of about {100 * result['linear_top1_standard_error']:.1f} points, so single "
                      "differences below about twice that are noise.",
                  "", f"Best: `{result['best']}`. Chosen knobs for the test-split benchmark: {result['chosen']}."]
    if result.get("layer_scores"):
        lines += ["", "Which layers train (`--layers`, run after the choice, scored against `generic-init` like the "
                      "recipes; the rows ending in `freeze=N` keep the stem and the first N stages frozen): "
                  + ", ".join(f"{n.split(',')[-1]} {100 * v:+.1f} %" for n, v in result["layer_scores"].items())
                  + "; they do not change the chosen knobs."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- driver


def parse_cli(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="moco,lcr,fgssl,fgssl-random",
                        help=f"Comma-separated, from {', '.join(METHOD_ARGS)}.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (at least 3 for the issue).")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="Pretrain config file (relative to the repo).")
    parser.add_argument("--extra", default="", help='Pretrain overrides, e.g. --extra="--num_train_epochs 30 '
                                                    '--queue_size 1024" (one quoted string, written with =; applied '
                                                    'to every run, random init included).')
    parser.add_argument("--out", default="benchmarks/results/cub100", help="Where results.json/.md/.png go.")
    parser.add_argument("--runs_dir", default="outputs/bench/cub100", help="Run folders (keep under outputs/).")
    parser.add_argument("--layers", action="store_true",
                        help="With --grid --init: also run the chosen recipe with the first stages frozen "
                             "(INIT_GRID_LAYERS), scored against the initialisation alone.")
    parser.add_argument("--equal_time_reference", default="moco",
                        help="Method whose training time the equal_time runs match; 'none' skips them.")
    parser.add_argument("--equal_time_methods", default="",
                        help="Comma-separated methods to re-train at equal wall-clock, in this order (method by method, "
                             "all seeds each); default: every method but the reference, fgssl first.")
    parser.add_argument("--step_cost", default="",
                        help="Relative cost of one step per method for the equal_time runs, e.g. "
                             "'moco=1,lcr=1.36,fgssl=1.76,fgssl-random=1.76' (benchmarks/step_cost.py); default: the "
                             "seconds per step measured on the equal_epochs runs (unreliable on a shared machine).")
    parser.add_argument("--no_random_init", action="store_true", help="Skip the random-init rows.")
    parser.add_argument("--budgets", default="equal_epochs,equal_time,continued",
                        help="Comma-separated, from equal_epochs, equal_time, continued (equal_time and continued "
                             "need the equal_epochs runs).")
    parser.add_argument("--continued_epochs", type=float, default=10.0, help="Further epochs of the continued runs.")
    parser.add_argument("--continued_base", default="",
                        help="The common moco checkpoint of the continued runs (default: equal_epochs moco, first seed).")
    parser.add_argument("--grid", action="store_true",
                        help="Only the knob grid (first seed, train minus a per-class holdout, scored on the holdout).")
    parser.add_argument("--keep_checkpoints", action="store_true",
                        help="Keep the Trainer checkpoints of finished runs (default: deleted, ~35 MB each; the final "
                             "model, encoder and decoder are always kept).")
    parser.add_argument("--calibrate", action="store_true",
                        help="Only moco (+ --calibrate_methods) and random init for the first seed; print whether moco "
                             "clearly learns and each run's time.")
    parser.add_argument("--calibrate_methods", default="moco",
                        help="With --calibrate: methods to time besides moco (e.g. moco,fgssl: fgssl is the slowest).")
    parser.add_argument("--init", default="",
                        help="A plain transformers backbone folder every run starts from (--backbone), e.g. the "
                             "generic initialisation of benchmarks/generic_init.py; adds the `generic-init` rows "
                             "(that encoder alone) beside `random-init` (the config's preset).")
    parser.add_argument("--knobs_from", default="",
                        help="A grid.json whose `chosen` knobs (chosen on the holdout) every run takes.")
    parser.add_argument("--dry_run", action="store_true", help="Print the commands, run nothing.")
    parser.add_argument("--title", default="cub100: moco vs lcr vs fgssl vs fgssl-random (from scratch, 2 CPU cores)")
    args = parser.parse_args(argv)
    args.methods = comma_list(args.methods)
    unknown = [m for m in args.methods if m not in METHOD_ARGS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHOD_ARGS)}")
    args.seeds = comma_list(args.seeds, int)
    args.budgets = comma_list(args.budgets)
    unknown = [b for b in args.budgets if b not in ("equal_epochs", "equal_time", "continued")]
    if unknown:
        parser.error(f"unknown --budgets {unknown}; choose from equal_epochs, equal_time, continued")
    if args.equal_time_methods:
        args.equal_time_methods = comma_list(args.equal_time_methods)
        unknown = [m for m in args.equal_time_methods if m not in args.methods or m == args.equal_time_reference]
        if unknown:
            parser.error(f"--equal_time_methods {unknown}: each must be among --methods and not the reference")
    else:  # the method under test first, so a run cut short for time still holds its comparison
        order = ["fgssl", "fgssl-random", "lcr", "moco", "simsiam-fgssl", "simsiam-fgssl-random", "simsiam-lcr",
                 "simsiam"]
        args.equal_time_methods = sorted((m for m in args.methods if m != args.equal_time_reference),
                                         key=lambda m: order.index(m) if m in order else len(order))
    try:
        args.step_cost = {k.strip(): float(v) for k, v in (item.split("=") for item in args.step_cost.split(",")
                                                           if item.strip())}
    except ValueError:
        parser.error(f"--step_cost must look like 'moco=1,fgssl=1.8', got {args.step_cost!r}")
    args.calibrate_methods = comma_list(args.calibrate_methods)
    unknown = [m for m in args.calibrate_methods if m not in METHOD_ARGS]
    if unknown:
        parser.error(f"unknown --calibrate_methods {unknown}; choose from {', '.join(METHOD_ARGS)}")
    args.extra = shlex.split(args.extra)
    if args.knobs_from:
        knobs = resolve_path(args.knobs_from)
        if not knobs.is_file():
            parser.error(f"--knobs_from {args.knobs_from}: no such file")
        args.extra = [*knobs_from_grid(knobs), *args.extra]
    args.start_extra = list(args.extra)
    if args.init:
        init = resolve_path(args.init)
        if not (init / "config.json").is_file():
            parser.error(f"--init {args.init}: not a backbone folder (no config.json); make one with "
                         "python benchmarks/generic_init.py")
        args.init = str(init)
        args.extra = ["--backbone", args.init, *args.extra]
    if args.equal_time_reference != "none" and args.equal_time_reference not in args.methods:
        parser.error(f"--equal_time_reference {args.equal_time_reference} is not among --methods (or pass none)")
    config = resolve_path(args.config)
    if not config.is_file():
        parser.error(f"config {args.config} not found (relative paths: from here or from the repo root)")
    # Absolute paths: the runs execute in the repo root, whatever the current folder is.
    args.config = str(config)
    args.out, args.runs_dir = resolve_path(args.out), resolve_path(args.runs_dir)
    return args


def run_benchmark(args: argparse.Namespace) -> dict:
    """Equal-epoch runs (seed by seed), random init, then equal-time runs; returns {"runs": [...], ...}."""
    started = time.time()
    runs_dir, records = Path(args.runs_dir), []
    # The encoders the runs start from, untrained on cub100: the preset's random init and, from --init, the generic
    # initialisation alone (the "ImageNet only" row).
    starts = [] if args.no_random_init else [("random-init", args.start_extra)] if args.init else []
    if not args.no_random_init:
        starts.append((start_row_name(args.config, args.extra), args.extra))
    # Seed by seed, each seed's start rows with it: a benchmark cut short still holds whole seeds.
    for seed in args.seeds:
        for method in args.methods:
            spec = RunSpec(method, seed, "equal_epochs", run_dir_for(runs_dir, "equal_epochs", method, seed))
            records.append(launch(spec, args.config, args.extra, args.dry_run, args.keep_checkpoints))
        for name, extra in starts:
            spec = RunSpec(name, seed, "random_init", run_dir_for(runs_dir, "random_init", name, seed))
            records.append(evaluate_random_init(spec, args.config, extra, args.dry_run))
    reference = args.equal_time_reference if "equal_time" in args.budgets else "none"
    if reference != "none":
        for method in args.equal_time_methods:
            for seed in args.seeds:
                run_dir = run_dir_for(runs_dir, "equal_time", method, seed)
                # A started run keeps the step count it was started with (timings of later runs may shift it).
                steps = started_max_steps(run_dir) or equal_time_steps(records, method, reference, args.step_cost)
                if steps is None and args.dry_run:
                    print(f"[dry run] equal_time/{method}/seed{seed}: --max_steps set from the measured step times "
                          f"of the equal_epochs runs of {method} and {reference}", flush=True)
                    continue
                if steps is None:
                    print(f"[skip] equal_time/{method}/seed{seed}: needs finished equal_epochs runs of {method} "
                          f"and {reference}", flush=True)
                    continue
                spec = RunSpec(method, seed, "equal_time", run_dir, steps)
                records.append(launch(spec, args.config, args.extra, args.dry_run, args.keep_checkpoints))
        # The reference's own equal-epoch runs are its equal-time row.
        records += [{**r, "budget": "equal_time"} for r in records
                    if r["method"] == reference and r["budget"] == "equal_epochs" and r.get("status") == "done"]
    if "continued" in args.budgets:
        base = continued_base(args)
        if not (base / "model.safetensors").is_file() and not args.dry_run:
            print(f"[skip] continued: the base checkpoint {base} is not there yet", flush=True)
        else:
            extra = [*args.extra, *continued_extra(args, base)]
            for seed in args.seeds:
                for method in args.methods:
                    spec = RunSpec(method, seed, "continued", run_dir_for(runs_dir, "continued", method, seed))
                    records.append(launch(spec, args.config, extra, args.dry_run, args.keep_checkpoints))
    return {"runs": records, "benchmark_seconds": round(time.time() - started, 1)}


def calibrate(args: argparse.Namespace) -> dict:
    """moco (and --calibrate_methods) for the first seed plus the random-init encoder: does moco clearly learn
    (linear_top1 >= random init + 5 points), and how long does each run take?"""
    seed, runs_dir = args.seeds[0], Path(args.runs_dir) / "calibrate"
    tag = "default" if not args.extra else "_".join(a.lstrip("-") for a in args.extra).replace("/", "_")[:80]
    timed = {method: launch(RunSpec(method, seed, "equal_epochs", runs_dir / tag / f"{method}-seed{seed}"),
                            args.config, args.extra, args.dry_run, args.keep_checkpoints)
             for method in dict.fromkeys(["moco", *args.calibrate_methods])}
    moco = timed["moco"]
    rand = evaluate_random_init(RunSpec("random-init", seed, "random_init", runs_dir / tag / f"random-init-seed{seed}"),
                                args.config, args.extra, args.dry_run)
    if args.dry_run:
        return {"runs": timed, "random_init": rand}
    verdict = {"config": str(args.config), "extra": args.extra, "seed": seed, "runs": timed, "random_init": rand}
    if moco.get("status") == "done" and rand.get("status") == "done":
        gain = moco["metrics"]["linear_top1"] - rand["metrics"]["linear_top1"]
        verdict.update(linear_gain=gain, learns=bool(gain >= CALIBRATION_MARGIN))
        print(f"\nCalibration ({args.config} {shlex.join(args.extra)}), seed {seed}:")
        finished = {m: r for m, r in timed.items() if r.get("status") == "done"}
        for metric in METRICS:
            shown = "   ".join(f"{m} {100 * r['metrics'][metric]:6.2f}" for m, r in finished.items())
            print(f"  {metric:>16}: {shown}   random init {100 * rand['metrics'][metric]:6.2f}")
        print(f"  moco linear_top1 - random init = {100 * gain:+.2f} points -> "
              f"{'LEARNS' if verdict['learns'] else 'does NOT clearly learn'} (bar: +{100 * CALIBRATION_MARGIN:.0f})")
    for method, run in timed.items():
        if run.get("status") == "done":
            print(f"  {method}: {run.get('global_step')} steps, training {(run.get('train_runtime') or 0) / 60:.1f} "
                  f"min, whole run {(run.get('process_seconds') or 0) / 60:.1f} min "
                  f"({run.get('seconds_per_step') or math.nan:.2f} s/step)")
        else:
            print(f"  {method}: {run.get('status')} ({run.get('error')})")
    out = Path(args.out) / "calibration" / f"{tag}-seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, repo_relative_paths(verdict), default=str)
    print(f"  wrote {out}")
    return verdict


def notes_for(args: argparse.Namespace, results: dict) -> list[str]:
    """The lines above the tables: what ran, how it was evaluated, how long it took in total."""
    reference = args.equal_time_reference
    # The reference's equal_time rows are copies of its equal_epochs runs: count their time once.
    process = sum((r.get("process_seconds") or 0) for r in results["runs"]
                  if not (r["budget"] == "equal_time" and r["method"] == reference))
    notes = [
        f"Config `{Path(args.config).relative_to(REPO) if Path(args.config).is_relative_to(REPO) else args.config}`, "
        f"overrides `{repo_relative(shlex.join(args.extra)) or '(none)'}`, seeds {args.seeds}. Labels unused for pre-training; "
        "evaluation = each run's final checkpoint on the test split (fixed protocol; the linear probe's C is chosen "
        "on a validation part of train; no selection on test).",
    ]
    if reference != "none":
        rates = {m: seconds_per_step(results["runs"], m) for m in args.methods}
        measured = ", ".join(f"{m} {r:.3f}" for m, r in rates.items() if r is not None)
        source = (f"relative step costs given with --step_cost {args.step_cost}" if args.step_cost else
                  "seconds per step measured on the equal-epoch runs")
        notes.append(f"Equal wall-clock: the other methods re-trained from scratch with --max_steps matched to the "
                     f"training time of `{reference}` ({source}; measured s/step: {measured}).")
    notes.append(f"Total time of the runs: {process / 3600:.2f} h (sum of the run processes; runs skipped as done "
                 f"count with their original time); this invocation: {results['benchmark_seconds'] / 3600:.2f} h.")
    return notes


def main(argv=None) -> dict:
    args = parse_cli(argv)
    if args.calibrate:
        return calibrate(args)
    if args.grid:
        return run_init_grid(args) if args.init else run_grid(args)
    results = run_benchmark(args)
    if args.dry_run:
        return results
    results.update(title=args.title, config=repo_relative(args.config), extra=args.extra, seeds=args.seeds, methods=args.methods,
                   equal_time_reference=args.equal_time_reference)
    results["notes"] = notes_for(args, results)
    paths = write_summary(results, args.out, args.title, results["notes"])
    print(paths["markdown"].read_text())
    print("Wrote", ", ".join(str(p) for p in paths.values() if p))
    return results


if __name__ == "__main__":
    main()
