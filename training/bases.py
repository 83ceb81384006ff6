"""The base objectives of docs/method.md ("Base SSL objective"): MoCo v2 and SimSiam, as small objects.

A base gives one training step (docs/method.md "One training step") four pieces:

- `ssl_loss(model, core, v1, v2)`: step 1, `L_C` of the two views, with the forward's output and the logged terms;
- `gradcam_inputs(core, output, loss)`: step 3, what the Grad-CAM criteria (and LCR's map) differentiate;
- `synthesized_pair_loss(core, perturbed, original)`: step 7, `L_Cp` of the two synthesized images;
- `after_optimizer_step(core)`: step 8, the bookkeeping once per optimiser step.

The method's additions (LCR's screening loss, this method's synthesized pairs: `training/methods.py`) are composed
on top by `FGSSLTrainer`. The losses are the pure functions of `training/objective.py`; `model` is the (possibly
DDP-wrapped) `FGSSLForPreTraining`, `core` the same model unwrapped. `build_base_objective` picks the base from the
model's `config.base`: the one place the base is switched on.

Shapes: B batch, C feature size, H x W feature map, d projector output, S decoded image side.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from . import objective as obj
from .shuffle_bn import grouped_encode, has_batch_norm, shuffled_keys


class SSLLoss(NamedTuple):
    """Step 1 of one training step: the forward's `output` (FGSSLPreTrainingOutput: h, A, ...), the scalar `loss`
    L_C, and the `terms` to log (detached scalars)."""

    output: object
    loss: Tensor
    terms: dict


class GradCamInputs(NamedTuple):
    """What the Grad-CAM criteria differentiate (docs/method.md step 3): a scalar `loss` whose gradient row i with
    respect to `features` (h, B x C) or `feature_map` (A, B x C x H x W) is sample i's own gradient of L_C."""

    loss: Tensor
    features: Tensor
    feature_map: Tensor


def maybe_recompute(fn, recompute: bool, *inputs):
    """`fn(*inputs)`, its activations recomputed in backward instead of kept when `recompute` (checkpointing)."""
    return checkpoint(fn, *inputs, use_reentrant=False) if recompute else fn(*inputs)


class MoCoObjective:
    """MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv:2003.04297): InfoNCE of the online query of one view against
    the momentum key of the other and a queue of past keys (docs/method.md steps 1, 7 and 8).

    With a BatchNorm backbone the keys are computed with Shuffle BN (MoCo section 3.3; `training/shuffle_bn.py`).
    The keys of each micro-batch, gathered from every process, wait in `pending_keys` until the optimiser step's
    `after_optimizer_step` pushes them into the queue after the momentum update: gradient accumulation of n x B and
    steps of n*B do the same bookkeeping, and every process holds the same queue.

    Args:
        temperature: InfoNCE's tau.
        accelerator: the Trainer's `accelerate.Accelerator` (gathers the keys of every process); None: one process.
        key_encoder_has_batch_norm: whether the momentum encoder has BatchNorm (then Shuffle BN applies).
        shuffle_bn, shuffle_bn_groups: `ObjectiveArguments`' Shuffle BN knobs.
    """

    #: Smallest synthesized subset its pair loss takes.
    min_pair_batch = 1
    #: Whether the heads hold BatchNorm (synchronised across GPU processes).
    heads_have_batch_norm = False

    def __init__(self, temperature: float = 0.2, accelerator=None, key_encoder_has_batch_norm: bool = False,
                 shuffle_bn: bool = True, shuffle_bn_groups: int = 1):
        self.temperature = temperature
        self.accelerator = accelerator
        self.key_encoder_has_batch_norm = key_encoder_has_batch_norm
        self.shuffle_bn = shuffle_bn
        self.shuffle_bn_groups = shuffle_bn_groups
        self.pending_keys: list[Tensor] = []

    @classmethod
    def from_arguments(cls, objective_args, model, accelerator=None) -> MoCoObjective:
        """The MoCo base for `model` (an `FGSSLForPreTraining` with base moco) and `ObjectiveArguments`."""
        return cls(objective_args.temperature, accelerator, has_batch_norm(model.momentum_encoder),
                   objective_args.shuffle_bn, objective_args.shuffle_bn_groups)

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    def momentum_keys(self, core, images: Tensor) -> Tensor:
        """Keys of `images` (B x 3 x H x W) from the momentum branch, B x d, with Shuffle BN where the backbone has
        BatchNorm: across processes (`shuffle_bn`) and/or in `shuffle_bn_groups` groups per process."""
        if not self.key_encoder_has_batch_norm:
            return core.momentum_encode(images)
        groups = self.shuffle_bn_groups
        if self.num_processes > 1 and not self.shuffle_bn:
            return grouped_encode(core.momentum_encode, images, groups) if groups > 1 else core.momentum_encode(images)
        return shuffled_keys(core.momentum_encode, images, groups=groups)

    def ssl_loss(self, model, core, v1: Tensor, v2: Tensor) -> SSLLoss:
        """Step 1: InfoNCE of the online queries of `v1` against the momentum keys of `v2` and the queue (in-batch
        negatives when the queue is empty). The online pass goes through `model` so that DDP synchronises."""
        out = model(pixel_values=v1)
        k = self.momentum_keys(core, v2)
        negatives = core.queue.clone().detach() if core.queue.shape[0] > 0 else None
        # Every process's keys (rank order): the queue's input and, with in-batch negatives, the negatives of every
        # query, so that they grow with the number of processes.
        gathered = self.accelerator.gather(k.detach()) if self.accelerator is not None else k.detach()
        several = self.num_processes > 1
        offset = self.accelerator.process_index * k.shape[0] if several else 0
        loss = obj.info_nce(out.query, k, negatives, self.temperature,
                            batch_keys=gathered if several else None, batch_offset=offset)
        self.pending_keys.append(gathered)
        return SSLLoss(out, loss, {"loss_ssl": loss.detach()})

    def gradcam_inputs(self, core, output, loss: Tensor) -> GradCamInputs:
        """Step 3: L_C itself on the forward's own h and A (sample i's loss depends on its own query only)."""
        return GradCamInputs(loss, output.pooler_output, output.feature_map)

    def frozen_gradcam_inputs(self, core, v1: Tensor, v2: Tensor) -> GradCamInputs:
        """Step 3's inputs for a trained model held fixed (analysis, no training): h and A of `v1` computed without
        gradient (h then a leaf that requires grad, A without gradient), L_C of `g(h)` against the momentum keys of
        `v2` and the model's queue, as in training. The gradient runs through the projector only, as in training."""
        with torch.no_grad():
            encoded = core.encode(v1)
            keys = core.momentum_encode(v2)
        h = encoded.pooler_output.detach().requires_grad_(True)
        negatives = core.queue.detach().clone() if core.queue.shape[0] > 0 else None
        return GradCamInputs(obj.info_nce(core.project(h), keys, negatives, self.temperature), h, encoded.feature_map)

    def synthesized_pair_loss(self, core, perturbed: Tensor, original: Tensor, recompute: bool = False) -> Tensor:
        """Step 7: InfoNCE of the query of the image decoded from h' (`perturbed`) against the momentum key of the
        one decoded from h (`original`), the other synthesized keys the negatives; n x 3 x S x S each, at the
        encoder's input size. `recompute`: the online pass is recomputed in backward (activation checkpointing)."""
        q = maybe_recompute(lambda x: core.project(core.encode(x).pooler_output), recompute, perturbed)
        return obj.info_nce(q, self.momentum_keys(core, original), None, self.temperature)

    @torch.no_grad()
    def after_optimizer_step(self, core) -> None:
        """Step 8: the momentum update `theta_m <- m theta_m + (1 - m) theta`, then this step's keys into the queue."""
        core.update_momentum()
        if self.pending_keys:
            core.enqueue(torch.cat(self.pending_keys))
        self.pending_keys = []


class SimSiamObjective:
    """SimSiam (Chen & He, CVPR 2021): both views through the same encoder and heads, symmetric negative cosine of each
    view's prediction against the other's stop-gradient projection; no momentum branch, no queue (docs/method.md
    "Base SSL objective"). `output_std` watches for collapse. It has no knobs of its own.
    """

    #: SimSiam's BatchNorm needs two images a batch, also on the synthesized subset.
    min_pair_batch = 2
    heads_have_batch_norm = True
    key_encoder_has_batch_norm = False

    @property
    def pending_keys(self) -> list[Tensor]:
        """No keys wait for a queue: SimSiam has none."""
        return []

    @classmethod
    def from_arguments(cls, objective_args, model, accelerator=None) -> SimSiamObjective:
        """The SimSiam base (it has no knobs of its own)."""
        return cls()

    @staticmethod
    def two_view_loss(output) -> Tensor:
        """SimSiam's symmetric loss of a two-view forward (`projection`, `prediction`: 2n x d, view 1 then view 2)."""
        n = output.projection.shape[0] // 2
        (z1, z2), (p1, p2) = output.projection.split(n), output.prediction.split(n)
        return obj.simsiam_loss(p1, p2, z1, z2)

    def ssl_loss(self, model, core, v1: Tensor, v2: Tensor) -> SSLLoss:
        """Step 1: both views through `model` in one forward (DDP synchronises once), the symmetric loss."""
        out = model(pixel_values=v1, key_pixel_values=v2)
        loss = self.two_view_loss(out)
        return SSLLoss(out, loss, {"loss_ssl": loss.detach(),
                                   "output_std": obj.output_std(out.projection[: v1.shape[0]])})

    def gradcam_inputs(self, core, output, loss: Tensor) -> GradCamInputs:
        """Step 3: the heads' BatchNorm couples the samples, so one gradient of L_C mixes every sample's loss into each
        row. Instead A is detached, pooled again and sent through the heads with the batch statistics held constant
        (the same values), and the loss is the view-1 half of L_C (`simsiam_scoring_loss`): each row of its gradient
        is that sample's own. The extra pass runs through pooling and heads only, never the backbone; `loss` (the
        full L_C) is not needed."""
        feature_map = output.feature_map.detach().requires_grad_(True)
        features = core.fgssl.pool(feature_map)[0]
        _, p1 = core.simsiam_heads(features, freeze_batch_statistics=True)
        z2 = output.projection[feature_map.shape[0]:]
        return GradCamInputs(obj.simsiam_scoring_loss(p1, z2), features, feature_map)

    def frozen_gradcam_inputs(self, core, v1: Tensor, v2: Tensor) -> GradCamInputs:
        """Step 3's inputs for a trained model held fixed (analysis): the two-view forward without gradient, then the
        scoring pass of `gradcam_inputs`."""
        with torch.no_grad():
            out = core(pixel_values=v1, key_pixel_values=v2)
        return self.gradcam_inputs(core, out, None)

    def synthesized_pair_loss(self, core, perturbed: Tensor, original: Tensor, recompute: bool = False) -> Tensor:
        """Step 7: the symmetric loss of the two synthesized images (n >= 2, at the encoder's input size) through the
        encoder and heads. `recompute`: their pass is recomputed in backward (activation checkpointing)."""
        pair = lambda a, b: self.two_view_loss(core(pixel_values=a, key_pixel_values=b))  # noqa: E731
        return maybe_recompute(pair, recompute, perturbed, original)

    def after_optimizer_step(self, core) -> None:
        """Nothing: SimSiam has no momentum branch and no queue."""


#: `config.base` -> its objective.
BASE_OBJECTIVES = {"moco": MoCoObjective, "simsiam": SimSiamObjective}


def build_base_objective(objective_args, model, accelerator=None) -> MoCoObjective | SimSiamObjective:
    """The base objective of `model` (`FGSSLForPreTraining`, its `config.base`) with the knobs of `objective_args`
    (`ObjectiveArguments`); `accelerator`: the Trainer's (None: one process)."""
    return BASE_OBJECTIVES[model.config.base].from_arguments(objective_args, model, accelerator)


__all__ = ["BASE_OBJECTIVES", "GradCamInputs", "MoCoObjective", "SSLLoss", "SimSiamObjective", "build_base_objective",
           "maybe_recompute"]
