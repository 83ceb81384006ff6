"""FGSSL model configuration.

Self-contained (imports transformers only) so that it travels to the Hub as remote code.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

POOLING_MODES = ("mean", "screening")
# docs/method.md "Base SSL objective": MoCo v2 (momentum branch + queue) or SimSiam (predictor, stop-gradient).
BASES = ("moco", "simsiam")
# docs/method.md "Decoder" [choice]: decode the pooled vector h, or the final feature map A.
DECODER_INPUTS = ("pooled", "feature_map")
# Backbones whose final feature map we know how to read (B x C x H x W maps or patch-token grids).
SUPPORTED_BACKBONES = ("vit", "convnext", "convnextv2", "resnet", "swin", "dinov2", "dinov2_with_registers")


class FGSSLConfig(PreTrainedConfig):
    r"""
    Configuration of an FGSSL encoder and of its pre-training heads (see `docs/method.md`).

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Config of the transformers vision backbone (`ViTConfig`, `ConvNextConfig`, ...). A dict must carry a
            `model_type`. Defaults to a ConvNeXt-T config.
        base (`str`, defaults to `"moco"`): the base SSL objective (docs/method.md "Base SSL objective"). `"moco"`: MoCo v2,
            a 2-layer projector, a momentum copy of encoder and projector, and a queue of negative keys. `"simsiam"`:
            SimSiam, a 3-layer projector with BatchNorm (no ReLU after its last layer) and a bottleneck predictor
            MLP, no momentum branch and no queue (`momentum` and `queue_size` are then unused).
        pooling (`str`, defaults to `"mean"`):
            `"mean"`: global average pooling of the final feature map (the `h` of docs/method.md). `"screening"`: the
            LCR baseline, a 1x1-conv screening map weights the feature map before pooling.
        screening_channels (`int`, defaults to 4): channels of the LCR screening convolution.
        projector_hidden_size (`int`, defaults to 2048): hidden width of the projection MLP (both bases).
        projector_dim (`int`, defaults to 128): output size `d` of the projector (SimSiam: also the predictor's).
        predictor_hidden_size (`int`, *optional*): SimSiam only: the predictor's bottleneck width; default
            `projector_dim // 4` (SimSiam's 2048 -> 512 -> 2048).
        momentum (`float`, defaults to 0.99): EMA coefficient of the momentum branch, in [0, 1).
        queue_size (`int`, defaults to 0): MoCo negative queue length `K`; 0 means in-batch negatives (docs/method.md:
            suits small datasets; the GPU recipes in `configs/` set a queue).
        variance_momentum (`float`, defaults to 0.99): EMA coefficient of the running feature statistics that the
            variance criterion (docs/method.md step 2) and the noise scale read.
        use_decoder (`bool`, defaults to `True`): build the decoder `D` (off for the `moco`/`lcr` baselines).
        decoder_input (`str`, defaults to `"feature_map"`): what `D` decodes (docs/method.md "Decoder"): `"pooled"`, the
            vector `h` (B x C); `"feature_map"`, the final map `A` (B x C x H x W).
        decoder_base_size (`int`, defaults to 4): `pooled`: side `s0` of the grid the decoder's linear layer
            produces; `feature_map`: the side H of the feature map at `image_size` (set from the backbone).
        decoder_block_out_channels (`list[int]`, defaults to `[32, 16, 8, 8]`): channels of the diffusers
            up-decoder blocks; every block but the last doubles the resolution, so the decoded image side is
            `decoder_base_size * 2 ** (len(decoder_block_out_channels) - 1)`.
        decoder_layers_per_block (`int`, defaults to 1): resnet layers in each up-decoder block.
        decoder_norm_num_groups (`int`, defaults to 8): GroupNorm groups; must divide every block's channels.
        initializer_range (`float`, defaults to 0.02): std of the normal init of the heads.
        image_size (`int`, *optional*): the resolution the encoder was pre-trained at; evaluation resizes to it
            by default.
    """

    model_type = "fgssl"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="convnext")}

    backbone_config: dict | PreTrainedConfig | None = None
    base: str = "moco"
    pooling: str = "mean"
    screening_channels: int = 4
    projector_hidden_size: int = 2048
    projector_dim: int = 128
    predictor_hidden_size: int | None = None
    momentum: float = 0.99
    queue_size: int = 0
    variance_momentum: float = 0.99
    use_decoder: bool = True
    decoder_input: str = "feature_map"
    decoder_base_size: int = 4
    decoder_block_out_channels: list[int] | tuple[int, ...] = (32, 16, 8, 8)
    decoder_layers_per_block: int = 1
    decoder_norm_num_groups: int = 8
    initializer_range: float = 0.02
    image_size: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.decoder_block_out_channels = list(self.decoder_block_out_channels)
        self.validate_fgssl()
        if self.decoder_input == "feature_map" and self.image_size is not None:
            # The map decoder starts from the feature map's own grid.
            self.decoder_base_size = max(1, feature_map_side(self.backbone_config, self.image_size))

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Size `C` of the feature vector `h` (channels of the backbone's final feature map)."""
        bc = self.backbone_config
        sizes = getattr(bc, "hidden_sizes", None)
        if sizes:
            return int(sizes[-1])
        return int(bc.hidden_size)

    @property
    def predictor_bottleneck(self) -> int:
        """SimSiam: hidden width of the predictor (`predictor_hidden_size`, else `projector_dim // 4`)."""
        return self.predictor_hidden_size or max(1, self.projector_dim // 4)

    @property
    def decoder_image_size(self) -> int:
        """Side `S` of the images the decoder produces."""
        return self.decoder_base_size * 2 ** (len(self.decoder_block_out_channels) - 1)

    # ---- validation: refuse bad values at construction, naming the field and its allowed range --------------
    def validate_fgssl(self):
        bc = self.backbone_config
        if bc is None or getattr(bc, "model_type", None) not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"backbone_config: model_type {getattr(bc, 'model_type', None)!r} is not supported; "
                f"use one of {SUPPORTED_BACKBONES}."
            )
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}.")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}.")
        _check_int("screening_channels", self.screening_channels, 1)
        _check_int("projector_hidden_size", self.projector_hidden_size, 1)
        _check_int("projector_dim", self.projector_dim, 1)
        if self.predictor_hidden_size is not None:
            _check_int("predictor_hidden_size", self.predictor_hidden_size, 1)
        if not isinstance(self.momentum, (int, float)) or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be a float in [0, 1) (typically 0.99-0.999), got {self.momentum!r}.")
        _check_int("queue_size", self.queue_size, 0, hint="0 means in-batch negatives")
        if not isinstance(self.variance_momentum, (int, float)) or not 0.0 <= self.variance_momentum < 1.0:
            raise ValueError(f"variance_momentum must be a float in [0, 1), got {self.variance_momentum!r}.")
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"decoder_input must be one of {DECODER_INPUTS}, got {self.decoder_input!r}.")
        if not isinstance(self.use_decoder, bool):
            raise ValueError(f"use_decoder must be a bool, got {self.use_decoder!r}.")
        _check_int("decoder_base_size", self.decoder_base_size, 1)
        _check_int("decoder_layers_per_block", self.decoder_layers_per_block, 1)
        _check_int("decoder_norm_num_groups", self.decoder_norm_num_groups, 1)
        channels = self.decoder_block_out_channels
        if len(channels) == 0:
            raise ValueError("decoder_block_out_channels must list at least one block, e.g. [128, 64, 32].")
        for c in channels:
            _check_int("decoder_block_out_channels", c, 1)
            if c % self.decoder_norm_num_groups:
                raise ValueError(
                    f"decoder_block_out_channels: {c} is not divisible by decoder_norm_num_groups="
                    f"{self.decoder_norm_num_groups}; choose channels that are multiples of it."
                )
        if self.image_size is not None:
            _check_int("image_size", self.image_size, 1)
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range!r}.")


def backbone_stride(backbone_config) -> int:
    """Input pixels per cell of the backbone's final feature map (its total stride).

    ConvNeXt: the stem's patch, then x2 per later stage; ViT / DINOv2: the patch; Swin: the patch, then x2 per
    later stage; ResNet: x4 in the stem, then x2 per later stage (and in the first with `downsample_in_first_stage`).
    """
    bc = backbone_config
    patch = getattr(bc, "patch_size", 4)
    patch = patch[0] if isinstance(patch, (list, tuple)) else int(patch)
    if bc.model_type in ("convnext", "convnextv2"):
        return patch * 2 ** (bc.num_stages - 1)
    if bc.model_type == "swin":
        return patch * 2 ** (len(bc.depths) - 1)
    if bc.model_type == "resnet":
        return 4 * 2 ** (len(bc.depths) - 1) * (2 if bc.downsample_in_first_stage else 1)
    return patch


def feature_map_side(backbone_config, image_size: int) -> int | None:
    """Side H of the backbone's final feature map for `image_size` x `image_size` inputs (None: unknown backbone).

    ResNet's stride-2 convolutions and pooling are padded, so each halving rounds up (never below 1); the patch
    embeddings of the others drop the remainder.
    """
    model_type = getattr(backbone_config, "model_type", None)
    if model_type == "resnet":
        return -(-image_size // backbone_stride(backbone_config))
    if model_type in ("convnext", "convnextv2") or getattr(backbone_config, "patch_size", None) is not None:
        return image_size // backbone_stride(backbone_config)
    return None


def _check_int(name: str, value, minimum: int, hint: str = ""):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}.")


__all__ = ["FGSSLConfig", "backbone_stride", "feature_map_side", "BASES"]
