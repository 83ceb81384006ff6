"""Mechanism check on the embedded synthetic dataset, where every nuisance factor of every image is known.

    python benchmarks/mechanism.py                                   # moco, lcr, fgssl, fgssl-random; seeds 0,1,2
    python benchmarks/mechanism.py --methods moco,fgssl --seeds 0    # shorter
    python benchmarks/mechanism.py --analyse_only                    # re-analyse finished runs, train nothing
    # class side only, on a real dataset without nuisance labels: the cub100 benchmark's runs from --init
    python benchmarks/mechanism.py --config configs/cub100_init_cpu.yaml --init <backbone folder> \
        --knobs_from benchmarks/results/cub100_init/grid/grid.json --runs_dir outputs/bench/cub100_init \
        --out benchmarks/results/cub100_init/mechanism --methods moco,fgssl,fgssl-random --seeds 0 --analyse_only

A dataset without the nuisance-factor columns (anything but the embedded one) gets the class side only: per-dim
class epsilon^2 / MI, the mask frequencies, perturbed vs kept vs all dims for the class, the class probe; dims_*.png
then plots class epsilon^2 against the selection frequency. --init / --knobs_from are cub100.py's (the runs' argv
must match what the benchmark recorded). The start rows (random-init, generic-init) have untrained projectors: no
mask there, encoder probes only.

1. The same comparison as benchmarks/cub100.py, shorter (configs/demo.yaml: the embedded synthetic "birds", 10
   classes that differ only in a wing mark; background, colours, position, scale, rotation and facing are
   nuisance): each method pre-trained from scratch per seed, in a subprocess, plus the random-init encoder;
   results.json/.md/.png as for cub100.
2. Per feature dimension c of h (train split, clean images): how much of its variance each factor explains,
   epsilon^2 = (SS_between - (g - 1) MS_within) / SS_total (ANOVA effect size, ~0 by chance whatever the number of
   groups g). Categorical factors (class, background, facing) group by value; continuous ones (x, y, scale,
   rotation, hues) by 10 quantile bins, so non-monotonic codes count too. Mutual information
   (sklearn, same groups) is computed beside it (mechanism.json).
3. Which dimensions the method perturbs: fgssl's mask recomputed on the trained model as in training (augmented
   views, batches of the training batch size, InfoNCE through the trained projector against the momentum keys,
   Grad-CAM scores s_ic = -dL/dh_ic * h_ic -> G_i; the running variance -> V; union -> M). The selection
   frequency of c is the fraction of images whose mask holds c. The same criteria are applied to moco / lcr
   encoders ("what the criteria would pick there").
4. Perturbed vs kept: the frequency-weighted mean epsilon^2 of class and nuisance over perturbed vs kept dims; the
   random-dims baseline is the plain mean over all dims (a random mask with the same count picks every dim with
   equal probability: docs/method.md's `random` mode), with a permutation p-value (frequencies shuffled over dims).
5. Encoder level: linear probes on frozen h, train split -> test split: class and categorical nuisance factors
   (accuracy, C chosen on a validation part of train), continuous factors (ridge R^2, alpha by LOO on train; hues
   as (cos, sin)). Does fgssl's h hold more class and less nuisance than moco's?

Outputs in --out (default benchmarks/results/mechanism): results.json/.md/.png (the metric comparison),
mechanism.json (every per-run statistic and per-dim array), mechanism.md (tables), dims_<method>.png (per-dim
scatter: class epsilon^2 vs nuisance epsilon^2, coloured by selection frequency, first seed), probes.png.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import cub100  # noqa: E402
from benchmarks.common import repo_relative_paths  # noqa: E402
from benchmarks.summarize import mean_std, method_sort_key, write_summary  # noqa: E402
from fgssl.training.evaluation import json_safe  # noqa: E402

CATEGORICAL_FACTORS = ("background", "facing")
CONTINUOUS_FACTORS = ("x", "y", "scale", "rotation")
CIRCULAR_FACTORS = ("background_hue", "body_hue")
NUISANCE_FACTORS = CATEGORICAL_FACTORS + CONTINUOUS_FACTORS + CIRCULAR_FACTORS
#: Quantile bins of a continuous factor for the per-dim effect size and MI.
NUM_BINS = 10
NUM_PERMUTATIONS = 2000
#: Dimension sets compared (all from the fgssl criteria recomputed on the trained model).
MASK_SETS = ("union", "variance", "gradcam")


# --------------------------------------------------------------------------------------------- per-dim statistics


def factor_groups(values: np.ndarray, categorical: bool, bins: int = NUM_BINS) -> np.ndarray:
    """Group ids (N,) of a factor: its values if categorical, else `bins` quantile bins (ties share a bin)."""
    values = np.asarray(values)
    if categorical:
        return np.unique(values, return_inverse=True)[1]
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def epsilon_squared(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per column of features (N x C), the ANOVA effect size epsilon^2 of the grouping (N,): C values.

    epsilon^2 = (SS_between - (g - 1) * SS_within / (N - g)) / SS_total: the fraction of the column's variance the
    groups explain, corrected for chance (expected ~0 for unrelated groups, whatever g). Constant columns give 0.
    """
    x = np.asarray(features, dtype=np.float64)
    ids, groups = np.unique(groups, return_inverse=True)
    n, g = len(x), len(ids)
    centred = x - x.mean(axis=0)
    total = (centred**2).sum(axis=0)
    counts = np.bincount(groups, minlength=g).astype(np.float64)
    sums = np.zeros((g, x.shape[1]))
    np.add.at(sums, groups, centred)
    between = (sums**2 / counts[:, None]).sum(axis=0)
    within = total - between
    with np.errstate(invalid="ignore", divide="ignore"):
        eps2 = (between - (g - 1) * within / max(n - g, 1)) / total
    return np.where(total > 0, eps2, 0.0)


def mutual_information(features: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per column, the mutual information (nats, kNN estimator of sklearn) between the column and the groups."""
    from sklearn.feature_selection import mutual_info_classif

    return mutual_info_classif(features, groups, discrete_features=False, random_state=seed)


def per_dim_statistics(features: np.ndarray, labels: np.ndarray, factors: dict[str, np.ndarray]) -> dict:
    """{factor: {"eps2": C, "mi": C}} for "class" and every nuisance factor, plus "nuisance_max" (C, max eps2).

    factors = {} (a dataset without nuisance labels): "class" only, no "nuisance_max".
    """
    stats = {"class": {"eps2": epsilon_squared(features, labels), "mi": mutual_information(features, labels)}}
    for name in factors:
        groups = factor_groups(factors[name], categorical=name in CATEGORICAL_FACTORS)
        stats[name] = {"eps2": epsilon_squared(features, groups), "mi": mutual_information(features, groups)}
    if factors:
        stats["nuisance_max"] = {key: np.max([stats[n][key] for n in factors], axis=0) for key in ("eps2", "mi")}
    return stats


# --------------------------------------------------------------------------------------------- the mask


def load_pretraining_run(run_dir: Path):
    """FGSSLForPreTraining in eval mode, with the running feature statistics it was trained with."""
    import fgssl.modeling  # noqa: F401
    from fgssl.modeling import FGSSLForPreTraining

    return FGSSLForPreTraining.from_pretrained(str(run_dir)).eval()


def mask_statistics(model, dataset, objective, image_size: int, batch_size: int, passes: int = 2,
                    seed: int = 0) -> dict:
    """Recompute fgssl's nuisance mask on a trained model as in training; return per-dim selection frequencies.

    For `passes` shuffled sweeps over `dataset` (decoded uint8 pixels), in batches of `batch_size` (incomplete
    last batch dropped, as in training): two augmented views, h = f(v1) and q = g(h), k = g_m(f_m(v2)), InfoNCE
    against the model's queue (or in-batch) (the base objective's `frozen_gradcam_inputs`), then the trainer's own
    steps 2-5 (`methods.perturbation_step`) with the knobs of `objective` (the run's ObjectiveArguments), the
    running statistics the model was trained with (not updated here) and the union mode. Returns
    C-vectors: "union" (fraction of images whose union mask holds c), "gradcam" (same for G_i), "variance"
    (1 on V), plus "var" (the running variance) and "num_images".
    """
    from dataclasses import replace

    import torch

    from fgssl.training.bases import build_base_objective
    from fgssl.training.methods import perturbation_step

    oa = replace(objective, mask_mode="union")
    base = build_base_objective(oa, model)
    augment = oa.augmentation(image_size)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the views are drawn from torch's global generator
    pixels = torch.from_numpy(
        np.ascontiguousarray(dataset.with_format("numpy", columns=["pixel_values"])[:]["pixel_values"], dtype=np.uint8)
    )
    if int(model.variance_tracker.num_updates) == 0:
        # A model trained without fgssl (moco, lcr) never held the statistics: take them over one pass of views.
        for start in range(0, len(pixels) - batch_size + 1, batch_size):
            with torch.no_grad():
                model.variance_tracker.update(model.encode(augment(pixels[start : start + batch_size])[0]).pooler_output)
    unions, grad_masks, var_mask = [], [], None
    for _ in range(passes):
        order = torch.randperm(len(pixels), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            v1, v2 = augment(pixels[order[start : start + batch_size]])
            # The backbone is frozen here: the Grad-CAM gradient only runs through the projector anyway.
            cam = base.frozen_gradcam_inputs(model, v1, v2)
            pert = perturbation_step(model, cam, oa, update_statistics=False, generator=generator)
            unions.append(pert.mask)
            grad_masks.append(pert.gradcam_mask)
            var_mask = pert.variance_mask
    if not unions:
        raise ValueError(f"The split has {len(pixels)} images, fewer than one batch of {batch_size}.")
    union, g_all = torch.cat(unions), torch.cat(grad_masks)
    return {"union": union.float().mean(0).numpy(), "gradcam": g_all.float().mean(0).numpy(),
            "variance": var_mask.float().numpy(), "var": model.variance_tracker.var.numpy(),
            "num_images": int(len(union)), "rho_variance": oa.rho_variance, "rho_gradcam": oa.rho_gradcam}


def weighted_means(scores: np.ndarray, frequency: np.ndarray, rng: np.random.Generator,
                   permutations: int = NUM_PERMUTATIONS) -> dict:
    """Perturbed (weights f_c) vs kept (1 - f_c) vs all dims mean of a per-dim score, with permutation p-values.

    p_higher / p_lower: fraction of random reassignments of the frequencies to dims whose perturbed mean is at
    least / at most the observed one (one-sided; the random-dims baseline is their distribution).
    """
    from scipy.stats import spearmanr

    f = np.asarray(frequency, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if f.sum() == 0 or (1 - f).sum() == 0:
        return {"perturbed": math.nan, "kept": math.nan, "all": float(s.mean())}
    perturbed = float((f * s).sum() / f.sum())
    kept = float(((1 - f) * s).sum() / (1 - f).sum())
    null = np.array([(rng.permutation(f) * s).sum() / f.sum() for _ in range(permutations)])
    rho = spearmanr(f, s).statistic if np.ptp(f) > 0 else math.nan
    return {"perturbed": perturbed, "kept": kept, "all": float(s.mean()),
            "p_higher": float((null >= perturbed - 1e-12).mean()), "p_lower": float((null <= perturbed + 1e-12).mean()),
            "spearman": float(rho)}


# --------------------------------------------------------------------------------------------- encoder probes


def _circular_targets(values: np.ndarray) -> np.ndarray:
    angle = 2 * np.pi * np.asarray(values, dtype=np.float64)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def ridge_r2(train_x, train_y, test_x, test_y) -> float:
    """Test R^2 (mean over outputs) of a ridge regression on standardised features, alpha by LOO on train."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    model.fit(train_x, train_y)
    return float(model.score(test_x, test_y))


def encoder_probes(train_x, train_y, train_factors, test_x, test_y, test_factors, seed: int = 0) -> dict:
    """Linear decodability of the class and of every nuisance factor from h (fit on train, scored on test)."""
    from fgssl.training.evaluation import linear_probe_top1

    probes = {"class_acc": linear_probe_top1(train_x, train_y, test_x, test_y, seed=seed)[0]}
    for name in (n for n in CATEGORICAL_FACTORS if n in train_factors):
        fit = factor_groups(train_factors[name], categorical=True)
        ids = np.unique(train_factors[name])
        test = np.searchsorted(ids, test_factors[name])
        probes[f"{name}_acc"] = linear_probe_top1(train_x, fit, test_x, test, seed=seed)[0]
    for name in (n for n in CONTINUOUS_FACTORS if n in train_factors):
        probes[f"{name}_r2"] = ridge_r2(train_x, train_factors[name], test_x, test_factors[name])
    for name in (n for n in CIRCULAR_FACTORS if n in train_factors):
        probes[f"{name}_r2"] = ridge_r2(train_x, _circular_targets(train_factors[name]), test_x,
                                        _circular_targets(test_factors[name]))
    return probes


def chance_levels(train_y, train_factors) -> dict:
    """What a constant predictor scores on each probe (majority class share; R^2 0)."""
    def majority(values):
        return float(np.unique(values, return_counts=True)[1].max() / len(values))

    levels = {"class_acc": majority(train_y)}
    levels.update({f"{n}_acc": majority(train_factors[n]) for n in CATEGORICAL_FACTORS if n in train_factors})
    levels.update({f"{n}_r2": 0.0 for n in CONTINUOUS_FACTORS + CIRCULAR_FACTORS if n in train_factors})
    return levels


# --------------------------------------------------------------------------------------------- one run


def split_factors(dataset) -> dict[str, np.ndarray]:
    """The nuisance factor columns of a decoded split (training.data keeps the non-image columns).

    {} for a dataset with none of them (a real dataset, e.g. cub100: the check is then class side only); an error
    for one with only some of them.
    """
    missing = [n for n in NUISANCE_FACTORS if n not in dataset.column_names]
    if len(missing) == len(NUISANCE_FACTORS):
        return {}
    if missing:
        raise ValueError(
            f"The dataset lacks the nuisance factor columns {missing}: the mechanism check needs the embedded "
            "synthetic dataset (dataset_name unset or 'synthetic'; training/synthetic.py)."
        )
    table = dataset.with_format("numpy", columns=list(NUISANCE_FACTORS))[:]
    return {n: np.asarray(table[n]) for n in NUISANCE_FACTORS}


def analyse_encoder(model, data, image_size: int, objective, batch_size: int, passes: int, seed: int) -> dict:
    """Per-dim statistics, mask frequencies (when `objective`, the run's ObjectiveArguments, is given) and encoder
    probes of one model."""
    from fgssl.training.evaluation import embed_dataset

    encoder = model.fgssl
    train_x, train_y = embed_dataset(encoder, data.train, image_size=image_size, desc="Embedding train")
    test_x, test_y = embed_dataset(encoder, data.eval, image_size=image_size, desc="Embedding test")
    train_f, test_f = split_factors(data.train), split_factors(data.eval)
    # A factor the dataset holds constant (the default dataset: one background, no rotation) explains nothing.
    varying = [n for n in NUISANCE_FACTORS if n in train_f and np.unique(train_f[n]).size > 1]
    train_f, test_f = {n: train_f[n] for n in varying}, {n: test_f[n] for n in varying}
    result = {"probes": encoder_probes(train_x, train_y, train_f, test_x, test_y, test_f, seed),
              "chance": chance_levels(train_y, train_f), "hidden_size": int(train_x.shape[1])}
    if objective is None:
        return result
    dims = per_dim_statistics(train_x, train_y, train_f)
    masks = mask_statistics(model, data.train, objective, image_size, batch_size, passes, seed)
    result.update(dims=dims, masks=masks, comparison=compare_dims(dims, masks, train_f, seed))
    return result


def compare_dims(dims: dict, masks: dict, factors: dict, seed: int = 0,
                 permutations: int = NUM_PERMUTATIONS) -> dict:
    """{mask set: {factor: {"eps2"|"mi": weighted_means}}} for "class", and "nuisance_max" and every factor when
    there are nuisance factors (factors = {}: "class" only)."""
    rng = np.random.default_rng(seed)
    comparison = {}
    for set_name in MASK_SETS:
        comparison[set_name] = {
            factor: {key: weighted_means(dims[factor][key], masks[set_name], rng, permutations)
                     for key in ("eps2", "mi")}
            for factor in ("class", *(("nuisance_max", *factors) if factors else ()))
        }
    return comparison


def is_start_row(record: dict) -> bool:
    """A benchmark start row (the encoder the runs start from, untrained on the dataset): random-init or, with
    cub100.py's --init, generic-init."""
    return record.get("budget") == "random_init" or record["method"] in ("random-init", "generic-init")


def analysis_argv(bench: argparse.Namespace, record: dict) -> list[str]:
    """The pretrain argv the benchmark recorded for a run (cub100.check_run_dir compares them): a start row's is
    random_init_argv with the overrides of its row (random-init: without --init's --backbone), a run's
    pretrain_argv with bench.extra (--backbone <init> and the --knobs_from knobs included)."""
    spec = cub100.RunSpec(record["method"], record["seed"], record["budget"], cub100.resolve_path(record["run_dir"]))
    if is_start_row(record):
        start_extra = getattr(bench, "start_extra", bench.extra)
        extra = start_extra if record["method"] == "random-init" and getattr(bench, "init", "") else bench.extra
        return cub100.random_init_argv(bench.config, extra, spec)
    return cub100.pretrain_argv(bench.config, bench.extra, spec)


def analyse_run(record: dict, pretrain_argv: list[str], passes: int) -> dict:
    """Analyse one finished benchmark run (or the random-init encoder of the config)."""
    from fgssl.training.pretrain import parse_args
    from fgssl.training.trainer import ObjectiveArguments

    run_dir = cub100.resolve_path(record["run_dir"])
    # The run's own arguments (bench_args.json holds the same argv) give its batch size.
    _, _, training_args, _ = parse_args(pretrain_argv)
    # The untrained model of the same config and seed, and the config's data (same subsets as the runs).
    model, model_args, data = cub100.random_init_model(pretrain_argv)
    # The start rows (random-init, generic-init: budget random_init) have untrained projectors, whose "Grad-CAM"
    # would mean nothing: encoder probes only, no mask. The criteria apply where a projector was trained.
    objective = None
    if not is_start_row(record):
        model = load_pretraining_run(run_dir)
        objective = ObjectiveArguments.from_run_folder(run_dir)
    result = analyse_encoder(model, data, model_args.image_size, objective,
                             training_args.per_device_train_batch_size, passes, record["seed"])
    result.update(method=record["method"], seed=record["seed"], run_dir=cub100.repo_relative(run_dir),
                  mask_mode=objective.mask_mode if objective is not None else None)
    return result


# --------------------------------------------------------------------------------------------- reports


def _fmt(stat, scale=100.0, digits=1) -> str:
    mean, std, n = stat
    if n == 0:
        return "n/a"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}" if n > 1 else f"{scale * mean:.{digits}f}"


def is_class_side_only(analyses: list[dict]) -> bool:
    """True when no analysis holds a nuisance factor (a dataset without nuisance labels: class side only)."""
    return not any(set(a["probes"]) - {"class_acc"} or "nuisance_max" in a.get("dims", {}) for a in analyses)


#: The introductions of the per-dimension tables (one markdown paragraph each: `paragraph`).
CLASS_DIMS_INTRO = """epsilon^2 (x100): the share of a dim's variance the class explains (chance-corrected).
`perturbed`/`kept`: weighted by the selection frequency f_c / 1 - f_c of the fgssl mask recomputed on the trained
model; `all`: mean over all dims = the random-dims baseline (the `random` mask's expectation). p: one-sided
permutation p-values of the perturbed mean (frequencies shuffled over dims). For moco the mask is what fgssl's
criteria would pick on that encoder; for fgssl-random what they would pick on it (it trained with the random mask)."""
NUISANCE_DIMS_INTRO = """epsilon^2 (x100): the share of a dim's variance a factor explains (chance-corrected).
`perturbed`/`kept`: weighted by the selection frequency f_c / 1 - f_c of the fgssl union mask recomputed on the
trained model; `all`: mean over all dims = the random-dims baseline (the `random` mask's expectation). p:
permutation p-value of the perturbed mean (one-sided: higher for nuisance, lower for class). For moco/lcr the mask
is what fgssl's criteria would pick on that encoder."""


def paragraph(text: str) -> str:
    """`text` on one line (a markdown paragraph), its line breaks read as spaces."""
    return " ".join(text.split())


def dims_table_head(title: str, intro: str, columns: list[str]) -> list[str]:
    """The markdown lines that open a per-dimension table: its section title, introduction and head (the columns
    after `method` and `dims`)."""
    columns = ["method", "dims", *columns]
    return ["", f"## {title}", "", paragraph(intro), "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def groups_with_masks(with_masks: list[dict], methods: list[str]):
    """(method, its analyses) for each of `methods` that has analyses in `with_masks` (those with a mask)."""
    for m in methods:
        group = [a for a in with_masks if a["method"] == m]
        if group:
            yield m, group


def perturbed_kept_all(rows: list[dict]) -> str:
    """`perturbed / kept / all`: the mean (std) over seeds of `weighted_means` rows."""
    return " / ".join(_fmt(mean_std(r[k] for r in rows)) for k in ("perturbed", "kept", "all"))


def class_side_markdown(analyses: list[dict], dataset: str | None = None) -> str:
    """mechanism.md for a dataset without nuisance labels: the class probe and the class side of the comparison."""
    methods = sorted({a["method"] for a in analyses}, key=method_sort_key)
    lines = [f"# Mechanism check on {dataset or 'a dataset without nuisance labels'}", "",
             "Class side only: the dataset has no nuisance labels (no nuisance-factor columns), so what the "
             "perturbed dims hold of the nuisance is not measured here; only how much class information they carry "
             "against the kept dims and random dims. The start rows (random-init, generic-init) have untrained "
             "projectors: no mask there (encoder probe only).", "",
             "## Encoder level: linear probe of the class on frozen h (train -> test)", "",
             "| method | seeds | class_acc |", "|---|---|---|"]
    for m in methods:
        group = [a for a in analyses if a["method"] == m]
        lines.append(f"| {m} | {','.join(str(a['seed']) for a in group)} | "
                     f"{_fmt(mean_std(a['probes']['class_acc'] for a in group))} |")
    lines.append(f"| chance | | {100 * analyses[0]['chance']['class_acc']:.1f} |")

    with_masks = [a for a in analyses if "comparison" in a]
    if not with_masks:
        return "\n".join(lines) + "\n"
    lines += dims_table_head(
        "Per dimension: do the perturbed dims carry less class information than kept / random dims?", CLASS_DIMS_INTRO,
        ["class eps2: perturbed / kept / all", "p(lower)", "p(higher)", "spearman(f, class eps2)",
         "class MI (nats x100): perturbed / kept / all"])
    for m, group in groups_with_masks(with_masks, methods):
        for set_name in MASK_SETS:
            rows = {key: [a["comparison"][set_name]["class"][key] for a in group] for key in ("eps2", "mi")}
            lines.append(f"| {m} | {set_name} | {perturbed_kept_all(rows['eps2'])} | "
                         f"{_fmt(mean_std(r.get('p_lower') for r in rows['eps2']), 1, 3)} | "
                         f"{_fmt(mean_std(r.get('p_higher') for r in rows['eps2']), 1, 3)} | "
                         f"{_fmt(mean_std(r.get('spearman') for r in rows['eps2']), 1, 2)} | {perturbed_kept_all(rows['mi'])} |")
    lines += ["", "### Verdict (union mask, per seed: permutation p < 0.05 against random dims)", ""]
    for m, group in groups_with_masks(with_masks, methods):
        less = sum(a["comparison"]["union"]["class"]["eps2"].get("p_lower", 1) < 0.05 for a in group)
        more = sum(a["comparison"]["union"]["class"]["eps2"].get("p_higher", 1) < 0.05 for a in group)
        lines.append(f"- {m}: perturbed dims carry less class information than random dims in {less}/{len(group)} "
                     f"seeds, more in {more}/{len(group)} seeds.")
    return "\n".join(lines) + "\n"


def mechanism_markdown(analyses: list[dict], dataset: str | None = None) -> str:
    """mechanism.md: `dataset` None = the embedded synthetic dataset (nuisance factors known); a dataset without
    nuisance labels gets the class side only (class_side_markdown)."""
    if is_class_side_only(analyses):
        return class_side_markdown(analyses, dataset)
    methods = sorted({a["method"] for a in analyses}, key=method_sort_key)
    by_method = {m: [a for a in analyses if a["method"] == m] for m in methods}
    lines = [f"# Mechanism check on {dataset or 'the embedded synthetic dataset'}", ""]

    probe_keys = list(analyses[0]["probes"])
    lines += ["## Encoder level: what h holds (linear probes, train -> test)", "",
              "Accuracy (%) for the class and categorical factors, R^2 (x100) for continuous ones. Higher class "
              "and lower nuisance = more invariant to nuisance.", "",
              "| method | seeds | " + " | ".join(probe_keys) + " |", "|" + "---|" * (len(probe_keys) + 2)]
    for m, group in by_method.items():
        cells = [_fmt(mean_std(a["probes"][k] for a in group)) for k in probe_keys]
        lines.append(f"| {m} | {','.join(str(a['seed']) for a in group)} | " + " | ".join(cells) + " |")
    chance = analyses[0]["chance"]
    lines.append("| chance | | " + " | ".join(f"{100 * chance[k]:.1f}" for k in probe_keys) + " |")

    with_masks = [a for a in analyses if "comparison" in a]
    if with_masks:
        lines += dims_table_head(
            "Per dimension: do the perturbed dims encode nuisance rather than class?", NUISANCE_DIMS_INTRO,
            ["class: perturbed / kept / all", "p(lower)", "nuisance (max over factors): perturbed / kept / all",
             "p(higher)", "spearman(f, nuisance)"])
        for m, group in groups_with_masks(with_masks, methods):
            for set_name in MASK_SETS:
                cls = [a["comparison"][set_name]["class"]["eps2"] for a in group]
                nui = [a["comparison"][set_name]["nuisance_max"]["eps2"] for a in group]
                lines.append(
                    f"| {m} | {set_name} | {perturbed_kept_all(cls)} | "
                    f"{_fmt(mean_std(r.get('p_lower') for r in cls), 1, 3)} | "
                    f"{perturbed_kept_all(nui)} | {_fmt(mean_std(r.get('p_higher') for r in nui), 1, 3)} | "
                    f"{_fmt(mean_std(r.get('spearman') for r in nui), 1, 2)} |"
                )
        factors = [f for f in NUISANCE_FACTORS if f in with_masks[0]["comparison"]["union"]]
        lines += ["", "### Per nuisance factor, union mask (epsilon^2 x100, perturbed / kept / all)", "",
                  "| method | " + " | ".join(factors) + " |", "|" + "---|" * (len(factors) + 1)]
        for m, group in groups_with_masks(with_masks, methods):
            cells = [perturbed_kept_all([a["comparison"]["union"][f]["eps2"] for a in group]) for f in factors]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "### Verdict (union mask, per seed: permutation p < 0.05 against random dims)", ""]
        for m, group in groups_with_masks(with_masks, methods):
            more_nuisance = sum(a["comparison"]["union"]["nuisance_max"]["eps2"].get("p_higher", 1) < 0.05
                                for a in group)
            less_class = sum(a["comparison"]["union"]["class"]["eps2"].get("p_lower", 1) < 0.05 for a in group)
            note = " (trained with the random mask; rows show what the criteria would pick)" if m == "fgssl-random" \
                else (" (no mask in training; rows show what fgssl's criteria would pick)" if m != "fgssl" else "")
            lines.append(f"- {m}{note}: perturbed dims encode more nuisance than random dims in {more_nuisance}/"
                         f"{len(group)} seeds, less class in {less_class}/{len(group)} seeds.")
        lines += ["", "Mutual information (nats) gives the same comparison in mechanism.json (`mi`)."]
    return "\n".join(lines) + "\n"


def _plot_class_dims(plt, a: dict, path: Path) -> Path:
    """Class side only (no nuisance labels): per dim, class epsilon^2 vs the union mask's selection frequency."""
    x = np.asarray(a["dims"]["class"]["eps2"])
    freq, in_v = np.asarray(a["masks"]["union"]), np.asarray(a["masks"]["variance"]) > 0
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(x[~in_v], freq[~in_v], s=14, label="not in V")
    ax.scatter(x[in_v], freq[in_v], s=22, marker="^", edgecolors="k", linewidths=0.3, label="in V (low variance)")
    ax.axvline(float(x.mean()), color="grey", lw=0.8, ls="--", label="mean over dims (random dims)")
    ax.set_xlabel("class epsilon^2 (share of the dim's variance)")
    ax.set_ylabel("selection frequency (union mask)")
    ax.set_title(f"{a['method']} seed {a['seed']}: {len(x)} dims of h (class side only: no nuisance labels)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_dims(analyses: list[dict], out_dir: Path) -> list[Path]:
    """One scatter per method (first seed): class eps2 vs max nuisance eps2 per dim, coloured by selection freq."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for method in sorted({a["method"] for a in analyses if "dims" in a}, key=method_sort_key):
        a = min((a for a in analyses if a["method"] == method and "dims" in a), key=lambda a: a["seed"])
        if "nuisance_max" not in a["dims"]:  # class side only: class eps2 against the selection frequency
            paths.append(_plot_class_dims(plt, a, out_dir / f"dims_{method}.png"))
            continue
        x, y = a["dims"]["class"]["eps2"], a["dims"]["nuisance_max"]["eps2"]
        freq, in_v = a["masks"]["union"], a["masks"]["variance"] > 0
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        sc = ax.scatter(x[~in_v], y[~in_v], c=freq[~in_v], cmap="viridis", vmin=0, vmax=1, s=14, label="not in V")
        ax.scatter(x[in_v], y[in_v], c=freq[in_v], cmap="viridis", vmin=0, vmax=1, s=22, marker="^",
                   edgecolors="k", linewidths=0.3, label="in V (low variance)")
        fig.colorbar(sc, ax=ax, label="selection frequency (union mask)")
        ax.set_xlabel("class epsilon^2 (share of the dim's variance)")
        ax.set_ylabel("max nuisance epsilon^2")
        ax.set_title(f"{method} seed {a['seed']}: {len(x)} dims of h", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"dims_{method}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_probes(analyses: list[dict], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({a["method"] for a in analyses}, key=method_sort_key)
    keys = list(analyses[0]["probes"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        stats = [mean_std(a["probes"][k] for a in analyses if a["method"] == m) for k in keys]
        ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, [100 * s[0] for s in stats], width,
               yerr=[100 * s[1] for s in stats], capsize=2, label=m)
    ax.set_xticks(np.arange(len(keys)), [k.replace("_", "\n") for k in keys], fontsize=7)
    ax.set_ylabel("accuracy % / R^2 x100")
    ax.set_title("Linear decodability from h (train -> test): " + (
        "class (class side only: no nuisance labels)" if is_class_side_only(analyses) else
        "class vs nuisance factors"), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "probes.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path




# --------------------------------------------------------------------------------------------- driver


def parse_cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="moco,lcr,fgssl,fgssl-random")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--extra", default="", help="Pretrain overrides for every run (quoted).")
    parser.add_argument("--out", default="benchmarks/results/mechanism")
    parser.add_argument("--runs_dir", default="outputs/bench/mechanism")
    parser.add_argument("--passes", type=int, default=2, help="Augmented sweeps over train for the mask statistics.")
    parser.add_argument("--equal_time_reference", default="none", help="As in cub100.py; none by default (shorter).")
    parser.add_argument("--analyse_only", action="store_true", help="Analyse the finished runs; train nothing new.")
    parser.add_argument("--init", default="", help="As in cub100.py: the backbone folder every run started from "
                                                   "(--backbone; adds the generic-init start rows).")
    parser.add_argument("--knobs_from", default="", help="As in cub100.py: the grid.json whose `chosen` knobs every "
                                                         "run took.")
    parser.add_argument("--dry_run", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if rest:
        parser.error(f"unrecognised arguments {rest}")
    return args


SYNTHETIC_TITLE = "embedded synthetic dataset: moco vs lcr vs fgssl vs fgssl-random"


def benchmark_argv(args: argparse.Namespace) -> list[str]:
    """cub100.parse_cli's argv for these mechanism arguments (--init / --knobs_from passed through)."""
    bench_argv = ["--methods", args.methods, "--seeds", args.seeds, "--config", args.config, "--extra", args.extra,
                  "--out", args.out, "--runs_dir", args.runs_dir, "--equal_time_reference", args.equal_time_reference,
                  "--title", SYNTHETIC_TITLE,
                  "--budgets", "equal_epochs" if args.equal_time_reference == "none" else "equal_epochs,equal_time"]
    bench_argv += [a for flag in ("init", "knobs_from") if getattr(args, flag, "") for a in (f"--{flag}",
                                                                                          getattr(args, flag))]
    return bench_argv + (["--dry_run"] if args.dry_run or args.analyse_only else [])


def dataset_of(config: str, extra: list[str]) -> str | None:
    """The dataset_name the runs train on (config + overrides); None for the embedded synthetic dataset."""
    from fgssl.training.pretrain import parse_args

    name = parse_args([str(config), *extra])[1].dataset_name
    return None if name in (None, "", "synthetic") else name


def benchmark_title(bench: argparse.Namespace) -> tuple[str, str | None]:
    """(title of the results, dataset label for mechanism.md or None for the synthetic one): which dataset, and
    which start (--init) the runs took; the synthetic dataset keeps its title."""
    dataset = dataset_of(bench.config, bench.extra)
    if dataset is None:
        return SYNTHETIC_TITLE, None
    label = f"{Path(dataset.rstrip('/')).name} (`{dataset}`)"
    if getattr(bench, "init", ""):
        label += f" from the initialisation `{cub100.repo_relative(bench.init)}`"
    return f"{label}: mechanism check, {' vs '.join(bench.methods)}", label


def main(argv=None) -> dict:
    args = parse_cli(argv)
    started = time.time()
    bench = cub100.parse_cli(benchmark_argv(args))
    bench.title, dataset_label = benchmark_title(bench)
    results = cub100.run_benchmark(bench)
    if args.dry_run:
        return results
    if args.analyse_only:  # the finished runs only (dry_run left the others out)
        results["runs"] = [r for r in results["runs"] if r.get("status") == "done"]
    out_dir = Path(bench.out)
    results.update(title=bench.title, config=cub100.repo_relative(bench.config), extra=bench.extra, seeds=bench.seeds, methods=bench.methods)
    results["notes"] = cub100.notes_for(bench, results)
    write_summary(results, out_dir, bench.title, results["notes"])

    analyses = []
    for record in results["runs"]:
        if record.get("status") != "done" or record["budget"] not in ("equal_epochs", "random_init"):
            continue
        spec = cub100.RunSpec(record["method"], record["seed"], record["budget"], cub100.resolve_path(record["run_dir"]))
        argv = analysis_argv(bench, record)
        print(f"[analyse] {spec.name}", flush=True)
        analyses.append(analyse_run(record, argv, args.passes))
    if not analyses:
        raise SystemExit("No finished runs to analyse.")
    mechanism = {"analyses": analyses, "seconds": round(time.time() - started, 1),
                 "settings": {"passes": args.passes, "bins": NUM_BINS, "permutations": NUM_PERMUTATIONS,
                              "config": cub100.repo_relative(bench.config), "extra": bench.extra}}
    if dataset_label is not None:  # a real dataset (the synthetic one's settings keep their committed keys)
        mechanism["settings"].update(dataset=dataset_label, init=cub100.repo_relative(bench.init or ""),
                                     knobs_from=args.knobs_from, class_side_only=is_class_side_only(analyses))
    (out_dir / "mechanism.json").write_text(json.dumps(json_safe(repo_relative_paths(mechanism)), indent=1) + "\n")
    text = mechanism_markdown(analyses, dataset_label)
    text += (f"\nRuns: `{shlex.join(bench.extra) or 'no overrides'}` on `{Path(bench.config).name}`; "
             f"this invocation took {mechanism['seconds'] / 60:.1f} min.\n")
    (out_dir / "mechanism.md").write_text(text)
    pictures = plot_dims(analyses, out_dir) + [plot_probes(analyses, out_dir)]
    print(text)
    print("Wrote", out_dir / "mechanism.json", out_dir / "mechanism.md", *pictures)
    return mechanism


if __name__ == "__main__":
    main()
