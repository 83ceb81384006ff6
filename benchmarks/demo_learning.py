"""Does the main job learn? The no-argument demo (`fgssl-pretrain`) for seeds 0, 1, 2, each from a fresh clone's state.

    python benchmarks/demo_learning.py                    # 3 seeds, ~10 min on 2 CPU cores
    python benchmarks/demo_learning.py --seeds 0 --dry_run

Each seed is `python -m fgssl.training.pretrain --seed S --output_dir outputs/demo_learning/seed-S`, a subprocess
with nothing else changed, into an emptied folder and with an empty dataset cache ($FGSSL_CACHE in a temporary
folder), so its time holds everything a first run pays: imports, generating the embedded dataset, decoding, training,
saving, evaluating the run and the random-init encoder of the same backbone and seed (the run writes the latter to
random_init/eval_results.json). The bar (issue 11), on the means over the seeds: kNN top-1 >= 3 x chance and >= the
random-init encoder's + 10 points; and every run within the 3-minute budget.

Writes benchmarks/results/demo/results.{json,md} (mean ± std of kNN, linear, retrieval mAP for the runs and the
random-init encoders, per-seed rows, run times, the machine and its load) and copies the first seed's pairs sheet to
benchmarks/results/demo/pairs.png. Paths are recorded relative to the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.common import REPO, comma_list, fgssl_command, repo_relative_paths, run_logged, write_json  # noqa: E402
from benchmarks.summarize import mean_std  # noqa: E402
from fgssl.training.evaluation import json_safe  # noqa: E402

METRICS = (("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1"), ("retrieval_map", "retrieval mAP"))
#: Issue 11's bar: the run's mean kNN top-1 >= CHANCE_FACTOR x chance and >= random init + MARGIN; each run <= BUDGET_S.
CHANCE_FACTOR = 3.0
MARGIN = 0.10
BUDGET_S = 180.0


def repo_relative(path) -> str:
    """A path as the results record it: relative to the repository (or ../ of it), else its name."""
    return repo_relative_paths(str(Path(path).resolve()))


def machine_info() -> dict:
    from benchmarks.step_cost import available_cores, cpu_model_name

    import platform

    import torch
    import transformers

    return {"cpu": cpu_model_name(), "cores_available": available_cores(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def run_seed(seed: int, out_root: Path, dry_run: bool = False) -> dict:
    """One demo run: a fresh folder, an empty dataset cache, the no-argument command plus --seed / --output_dir."""
    run_dir = out_root / f"seed-{seed}"
    command = fgssl_command("pretrain", ["--seed", str(seed), "--output_dir", str(run_dir)])
    record = {"seed": seed, "run_dir": repo_relative(run_dir),
              "command": " ".join(["python", *command[1:4], str(seed), command[5], repo_relative(run_dir)])}
    if dry_run:
        print(record["command"])
        return record
    shutil.rmtree(run_dir, ignore_errors=True)  # an old checkpoint would be resumed, not re-run
    run_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="fgssl-demo-cache-") as cache:
        env = {**os.environ, "FGSSL_CACHE": cache}
        load_before = [round(x, 2) for x in os.getloadavg()]
        returncode, seconds = run_logged(command, run_dir / "stdout.txt", mode="w", env=env)
    record.update(returncode=returncode, process_seconds=round(seconds, 1), load_average_before=load_before,
                  load_average_after=[round(x, 2) for x in os.getloadavg()])
    if returncode != 0:
        record["status"] = "failed"
        return record
    run = json.loads((run_dir / "eval_results.json").read_text())
    start_results = json.loads((run_dir / "random_init" / "eval_results.json").read_text())
    train = json.loads((run_dir / "train_results.json").read_text())
    pictures = sorted((run_dir / "pictures").glob("pairs_step*.png"))
    record.update(
        status="done",
        run={k: run.get(k) for k, _ in METRICS},
        random_init={k: start_results.get(k) for k, _ in METRICS},
        global_step=train.get("global_step"),
        train_runtime=round(train.get("train_runtime", float("nan")), 1),
        evaluation_seconds={"run": run["seconds"]["total"], "random_init": start_results["seconds"]["total"]},
        num_images=run.get("num_images"),
        pictures=repo_relative(pictures[-1]) if pictures else None,
    )
    return record


def summarize(records: list[dict], num_classes: int) -> dict:
    done = [r for r in records if r.get("status") == "done"]
    summary = {"seeds": [r["seed"] for r in done], "num_classes": num_classes, "chance": 1.0 / num_classes}
    for key, _ in METRICS:
        summary[key] = {"run": mean_std([r["run"][key] for r in done]),
                        "random_init": mean_std([r["random_init"][key] for r in done]),
                        "difference": mean_std([r["run"][key] - r["random_init"][key] for r in done])}
    summary["process_seconds"] = mean_std([r["process_seconds"] for r in done])
    summary["max_process_seconds"] = max((r["process_seconds"] for r in done), default=None)
    knn_run, knn_start = summary["knn_top1"]["run"][0], summary["knn_top1"]["random_init"][0]
    checks = {
        f"kNN top-1 >= {CHANCE_FACTOR:g} x chance ({100 * CHANCE_FACTOR / num_classes:.1f} %)":
            knn_run >= CHANCE_FACTOR / num_classes,
        f"kNN top-1 >= random init + {100 * MARGIN:.0f} points": knn_run - knn_start >= MARGIN,
        f"every run <= {BUDGET_S / 60:g} min, all included": (summary["max_process_seconds"] or 1e9) <= BUDGET_S,
        "all seeds finished": len(done) == len(records) and len(done) > 0,
    }
    summary["checks"] = checks
    summary["passed"] = all(checks.values())
    return summary


def _stat(stat, scale=100.0) -> str:
    mean, std, n = stat
    return "n/a" if n == 0 else f"{scale * mean:.1f} ± {scale * std:.1f}"


def markdown(result: dict) -> str:
    s, records = result["summary"], result["runs"]
    lines = ["# Does the main job learn? `fgssl-pretrain` with no argument, seeds " + ",".join(map(str, s["seeds"])), ""]
    m = result["machine"]
    lines += [f"Machine: {m['cpu']}, {m['cores_available']} cores available (shared: load averages per run below); "
              f"torch {m['torch']}, transformers {m['transformers']}. Each run is a fresh process with an empty "
              "dataset cache: its time holds imports, data generation, training, saving and both evaluations.", ""]
    lines += ["| encoder | " + " | ".join(title for _, title in METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for row, title in (("run", "this run (fgssl, demo recipe)"), ("random_init", "random init (same backbone, seed)"),
                       ("difference", "difference (points)")):
        lines.append(f"| {title} | " + " | ".join(_stat(s[k][row]) for k, _ in METRICS) + " |")
    lines += ["", f"Mean ± std over {len(s['seeds'])} seeds, %, test split, frozen features (kNN k=20, linear probe "
              f"with C chosen on a validation part of train). Chance: {100 * s['chance']:.1f} % ({s['num_classes']} "
              "classes).", ""]
    lines += ["| seed | kNN run / random | linear run / random | mAP run / random | steps | train s | eval s (run + "
              "random) | process s | load avg before → after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r.get("status") != "done":
            lines.append(f"| {r['seed']} | failed (exit {r.get('returncode')}; see {r['run_dir']}/stdout.txt) |"
                         " | | | | | | |")
            continue
        cells = [f"{100 * r['run'][k]:.1f} / {100 * r['random_init'][k]:.1f}" for k, _ in METRICS]
        ev = r["evaluation_seconds"]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {r['global_step']} | {r['train_runtime']} | "
                     f"{ev['run']:.1f} + {ev['random_init']:.1f} | {r['process_seconds']} | "
                     f"{r['load_average_before'][0]} → {r['load_average_after'][0]} |")
    lines += ["", f"Process time: {s['process_seconds'][0]:.0f} ± {s['process_seconds'][1]:.0f} s "
              f"(max {s['max_process_seconds']:.0f} s).", "", "## The bar (issue 11)", ""]
    lines += [f"- {name}: {'PASS' if ok else 'FAIL'}" for name, ok in s["checks"].items()]
    lines += ["", f"**{'PASS' if s['passed'] else 'FAIL'}**", ""]
    if result.get("pairs"):
        lines += [f"Pairs sheet of seed {records[0]['seed']} (input view / D(h) / D(h') / difference / Grad-CAM): "
                  f"`{result['pairs']}`.", ""]
    lines += [f"Command: `{result['command']}`; this invocation took {result['minutes']:.1f} min.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out_root", default="outputs/demo_learning", help="Run folders (one per seed).")
    parser.add_argument("--results", default="benchmarks/results/demo", help="Where results.{json,md} go.")
    parser.add_argument("--dry_run", action="store_true", help="Print the commands, run nothing.")
    args = parser.parse_args(argv)
    seeds = comma_list(args.seeds, int)
    out_root, results_dir = REPO / args.out_root, REPO / args.results
    started = time.perf_counter()
    records = []
    for seed in seeds:
        records.append(run_seed(seed, out_root, args.dry_run))
        if not args.dry_run:
            print(json.dumps(json_safe(records[-1])), flush=True)
    if args.dry_run:
        return {"runs": records}

    from fgssl.training.synthetic import GENERATOR_SIGNATURE

    num_classes = GENERATOR_SIGNATURE.parameters["num_classes"].default
    result = {"summary": summarize(records, num_classes), "runs": records, "machine": machine_info(),
              "command": "python benchmarks/demo_learning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "minutes": round((time.perf_counter() - started) / 60, 2)}
    results_dir.mkdir(parents=True, exist_ok=True)
    first = next((r for r in records if r.get("pictures")), None)
    if first:
        shutil.copy2(REPO / first["pictures"], results_dir / "pairs.png")
        result["pairs"] = repo_relative(results_dir / "pairs.png")
    write_json(results_dir / "results.json", json_safe(result))
    (results_dir / "results.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
