"""The benchmark harness's own logic (no training): the generic-initialisation rows of cub100.py, the knobs a grid
chose, the first bar of a benchmark from pretrained weights, and generic_init.py's backbone export."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import cub100, generic_init, summarize

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
    from fgssl.training.pretrain import ModelArguments, build_model

    model = build_model(ModelArguments(backbone="resnet-s16-cpu", freeze_stages=2, queue_size=0), "moco")
    backbone = model.fgssl.backbone
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("embedder.", "encoder.stages.0.", "encoder.stages.1.")) for n in frozen)
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("encoder.stages.2."))
    assert all(p.requires_grad for p in model.projector.parameters())
    with pytest.raises(ValueError, match="--freeze_stages must be in"):
        build_model(ModelArguments(backbone="resnet-s16-cpu", freeze_stages=4, queue_size=0), "moco")
