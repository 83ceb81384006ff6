"""--channels_last: the encoders of a convolutional backbone in channels_last memory format leave the loss of a
training step unchanged (issue 24); ViT-like backbones are left as they are."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_fgssl_config


def _resnet_config(**kwargs):
    from transformers import ResNetConfig

    from fgssl.modeling import FGSSLConfig

    backbone = ResNetConfig(layer_type="basic", embedding_size=8, depths=[1, 1], hidden_sizes=[8, 16])
    return FGSSLConfig(backbone_config=backbone, projector_hidden_size=16, projector_dim=8, queue_size=0,
                       decoder_base_size=4, decoder_block_out_channels=[16, 8], decoder_norm_num_groups=4, **kwargs)


def _loss(tmp_path, config, method: str, channels_last: bool) -> tuple[float, object]:
    from transformers import TrainingArguments

    from fgssl.modeling import FGSSLForPreTraining
    from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments

    torch.manual_seed(0)
    model = FGSSLForPreTraining(config).train()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    objective = ObjectiveArguments(method=method, synth_warmup_steps=0, synth_ramp_steps=0,
                                   channels_last=channels_last)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=objective, image_size=32)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    loss = trainer.compute_loss(model, {"pixel_values": images})
    loss.backward()
    return float(loss.detach()), model


@pytest.mark.parametrize("method", ["plain", "fgssl"])
def test_channels_last_leaves_the_loss_of_a_step_unchanged(tmp_path, method):
    use_decoder = method == "fgssl"
    plain, _ = _loss(tmp_path, _resnet_config(use_decoder=use_decoder), method, channels_last=False)
    fast, model = _loss(tmp_path, _resnet_config(use_decoder=use_decoder), method, channels_last=True)
    assert abs(plain - fast) <= 1e-4 * max(1.0, abs(plain))
    weight = model.fgssl.backbone.embedder.embedder.convolution.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_channels_last_does_nothing_to_a_vit(tmp_path):
    _, model = _loss(tmp_path, tiny_fgssl_config("vit", queue_size=0, use_decoder=False), "plain", channels_last=True)
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("method", ["plain", "fgssl"])
def test_compiled_networks_leave_the_loss_of_a_step_unchanged(tmp_path, method):
    # --torch_compile compiles the backbones and the decoder in place (trainer.compile_networks); the loss of a step
    # must not move. aot_eager traces and runs the same graphs as inductor without generating C++ (seconds on CPU).
    from fgssl.training.trainer import compile_networks

    use_decoder = method == "fgssl"
    eager, _ = _loss(tmp_path, _resnet_config(use_decoder=use_decoder), method, channels_last=False)
    compiled = _compiled_step_loss(tmp_path, _resnet_config(use_decoder=use_decoder), method, compile_networks)
    assert abs(eager - compiled) <= 1e-4 * max(1.0, abs(eager))


def _compiled_step_loss(tmp_path, config, method, compile_networks) -> float:
    from transformers import TrainingArguments

    from fgssl.modeling import FGSSLForPreTraining
    from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments

    torch.manual_seed(0)
    model = FGSSLForPreTraining(config).train()
    compile_networks(model, backend="aot_eager")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    objective = ObjectiveArguments(method=method, synth_warmup_steps=0, synth_ramp_steps=0)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=objective, image_size=32)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    loss = trainer.compute_loss(model, {"pixel_values": images})
    loss.backward()
    assert model.fgssl.backbone._compiled_call_impl is not None
    return float(loss.detach())
