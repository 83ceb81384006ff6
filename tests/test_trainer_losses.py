"""One step's losses pinned: the losses and logged terms of the first two optimiser steps of every base x method,
on a fixed tiny model, batch and seed, recorded before the step was split into public pieces (issue 21: behaviour
unchanged). The second step sees the first one's per-step hook (MoCo: momentum update and enqueue)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from conftest import tiny_fgssl_config
from fgssl.training.backbones import method_config_kwargs
from fgssl.training.data import collate_uint8
from fgssl.modeling import FGSSLForPreTraining
from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments

#: variant: (base, method, extra FGSSLConfig fields)
VARIANTS = {
    "moco": ("moco", "plain", {}),
    "lcr": ("moco", "lcr", {}),
    "fgssl": ("moco", "fgssl", {}),
    "fgssl-pooled": ("moco", "fgssl", {"decoder_input": "pooled"}),
    "simsiam": ("simsiam", "plain", {}),
    "simsiam-lcr": ("simsiam", "lcr", {}),
    "simsiam-fgssl": ("simsiam", "fgssl", {}),
}


def losses_of_two_steps(variant: str, tmp_path, through_training_step: bool = False) -> list[dict[str, float]]:
    """[{"loss": ..., term: ...}] of two optimiser steps (compute_loss, backward, AdamW, the per-step hook);
    `through_training_step`: the forward and backward as the Trainer's loop runs them (`training_step`: in one
    process, the synthesized-pair loss back-propagated after the rest)."""
    base, method, extra = VARIANTS[variant]
    torch.manual_seed(0)
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base=base, **method_config_kwargs(method), **extra))
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dataset = Dataset.from_dict({"pixel_values": images.numpy(), "labels": [0] * 8}).with_format("torch")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-3,
                             report_to="none", save_strategy="no", use_cpu=True, remove_unused_columns=False,
                             disable_tqdm=True, dataloader_pin_memory=False)
    objective = ObjectiveArguments(method=method, synth_warmup_steps=0, synth_ramp_steps=0)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=objective, image_size=32, train_dataset=dataset,
                           data_collator=collate_uint8)
    trainer.create_optimizer()
    batch = collate_uint8([dataset[i] for i in range(8)])
    torch.manual_seed(1)
    steps = []
    for _ in range(2):
        trainer.term_sums.clear()
        if through_training_step:
            trainer.current_gradient_accumulation_steps = 1
            loss = trainer.training_step(trainer.model, batch)
        else:
            loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
        trainer.optimizer.step()
        trainer.model.zero_grad()
        trainer.state.global_step += 1
        trainer.momentum_and_queue_step()
        steps.append({"loss": float(loss.detach()), **{k: float(v) for k, v in trainer.term_sums.items()}})
    return steps


#: Recorded with the trainer of before issue 21 (private helpers in FGSSLTrainer).
PINNED = {
    "moco": [
        {"loss": 1.03387272, "loss_ssl": 1.03387272},
        {"loss": 2.73202157, "loss_ssl": 2.73202157},
    ],
    "lcr": [
        {"loss": 1.79018092, "loss_ssl": 1.78163028, "loss_lcr": 0.855060339},
        {"loss": 2.73761392, "loss_ssl": 2.72937179, "loss_lcr": 0.824219942},
    ],
    "fgssl": [
        {"loss": 4.32164097, "loss_ssl": 1.46448278, "loss_recon": 0.947485209, "synth_weight": 1.0,
         "loss_synth": 1.90967309, "frac_perturbed": 0.4609375, "var_perturbed": 0.298192114, "var_kept": 0.35474655},
        {"loss": 6.43882179, "loss_ssl": 3.58068991, "loss_recon": 0.833601892, "synth_weight": 1.0,
         "loss_synth": 2.02452993, "frac_perturbed": 0.4375, "var_perturbed": 0.265416056, "var_kept": 0.378285229},
    ],
    "fgssl-pooled": [
        {"loss": 4.35838509, "loss_ssl": 1.24806762, "loss_recon": 1.06923234, "synth_weight": 1.0,
         "loss_synth": 2.04108524, "frac_perturbed": 0.47265625, "var_perturbed": 0.261252195,
         "var_kept": 0.389112413},
        {"loss": 6.45709229, "loss_ssl": 3.4452405, "loss_recon": 0.938488007, "synth_weight": 1.0,
         "loss_synth": 2.07336354, "frac_perturbed": 0.4453125, "var_perturbed": 0.305460542,
         "var_kept": 0.347958177},
    ],
    "simsiam": [
        {"loss": -0.05568216, "loss_ssl": -0.05568216, "output_std": 0.263111562},
        {"loss": 0.0319152623, "loss_ssl": 0.0319152623, "output_std": 0.264363855},
    ],
    "simsiam-lcr": [
        {"loss": -0.0382738933, "loss_ssl": -0.0450998135, "output_std": 0.264606535, "loss_lcr": 0.682592213},
        {"loss": -0.0184999648, "loss_ssl": -0.0304939393, "output_std": 0.26546216, "loss_lcr": 1.19939744},
    ],
    "simsiam-fgssl": [
        {"loss": 1.06944644, "loss_ssl": 0.0236437395, "output_std": 0.263762832, "loss_recon": 1.02693069,
         "synth_weight": 1.0, "loss_synth": 0.018871991, "frac_perturbed": 0.4609375, "var_perturbed": 0.258518934,
         "var_kept": 0.388669997},
        {"loss": 0.640348673, "loss_ssl": -0.0511387698, "output_std": 0.265589654, "loss_recon": 0.871053517,
         "synth_weight": 1.0, "loss_synth": -0.1795661, "frac_perturbed": 0.4453125, "var_perturbed": 0.230925828,
         "var_kept": 0.407952577},
    ],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_losses_of_one_step_are_those_of_before(variant, tmp_path):
    steps = losses_of_two_steps(variant, tmp_path)
    _assert_pinned(variant, steps)


@pytest.mark.parametrize("variant", ["fgssl", "simsiam-fgssl"])
def test_the_deferred_synthesized_pair_gives_the_same_steps(variant, tmp_path, monkeypatch):
    # training_step back-propagates L_Cp after the rest of the step (one process): the same losses, terms and,
    # through AdamW, the same second step; and L_Cp's forward runs only once the rest's backward is done.
    from fgssl.training.methods import SynthesizedPairs

    seen = []
    pair_loss = SynthesizedPairs.pair_loss

    def recording(self, base, core, perturbed, original):
        seen.append(all(p.grad is not None for p in core.decoder.parameters()))  # L_R's gradients already there
        return pair_loss(self, base, core, perturbed, original)

    monkeypatch.setattr(SynthesizedPairs, "pair_loss", recording)
    _assert_pinned(variant, losses_of_two_steps(variant, tmp_path, through_training_step=True))
    assert seen == [True, True]


def _assert_pinned(variant, steps):
    pinned = PINNED[variant]
    assert [set(s) for s in steps] == [set(p) for p in pinned]
    for got, want in zip(steps, pinned):
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name
