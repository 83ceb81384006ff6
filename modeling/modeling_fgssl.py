"""FGSSL models: the encoder `f`, the classifier built on it, and the pre-training model of docs/method.md.

One readable file, config-driven, in the style of transformers' `modeling_vit.py`. Self-contained (torch,
transformers and the two sibling files only), so `save_pretrained` can copy it to the Hub as remote code. The
decoder (diffusers) is imported only when a model is built with `use_decoder=True`, so loading the encoder needs
torch and transformers alone.

Shapes: B batch, C feature size (`config.hidden_size`), H x W final feature-map grid, d projector size,
K queue length, S decoded image side.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

from .configuration_fgssl import FGSSLConfig, feature_map_side

# Token backbones: (number of patch-grid strides to apply) is read from their config.
_TOKEN_BACKBONES = ("vit", "dinov2", "dinov2_with_registers", "swin")
# Backbones that end with a LayerNorm meant to be applied over channels (transformers applies it after pooling);
# we apply it per position so that `h` stays exactly the spatial mean of `A` (docs/method.md step 3 relies on it).
_CHANNEL_NORM_BACKBONES = ("convnext", "convnextv2")


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FGSSLModelOutput(ModelOutput):
    """
    Output of [`FGSSLModel`].

    Args:
        last_hidden_state: the backbone's own last hidden state (B x N x C tokens or B x C x H x W maps).
        pooler_output: `h`, the feature vector, B x C.
        feature_map: `A`, the final feature map, B x C x H x W (ViT patch tokens are laid back on their grid).
        screening_logits: LCR pooling only: the screening map before min-max normalisation, B x H x W.
        screening_map: LCR pooling only: the min-max normalised screening map in [0, 1], B x H x W.
        hidden_states: the backbone's hidden states when `output_hidden_states=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None
    screening_logits: torch.FloatTensor | None = None
    screening_map: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class FGSSLPreTrainingOutput(ModelOutput):
    """
    Output of [`FGSSLForPreTraining`].

    Args:
        query: `q = g(h)`, L2-normalised, B x d.
        key: MoCo only: `k = g_m(f_m(key_pixel_values))`, L2-normalised, B x d (only when `key_pixel_values` is given).
        projection: SimSiam only: the projector's output `z = g(h)`, not normalised, B x d, or 2B x d with
            `key_pixel_values` (rows `:B` the first view, `B:` the second).
        prediction: SimSiam only: the predictor's output `p = pred(z)`, same rows as `projection`.
        pooler_output: `h` of `pixel_values`, B x C.
        feature_map: `A` of `pixel_values`, B x C x H x W.
        reconstruction: `D(h)` or `D(A)` (config.decoder_input), B x 3 x S x S (only when asked for).
        screening_logits: LCR pooling only, B x H x W.
    """

    query: torch.FloatTensor | None = None
    key: torch.FloatTensor | None = None
    projection: torch.FloatTensor | None = None
    prediction: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    feature_map: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    screening_logits: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------
def build_backbone(backbone_config) -> PreTrainedModel:
    """A transformers vision model from its config, without parameters we would leave unused.

    Unused parameters (ViT's pooler, mask tokens) break DDP with `find_unused_parameters=False`.
    """
    model_cls = AutoModel._model_mapping[type(backbone_config)]
    kwargs = {}
    if "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
        kwargs["add_pooling_layer"] = False
    backbone = model_cls(backbone_config, **kwargs)
    for name, param in backbone.named_parameters():
        if "mask_token" in name:
            param.requires_grad_(False)
    return backbone


def tokens_to_feature_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """B x N x C tokens -> B x C x height x width, dropping leading special tokens (CLS, registers)."""
    prefix = tokens.shape[1] - height * width
    if prefix < 0:
        raise ValueError(f"{tokens.shape[1]} tokens cannot fill a {height} x {width} grid")
    grid = tokens[:, prefix:]
    return grid.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


class VarianceTracker(torch.nn.Module):
    """Running (EMA) per-dimension mean and variance of the features ``h`` (docs/method.md step 2).

    ``update(h)`` folds a batch in: ``stat = momentum * stat + (1 - momentum) * batch_stat``, where the
    batch variance is the biased (population) variance of the batch; the first update initialises
    the statistics from the batch. Under ``torch.distributed`` the batch sums, sums of squares and
    counts are all-reduced before use, so every process holds the same statistics (the same set V).

    The statistics are persistent buffers so they are saved in and restored from checkpoints.
    """

    def __init__(self, num_features: int, momentum: float = 0.99):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) (weight of the old estimate), got {momentum}.")
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.reset_statistics()

    @torch.no_grad()
    def reset_statistics(self) -> None:
        """Mean 0, variance 1 (so a perturbation scaled by std is sensible before the first update), no updates."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_updates.zero_()

    @property
    def mean(self) -> torch.Tensor:
        """C, running mean of each feature dimension."""
        return self.running_mean

    @property
    def var(self) -> torch.Tensor:
        """C, running variance of each feature dimension."""
        return self.running_var

    @property
    def std(self) -> torch.Tensor:
        """C, running standard deviation (square root of :attr:`var`)."""
        return self.running_var.clamp_min(0).sqrt()

    @property
    def initialized(self) -> bool:
        """Whether at least one batch has been folded in."""
        return bool(self.num_updates.item() > 0)

    @torch.no_grad()
    def update(self, h: torch.Tensor) -> None:
        """Fold the batch ``h`` (B x C) into the running statistics; no gradient flows."""
        if h.dim() != 2:
            raise ValueError(f"h must be a 2-D tensor (B x C), got shape {tuple(h.shape)}.")
        if h.shape[1] != self.num_features:
            raise ValueError(f"h has {h.shape[1]} feature dimensions, the tracker was built for {self.num_features}.")
        # Accumulate in float64: var = E[h^2] - E[h]^2 loses precision in float32 / bf16. The sums stay
        # on h's device, where the process group's backend (e.g. NCCL) can reduce them.
        h = h.detach().to(torch.float64)
        count = torch.full((1,), float(h.shape[0]), dtype=torch.float64, device=h.device)
        stats = torch.cat([h.sum(dim=0), (h * h).sum(dim=0), count])  # 2C + 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)  # every rank now sees the global batch
        stats = stats.to(self.running_mean.device)
        sums, squares, total = stats[: self.num_features], stats[self.num_features : -1], stats[-1]
        if total.item() == 0:
            return  # empty batch on every rank: nothing to learn from
        batch_mean = sums / total
        batch_var = (squares / total - batch_mean * batch_mean).clamp_min(0)
        if self.initialized:
            m = self.momentum
            batch_mean = m * self.running_mean.double() + (1 - m) * batch_mean
            batch_var = m * self.running_var.double() + (1 - m) * batch_var
        self.running_mean.copy_(batch_mean)
        self.running_var.copy_(batch_var)
        self.num_updates += 1


def projection_mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """MoCo v2 projector `g`: C -> hidden -> d."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


def simsiam_projector(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """SimSiam projector `g`: C -> hidden -> hidden -> d, each linear layer followed by BatchNorm, no ReLU after the
    last one (the paper's; its output BN has no affine parameters). Linear layers before a BN need no bias."""
    return nn.Sequential(
        nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features, bias=False), nn.BatchNorm1d(out_features, affine=False),
    )


def simsiam_predictor(dim: int, bottleneck: int) -> nn.Sequential:
    """SimSiam predictor: d -> bottleneck -> d (BatchNorm and ReLU on the hidden layer only)."""
    return nn.Sequential(
        nn.Linear(dim, bottleneck, bias=False), nn.BatchNorm1d(bottleneck), nn.ReLU(inplace=True),
        nn.Linear(bottleneck, dim),
    )


def _distributed_world_size() -> int:
    distributed = torch.distributed
    return distributed.get_world_size() if distributed.is_available() and distributed.is_initialized() else 1


def _global_batch_statistics(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance (features,) of the rows of `stats` (n x features) over every process."""
    count = torch.full((1,), float(stats.shape[0]), device=stats.device, dtype=stats.dtype)
    packed = torch.cat([stats.sum(0), (stats * stats).sum(0), count])
    torch.distributed.all_reduce(packed)
    c = stats.shape[1]
    n = packed[-1]
    mean = packed[:c] / n
    return mean, (packed[c:2 * c] / n - mean * mean).clamp_min(0)


def run_with_frozen_batch_statistics(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`mlp(x)` with the same values, but every BatchNorm's statistics held constant (detached), none updated.

    In training mode a BatchNorm normalises by the statistics of the batch, so each output row depends on every
    input row. Here those statistics (of `x` itself, as in the ordinary forward; the running ones in eval mode)
    enter as constants: row i of the output is a function of row i of `x` alone, so one gradient of a sum of
    per-row losses gives every row's own gradient (docs/method.md step 3 with SimSiam). Running statistics are not
    touched. `x`: n x features.
    """
    for layer in mlp:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):  # BatchNorm1d, or SyncBatchNorm on several GPUs
            if layer.training:
                # In float32 like BN's own statistics: under bf16 autocast a bf16 mean beside float32 weights is
                # refused (CPU) or loses precision.
                stats = x.detach().float()
                mean, var = stats.mean(dim=0), stats.var(dim=0, unbiased=False)  # what BN normalises by
                if isinstance(layer, nn.SyncBatchNorm) and _distributed_world_size() > 1:
                    mean, var = _global_batch_statistics(stats)  # what SyncBatchNorm normalises by
            else:
                mean, var = layer.running_mean, layer.running_var
            x = F.batch_norm(x, mean, var, layer.weight, layer.bias, training=False, eps=layer.eps)
        else:
            x = layer(x)
    return x


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
class FGSSLPreTrainedModel(PreTrainedModel):
    config: FGSSLConfig
    config_class = FGSSLConfig
    base_model_prefix = "fgssl"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = []

    def _init_weights(self, module):
        if getattr(module, "_fgssl_torch_default_init", False):
            # The diffusers decoder keeps PyTorch's default (Kaiming) init, as in diffusers itself.
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            return
        if isinstance(module, VarianceTracker):
            module.reset_statistics()
            return
        super()._init_weights(module)
        if isinstance(module, FGSSLForPreTraining) and module.queue is not None:
            # MoCo starts from a queue of random unit-norm-ish keys.
            nn.init.normal_(module.queue, std=module.queue.shape[-1] ** -0.5)
            nn.init.zeros_(module.queue_ptr)

    def get_encoder_model(self) -> FGSSLModel:
        """The encoder `f` (backbone + pooling): the product of pre-training."""
        return self if isinstance(self, FGSSLModel) else self.fgssl

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` only records the class being saved; write every entry so a user without the
        # package can load any fgssl folder with any Auto class and `trust_remote_code=True`.
        if getattr(self, "_auto_class", None) is not None:
            self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_backbone_pretrained(cls, backbone_name_or_path, *, backbone_kwargs: dict | None = None, **config_kwargs):
        """Start from pretrained backbone weights (e.g. an ImageNet ViT or ConvNeXt checkpoint).

        `backbone_name_or_path` is anything `AutoModel.from_pretrained` accepts (a local folder, or a Hub id when
        online); `config_kwargs` go to [`FGSSLConfig`].
        """
        backbone = AutoModel.from_pretrained(backbone_name_or_path, **(backbone_kwargs or {}))
        if isinstance(backbone, FGSSLPreTrainedModel):
            raise ValueError(
                f"{backbone_name_or_path} is already an fgssl checkpoint; load it with "
                f"{cls.__name__}.from_pretrained instead."
            )
        backbone_config = backbone.config.to_dict()
        if os.path.isabs(str(backbone_config.get("_name_or_path", ""))):
            # A local folder names this machine, not the weights; saved configs travel (a Hub id is kept).
            backbone_config.pop("_name_or_path")
        config = FGSSLConfig(backbone_config=backbone_config, **config_kwargs)
        model = cls(config)
        encoder = model.get_encoder_model()
        state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("pooler.")}
        missing, unexpected = encoder.backbone.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{backbone_name_or_path} does not provide backbone weights {missing[:5]}...")
        if isinstance(model, FGSSLForPreTraining):
            model.copy_online_to_momentum()
        return model

    def export_backbone(self, save_directory, **kwargs):
        """Save the encoder's backbone as a plain transformers model folder (`ViTModel`, `ConvNextModel`, ...).

        The exported model needs no fgssl code. Its own pooling may differ from fgssl's mean pooling of the final
        feature map (e.g. ViT uses the CLS token), so use `last_hidden_state` to reproduce fgssl's embeddings.
        """
        return self.get_encoder_model().backbone.save_pretrained(save_directory, **kwargs)


class FGSSLModel(FGSSLPreTrainedModel):
    """The encoder `f` of docs/method.md: a transformers backbone followed by global average pooling."""

    # A pre-training checkpoint also holds the heads; loading only the encoder from it is expected.
    _keys_to_ignore_on_load_unexpected = [
        r"^momentum_", r"^projector\.", r"^predictor\.", r"^decoder\.", r"^queue", r"^variance_tracker\."
    ]

    def __init__(self, config: FGSSLConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.screening = (
            nn.Conv2d(config.hidden_size, config.screening_channels, kernel_size=1)
            if config.pooling == "screening"
            else None
        )
        self.post_init()

    def feature_map(self, last_hidden_state: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's last hidden state as a B x C x H x W map `A`."""
        bc = self.config.backbone_config
        if last_hidden_state.dim() == 4:
            if bc.model_type in _CHANNEL_NORM_BACKBONES:
                last_hidden_state = self.backbone.layernorm(last_hidden_state.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return last_hidden_state
        height, width = (feature_map_side(bc, side) for side in pixel_values.shape[-2:])
        return tokens_to_feature_map(last_hidden_state, height, width)

    def pool(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`A` (B x C x H x W) -> (`h` B x C, screening logits B x H x W or None, screening map B x H x W or None).

        Mean pooling, or (LCR) the mean of `A` weighted by the screening map. Each image is pooled on its own.
        """
        if self.screening is None:
            return feature_map.mean(dim=(2, 3)), None, None
        # LCR: a few 1x1-conv screening channels, max over them, min-max normalised per image.
        screening_logits = self.screening(feature_map).amax(dim=1)
        flat = screening_logits.flatten(1)
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        screening_map = ((flat - lo) / (hi - lo + 1e-6)).view_as(screening_logits)
        return (feature_map * screening_map.unsqueeze(1)).mean(dim=(2, 3)), screening_logits, screening_map

    def _backbone_kwargs(self, pixel_values: torch.Tensor) -> dict:
        bc = self.config.backbone_config
        if bc.model_type == "vit":
            size = bc.image_size if isinstance(bc.image_size, (list, tuple)) else (bc.image_size, bc.image_size)
            if tuple(pixel_values.shape[-2:]) != tuple(size):
                return {"interpolate_pos_encoding": True}
        return {}

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> FGSSLModelOutput | tuple:
        """`pixel_values`: B x 3 x H_in x W_in normalised images. Returns `h` (B x C) and `A` (B x C x H x W)."""
        if pixel_values is None:
            raise ValueError("pixel_values is required: a B x 3 x H x W float tensor.")
        outputs = self.backbone(
            pixel_values=pixel_values,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **self._backbone_kwargs(pixel_values),
        )
        feature_map = self.feature_map(outputs.last_hidden_state, pixel_values)
        if feature_map.dtype != torch.float32 and torch.is_autocast_enabled(feature_map.device.type):
            # Under mixed precision a BatchNorm backbone (ResNet) ends in bf16/fp16, and accelerate hands the
            # model's outputs back as float32 COPIES, which the loss does not depend on: Grad-CAM (which
            # differentiates the loss with respect to the returned A and h) would find them unused. A and h in
            # float32 are returned as they are (LayerNorm backbones already end in float32 under autocast).
            feature_map = feature_map.float()
        pooled, screening_logits, screening_map = self.pool(feature_map)
        output = FGSSLModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=pooled,
            feature_map=feature_map,
            screening_logits=screening_logits,
            screening_map=screening_map,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
        )
        return output if return_dict is not False else output.to_tuple()


class FGSSLForImageClassification(FGSSLPreTrainedModel):
    """The encoder with a linear head on `h`, for fine-grained classification (fine-tuning or linear probing)."""

    _keys_to_ignore_on_load_unexpected = [
        r"^momentum_", r"^projector\.", r"^predictor\.", r"^decoder\.", r"^queue", r"^variance_tracker\."
    ]

    def __init__(self, config: FGSSLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.fgssl = FGSSLModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """`pixel_values`: B x 3 x H x W; `labels`: B class ids. Returns logits B x num_labels (+ loss)."""
        encoded = self.fgssl(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(encoded.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)
        return output if return_dict is not False else output.to_tuple()


class FGSSLForPreTraining(FGSSLPreTrainedModel):
    """Everything pre-training needs (docs/method.md "Parts"): encoder `f`, projector `g`, the decoder `D`, and the heads
    of the base objective (`config.base`): MoCo v2's momentum copies `f_m, g_m` and negative queue, or SimSiam's
    predictor (then no momentum branch and no queue exist, in the model or its checkpoints). The training
    objective itself lives in `training/objective.py`; this class only exposes the pieces it calls as small
    methods."""

    # The objective (not `forward`) owns the loss; the Trainer must average it over gradient-accumulation steps.
    accepts_loss_kwargs = False

    def __init__(self, config: FGSSLConfig):
        super().__init__(config)
        c, d = config.hidden_size, config.projector_dim
        self.fgssl = FGSSLModel(config)
        self.momentum_encoder = self.momentum_projector = self.predictor = None
        if config.base == "simsiam":
            self.projector = simsiam_projector(c, config.projector_hidden_size, d)
            self.predictor = simsiam_predictor(d, config.predictor_bottleneck)
        else:
            self.projector = projection_mlp(c, config.projector_hidden_size, d)
            self.momentum_encoder = FGSSLModel(config)
            self.momentum_projector = projection_mlp(c, config.projector_hidden_size, d)
        # Running statistics of h (docs/method.md step 2): training state, saved and resumed with the model.
        self.variance_tracker = VarianceTracker(c, config.variance_momentum)
        self.decoder = None
        if config.use_decoder:
            # Imported here, not at the top: the encoder (and a pre-training model without a decoder) must load
            # without diffusers. The line stays a plain relative import so that transformers' remote-code loader
            # still finds it and copies decoder_fgssl.py next to this file.
            from .decoder_fgssl import FGSSLDecoder

            self.decoder = FGSSLDecoder(
                in_features=c,
                base_size=config.decoder_base_size,
                block_out_channels=tuple(config.decoder_block_out_channels),
                layers_per_block=config.decoder_layers_per_block,
                norm_num_groups=config.decoder_norm_num_groups,
                input_type=config.decoder_input,
            )
            for module in self.decoder.modules():
                module._fgssl_torch_default_init = True
        if self.has_momentum_branch:
            self.register_buffer("queue", torch.zeros(config.queue_size, d))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        else:
            self.queue = self.queue_ptr = None  # plain attributes: nothing of a queue in the state dict
        self.post_init()
        self.copy_online_to_momentum()

    # ---- the momentum branch (MoCo) -----------------------------------------------------------------------------
    @property
    def has_momentum_branch(self) -> bool:
        """Whether the base objective keeps a momentum branch and a queue (MoCo: yes; SimSiam: no)."""
        return self.momentum_encoder is not None

    def _require_momentum_branch(self, what: str):
        if not self.has_momentum_branch:
            raise ValueError(f"{what} needs MoCo's momentum branch; this model has base={self.config.base!r}, "
                             "which has none.")

    def _online_and_momentum_params(self):
        online = list(self.fgssl.parameters()) + list(self.projector.parameters())
        momentum = list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters())
        return online, momentum

    @torch.no_grad()
    def copy_online_to_momentum(self):
        """`f_m, g_m <- f, g`; the momentum branch never receives gradients. Nothing to do without one (SimSiam)."""
        if not self.has_momentum_branch:
            return
        online, momentum = self._online_and_momentum_params()
        for p_o, p_m in zip(online, momentum):
            p_m.data.copy_(p_o.data)
            p_m.requires_grad_(False)

    @torch.no_grad()
    def update_momentum(self, momentum: float | None = None):
        """EMA step `theta_m <- m * theta_m + (1 - m) * theta` (call once per optimiser step)."""
        self._require_momentum_branch("update_momentum")
        m = self.config.momentum if momentum is None else momentum
        online, mom = self._online_and_momentum_params()
        torch._foreach_lerp_([p.data for p in mom], [p.data for p in online], 1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor):
        """Push keys (B x d, gathered from all processes) into the ring-buffer queue, oldest out first."""
        self._require_momentum_branch("enqueue")
        size = self.queue.shape[0]
        if size == 0:
            return
        keys = keys.detach().to(self.queue.dtype)[-size:]
        n, ptr = keys.shape[0], int(self.queue_ptr)
        idx = (torch.arange(n, device=self.queue.device) + ptr) % size
        self.queue[idx] = keys
        self.queue_ptr.fill_((ptr + n) % size)

    # ---- pieces the objective calls -------------------------------------------------------------------------
    def encode(self, pixel_values: torch.Tensor) -> FGSSLModelOutput:
        """`f`: B x 3 x H x W -> `h` (pooler_output, B x C) and `A` (feature_map)."""
        return self.fgssl(pixel_values)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """`g`: `h` (B x C) -> `q` (B x d), L2-normalised."""
        return F.normalize(self.projector(features), dim=1)

    @torch.no_grad()
    def momentum_encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`g_m(f_m(x))`: B x 3 x H x W -> keys B x d, L2-normalised, without gradient."""
        self._require_momentum_branch("momentum_encode")
        return F.normalize(self.momentum_projector(self.momentum_encoder(pixel_values).pooler_output), dim=1)

    def simsiam_heads(self, features: torch.Tensor, freeze_batch_statistics: bool = False):
        """SimSiam's projector and predictor on ONE view: `h` (n x C, n >= 2 in training) -> (`z`, `p`), n x d each.

        `z = g(h)` is not normalised (the loss is a cosine). The BatchNorm layers normalise by the statistics of this
        view's batch, as the paper's two separate passes do. `freeze_batch_statistics`: the same values, with those
        statistics held constant and not folded into the running ones (see `run_with_frozen_batch_statistics`), for
        per-sample gradients (the Grad-CAM criterion).
        """
        if self.predictor is None:
            raise ValueError(f"simsiam_heads needs SimSiam's predictor; this model has base={self.config.base!r}.")
        if self.training and features.shape[0] < 2 and not freeze_batch_statistics:
            raise ValueError("base='simsiam' needs at least 2 images per batch and device in training (the heads' "
                             "BatchNorm normalises over the batch); raise the batch size.")
        if freeze_batch_statistics:
            z = run_with_frozen_batch_statistics(self.projector, features)
            return z, run_with_frozen_batch_statistics(self.predictor, z)
        z = self.projector(features)
        return z, self.predictor(z)

    def decoder_features(self, encoded: FGSSLModelOutput) -> torch.Tensor:
        """What `D` decodes (config.decoder_input): `h` (B x C) or `A` (B x C x H x W)."""
        return encoded.feature_map if self.config.decoder_input == "feature_map" else encoded.pooler_output

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """`D`: `h` (B x C, `pooled`) or `A` (B x C x H x W, `feature_map`) -> image B x 3 x S x S."""
        if self.decoder is None:
            raise ValueError("This model has no decoder (config.use_decoder=False); build it with use_decoder=True.")
        return self.decoder(features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        key_pixel_values: torch.Tensor | None = None,
        return_reconstruction: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> FGSSLPreTrainingOutput | tuple:
        """Online branch on `pixel_values` (B x 3 x H x W); `D(h)` when `return_reconstruction`.

        `key_pixel_values` (B x 3 x H x W), the second view: MoCo encodes it with the momentum branch (`key`);
        SimSiam sends it through the same encoder and heads in this one call (so DDP synchronises once per step):
        `projection` and `prediction` then hold 2B rows, `pooler_output` and `feature_map` stay the first view's.
        """
        if not self.has_momentum_branch:  # SimSiam: both views through the same encoder and heads
            return self._simsiam_forward(pixel_values, key_pixel_values, return_reconstruction, return_dict)
        encoded = self.encode(pixel_values)
        output = FGSSLPreTrainingOutput(
            query=self.project(encoded.pooler_output),
            key=self.momentum_encode(key_pixel_values) if key_pixel_values is not None else None,
            pooler_output=encoded.pooler_output,
            feature_map=encoded.feature_map,
            reconstruction=self.decode(self.decoder_features(encoded)) if return_reconstruction else None,
            screening_logits=encoded.screening_logits,
        )
        return output if return_dict is not False else output.to_tuple()

    def _simsiam_forward(self, pixel_values, key_pixel_values, return_reconstruction, return_dict):
        views = [pixel_values] if key_pixel_values is None else [pixel_values, key_pixel_values]
        n = pixel_values.shape[0]
        # One backbone pass over both views (a larger batch uses the device better; the backbones here normalise
        # per sample, except ResNet, whose BatchNorm then sees both views [choice]); the heads run per view.
        feature_maps = self.encode(torch.cat(views) if len(views) > 1 else pixel_values).feature_map.split(n)
        # Pooled per view (each image is pooled on its own: same values), so that the first view's A and h are
        # the very tensors the loss is computed from (gradients with respect to them reach the loss).
        pooled = [self.fgssl.pool(a) for a in feature_maps]
        heads = [self.simsiam_heads(h) for h, _, _ in pooled]
        z = torch.cat([zi for zi, _ in heads])
        first = FGSSLModelOutput(pooler_output=pooled[0][0], feature_map=feature_maps[0])
        output = FGSSLPreTrainingOutput(
            query=F.normalize(z[:n], dim=1),
            projection=z,
            prediction=torch.cat([p for _, p in heads]),
            pooler_output=first.pooler_output,
            feature_map=first.feature_map,
            reconstruction=self.decode(self.decoder_features(first)) if return_reconstruction else None,
            screening_logits=pooled[0][1],
        )
        return output if return_dict is not False else output.to_tuple()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if any(key.startswith("momentum_") for key in info.get("missing_keys", [])):
            # Starting pre-training from an encoder-only checkpoint: the momentum branch starts as a copy.
            model.copy_online_to_momentum()
        return (model, info) if want_info else model


AUTO_MAP = {
    "AutoConfig": "configuration_fgssl.FGSSLConfig",
    "AutoModel": "modeling_fgssl.FGSSLModel",
    "AutoModelForImageClassification": "modeling_fgssl.FGSSLForImageClassification",
    "AutoModelForPreTraining": "modeling_fgssl.FGSSLForPreTraining",
}

__all__ = [
    "VarianceTracker",
    "FGSSLModelOutput",
    "FGSSLPreTrainingOutput",
    "FGSSLPreTrainedModel",
    "FGSSLModel",
    "FGSSLForImageClassification",
    "FGSSLForPreTraining",
]
