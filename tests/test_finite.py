"""Finite numbers only: non-finite float knobs refused up front, a non-finite loss stops the run at its step with
the last good checkpoint kept, and no weights holding nan or inf are ever saved (pre-training and fine-tuning)."""

import json
import math
from pathlib import Path

import pytest
import torch

from fgssl.training import checkpoints, finetune, finetuning, pretrain, runinfo
from fgssl.training.pretrain import parse_args, run_pretraining
from test_finetune import colour_task, cpu_args, tiny_classifier
from test_reruns import STEPS


@pytest.mark.parametrize("command, argv", [
    (pretrain, ["--learning_rate", "inf"]),
    (pretrain, ["--sigma", "nan"]),
    (pretrain, ["--weight_decay", "nan"]),
    (finetune, ["--model_name_or_path", "m", "--dataset_name", "d", "--learning_rate", "inf"]),
    (finetune, ["--model_name_or_path", "m", "--dataset_name", "d", "--lora_dropout", "nan"]),
])
def test_non_finite_knobs_are_one_line_usage_errors_before_any_work(tmp_path, capsys, monkeypatch, command, argv):
    monkeypatch.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    flag = argv[-2]
    assert command.cli([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{flag} must be a finite number" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_non_finite_loss_stops_pretraining_at_its_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                                         capsys):
    from fgssl.training.trainer import FGSSLTrainer

    out = tmp_path / "run"
    compute_loss = FGSSLTrainer.compute_loss

    def nan_at_step_3(self, *args, **kwargs):
        loss = compute_loss(self, *args, **kwargs)
        return loss * math.nan if self.state.global_step == 2 else loss

    monkeypatch.setattr(FGSSLTrainer, "compute_loss", nan_at_step_3)
    assert pretrain.cli([*STEPS, "--max_steps", "4", "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fgssl-pretrain: error: step 3: the loss is nan") and "Traceback" not in "".join(err)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert checkpoints.checkpoint_problem(out / "checkpoint-2") is None
    assert not (out / "model.safetensors").exists() and not (out / "train_results.json").exists()
    assert not (out / runinfo.LOCK).exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    model = tiny_classifier("vit")
    with torch.no_grad():
        model.classifier.weight[0, 0] = math.inf
    with pytest.raises(checkpoints.NonFiniteError, match="classifier.weight"):
        finetuning.save_finetuned(model, tmp_path / "ft")
    assert not (tmp_path / "ft").exists()
    trainer = finetuning.make_trainer(model, cpu_args(tmp_path), colour_task(8), None, image_size=32)
    with pytest.raises(checkpoints.NonFiniteError):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "model.safetensors").exists()


def test_a_non_finite_loss_stops_finetuning(tmp_path, monkeypatch):
    trainer = finetuning.make_trainer(tiny_classifier("vit"), cpu_args(tmp_path, save_strategy="steps", save_steps=1,
                                                                     max_steps=4),
                                    colour_task(32), None, image_size=32)
    compute_loss = type(trainer).compute_loss
    monkeypatch.setattr(type(trainer), "compute_loss", lambda self, *a, **k: compute_loss(self, *a, **k) * (
        math.inf if self.state.global_step == 2 else 1.0))
    with pytest.raises(checkpoints.NonFiniteError, match="step 3: the loss is inf"):
        trainer.train()
    saved = Path(trainer.args.output_dir)
    assert sorted(p.name for p in saved.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((saved / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
