"""The benchmark harness's own logic (no training): the generic-initialisation rows of cub100.py, the knobs a grid
chose, the first bar of a benchmark from pretrained weights, generic_init.py's backbone export, demo_variants.py's
datasets and the shared helpers (benchmarks/common.py)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from benchmarks import common, cub100, demo_variants, generic_init, summarize

CONFIG = "configs/cub100_init_cpu.yaml"


def _run(method, seed, budget, mAP, linear=0.1):
    metrics = {m: 0.1 for m in summarize.METRICS}
    metrics.update(retrieval_map=mAP, linear_top1=linear)
    return {"method": method, "seed": seed, "budget": budget, "status": "done", "metrics": metrics}


def test_start_row_says_what_the_starting_encoder_is(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    assert cub100.start_row_name(CONFIG, []) == "random-init"
    folder = tmp_path / "init"
    ResNetModel(ResNetConfig(layer_type="basic", embedding_size=8, depths=[1], hidden_sizes=[8])).save_pretrained(folder)
    # Pretrained weights named by --backbone are not "random-init" (the mislabel).
    assert cub100.start_row_name(CONFIG, ["--backbone", str(folder)]) == "generic-init"


def test_init_adds_the_backbone_to_every_run_and_keeps_the_preset_for_random_init(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    folder = tmp_path / "init"
    ResNetModel(ResNetConfig(layer_type="basic", embedding_size=8, depths=[1], hidden_sizes=[8])).save_pretrained(folder)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"chosen": {"learning_rate": "1e-4", "decoder_input": "pooled"}}))
    args = cub100.parse_cli(["--config", CONFIG, "--init", str(folder), "--knobs_from", str(grid),
                             "--extra=--num_train_epochs 2", "--runs_dir", str(tmp_path / "runs"),
                             "--out", str(tmp_path / "out")])
    assert args.extra[:2] == ["--backbone", str(folder.resolve())]
    assert args.extra[2:] == ["--learning_rate", "1e-4", "--decoder_input", "pooled", "--num_train_epochs", "2"]
    assert "--backbone" not in args.start_extra  # the random-init row is the config's preset
    spec = cub100.RunSpec("moco", 0, "equal_epochs", tmp_path / "runs" / "m")
    argv = cub100.pretrain_argv(args.config, args.extra, spec)
    # The benchmark's method arguments come after the chosen knobs: fgssl-random keeps its random mask.
    random_mask = cub100.pretrain_argv(args.config, [*args.extra, "--mask_mode", "union"],
                                       cub100.RunSpec("fgssl-random", 0, "equal_epochs", spec.run_dir))
    assert argv.index("--backbone") < argv.index("--method")
    assert random_mask[random_mask.index("--mask_mode", random_mask.index("--method")) + 1] == "random"


def test_init_that_is_not_a_backbone_folder_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        cub100.parse_cli(["--config", CONFIG, "--init", str(tmp_path)])


def test_knobs_from_an_unfinished_grid_are_refused(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"seed": 0}))
    with pytest.raises(SystemExit, match="no choice"):
        cub100.knobs_from_grid(grid)


def test_first_bar_compares_moco_with_the_initialisation_alone():
    runs = [_run("generic-init", s, "random_init", 0.20) for s in (0, 1, 2)]
    runs += [_run("moco", s, "equal_epochs", m) for s, m in zip((0, 1, 2), (0.25, 0.26, 0.24))]
    rows = summarize.aggregate(runs)["equal_epochs"]
    (check,) = [c for c in summarize.all_goal_checks(rows) if c["baseline"] == "generic-init"]
    assert check["method"] == "moco" and check["metric"] == "retrieval_map" and check["passed"]
    assert math.isclose(check["difference"], 0.05, abs_tol=1e-9)
    runs = [r for r in runs if r["method"] != "moco"] + [_run("moco", s, "equal_epochs", 0.2 + 0.01 * s)
                                                         for s in (0, 1, 2)]
    rows = summarize.aggregate(runs)["equal_epochs"]
    (check,) = [c for c in summarize.all_goal_checks(rows) if c["baseline"] == "generic-init"]
    assert not check["passed"]  # +1 point with a 1-point seed std is not > 2 x std
    assert list(rows)[:2] == ["generic-init", "moco"]


def test_generic_init_exports_the_trained_backbone_as_a_plain_transformers_folder(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    from fgssl.modeling import FGSSLForImageClassification

    random_dir = tmp_path / "random"
    generic_init.save_random_backbone("resnet-s16-cpu", 64, 0, random_dir)
    classifier = FGSSLForImageClassification.from_backbone_pretrained(random_dir, num_labels=3)
    with torch.no_grad():
        next(classifier.fgssl.backbone.parameters()).add_(1.0)  # "trained": differs from the random init
    classifier.save_pretrained(tmp_path / "finetune" / "model")
    generic_init.export_backbone(tmp_path / "finetune", tmp_path / "backbone", 64)

    backbone = AutoModel.from_pretrained(tmp_path / "backbone")
    assert type(backbone).__name__ == "ResNetModel"
    expected = classifier.fgssl.backbone.state_dict()
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert AutoImageProcessor.from_pretrained(tmp_path / "backbone").crop_size["height"] == 64
    with torch.no_grad():
        side = backbone(torch.zeros(1, 3, 64, 64)).last_hidden_state.shape[-1]
    assert side == 4  # total stride 16: room for the Grad-CAM map and the map decoder


def test_generic_init_refuses_an_unknown_backbone():
    with pytest.raises(SystemExit):
        generic_init.parse_cli(["--backbone", "resnet-999"])


def test_freeze_stages_stops_gradients_into_the_stem_and_first_stages():
    from fgssl.training.arguments import ModelArguments
    from fgssl.training.backbones import build_model

    model = build_model(ModelArguments(backbone="resnet-s16-cpu", freeze_stages=2, queue_size=0), "plain")
    backbone = model.fgssl.backbone
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("embedder.", "encoder.stages.0.", "encoder.stages.1.")) for n in frozen)
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("encoder.stages.2."))
    assert all(p.requires_grad for p in model.projector.parameters())
    with pytest.raises(ValueError, match="--freeze_stages must be in"):
        build_model(ModelArguments(backbone="resnet-s16-cpu", freeze_stages=4, queue_size=0), "plain")


# --------------------------------------------------------------------------------------------- demo_variants


def _variant(*flags):
    return demo_variants.parse_cli(["--name", "test", *flags])


VARIANT_SIZES = dict(num_classes=4, train_per_class=8, test_per_class=2, image_size=32)


def test_scenes_share_the_habitat_and_vary_the_bird():
    args = _variant("--scenes", "3", "--background_types", "6", "--nuisance_levels", "1", "--palette", "turned")
    ds = demo_variants.make_variant_dataset(args, **VARIANT_SIZES)
    train, test = ds["train"], ds["test"]
    assert set(train["scene"]) == {0, 1, 2} and set(test["scene"]) <= {0, 1, 2}
    habitat = {}
    for split in (train, test):  # train and test share the scenes
        for row in split:
            fixed = tuple(row[name] for name in demo_variants.SCENE_FIELDS)
            assert habitat.setdefault(row["scene"], fixed) == fixed
    assert len(set(habitat.values())) == 3
    assert [habitat[k][0] for k in range(3)] == [0, 1, 2]  # scenes take the background kinds in turn
    rows = [r for r in train if r["scene"] == 0]
    assert len({round(r["x"], 5) for r in rows}) == len(rows) and len({r["label"] for r in rows}) > 1
    with pytest.raises(ValueError, match="scenes must be >= 1"):
        demo_variants.make_variant_dataset(_variant("--scenes", "0"), **VARIANT_SIZES)


def test_variant_diagnostics_change_the_factors_not_the_product():
    from fgssl.training import synthetic

    before = (synthetic.sample_factors, synthetic.MARK_RADIUS)
    fixed = demo_variants.make_variant_dataset(_variant("--fixed_geometry", "--tie_hues", "--mark_radius", "0.2"),
                                               **VARIANT_SIZES)["train"]
    assert set(fixed["x"]) == {0.5} and set(fixed["scale"]) == {1.0} and set(fixed["rotation"]) == {0.0}
    hues = np.array(fixed["background_hue"])
    assert np.allclose((hues + 0.5) % 1.0, fixed["body_hue"], atol=1e-4)
    assert (synthetic.sample_factors, synthetic.MARK_RADIUS) == before  # no monkeypatching
    # Without options the script's dataset is version 1's: continuous factors, 6 backgrounds, independent colours.
    v1 = demo_variants.make_variant_dataset(_variant(), **VARIANT_SIZES)["train"]
    same = synthetic.make_fine_grained_dataset(**VARIANT_SIZES, nuisance_levels=None, background_types=6,
                                               palette="independent")["train"]
    assert v1["texture_seed"] == same["texture_seed"] and v1.column_names == same.column_names


# --------------------------------------------------------------------------------------------- common helpers


def test_common_helpers_keep_machine_paths_out_of_results(tmp_path):
    assert common.repo_relative(f"{common.REPO}/configs/a.yaml") == "configs/a.yaml"
    assert common.repo_relative(f"{sys.executable} -m x") == "python -m x"
    assert common.comma_list(" 0,1, ,2", int) == [0, 1, 2]
    assert common.knob_argv({"sigma": "2.0", "queue_size": 1024}) == ["--sigma", "2.0", "--queue_size", "1024"]
    assert common.fgssl_command("pretrain", ["--seed", "0"])[1:] == ["-m", "fgssl.training.pretrain", "--seed", "0"]
    path = common.write_json(tmp_path / "a.json", {"b": 1})
    assert path.read_text() == '{\n  "b": 1\n}\n'
    code, seconds = common.run_logged([sys.executable, "-c", "print('hi')"], tmp_path / "log.txt", echo=True)
    assert code == 0 and seconds >= 0 and (tmp_path / "log.txt").read_text().endswith("hi\n")


def test_every_benchmark_shell_script_parses_and_names_what_it_runs():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    scripts = sorted((root / "benchmarks").glob("*.sh"))
    assert {"gpu_check.sh", "step_floor_cpu.sh", "vit_memory_cpu.sh"} <= {s.name for s in scripts}
    readme = (root / "benchmarks" / "README.md").read_text()
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)  # a syntax error fails here, not hours into a run
        assert f"`{script.name}`" in readme, f"benchmarks/README.md does not list {script.name}"
