"""Shuffle BN: keep BatchNorm from telling the contrastive loss which key is the positive (MoCo, He et al. 2020, 3.3).

"The model appears to 'cheat' the pretext task and easily finds a low-loss solution. This is possibly because the
intra-batch communication among samples (caused by BN) leaks information. [...] We resolve this problem by
shuffling BN. [...] For the key encoder f_k, we shuffle the sample order in the current mini-batch before
distributing it among GPUs (and shuffle back after encoding); the sample order of the mini-batch for the query
encoder f_q is not altered."

Only backbones with BatchNorm (ResNet) need it: for LayerNorm backbones (ViT, ConvNeXt, Swin) every function here
is the plain encoding. Two forms, the same idea:
- several processes: MoCo v2's `_batch_shuffle_ddp` / `_batch_unshuffle_ddp` through accelerate's collectives
  (gather every rank's key images, one permutation drawn on rank 0 and broadcast, encode this rank's share of the
  shuffled batch, gather the keys and put them back in the original order);
- one process: the single-device emulation (as in MoCo's one-GPU CIFAR demo): the key batch in a shuffled order is
  split into `groups` sub-batches, each encoded on its own, so BatchNorm normalises each by its own statistics.

    keys = shuffled_keys(model.momentum_encode, images, groups=4)          # one process
    keys = shuffled_keys(model.momentum_encode, images)                    # under accelerate launch, 2+ processes
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def has_batch_norm(module: nn.Module) -> bool:
    """Whether any BatchNorm layer (1d, 2d, 3d or synchronised) is part of `module`."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _world() -> tuple[int, int]:
    """(rank, world size) of the running accelerate / torch.distributed job; (0, 1) without one."""
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def grouped_encode(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, groups: int) -> torch.Tensor:
    """`encode` applied to `groups` consecutive sub-batches of `images` (N x ...) on their own, results concatenated
    (N x d): BatchNorm in training mode normalises each sub-batch by its own statistics."""
    if groups <= 1:
        return encode(images)
    return torch.cat([encode(chunk) for chunk in torch.tensor_split(images, min(groups, images.shape[0]))])


@torch.no_grad()
def shuffled_keys(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, groups: int = 1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Keys `encode(images)` (B x d, in the order of `images`) computed in a shuffled batch composition.

    Args:
        encode: the key encoder (e.g. `FGSSLForPreTraining.momentum_encode`), B' x 3 x H x W -> B' x d.
        images: this process's key images, B x 3 x H x W (the same B on every process: drop_last).
        groups: sub-batches per process with their own BatchNorm statistics (1: the whole local share).
        generator: draws the permutation (rank 0's is the one used); default torch's global generator.
    """
    rank, world = _world()
    if world == 1:
        if groups <= 1:
            return encode(images)
        order = torch.randperm(images.shape[0], generator=generator).to(images.device)
        keys = grouped_encode(encode, images[order], groups)
        return keys[torch.argsort(order)]
    from accelerate.utils import broadcast, gather

    batch = images.shape[0]
    everything = gather(images.contiguous())  # world*B x ..., rank r's images at rows r*B:(r+1)*B
    order = torch.randperm(everything.shape[0], generator=generator).to(images.device)
    order = broadcast(order, from_process=0)  # one permutation for every rank
    mine = order[rank * batch:(rank + 1) * batch]  # the images this rank encodes
    keys = gather(grouped_encode(encode, everything[mine], groups).contiguous())  # keys[j] = key of everything[order[j]]
    unshuffled = torch.empty_like(keys)
    unshuffled[order] = keys
    return unshuffled[rank * batch:(rank + 1) * batch]
