"""Aggregate benchmark runs: mean +- std over seeds, a markdown table, the goal check and a bar chart.

    python benchmarks/summarize.py benchmarks/results/cub100/results.json     # re-render table and plot

Used by benchmarks/cub100.py and benchmarks/mechanism.py. A run record (one per pre-training run) is a dict:
{"method", "seed", "budget" ("equal_epochs" | "equal_time" | "random_init"), "status" ("done" | "failed"),
 "metrics": {metric: value in [0, 1]}, "train_runtime", "wall_seconds", "process_seconds", "global_step", ...}.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import repo_relative_paths, write_json  # noqa: E402
from fgssl.training.evaluation import json_safe  # noqa: E402

METRICS = ("retrieval_rank1", "retrieval_rank5", "retrieval_map", "knn_top1", "linear_top1")
#: Display order; anything else follows alphabetically.
METHOD_ORDER = ("random-init", "generic-init", "moco", "lcr", "fgssl", "fgssl-random", "simsiam", "simsiam-lcr", "simsiam-fgssl",
                "simsiam-fgssl-random")
BUDGETS = {
    "equal_epochs": "same number of epochs",
    "equal_time": "equal wall-clock (training time matched to the reference method)",
    "continued": "continued pre-training (every method starts from one common moco checkpoint, same further steps)",
}
#: The issue's goal: fgssl above each of these on these metrics by more than GOAL_STD_FACTOR x the seed std.
GOAL_METRICS = ("retrieval_map", "linear_top1")
GOAL_BASELINES = ("moco", "fgssl-random")
GOAL_STD_FACTOR = 2.0
#: The same goal on the SimSiam base: (method, its baselines).
SIMSIAM_GOAL = ("simsiam-fgssl", ("simsiam", "simsiam-fgssl-random"))
#: The first bar of a benchmark from generic pretrained weights: does pre-training on the fine-grained images help
#: at all? moco above the generic initialisation alone ("generic-init", no fine-grained pre-training) on mAP.
INIT_BAR = ("moco", ("generic-init",), ("retrieval_map",))


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof 1 (0 for a single value), count) of the finite values; NaNs when empty."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(values) == 0:
        return math.nan, math.nan, 0
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, int(len(values))


def method_sort_key(method: str):
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def aggregate(runs: list[dict]) -> dict:
    """{budget: {method: {"seeds": [...], metric: (mean, std, n), "train_runtime": ..., "process_seconds": ...}}}.

    Failed runs are left out. The random-init rows (budget "random_init") are copied into every budget, so
    each table carries its reference row.
    """
    done = [r for r in runs if r.get("status") == "done"]
    budgets = sorted({r["budget"] for r in done if r["budget"] != "random_init"}, key=list(BUDGETS).index) or [
        "equal_epochs"
    ]
    table = {}
    for budget in budgets:
        rows = {}
        selected = [r for r in done if r["budget"] in (budget, "random_init")]
        for method in sorted({r["method"] for r in selected}, key=method_sort_key):
            group = [r for r in selected if r["method"] == method]
            row = {"seeds": sorted(r["seed"] for r in group)}
            for metric in METRICS:
                row[metric] = mean_std(r.get("metrics", {}).get(metric) for r in group)
            for timing in ("train_runtime", "process_seconds", "global_step", "output_std"):
                row[timing] = mean_std(r.get(timing) for r in group)
            row["resumed"] = any(r.get("resumed") for r in group)
            rows[method] = row
        table[budget] = rows
    return table


def _pct(stat) -> str:
    mean, std, n = stat
    if n == 0:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _minutes(stat) -> str:
    mean, std, n = stat
    if n == 0:
        return "n/a"
    return f"{mean / 60:.1f} ± {std / 60:.1f}" if n > 1 else f"{mean / 60:.1f}"


def goal_check(rows: dict, method: str = "fgssl", baselines=GOAL_BASELINES, metrics=GOAL_METRICS,
               factor: float = GOAL_STD_FACTOR) -> list[dict]:
    """For each baseline and metric: is mean(method) - mean(baseline) > factor x max(seed std of the two)?

    The larger of the two stds is used (the stricter reading of "more than twice the seed std"); with a single
    seed the std is 0 and the check says so (`enough_seeds` False) instead of passing.
    """
    checks = []
    if method not in rows:
        return checks
    for baseline in baselines:
        if baseline not in rows:
            continue
        for metric in metrics:
            (m1, s1, n1), (m0, s0, n0) = rows[method][metric], rows[baseline][metric]
            if n1 == 0 or n0 == 0:
                continue
            diff, std = m1 - m0, max(s1, s0)
            checks.append({
                "method": method, "baseline": baseline, "metric": metric, "difference": diff,
                "threshold": factor * std, "passed": bool(diff > factor * std and min(n1, n0) > 1),
                "enough_seeds": min(n1, n0) > 1,
            })
    return checks


def all_goal_checks(rows: dict) -> list[dict]:
    """The goal on the MoCo base (fgssl) and on the SimSiam base (simsiam-fgssl), for the methods present; from a
    generic initialisation also the first bar (moco above the initialisation alone)."""
    return (goal_check(rows, *INIT_BAR) + goal_check(rows) + goal_check(rows, SIMSIAM_GOAL[0], SIMSIAM_GOAL[1]))


def markdown(table: dict, title: str = "Benchmark", notes: list[str] | None = None, runs: list[dict] | None = None) -> str:
    """Tables (one per budget) of mean ± std in %, with seeds, steps and training minutes, the goal check, and
    (when `runs` is given) one line per run."""
    lines = [f"# {title}", ""]
    for note in notes or []:
        lines.append(note)
    if notes:
        lines.append("")
    for budget, rows in table.items():
        lines += [f"## {BUDGETS.get(budget, budget)}", ""]
        header = ["method", "seeds", *METRICS, "steps", "train min", "run min"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, row in rows.items():
            steps = row["global_step"]
            cells = [
                method + (" (resumed)" if row["resumed"] else ""),
                ",".join(map(str, row["seeds"])),
                *(_pct(row[m]) for m in METRICS),
                "n/a" if steps[2] == 0 else f"{steps[0]:.0f}",
                _minutes(row["train_runtime"]),
                _minutes(row["process_seconds"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        checks = all_goal_checks(rows)
        if checks:
            lines += ["", f"Goal (method - baseline > {GOAL_STD_FACTOR:g} x max seed std):", ""]
            for c in checks:
                verdict = "PASS" if c["passed"] else ("FAIL" if c["enough_seeds"] else "n/a (one seed)")
                lines.append(f"- {c['method']} vs {c['baseline']}, {c['metric']}: {100 * c['difference']:+.2f} points "
                             f"(threshold {100 * c['threshold']:.2f}) -> {verdict}")
        lines.append("")
    lines.append("Metrics in %, mean ± sample std over seeds; `train min`: the Trainer's train_runtime; `run min`: "
                 "the whole subprocess (data, training, saving, evaluation).")
    if runs:
        lines += ["", "## Every run", "", runs_markdown(runs)]
    return "\n".join(lines) + "\n"


def runs_markdown(runs: list[dict]) -> str:
    """One line per run: budget, method, seed, status, steps, times, the two goal metrics, and SimSiam's collapse
    monitor (`output_std`, last logged: ~0 collapsed, ~1/sqrt(d) healthy; empty on the MoCo base)."""
    lines = ["| budget | method | seed | status | steps | train min | run min | resumed | retrieval_map | "
             "linear_top1 | output_std |", "|" + "---|" * 11]
    seen = set()
    for r in sorted(runs, key=lambda r: (r["budget"], method_sort_key(r["method"]), r["seed"])):
        key = (r.get("run_dir"), r["budget"])
        if key in seen:
            continue
        seen.add(key)
        metrics = r.get("metrics") or {}
        cell = lambda v, scale=1.0, fmt=".2f": "n/a" if v is None else f"{scale * v:{fmt}}"  # noqa: E731
        lines.append(" | ".join([
            f"| {r['budget']}", r["method"], str(r["seed"]), r.get("status", "?"), cell(r.get("global_step"), fmt=".0f"),
            cell(r.get("train_runtime"), 1 / 60, ".1f"), cell(r.get("process_seconds"), 1 / 60, ".1f"),
            "yes" if r.get("resumed") else "", cell(metrics.get("retrieval_map"), 100),
            cell(metrics.get("linear_top1"), 100),
            "" if r.get("output_std") is None else f"{r['output_std']:.4f}",
        ]) + " |")
    return "\n".join(lines)


def plot(table: dict, path, title: str = "") -> Path | None:
    """Grouped bar chart (one panel per budget): metric groups, one bar per method, seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not table:
        return None
    fig, axes = plt.subplots(1, len(table), figsize=(7 * len(table), 4.2), squeeze=False)
    for ax, (budget, rows) in zip(axes[0], table.items()):
        methods = list(rows)
        width = 0.8 / max(1, len(methods))
        x = np.arange(len(METRICS))
        for i, method in enumerate(methods):
            means = [100 * rows[method][m][0] for m in METRICS]
            stds = [100 * rows[method][m][1] for m in METRICS]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                   label=f"{method} (n={len(rows[method]['seeds'])})")
        ax.set_xticks(x, [m.replace("_", "\n") for m in METRICS], fontsize=8)
        ax.set_ylabel("%")
        ax.set_title(BUDGETS.get(budget, budget), fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path




def write_summary(results: dict, out_dir, title: str, notes: list[str] | None = None) -> dict:
    """results.json (every run + the aggregate), results.md and results.png in out_dir; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = aggregate(results["runs"])
    results = {**results, "aggregate": table,
               "goal": {budget: all_goal_checks(rows) for budget, rows in table.items()}}
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    write_json(paths["json"], json_safe(repo_relative_paths(results)))
    paths["markdown"].write_text(markdown(table, title, notes, results["runs"]))
    paths["plot"] = plot(table, out_dir / "results.png", title)
    return paths


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python benchmarks/summarize.py RESULTS_JSON (written by cub100.py / mechanism.py)")
    path = Path(argv[0])
    results = json.loads(path.read_text())
    paths = write_summary(results, path.parent, results.get("title", "Benchmark"), results.get("notes"))
    print(paths["markdown"].read_text())
    print("Wrote", ", ".join(str(p) for p in paths.values() if p))


if __name__ == "__main__":
    main()
