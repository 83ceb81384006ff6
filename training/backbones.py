"""The backbones fgssl builds and the model a pre-training run starts from, as library functions.

    backbone_presets()                       preset name -> (image_size -> transformers backbone config)
    final_feature_map_side(config, size)     the side of the backbone's last feature map for `size` inputs
    build_model(model_args, method)          the `FGSSLForPreTraining` of a run (preset, backbone weights or an
                                             fgssl checkpoint), `--freeze_stages` applied

Used by the commands (pretrain, finetune, eval: argument checks, the run's model), the run report and the
benchmarks; it imports none of them.
"""

from __future__ import annotations

from pathlib import Path


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


#: Model knobs passed to FGSSLConfig when given (None: the config's default).
CONFIG_FIELDS = ("base", "projector_hidden_size", "projector_dim", "momentum", "queue_size", "variance_momentum",
                 "decoder_input", "decoder_base_size", "decoder_block_out_channels", "decoder_layers_per_block",
                 "screening_channels", "predictor_hidden_size")


def method_config_kwargs(method: str) -> dict:
    """What each method needs of the model: fgssl a decoder, lcr the screening pooling, moco neither."""
    return {
        "moco": {"use_decoder": False, "pooling": "mean"},
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

    config_kwargs = {name: getattr(model_args, name) for name in CONFIG_FIELDS if getattr(model_args, name) is not None}
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


def final_feature_map_side(backbone_config, image_size: int) -> int | None:
    """Side of the backbone's last feature map for `image_size` inputs, from its config (None: unknown type)."""
    from ..modeling.modeling_fgssl import token_grid_stride

    model_type = getattr(backbone_config, "model_type", None)
    if model_type in ("convnext", "convnextv2"):  # stem: patch_size x patch_size stride patch_size; then 2x2 s2
        side = image_size // backbone_config.patch_size
        for _ in range(backbone_config.num_stages - 1):
            side //= 2
        return side
    if model_type == "resnet":  # stride-2 convolutions and pooling with padding: ceil, never below 1
        side = image_size
        for _ in range(2 + len(backbone_config.depths) - (0 if backbone_config.downsample_in_first_stage else 1)):
            side = -(-side // 2)
        return side
    if getattr(backbone_config, "patch_size", None) is not None:  # ViT, DINOv2, Swin...: a patch grid
        return image_size // token_grid_stride(backbone_config)
    return None
