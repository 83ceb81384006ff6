"""The decoder `D` of docs/method.md: features back to an image (B x 3 x S x S).

Two inputs (docs/method.md, "Decoder", [choice] `decoder_input`):
- `input_type="pooled"`: the feature vector `h` (B x C), through a linear layer to a c0 x s0 x s0 grid;
- `input_type="feature_map"`: the final feature map `A` (B x C x H x W), through a 1x1 conv to c0 x H x W.
  It keeps where things are, so far more of the image survives.
Then diffusers' `UpDecoderBlock2D`s, like the VAE decoder (`diffusers/models/autoencoders/vae.py`). A diffusers
`ModelMixin` + `ConfigMixin`: it saves and loads on its own in diffusers format.

`save_pretrained` also writes this file and an `auto_map` into the folder, so a Python without fgssl loads a saved
decoder with `diffusers.AutoModel.from_pretrained(folder, trust_remote_code=True)`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

# In a try block: transformers' remote-code loader skips imports inside `try` when it checks that a Hub model's
# files can be imported, so an encoder-only user (who never builds the decoder) does not need diffusers.
try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.models.unets.unet_2d_blocks import UpDecoderBlock2D
except ImportError as err:  # pragma: no cover - exercised in a subprocess without diffusers
    raise ImportError(
        "The fgssl decoder (FGSSLConfig.use_decoder=True) needs diffusers: `pip install diffusers`. Loading the "
        "encoder alone (AutoModel) does not."
    ) from err

# The words of FGSSLConfig.decoder_input (configuration_fgssl.DECODER_INPUTS; not imported: a saved decoder folder
# carries this file alone).
INPUT_TYPES = ("pooled", "feature_map")
# Decoders saved before the decoder spoke the config's words: their `input_type` is read as the new word.
_OLD_INPUT_TYPES = {"vector": "pooled", "map": "feature_map"}


class FGSSLDecoder(ModelMixin, ConfigMixin):
    r"""
    Decode features into an image in the encoder's (normalised) input space.

    Args:
        in_features (`int`): size `C` of the feature vector (channels of the feature map).
        out_channels (`int`, defaults to 3): image channels.
        base_size (`int`, defaults to 4): side `s0` of the grid produced by the first linear layer.
        block_out_channels (`tuple[int]`): channels of the up-decoder blocks; all but the last upsample x2, so the
            output side is `base_size * 2 ** (len(block_out_channels) - 1)`.
        layers_per_block (`int`, defaults to 1): resnet layers per block.
        norm_num_groups (`int`, defaults to 8): GroupNorm groups.
        act_fn (`str`, defaults to `"silu"`): activation of the resnets.
        input_type (`str`, defaults to `"pooled"`): `"pooled"` decodes B x C vectors (linear to the `base_size`
            grid); `"feature_map"` decodes B x C x H x W maps (1x1 conv, the map's own grid; `base_size` then records
            the H the model was built for, and the output side is `H * 2 ** (len(block_out_channels) - 1)`). Configs
            saved with the former words `"vector"` / `"map"` load as `"pooled"` / `"feature_map"`.
    """

    # diffusers' gradient checkpointing (`enable_gradient_checkpointing()`, as its VAE decoder): each up block's
    # activations are recomputed in backward instead of kept, for one more decoder forward.
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_features: int = 768,
        out_channels: int = 3,
        base_size: int = 4,
        block_out_channels: tuple[int, ...] = (128, 64, 32, 32),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        act_fn: str = "silu",
        input_type: str = "pooled",
    ):
        super().__init__()
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}.")
        block_out_channels = tuple(block_out_channels)
        c0 = block_out_channels[0]
        if input_type == "feature_map":
            self.proj_in = nn.Conv2d(in_features, c0, kernel_size=1)
        else:
            self.proj_in = nn.Linear(in_features, c0 * base_size * base_size)
        self.conv_in = nn.Conv2d(c0, c0, kernel_size=3, padding=1)
        blocks = []
        prev = c0
        for i, channels in enumerate(block_out_channels):
            blocks.append(
                UpDecoderBlock2D(
                    in_channels=prev,
                    out_channels=channels,
                    num_layers=layers_per_block,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    add_upsample=i < len(block_out_channels) - 1,
                    temb_channels=None,
                )
            )
            prev = channels
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(norm_num_groups, prev, eps=1e-6)
        self.act = nn.SiLU()
        self.conv_out = nn.Conv2d(prev, out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False

    @property
    def image_size(self) -> int:
        """Output side S for inputs of the built size."""
        return self.config.base_size * 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`features`: B x C vectors (`input_type="pooled"`) or B x C x H x W maps (`"feature_map"`).

        Returns B x out_channels x S x S (normalised pixel space, no output squashing).
        """
        if self.config.input_type == "feature_map":
            if features.dim() != 4:
                raise ValueError(f"This decoder decodes B x C x H x W feature maps, got shape {tuple(features.shape)}.")
            x = self.proj_in(features)
        else:
            if features.dim() != 2:
                raise ValueError(f"This decoder decodes B x C vectors, got shape {tuple(features.shape)}.")
            s0 = self.config.base_size
            x = self.proj_in(features).view(features.shape[0], -1, s0, s0)
        x = self.conv_in(x)
        recompute = torch.is_grad_enabled() and self.gradient_checkpointing
        for block in self.up_blocks:
            x = self._gradient_checkpointing_func(block, x) if recompute else block(x)
        if recompute:  # the output stage works at the largest side: its activations are the biggest
            return self._gradient_checkpointing_func(self._output_stage, x)
        return self._output_stage(x)

    def _output_stage(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.act(self.norm_out(x)))

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # `auto_map` tells loaders where the code is; it is no constructor argument (diffusers would warn).
        config_dict = {key: value for key, value in config_dict.items() if key != "auto_map"}
        if config_dict.get("input_type") in _OLD_INPUT_TYPES:
            config_dict["input_type"] = _OLD_INPUT_TYPES[config_dict["input_type"]]
        return super().extract_init_dict(config_dict, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' `save_pretrained`, plus this code file so the folder loads without fgssl (see module doc)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", args[0] if args else True):
            shutil.copyfile(Path(__file__), Path(save_directory) / Path(__file__).name)


# config.json gets `"auto_map": {"AutoModel": "decoder_fgssl.FGSSLDecoder"}` (diffusers' remote-code convention).
FGSSLDecoder.register_for_auto_class("AutoModel")

__all__ = ["FGSSLDecoder"]
