"""The library pieces the commands share: one data-arguments class, model flags read from FGSSLConfig, one rule
for the size a model was trained at, one loader for "fgssl checkpoint or plain backbone"."""

import dataclasses

import pytest

from fgssl.modeling.configuration_fgssl import FGSSLConfig
from fgssl.training.arguments import DataArguments, EvalArguments, FinetuneArguments, ModelArguments
from fgssl.training.arguments import PretrainingDataArguments
from fgssl.training.backbones import CONFIG_FIELDS, model_config_flags, model_config_kwargs
from fgssl.training.pretrained import input_image_size, trained_image_size


def test_every_command_reads_its_data_through_one_class():
    shared = {f.name for f in dataclasses.fields(DataArguments)}
    for command_class in (PretrainingDataArguments, EvalArguments, FinetuneArguments):
        assert issubclass(command_class, DataArguments)
        assert shared <= {f.name for f in dataclasses.fields(command_class)}


def test_model_flags_are_fgssl_config_fields_with_its_defaults_in_the_help():
    config_fields = {f.name: f for f in dataclasses.fields(FGSSLConfig)}
    assert set(CONFIG_FIELDS) <= set(config_fields) and len(CONFIG_FIELDS) == 12
    model_fields = {f.name: f for f in dataclasses.fields(ModelArguments)}
    for name, _, flag in model_config_flags():
        assert model_fields[name].default is None
        default = config_fields[name].default
        assert f"({list(default) if isinstance(default, tuple) else default})" in flag.metadata["help"]
    args = ModelArguments(queue_size=16, decoder_block_out_channels=[8, 8])
    assert model_config_kwargs(args) == {"queue_size": 16, "decoder_block_out_channels": [8, 8]}


def test_the_size_trained_at_is_config_image_size_then_the_backbone_then_224():
    from transformers import ConvNextConfig, ViTConfig

    fgssl = FGSSLConfig(backbone_config=ConvNextConfig(), image_size=96)
    assert trained_image_size(fgssl) == 96 and trained_image_size(fgssl.to_dict()) == 96
    assert trained_image_size(FGSSLConfig(backbone_config=ViTConfig(image_size=48))) == 48
    assert trained_image_size(ConvNextConfig()) == 224 and trained_image_size(ViTConfig(image_size=32)) == 32
    assert input_image_size(fgssl, processor_side=40) == 40 and input_image_size(fgssl) == 96


def test_one_loader_for_an_fgssl_checkpoint_or_a_plain_backbone(tmp_path):
    from conftest import tiny_fgssl_config
    from transformers import ViTConfig, ViTModel

    from fgssl.modeling import FGSSLForImageClassification, FGSSLModel
    from fgssl.training.pretrained import load_pretrained

    FGSSLModel(tiny_fgssl_config("vit")).save_pretrained(tmp_path / "fgssl")
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(tmp_path / "vit")
    for source in ("fgssl", "vit"):
        assert isinstance(load_pretrained(str(tmp_path / source), FGSSLModel), FGSSLModel)
        classifier = load_pretrained(str(tmp_path / source), FGSSLForImageClassification, fresh_head=True,
                                     num_labels=3)
        assert classifier.config.num_labels == 3
    with pytest.raises(OSError, match="Cannot load a model config"):
        load_pretrained(str(tmp_path / "missing"), FGSSLModel)
