"""The public pieces of one training step (training/bases.py, training/methods.py) that the trainer composes and the
benchmarks call: the base and method registries, the perturbation step, the frozen-encoder Grad-CAM inputs, and the
objective knobs of a run folder."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from transformers import TrainingArguments

from conftest import tiny_fgssl_config
from fgssl.modeling import FGSSLForPreTraining
from fgssl.modeling.configuration_fgssl import BASES
from fgssl.training import objective as obj
from fgssl.training.backbones import method_config_kwargs
from fgssl.training.bases import BASE_OBJECTIVES, MoCoObjective, SimSiamObjective, build_base_objective
from fgssl.training.methods import (METHOD_ADDITIONS, SynthesizedPairs, build_objective, check_model_for_method,
                                    perturbation_step)
from fgssl.training.trainer import METHODS, FGSSLTrainer, ObjectiveArguments


def tiny_model(base="moco", method="fgssl", **config):
    torch.manual_seed(0)
    return FGSSLForPreTraining(tiny_fgssl_config("vit", base=base, **method_config_kwargs(method), **config)).eval()


def test_every_base_and_method_has_its_piece():
    assert set(BASE_OBJECTIVES) == set(BASES)
    assert set(METHOD_ADDITIONS) == set(METHODS)


@pytest.mark.parametrize("base, cls", [("moco", MoCoObjective), ("simsiam", SimSiamObjective)])
def test_build_objective_composes_the_models_base_and_the_method(base, cls):
    model = tiny_model(base)
    objective = build_objective(ObjectiveArguments(method="fgssl"), model, image_size=32)
    assert isinstance(objective.base, cls) and isinstance(objective.addition, SynthesizedPairs)
    assert objective.addition.image_size == 32 and objective.addition.synth_schedule() == (50, 50)


def test_a_model_that_does_not_fit_the_method_is_refused():
    with pytest.raises(ValueError, match="needs a decoder"):
        check_model_for_method("fgssl", tiny_model(method="plain"))
    with pytest.raises(ValueError, match="trains no decoder"):
        check_model_for_method("lcr", tiny_model(method="fgssl"))
    with pytest.raises(ValueError, match="pooling='screening'"):
        check_model_for_method("plain", tiny_model(method="lcr"))


@pytest.mark.parametrize("decoder_input", ["pooled", "feature_map"])
def test_perturbation_step_is_nuisance_perturbation_with_the_runs_knobs(decoder_input):
    model = tiny_model(decoder_input=decoder_input)
    oa = ObjectiveArguments(mask_mode="random", perturbation="shuffle", rho_variance=0.5, rho_gradcam=0.1)
    v1, v2 = torch.randn(2, 6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cam = build_base_objective(oa, model).frozen_gradcam_inputs(model, v1, v2)
    got = perturbation_step(model, cam, oa, update_statistics=False, generator=torch.Generator().manual_seed(1))
    by_map = decoder_input == "feature_map"
    want = obj.nuisance_perturbation(
        cam.loss, cam.features, model.variance_tracker, rho_variance=0.5, rho_gradcam=0.1, mask_mode="random",
        perturbation="shuffle", sigma=oa.sigma, scale=oa.noise_scale, feature_map=cam.feature_map if by_map else None,
        update_statistics=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got.mask, want.mask) and torch.equal(got.features, want.features)
    assert (got.feature_map is None) == (not by_map)
    assert int(model.variance_tracker.num_updates) == 0  # read, not updated


@pytest.mark.parametrize("base", ["moco", "simsiam"])
def test_frozen_gradcam_inputs_score_as_the_training_step_does(base, tmp_path):
    """On a model held fixed, the frozen inputs give the Grad-CAM scores of the training step's own inputs, without
    a gradient into the backbone."""
    model = tiny_model(base)
    oa = ObjectiveArguments()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=oa, image_size=32)
    model.eval()
    v1, v2 = torch.randn(2, 6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    base_objective = trainer.base_objective
    frozen = base_objective.frozen_gradcam_inputs(model, v1, v2)
    ssl = base_objective.ssl_loss(model, model, v1, v2)
    training = base_objective.gradcam_inputs(model, ssl.output, ssl.loss)
    torch.testing.assert_close(frozen.features, training.features)
    torch.testing.assert_close(obj.gradcam_scores(frozen.loss, frozen.features),
                               obj.gradcam_scores(training.loss, training.features))
    assert all(p.grad is None for p in model.fgssl.backbone.parameters())


def test_objective_arguments_come_back_from_a_run_folder(tmp_path):
    knobs = ObjectiveArguments(method="lcr", mask_mode="variance", sigma=0.5, lcr_weight=0.1)
    saved = {**asdict(knobs), "a_knob_of_long_ago": 1}
    del saved["picture_steps"]  # a knob the run predates takes its default
    (tmp_path / "training_config.json").write_text(json.dumps({"method": "lcr", "objective": saved}))
    assert ObjectiveArguments.from_run_folder(tmp_path) == knobs
    with pytest.raises(FileNotFoundError, match="training_config.json"):
        ObjectiveArguments.from_run_folder(tmp_path / "elsewhere")
