"""`FGSSLTrainer`: a transformers `Trainer` whose `compute_loss` is one training step of docs/method.md.

`compute_loss` reads top to bottom like docs/method.md's "One training step"; each step is a function of
`training/objective.py`. The base objective is the model's (`config.base`): MoCo v2 or SimSiam. With MoCo, once
per optimiser step (not per micro-batch) a callback updates the momentum branch and pushes the keys of the whole
step (gathered from every process) into the queue, so gradient accumulation of n x B and steps of n*B do the same
MoCo bookkeeping, and every rank holds the same queue; SimSiam has neither, and the callback does nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import Trainer, TrainerCallback, TrainingArguments

from . import objective as obj
from .augment import TwoViewAugment
from .portable import SafeSaveMixin
from .runinfo import SafeCheckpointMixin
from .shuffle_bn import grouped_encode, has_batch_norm, shuffled_keys

#: What is added to the base objective (config.base, MoCo v2 or SimSiam): nothing ("moco", the name from before
#: SimSiam existed), LCR, or the synthesized pairs of this method.
METHODS = ("moco", "lcr", "fgssl")
#: Backbone model types whose encoders `channels_last` converts (convolutions; ViT-like backbones gain nothing).
CONVOLUTIONAL_BACKBONES = ("resnet", "convnext", "convnextv2", "regnet", "efficientnet", "mobilenet_v2")
#: Other names accepted for --method.
METHOD_ALIASES = {"plain": "moco"}


@dataclass
class ObjectiveArguments:
    """Knobs of the objective (docs/method.md); every [choice] of docs/method.md is one of them."""

    method: str = field(
        default="fgssl",
        metadata={"help": f"One of {METHODS} on the base objective (--base, MoCo v2 or SimSiam): the base alone "
                          "('moco', or its alias 'plain'), LCR, or the synthesized pairs of this method."},
    )
    temperature: float = field(default=0.2, metadata={"help": "InfoNCE temperature tau."})
    rho_variance: float = field(default=0.25, metadata={"help": "Fraction of dims with lowest running variance (V)."})
    rho_gradcam: float = field(default=0.25, metadata={"help": "Fraction of dims with lowest Grad-CAM score (G_i)."})
    mask_mode: str = field(
        default="union", metadata={"help": f"Nuisance mask: one of {obj.NUISANCE_MASK_MODES}."}
    )
    perturbation: str = field(default="gaussian", metadata={"help": f"One of {obj.PERTURBATION_MODES}."})
    sigma: float = field(default=1.0, metadata={"help": "Gaussian perturbation scale, in units of the noise scale."})
    noise_scale: str = field(
        default="global",
        metadata={"help": f"Gaussian noise unit, one of {obj.NOISE_SCALES}: per_dim = each dim's running std; "
                          "global = the mean running std (a selected dim gets noise of the data's typical size)."},
    )
    recon_target: str = field(
        default="geometric",
        metadata={"help": f"Target of L_R, one of {obj.RECON_TARGETS}: view = v1; geometric = v1's crop and flip "
                          "without colour jitter, grayscale or blur."},
    )
    alpha: float = field(default=1.0, metadata={"help": "Weight of the reconstruction loss L_R."})
    recon_encoder_weight: float = field(
        default=0.1,
        metadata={"help": "Scale of L_R's gradient into the encoder through h (0 = decoder only)."},
    )
    nu: float = field(default=1.0, metadata={"help": "Weight of the synthesized-pair loss L_Cp."})
    synth_warmup_steps: int = field(default=50, metadata={"help": "Optimiser steps with L_Cp off (decoder learns)."})
    synth_ramp_steps: int = field(default=50, metadata={"help": "Steps over which nu ramps from 0 to its value."})
    synth_fraction: float = field(default=1.0, metadata={"help": "Fraction of the batch that is synthesized."})
    synth_recompute: bool = field(
        default=False,
        metadata={"help": "Recompute the synthesized query pass in backward (activation checkpointing): less peak "
                          "memory for one more encoder forward of the synthesized images (GPU recipes)."},
    )
    channels_last: bool = field(
        default=False,
        metadata={"help": "Convolutional backbones (ResNet, ConvNeXt): keep the encoders' weights and their input "
                          "images in channels_last memory format (faster convolutions where measured, e.g. "
                          "benchmarks/step_cost.py --channels_last); no effect on ViT-like backbones."},
    )
    shuffle_bn: bool = field(
        default=True,
        metadata={"help": "MoCo with a BatchNorm backbone (ResNet) on several processes: Shuffle BN, the key batch "
                          "shuffled across processes before the key encoder and put back after (MoCo v2's "
                          "_batch_shuffle_ddp). No effect on one process or for LayerNorm backbones."},
    )
    shuffle_bn_groups: int = field(
        default=1,
        metadata={"help": "MoCo with a BatchNorm backbone: split each process's key batch, in a shuffled order, into "
                          "this many groups with their own BatchNorm statistics (Shuffle BN's single-device "
                          "emulation; 1 = off). The GPU ResNet recipes use 4 on one GPU."},
    )
    sync_bn: bool | None = field(
        default=None,
        metadata={"help": "SimSiam on several GPU processes: synchronise the heads' BatchNorm across processes, as "
                          "SimSiam's reference code does (default: on when several processes run on GPUs)."},
    )
    lcr_weight: float = field(default=0.01, metadata={"help": "LCR: weight of the screening KL term."})
    crop_scale_min: float = field(default=0.2, metadata={"help": "Random resized crop: smallest area fraction."})
    color_jitter: float = field(default=0.4, metadata={"help": "Brightness/contrast/saturation jitter (hue = x/4)."})
    hue_jitter: float | None = field(
        default=None,
        metadata={"help": "Hue jitter range (0..0.5; 0.5: any hue). Default: color_jitter / 4 (MoCo v2's 0.1)."},
    )
    color_jitter_p: float = field(default=0.8, metadata={"help": "Probability of colour jitter."})
    grayscale_p: float = field(default=0.2, metadata={"help": "Probability of grayscale."})
    blur_p: float = field(default=0.5, metadata={"help": "Probability of Gaussian blur."})
    picture_steps: int = field(
        default=0, metadata={"help": "Write a PNG sheet every N steps (0: about 4 over the run); the last step too."}
    )

    def __post_init__(self):
        self.method = METHOD_ALIASES.get(self.method, self.method)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.mask_mode not in obj.NUISANCE_MASK_MODES:
            raise ValueError(f"mask_mode must be one of {obj.NUISANCE_MASK_MODES}, got {self.mask_mode!r}.")
        if self.perturbation not in obj.PERTURBATION_MODES:
            raise ValueError(f"perturbation must be one of {obj.PERTURBATION_MODES}, got {self.perturbation!r}.")
        if self.noise_scale not in obj.NOISE_SCALES:
            raise ValueError(f"noise_scale must be one of {obj.NOISE_SCALES}, got {self.noise_scale!r}.")
        if self.recon_target not in obj.RECON_TARGETS:
            raise ValueError(f"recon_target must be one of {obj.RECON_TARGETS}, got {self.recon_target!r}.")
        for name in ("rho_variance", "rho_gradcam", "synth_fraction", "recon_encoder_weight", "color_jitter_p",
                     "grayscale_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if self.hue_jitter is not None and not 0.0 <= self.hue_jitter <= 0.5:
            raise ValueError(f"hue_jitter must be in [0, 0.5] (0.5: any hue), got {self.hue_jitter}.")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"crop_scale_min must be in (0, 1], got {self.crop_scale_min}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        for name in ("sigma", "alpha", "nu", "lcr_weight", "color_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("synth_warmup_steps", "synth_ramp_steps", "picture_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.shuffle_bn_groups < 1:
            raise ValueError(f"shuffle_bn_groups must be >= 1 (1 = off), got {self.shuffle_bn_groups}.")

    def augmentation(self, image_size: int, mean=None, std=None) -> TwoViewAugment:
        """The two-view augmentation, its views normalised with `mean` / `std` (default ImageNet's)."""
        j = self.color_jitter
        hue = j / 4 if self.hue_jitter is None else self.hue_jitter
        return TwoViewAugment(
            image_size,
            crop_scale=(self.crop_scale_min, 1.0),
            jitter=(j, j, j, hue),
            jitter_p=self.color_jitter_p,
            grayscale_p=self.grayscale_p,
            blur_p=self.blur_p,
            mean=mean,
            std=std,
        )


class GradCamInputs(NamedTuple):
    """What the Grad-CAM criteria differentiate (docs/method.md step 3): a scalar `loss` whose gradient row i with respect
    to `features` (h, B x C) or `feature_map` (A, B x C x H x W) is sample i's own gradient of L_C."""

    loss: torch.Tensor
    features: torch.Tensor
    feature_map: torch.Tensor


def scale_grad(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by `weight` (L_R trains the encoder only a little)."""
    if weight == 1.0:
        return x
    detached = x.detach()
    return detached if weight == 0.0 else detached + weight * (x - detached)


class FGSSLTrainer(SafeCheckpointMixin, SafeSaveMixin, Trainer):
    """Trainer for `FGSSLForPreTraining` with the objective of docs/method.md (`method="fgssl"`) or a baseline.

    Batches hold `pixel_values` as uint8 (decoded and resized once by `training.data`); the two augmented views are
    drawn on the training device. Every save (checkpoints, final folder) also writes the image processor
    (`processing_class`, default `training.processor.build_image_processor(image_size)`) and a `training_args.bin`
    without the Hub token or absolute paths (`SafeSaveMixin`). Checkpoints are written whole or not at all, a
    non-finite loss stops the run, nothing non-finite is saved (`runinfo.SafeCheckpointMixin`).
    """

    def __init__(self, model=None, args: TrainingArguments = None, objective_args: ObjectiveArguments = None,
                 image_size: int | None = None, **kwargs):
        self.objective_args = objective_args or ObjectiveArguments()
        oa = self.objective_args
        config = model.config
        if oa.method == "fgssl" and model.decoder is None:
            raise ValueError("method='fgssl' needs a decoder: build the model with FGSSLConfig(use_decoder=True).")
        if oa.method != "fgssl" and model.decoder is not None:
            raise ValueError(f"method={oa.method!r} trains no decoder: build the model with use_decoder=False.")
        if (oa.method == "lcr") != (config.pooling == "screening"):
            raise ValueError("method='lcr' goes with pooling='screening', and only it.")
        if args is not None:
            # The objective touches every trainable parameter in every step; DDP's unused-parameter search would
            # miss those used after the wrapped forward (projector on synthesized images, decoder).
            args.ddp_find_unused_parameters = False
            if args.torch_compile:
                # The objective calls the encoders and the decoder directly, not through the Trainer's wrapped
                # forward: compile those modules in place, and keep accelerate from compiling the wrapper again.
                compile_networks(model, backend=args.torch_compile_backend or "inductor", mode=args.torch_compile_mode)
                # Trainer builds accelerate's dynamo plugin from the backend alone (set by TrainingArguments whenever
                # torch_compile is): clear it too, or accelerate compiles the whole model, whose outputs h and A
                # are then separate graph outputs that the Grad-CAM gradient finds unused.
                args.torch_compile, args.torch_compile_backend, args.torch_compile_mode = False, None, None
        size = image_size or _model_image_size(config)
        if kwargs.get("processing_class") is None:
            # Saved by Trainer with the model in every checkpoint and the final folder (preprocessor_config.json).
            from .processor import build_image_processor

            kwargs["processing_class"] = build_image_processor(size)
        super().__init__(model=model, args=args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.key_encoder_has_batch_norm = model.has_momentum_branch and has_batch_norm(model.momentum_encoder)
        self.channels_last = oa.channels_last and config.backbone_config.model_type in CONVOLUTIONAL_BACKBONES
        if self.channels_last:
            for encoder in (model.fgssl, model.momentum_encoder):
                if encoder is not None:
                    encoder.to(memory_format=torch.channels_last)
        if config.base == "simsiam" and self.accelerator.num_processes > 1:
            synchronise_head_batch_norm(model, self.objective_args.sync_bn, on_gpu=self.args.device.type != "cpu")
        # The views are normalised as the saved image processor normalises (the starting checkpoint's statistics
        # when it has a processor, ImageNet's otherwise: training.processor).
        from .processor import normalization_kwargs

        stats = normalization_kwargs(self.processing_class)
        self.image_mean, self.image_std = stats.get("image_mean"), stats.get("image_std")
        self.augment = oa.augmentation(size, self.image_mean, self.image_std).to(self.args.device)
        self.image_size = size
        self.pending_keys: list[torch.Tensor] = []
        self.term_sums: dict[str, float] = defaultdict(float)
        self.term_count = 0
        self.pictures: dict[str, torch.Tensor] | None = None
        self.add_callback(MomentumQueueCallback(self))

    def compute_loss_context_manager(self):
        # accelerate autocasts only the wrapped model's forward; the key encoder, the decoder and the synthesized
        # pair run on the unwrapped model inside compute_loss and would stay in fp32 under --bf16.
        return self.accelerator.autocast()

    # ------------------------------------------------------------------------------------------------------------
    # One training step (docs/method.md), read top to bottom.
    # ------------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        oa = self.objective_args
        core = self.accelerator.unwrap_model(model)
        geometric = oa.method == "fgssl" and oa.recon_target == "geometric"
        v1, v2, *rest = self.augment(inputs["pixel_values"], return_geometric=geometric)
        recon_target = rest[0] if geometric else v1
        if self.channels_last:
            v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)

        # 1. SSL loss of the base objective. The online pass goes through the (possibly DDP-wrapped) model so
        # gradients synchronise.
        if core.config.base == "simsiam":
            out, loss_ssl, terms = self._simsiam_loss(model, v1, v2)
        else:
            out, loss_ssl, terms = self._moco_loss(model, core, v1, v2)
        h = out.pooler_output
        loss = loss_ssl

        want_pictures = self._picture_step()
        if oa.method == "lcr":
            cam_inputs = self.gradcam_inputs(core, out, loss_ssl)
            cam = obj.gradcam_map(cam_inputs.loss, cam_inputs.feature_map)
            loss_lcr = obj.lcr_loss(out.screening_logits, cam)
            loss = loss + oa.lcr_weight * loss_lcr
            terms["loss_lcr"] = loss_lcr.detach()
            if want_pictures:
                self._keep_pictures(v1, cam=cam)
        elif oa.method == "fgssl":
            loss, fgssl_terms = self._synthesized_pair_terms(core, loss_ssl, self.gradcam_inputs(core, out, loss_ssl),
                                                             v1, recon_target, h, out.feature_map, want_pictures)
            terms.update(fgssl_terms)
        elif want_pictures:
            cam_inputs = self.gradcam_inputs(core, out, loss_ssl)
            self._keep_pictures(v1, cam=obj.gradcam_map(cam_inputs.loss, cam_inputs.feature_map))

        self._accumulate_terms(terms)
        return (loss, out) if return_outputs else loss

    def momentum_keys(self, core, images: torch.Tensor) -> torch.Tensor:
        """Keys of `images` from the momentum branch (B x d), with Shuffle BN where the backbone has BatchNorm:
        across processes (`shuffle_bn`) and/or in `shuffle_bn_groups` groups per process (training.shuffle_bn)."""
        oa = self.objective_args
        if not self.key_encoder_has_batch_norm:
            return core.momentum_encode(images)
        groups = oa.shuffle_bn_groups
        if self.accelerator.num_processes > 1 and not oa.shuffle_bn:
            return grouped_encode(core.momentum_encode, images, groups) if groups > 1 else core.momentum_encode(images)
        return shuffled_keys(core.momentum_encode, images, groups=groups)

    def _moco_loss(self, model, core, v1, v2):
        """MoCo v2's L_C: InfoNCE of the online queries of v1 against the momentum keys of v2 (and the queue)."""
        out = model(pixel_values=v1)
        k = self.momentum_keys(core, v2)
        negatives = core.queue.clone().detach() if core.queue.shape[0] > 0 else None
        # Every process's keys (rank order): the queue's input and, with in-batch negatives, the negatives of every
        # query, so that they grow with the number of processes.
        gathered = self.accelerator.gather(k.detach())
        offset = self.accelerator.process_index * k.shape[0]
        loss_ssl = obj.info_nce(out.query, k, negatives, self.objective_args.temperature,
                                batch_keys=gathered if self.accelerator.num_processes > 1 else None,
                                batch_offset=offset if self.accelerator.num_processes > 1 else 0)
        self.pending_keys.append(gathered)
        return out, loss_ssl, {"loss_ssl": loss_ssl.detach()}

    def _simsiam_loss(self, model, v1, v2):
        """SimSiam's L_C: both views through the model in one forward (DDP synchronises once), symmetric negative
        cosine with stop-gradient on the targets; `output_std` watches for collapse."""
        out = model(pixel_values=v1, key_pixel_values=v2)
        n = v1.shape[0]
        (z1, z2), (p1, p2) = out.projection.split(n), out.prediction.split(n)
        loss_ssl = obj.simsiam_loss(p1, p2, z1, z2)
        return out, loss_ssl, {"loss_ssl": loss_ssl.detach(), "output_std": obj.output_std(z1)}

    def gradcam_inputs(self, core, out, loss_ssl) -> GradCamInputs:
        """The loss, h and A that the Grad-CAM criteria differentiate (docs/method.md step 3; LCR's map).

        MoCo: L_C itself, on the forward's own h and A (sample i's loss depends on its own query only). SimSiam:
        the heads' BatchNorm couples the samples, so one gradient of L_C mixes every sample's loss into each row;
        instead A is detached, pooled again and sent through the heads with the batch statistics held constant
        (the same values), and the loss is the view-1 half of L_C (`simsiam_scoring_loss`): each row of its
        gradient is that sample's own. The extra pass runs through pooling and heads only, never the backbone.
        """
        if core.config.base != "simsiam":
            return GradCamInputs(loss_ssl, out.pooler_output, out.feature_map)
        feature_map = out.feature_map.detach().requires_grad_(True)
        features = core.fgssl.pool(feature_map)[0]
        _, p1 = core.simsiam_heads(features, freeze_batch_statistics=True)
        z2 = out.projection[feature_map.shape[0]:]
        return GradCamInputs(obj.simsiam_scoring_loss(p1, z2), features, feature_map)

    def _synthesized_pair_terms(self, core, loss_ssl, cam_inputs, v1, recon_target, h, feature_map, want_pictures):
        oa = self.objective_args
        by_map = core.config.decoder_input == "feature_map"
        # 2-5. Variance and Grad-CAM criteria, mask, perturbation of detached copies of h (and A).
        pert = obj.nuisance_perturbation(
            cam_inputs.loss, cam_inputs.features, core.variance_tracker, rho_variance=oa.rho_variance,
            rho_gradcam=oa.rho_gradcam, mask_mode=oa.mask_mode, perturbation=oa.perturbation, sigma=oa.sigma,
            scale=oa.noise_scale, feature_map=cam_inputs.feature_map if by_map else None,
        )
        # 6. Synthesis and reconstruction loss; L_R reaches the encoder with a small weight.
        recon = core.decode(scale_grad(feature_map if by_map else h, oa.recon_encoder_weight))
        loss_recon = obj.reconstruction_loss(recon, recon_target)
        loss = loss_ssl + oa.alpha * loss_recon
        # 7. Synthesized-pair loss on (a fraction of) the batch, once the decoder has warmed up.
        weight = obj.synth_loss_weight(self.state.global_step, oa.nu, oa.synth_warmup_steps, oa.synth_ramp_steps)
        terms = {"loss_recon": loss_recon.detach(), "synth_weight": weight}
        if weight > 0 or want_pictures:
            # SimSiam's BatchNorm needs two images a batch, also on the synthesized subset.
            minimum = 2 if core.config.base == "simsiam" else 1
            idx = obj.synth_subset(h.shape[0], oa.synth_fraction, minimum=minimum).to(h.device)
            with torch.no_grad():  # the synthesized images are inputs: L_Cp trains the encoder, not the decoder
                x_hat = recon[idx].detach()
                x_hat_perturbed = core.decode((pert.feature_map if by_map else pert.features)[idx])
            if weight > 0:
                loss_synth = self._synthesized_pair_loss(core, x_hat_perturbed, x_hat)
                # 8. Total.
                loss = loss + weight * loss_synth
                terms["loss_synth"] = loss_synth.detach()
            if want_pictures:
                self._keep_pictures(v1[idx], recon=x_hat, perturbed=x_hat_perturbed,
                                    target=recon_target[idx] if recon_target is not v1 else None,
                                    cam=obj.gradcam_map(cam_inputs.loss, cam_inputs.feature_map)[idx])
        mask = pert.mask
        terms["frac_perturbed"] = mask.float().mean()
        var = core.variance_tracker.var.unsqueeze(0).expand_as(mask)
        if mask.any():
            terms["var_perturbed"] = var[mask].mean()
        if (~mask).any():
            terms["var_kept"] = var[~mask].mean()
        return loss, terms

    def _synthesized_pair_loss(self, core, perturbed, original):
        """L_Cp (docs/method.md step 7) of the images decoded from h' (`perturbed`) and h (`original`), n x 3 x S x S.

        MoCo: the perturbed image is the query, the original one the key of the momentum branch, the other
        synthesized keys the negatives. SimSiam: both through the encoder and heads, its symmetric loss. With
        `synth_recompute` the online pass over the synthesized images is recomputed in backward instead of keeping
        its activations (activation checkpointing).
        """
        perturbed, original = self.to_input_size(perturbed), self.to_input_size(original)
        if core.config.base == "simsiam":
            def pair_loss(a, b):
                pair = core(pixel_values=a, key_pixel_values=b)
                n = a.shape[0]
                (z1, z2), (p1, p2) = pair.projection.split(n), pair.prediction.split(n)
                return obj.simsiam_loss(p1, p2, z1, z2)

            return self._maybe_recompute(pair_loss, perturbed, original)
        query = lambda x: core.project(core.encode(x).pooler_output)  # noqa: E731
        q = self._maybe_recompute(query, perturbed)
        return obj.info_nce(q, self.momentum_keys(core, original), None, self.objective_args.temperature)

    def _maybe_recompute(self, fn, *inputs):
        if self.objective_args.synth_recompute:
            return checkpoint(fn, *inputs, use_reentrant=False)
        return fn(*inputs)

    def to_input_size(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded images (S x S) are resized up to the encoder's input size before they are encoded."""
        if images.shape[-1] == self.image_size:
            return images
        return F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------------------------------------------------
    # Once per optimiser step (called by MomentumQueueCallback.on_step_end)
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def momentum_and_queue_step(self):
        core = self.accelerator.unwrap_model(self.model)
        if not core.has_momentum_branch:  # SimSiam: no momentum branch, no queue
            return
        core.update_momentum()
        if self.pending_keys:
            core.enqueue(torch.cat(self.pending_keys))
        self.pending_keys = []

    # ------------------------------------------------------------------------------------------------------------
    # Logging of every loss term, pictures
    # ------------------------------------------------------------------------------------------------------------
    def _accumulate_terms(self, terms):
        for name, value in terms.items():
            self.term_sums[name] += float(value)
        self.term_count += 1

    def log(self, logs, *args, **kwargs):
        if self.term_count and "loss" in logs:
            logs.update({name: round(total / self.term_count, 5) for name, total in self.term_sums.items()})
            self.term_sums = defaultdict(float)
            self.term_count = 0
        super().log(logs, *args, **kwargs)

    #: Sheets over a run when picture_steps is 0 (the last step always adds one).
    AUTO_PICTURES = 4

    def picture_every(self) -> int:
        """Steps between two sheets: `picture_steps`, or max_steps / AUTO_PICTURES when it is 0."""
        every = self.objective_args.picture_steps
        if every > 0:
            return every
        return max(1, -(-int(self.state.max_steps or 0) // self.AUTO_PICTURES)) if self.state.max_steps else 0

    def _picture_step(self) -> bool:
        every = self.picture_every()
        step = self.state.global_step
        last = self.state.max_steps and step == self.state.max_steps - 1
        # Automatic sheets skip step 0 (an untrained decoder draws noise); an explicit picture_steps keeps it.
        periodic = every > 0 and step % every == 0 and (step > 0 or self.objective_args.picture_steps > 0)
        return self.is_world_process_zero() and (periodic or bool(last))

    def synth_schedule(self) -> tuple[int, int] | None:
        """(warm-up steps, ramp steps) of the synthesized-pair loss for the curves; None when the method has none."""
        oa = self.objective_args
        return (oa.synth_warmup_steps, oa.synth_ramp_steps) if oa.method == "fgssl" else None

    def _keep_pictures(self, images, recon=None, perturbed=None, cam=None, target=None, count: int = 8):
        pictures = {"input": images[:count].detach().float().cpu()}
        for name, value in (("target", target), ("reconstruction", recon), ("perturbed", perturbed), ("gradcam", cam)):
            if value is not None:
                pictures[name] = value[:count].detach().float().cpu()
        self.pictures = pictures
        self.pictures_step = self.state.global_step

    def write_pictures(self, directory: str | Path) -> Path | None:
        """Save the last kept sheet as PNG: input / reconstruction / perturbed reconstruction / Grad-CAM; also to
        TensorBoard (tag `pairs`, at the sheet's step) while a TensorBoard writer is open (`report_to` has it)."""
        if not self.pictures:
            return None
        from .pictures import save_pair_sheet

        path = Path(directory) / f"pairs_step{self.pictures_step:06d}.png"
        save_pair_sheet(self.pictures, path, title=f"{self.objective_args.method} step {self.pictures_step}",
                        mean=self.image_mean, std=self.image_std)
        if self.pictures_step != getattr(self, "_tensorboard_pictures_step", None):
            writer = self._tensorboard_writer()
            if writer is not None:
                import numpy as np
                from PIL import Image

                with Image.open(path) as sheet:
                    writer.add_image("pairs", np.asarray(sheet.convert("RGB")), self.pictures_step, dataformats="HWC")
                writer.flush()
                self._tensorboard_pictures_step = self.pictures_step
        return path

    def _tensorboard_writer(self):
        """The SummaryWriter of the TensorBoard callback (report_to tensorboard) while training, else None."""
        from transformers.integrations import TensorBoardCallback

        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and getattr(callback, "tb_writer", None) is not None:
                return callback.tb_writer
        return None


class MomentumQueueCallback(TrainerCallback):
    """Momentum update + enqueue after each optimiser step; PNG sheets when due."""

    def __init__(self, trainer: FGSSLTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.momentum_and_queue_step()
        # A sheet kept during this step (see FGSSLTrainer._picture_step) is written now, and sent to TensorBoard.
        if self.trainer.pictures is not None and state.is_world_process_zero:
            if self.trainer.pictures_step == state.global_step - 1:
                self.trainer.write_pictures(Path(args.output_dir) / "pictures")


def synchronise_head_batch_norm(model, wanted: bool | None, on_gpu: bool) -> bool:
    """SimSiam on several processes: the projector's and predictor's BatchNorm normalise by the statistics of the
    whole global batch (SyncBatchNorm), as SimSiam's reference code does. `wanted` None = on for GPU processes;
    torch's SyncBatchNorm runs on accelerators only, so CPU processes keep per-process BN. Returns whether it did."""
    if wanted and not on_gpu:
        raise ValueError("--sync_bn true needs GPU processes (torch's SyncBatchNorm has no CPU kernel); leave it "
                         "unset on CPU.")
    if wanted is False or not on_gpu:
        return False
    model.projector = nn.SyncBatchNorm.convert_sync_batchnorm(model.projector)
    model.predictor = nn.SyncBatchNorm.convert_sync_batchnorm(model.predictor)
    return True


def compile_networks(model, **compile_kwargs) -> None:
    """`torch.compile` (in place) the networks one training step runs: the backbones of the encoder and of the
    momentum encoder, and the decoder.

    The backbones, not the whole encoders: pooling stays eager, so `h` and `A` are the very tensors the loss is
    computed from. A compiled encoder returns them as separate graph outputs, and the Grad-CAM gradient of L_C with
    respect to `h` then finds `h` unused (measured on the GPU check; tests/test_trainer.py)."""
    for encoder in (getattr(model, "fgssl", None), getattr(model, "momentum_encoder", None)):
        if encoder is not None:
            encoder.backbone.compile(**compile_kwargs)
    if getattr(model, "decoder", None) is not None:
        model.decoder.compile(**compile_kwargs)


def _model_image_size(config) -> int:
    size = config.image_size or getattr(config.backbone_config, "image_size", 224)
    return size[0] if isinstance(size, (list, tuple)) else int(size)


__all__ = ["FGSSLTrainer", "ObjectiveArguments", "MomentumQueueCallback", "METHODS", "GradCamInputs", "scale_grad"]
