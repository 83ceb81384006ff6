"""benchmarks/mechanism.py on a dataset without nuisance labels (cub100): the class side only, and the
pass-through of cub100.py's --init / --knobs_from (no training, a few seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import cub100, mechanism  # noqa: E402

CONFIG = "configs/cub100_init_cpu.yaml"


def fake_analysis(method: str, seed: int, rng: np.random.Generator, dims: int = 16, n: int = 200) -> dict:
    """What analyse_encoder returns for a trained run on a dataset without nuisance factors, on fake features:
    the first half of the dims carries the class, the mask picks mostly the second half."""
    labels = rng.integers(0, 4, n)
    features = rng.normal(size=(n, dims))
    features[:, : dims // 2] += 2.0 * labels[:, None]
    stats = mechanism.per_dim_statistics(features, labels, {})
    union = np.r_[np.full(dims // 2, 0.05), np.full(dims - dims // 2, 0.9)]
    masks = {"union": union, "gradcam": union, "variance": (union > 0.5).astype(float)}
    return {"method": method, "seed": seed, "probes": {"class_acc": 0.6}, "chance": {"class_acc": 0.25},
            "hidden_size": dims, "dims": stats, "masks": masks,
            "comparison": mechanism.compare_dims(stats, masks, {}, seed, permutations=200)}


def test_class_side_statistics_markdown_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    analyses = [fake_analysis("fgssl", 0, rng), fake_analysis("moco", 0, rng),
                {"method": "generic-init", "seed": 0, "probes": {"class_acc": 0.4}, "chance": {"class_acc": 0.25},
                 "hidden_size": 16}]
    stats = analyses[0]["dims"]
    assert set(stats) == {"class"} and stats["class"]["eps2"].shape == (16,)
    assert (stats["class"]["eps2"][:8] > 0.3).all() and abs(stats["class"]["eps2"][8:]).max() < 0.1

    for set_name in mechanism.MASK_SETS:
        comparison = analyses[0]["comparison"][set_name]
        assert set(comparison) == {"class"}
        cls = comparison["class"]["eps2"]
        assert cls["perturbed"] < cls["all"] < cls["kept"]
        assert cls["p_lower"] < 0.05 and cls["p_higher"] > 0.5
        assert set(comparison["class"]["mi"]) >= {"perturbed", "kept", "all", "p_lower"}

    assert mechanism.is_class_side_only(analyses)
    text = mechanism.mechanism_markdown(analyses, "cub100 (`../shared/data/cub100`)")
    assert "# Mechanism check on cub100" in text
    assert "class side only: the dataset has no nuisance labels" in text.lower()
    assert "nuisance (max over factors)" not in text
    assert "| fgssl | union |" in text and "| generic-init | 0 |" in text
    assert "- fgssl: perturbed dims carry less class information than random dims in 1/1 seeds" in text

    paths = mechanism.plot_dims(analyses, tmp_path) + [mechanism.plot_probes(analyses, tmp_path)]
    assert sorted(p.name for p in paths) == ["dims_fgssl.png", "dims_moco.png", "probes.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_split_factors_without_nuisance_columns():
    from datasets import Dataset

    assert mechanism.split_factors(Dataset.from_dict({"label": [0, 1], "pixel_values": [[0], [1]]})) == {}
    with pytest.raises(ValueError, match="nuisance factor columns"):
        mechanism.split_factors(Dataset.from_dict({"label": [0, 1], "x": [0.1, 0.2]}))


def test_synthetic_markdown_keeps_its_nuisance_side():
    rng = np.random.default_rng(1)
    labels, background = rng.integers(0, 3, 120), rng.integers(0, 2, 120)
    features = rng.normal(size=(120, 6)) + labels[:, None]
    factors = {"background": background}
    stats = mechanism.per_dim_statistics(features, labels, factors)
    assert set(stats) == {"class", "background", "nuisance_max"}
    masks = {"union": np.linspace(0, 1, 6), "gradcam": np.linspace(0, 1, 6), "variance": np.zeros(6)}
    analysis = {"method": "fgssl", "seed": 0, "probes": {"class_acc": 0.9, "background_acc": 0.5},
                "chance": {"class_acc": 0.34, "background_acc": 0.5}, "dims": stats, "masks": masks,
                "comparison": mechanism.compare_dims(stats, masks, factors, permutations=50)}
    assert list(analysis["comparison"]["union"]) == ["class", "nuisance_max", "background"]
    text = mechanism.mechanism_markdown([analysis])
    assert text.startswith("# Mechanism check on the embedded synthetic dataset\n")
    assert "nuisance (max over factors)" in text and "class side only" not in text.lower()


def test_init_and_knobs_from_pass_through(tmp_path, monkeypatch):
    from transformers import ResNetConfig, ResNetModel

    init = tmp_path / "init"
    ResNetModel(ResNetConfig(layer_type="basic", embedding_size=8, depths=[1], hidden_sizes=[8])).save_pretrained(init)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"chosen": {"learning_rate": "1e-4"}}))
    runs, out = tmp_path / "runs", tmp_path / "out"
    common = ["--config", CONFIG, "--init", str(init), "--knobs_from", str(grid), "--runs_dir", str(runs),
              "--seeds", "0", "--budgets", "equal_epochs", "--equal_time_reference", "none"]

    # The benchmark as benchmarks/cub100_init.sh runs it, its training stubbed: it records every run's argv.
    def fake_call(command, **kwargs):
        Path(command[command.index("--output_dir") + 1], "eval_results.json").write_text("{}")
        return 0

    monkeypatch.setattr("benchmarks.common.subprocess.call", fake_call)  # cub100 launches through common
    monkeypatch.setattr(cub100, "random_init_evaluation",
                        lambda argv, output_dir: Path(output_dir, "eval_results.json").write_text("{}"))
    recorded = cub100.run_benchmark(cub100.parse_cli([*common, "--methods", "moco,fgssl,fgssl-random",
                                                      "--out", str(out)]))["runs"]
    assert {(r["method"], r["status"]) for r in recorded} == {
        ("moco", "done"), ("fgssl", "done"), ("fgssl-random", "done"), ("random-init", "done"),
        ("generic-init", "done")}

    args = mechanism.parse_cli(["--config", CONFIG, "--init", str(init), "--knobs_from", str(grid),
                                "--runs_dir", str(runs), "--out", str(out / "mechanism"),
                                "--methods", "moco,fgssl,fgssl-random", "--seeds", "0", "--analyse_only"])
    assert (args.init, args.knobs_from) == (str(init), str(grid))
    bench = cub100.parse_cli(mechanism.benchmark_argv(args))
    assert bench.dry_run and bench.init == str(init.resolve())
    assert bench.extra == ["--backbone", str(init.resolve()), "--learning_rate", "1e-4"]
    assert bench.start_extra == ["--learning_rate", "1e-4"]
    title, label = mechanism.benchmark_title(bench)
    assert title.startswith("cub100 (`../shared/data/cub100`) from the initialisation") and label in title

    # Analyse-only: cub100.check_run_dir accepts every finished run (same argv), and each row's analysis argv is
    # exactly the one the benchmark recorded.
    records = cub100.run_benchmark(bench)["runs"]
    assert len(records) == 5 and all(r["status"] == "done" for r in records)
    for record in records:
        run_dir = cub100.resolve_path(record["run_dir"])
        assert mechanism.analysis_argv(bench, record) == json.loads((run_dir / "bench_args.json").read_text())["argv"]
        assert mechanism.is_start_row(record) == (record["method"] in ("random-init", "generic-init"))
    generic = next(r for r in records if r["method"] == "generic-init")
    assert "--backbone" in mechanism.analysis_argv(bench, generic)
    random_init = next(r for r in records if r["method"] == "random-init")
    assert "--backbone" not in mechanism.analysis_argv(bench, random_init)

    # Without --init / --knobs_from (the synthetic default) nothing is added and the title stays.
    plain = mechanism.benchmark_argv(mechanism.parse_cli(["--analyse_only"]))
    assert "--init" not in plain and "--knobs_from" not in plain
    assert mechanism.benchmark_title(cub100.parse_cli(plain))[0] == mechanism.SYNTHETIC_TITLE
