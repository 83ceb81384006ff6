"""The backbones fgssl builds and the model a pre-training run starts from, as library functions.

    backbone_presets()                       preset name -> (image_size -> transformers backbone config)
    final_feature_map_side(config, size)     the side of the backbone's last feature map for `size` inputs
                                             (modeling.configuration_fgssl.feature_map_side)
    model_config_flags()                     (name, type, field) of every FGSSLConfig field that is a flag of
                                             fgssl-pretrain, read from FGSSLConfig (its order, types, docs, defaults)
    model_config_kwargs(model_args)          the FGSSLConfig keywords those flags set
    build_model(model_args, method)          the `FGSSLForPreTraining` of a run (preset, backbone weights or an
                                             fgssl checkpoint), `--freeze_stages` applied

Used by the commands (pretrain, finetune, eval: argument checks, the run's model), the run report and the
benchmarks; it imports none of them.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import field
from pathlib import Path

from ..modeling.configuration_fgssl import feature_map_side

#: The side of the backbone's final feature map for `image_size` inputs (None: unknown type); modeling's one rule.
final_feature_map_side = feature_map_side


def backbone_presets() -> dict:
    from transformers import ConvNextConfig, ResNetConfig, ViTConfig

    return {
        # CPU-sized backbones for the demo, tests and the cub100 CPU benchmark.
        "convnext-tiny-cpu": lambda s: ConvNextConfig(hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1]),
        # Total stride 16 (three stages): a 4 x 4 final map at 64 px, room for Grad-CAM maps and map decoding.
        "convnext-s16-cpu": lambda s: ConvNextConfig(num_stages=3, hidden_sizes=[32, 64, 128], depths=[1, 1, 3]),
        "vit-tiny-cpu": lambda s: ViTConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                                            intermediate_size=768, image_size=s, patch_size=8),
        "resnet-tiny-cpu": lambda s: ResNetConfig(layer_type="basic", embedding_size=32, depths=[1, 1, 1, 1],
                                                  hidden_sizes=[32, 64, 128, 256]),
        # Total stride 16 (three stages, no 2 x 2 last stage): a 4 x 4 final map at 64 px, and a backbone that learns
        # (benchmarks/results/demo/backbones.md). Width chosen on tinyimagenet200 validation within the 2-core budget
        # of the generic initialisation (benchmarks/results/cub100_init/init.md).
        "resnet-s16-cpu": lambda s: ResNetConfig(layer_type="basic", embedding_size=32, depths=[1, 1, 1],
                                                 hidden_sizes=[48, 96, 192]),
        # The GPU recipes' architectures (random init; pass a checkpoint path to start from ImageNet weights).
        "vit-s16": lambda s: ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                       intermediate_size=1536, image_size=s, patch_size=16),
        "convnext-t": lambda s: ConvNextConfig(),
        # The paper's backbone (torchvision's resnet50 layout; --backbone microsoft/resnet-50 for ImageNet weights).
        "resnet50": lambda s: ResNetConfig(),
    }


#: FGSSLConfig fields that are no flag of their own: the backbone comes from --backbone / --model_name_or_path,
#: --method sets the pooling and the decoder (`backbones.method_config_kwargs`), --image_size is the run's
#: resolution (default 64, not the config's None); the decoder's GroupNorm groups and the heads' init keep their
#: defaults. Every other field of FGSSLConfig is a flag, its help and default read from the config class.
NOT_MODEL_FLAGS = ("backbone_config", "pooling", "use_decoder", "image_size", "decoder_norm_num_groups",
                   "initializer_range")
#: The Python type of a flag from the first type of its FGSSLConfig annotation.
_FLAG_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list[int]": list[int]}


def config_field_docs(config_class) -> dict[str, str]:
    """{field: its description} from the `Args:` section of a transformers config class's docstring (one line
    each, the type in backquotes dropped)."""
    docs, name, indent = {}, None, None
    for line in (config_class.__doc__ or "").split("Args:", 1)[-1].splitlines():
        entry = re.match(r"^(\s+)(\w+) \((.*?)\):\s*(.*)$", line)
        if entry and (indent is None or len(entry.group(1)) <= indent):
            indent, name = len(entry.group(1)), entry.group(2)
            docs[name] = entry.group(4)
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return {key: " ".join(text.split()) for key, text in docs.items()}


def model_config_flags(config_class=None) -> list[tuple[str, type, dataclasses.Field]]:
    """(name, type, field) of every FGSSLConfig field that is a flag (see NOT_MODEL_FLAGS), in the config's order.

    Each defaults to None, which leaves the config's own default (named in the help) or the checkpoint's value.
    """
    if config_class is None:
        from ..modeling.configuration_fgssl import FGSSLConfig as config_class
    docs = config_field_docs(config_class)
    flags = []
    for config_field in dataclasses.fields(config_class):
        if config_field.name not in config_class.__annotations__ or config_field.name in NOT_MODEL_FLAGS:
            continue
        annotation = str(config_field.type).split("|")[0].strip()
        default = config_field.default
        default = list(default) if isinstance(default, tuple) else default
        what = docs.get(config_field.name, "").rstrip(".").replace("%", "%%")
        help_text = f"{what + '; ' if what else ''}default: {config_class.__name__}'s ({default})."
        flags.append((config_field.name, typing.Optional[_FLAG_TYPES[annotation]],
                      field(default=None, metadata={"help": help_text})))
    return flags


def model_config_kwargs(model_args) -> dict:
    """The FGSSLConfig keyword arguments the flags of `model_args` set (those given, not None)."""
    return {name: getattr(model_args, name) for name, _, _ in model_config_flags()
            if getattr(model_args, name) is not None}


#: Model knobs passed to FGSSLConfig when given (None: the config's default): every FGSSLConfig field that is a flag,
#: read from the config class (`model_config_flags`).
CONFIG_FIELDS = tuple(name for name, _, _ in model_config_flags())


def method_config_kwargs(method: str) -> dict:
    """What each method needs of the model: fgssl a decoder, lcr the screening pooling, plain neither."""
    return {
        "plain": {"use_decoder": False, "pooling": "mean"},
        "lcr": {"use_decoder": False, "pooling": "screening"},
        "fgssl": {"use_decoder": True, "pooling": "mean"},
    }[method]


def build_model(model_args, method: str):
    """An `FGSSLForPreTraining` for `method`: from an fgssl checkpoint, a backbone preset, or pretrained weights;
    the stem and first `--freeze_stages` stages of the online backbone frozen (`freeze_backbone_stages`)."""
    model = _build_model(model_args, method)
    if model_args.freeze_stages:
        freeze_backbone_stages(model.fgssl.backbone, model_args.freeze_stages)
    return model


def backbone_stages(backbone) -> tuple[list, list]:
    """(stem modules, stage modules in order) of a transformers vision backbone: ResNet / ConvNeXt (`embedder` or
    `embeddings`, `encoder.stages`), ViT-like (`embeddings`, `encoder.layer`)."""
    stem = [m for m in (getattr(backbone, "embedder", None), getattr(backbone, "embeddings", None)) if m is not None]
    encoder = getattr(backbone, "encoder", None)
    stages = getattr(encoder, "stages", None) or getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
    if not stem or stages is None:
        raise ValueError(f"Cannot tell the stages of a {type(backbone).__name__}: --freeze_stages supports ResNet, "
                         "ConvNeXt and ViT-like backbones.")
    return stem, list(stages)


def freeze_backbone_stages(backbone, num_stages: int) -> list[str]:
    """Stop gradients into the stem and the first `num_stages` stages (continued pre-training from pretrained
    weights: only the later stages adapt to the new images). BatchNorm running statistics still follow the data.
    Returns the names of the frozen parameters."""
    stem, stages = backbone_stages(backbone)
    if not 0 <= num_stages <= len(stages):
        raise ValueError(f"--freeze_stages must be in [0, {len(stages)}] for this backbone, got {num_stages}.")
    frozen = set()
    for module in [*stem, *stages[:num_stages]]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
            frozen.add(id(parameter))
    return [name for name, p in backbone.named_parameters() if id(p) in frozen]


def _build_model(model_args, method: str):
    from .. import modeling  # noqa: F401  (registers the Auto classes)
    from ..modeling import FGSSLConfig, FGSSLForPreTraining

    config_kwargs = dict(model_config_kwargs(model_args))
    # config.image_size: the run's resolution, from here on the one record of the size the model was trained at.
    config_kwargs.update(image_size=model_args.image_size, **method_config_kwargs(method))
    if model_args.model_name_or_path:
        return FGSSLForPreTraining.from_pretrained(model_args.model_name_or_path, **config_kwargs)
    presets = backbone_presets()
    if model_args.backbone in presets:
        backbone_config = presets[model_args.backbone](model_args.image_size)
        return FGSSLForPreTraining(FGSSLConfig(backbone_config=backbone_config, **config_kwargs))
    if not (Path(model_args.backbone).exists() or "/" in model_args.backbone):
        raise ValueError(
            f"--backbone {model_args.backbone!r} is neither a preset ({', '.join(presets)}) nor a local folder or "
            "Hub id of a transformers vision backbone."
        )
    try:
        return FGSSLForPreTraining.from_backbone_pretrained(model_args.backbone, **config_kwargs)
    except OSError as err:  # a Hub id that cannot be fetched (offline, no network, no such repository)
        if Path(model_args.backbone).exists():
            raise
        raise ValueError(f"--backbone {model_args.backbone}: cannot load it from the Hub or the cache "
                         f"({' '.join(str(err).split())[:160]}). Check the id and the network; offline, download it "
                         "once where the Hub is reachable and run with HF_HUB_OFFLINE=1, or pass a local folder "
                         "written by save_pretrained.") from err
