"""What each method adds to the base objective, and one training step's loss composed of the two.

docs/method.md "Baselines in the same harness": on the base objective (`training/bases.py`, MoCo v2 or SimSiam),

- `BaseAlone` (`--method plain`) adds nothing;
- `LCRScreening` (`--method lcr`, LCR, CVPR 2023) adds the KL term between the screening map and the Grad-CAM map
  of L_C;
- `SynthesizedPairs` (`--method fgssl`) adds steps 2-8 of "One training step": the nuisance perturbation
  (`perturbation_step`, steps 2-5, the one call the trainer and the benchmarks share), the reconstruction loss
  L_R and the synthesized-pair loss L_Cp.

`build_objective(objective_args, model)` composes a `TrainingObjective` from the base (the model's `config.base`)
and the method (`ObjectiveArguments.method`): the one place both are switched on. `FGSSLTrainer.compute_loss` calls
its `loss`. Shapes: B batch, C feature size, H x W feature map, S decoded image side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import objective as obj
from .bases import GradCamInputs, MoCoObjective, SimSiamObjective, SSLLoss, build_base_objective
from .pretrained import trained_image_size


class Views(NamedTuple):
    """The two augmented views of a batch, B x 3 x H x W, and the target of L_R (`v1` itself, or v1's crop and flip
    without the photometric steps: docs/method.md step 6 [choice])."""

    v1: Tensor
    v2: Tensor
    recon_target: Tensor


class DeferredLoss(NamedTuple):
    """A term of the step's loss left out of `StepLoss.loss`, to be computed and back-propagated after it: `weight`
    times `compute()`. Its graph shares nothing with the rest of the step's (its inputs are detached), so the two
    backward passes give the same gradients as one, and the activations of the two graphs are never held together."""

    weight: float
    compute: Callable[[], Tensor]


class StepLoss(NamedTuple):
    """One training step's total `loss`, the forward's `output`, the detached `terms` to log, and the images of a
    picture sheet when asked for (`input`, `target`, `reconstruction`, `perturbed`, `gradcam`; or None). When the
    step was asked to defer the synthesized-pair loss, `loss` lacks it and `deferred` holds it (else None)."""

    loss: Tensor
    output: object
    terms: dict
    pictures: dict | None
    deferred: DeferredLoss | None = None


def scale_grad(x: Tensor, weight: float) -> Tensor:
    """Identity forward; backward multiplies the gradient by `weight` (L_R trains the encoder only a little)."""
    if weight == 1.0:
        return x
    detached = x.detach()
    return detached if weight == 0.0 else detached + weight * (x - detached)


def to_input_size(images: Tensor, size: int) -> Tensor:
    """Decoded images (n x 3 x S x S) resized up to the encoder's input size `size` before they are encoded."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def decodes_feature_map(core) -> bool:
    """Whether the decoder of `core` (FGSSLForPreTraining) decodes A (`feature_map`) rather than h (`pooled`)."""
    return core.config.decoder_input == "feature_map"


def perturbation_step(core, cam: GradCamInputs, objective_args, *, update_statistics: bool = True,
                      generator: torch.Generator | None = None) -> obj.Perturbation:
    """docs/method.md steps 2-5 of a batch: `objective.nuisance_perturbation` with the knobs of `objective_args`
    (`ObjectiveArguments`: rho_variance, rho_gradcam, mask_mode, perturbation, sigma, noise_scale) and the running
    statistics of `core` (FGSSLForPreTraining); A is perturbed with h when the decoder decodes A.

    Args:
        cam: the base objective's `gradcam_inputs` (training) or `frozen_gradcam_inputs` (analysis).
        update_statistics: False to read the running statistics without folding this batch in (analysis).
        generator: random source of the mask (`random`) and the perturbation (default: torch's global one).

    Returns:
        `objective.Perturbation`: V, the scores, G_i, the mask M (B x C), h' (B x C) and A' (or None).
    """
    oa = objective_args
    return obj.nuisance_perturbation(
        cam.loss, cam.features, core.variance_tracker, rho_variance=oa.rho_variance, rho_gradcam=oa.rho_gradcam,
        mask_mode=oa.mask_mode, perturbation=oa.perturbation, sigma=oa.sigma, scale=oa.noise_scale,
        feature_map=cam.feature_map if decodes_feature_map(core) else None,
        update_statistics=update_statistics, generator=generator,
    )


def mask_terms(perturbation: obj.Perturbation, tracker) -> dict:
    """Logged terms of the mask M: the fraction perturbed, and the mean running variance of the perturbed and of
    the kept dimensions (`tracker`: the model's VarianceTracker)."""
    mask = perturbation.mask
    terms = {"frac_perturbed": mask.float().mean()}
    var = tracker.var.unsqueeze(0).expand_as(mask)
    if mask.any():
        terms["var_perturbed"] = var[mask].mean()
    if (~mask).any():
        terms["var_kept"] = var[~mask].mean()
    return terms


class BaseAlone:
    """`--method plain`: the base objective alone (no decoder, mean pooling); a sheet shows the Grad-CAM map."""

    needs_decoder = False
    needs_screening = False
    needs_geometric_target = False

    @classmethod
    def from_arguments(cls, objective_args, image_size: int | None = None) -> BaseAlone:
        return cls()

    def synth_schedule(self) -> tuple[int, int] | None:
        """No synthesized-pair loss, no schedule."""
        return None

    def loss(self, base, core, ssl: SSLLoss, views: Views, step: int, want_pictures: bool, defer_pair: bool = False):
        """(L_C, no terms, the sheet's images when `want_pictures`, nothing deferred)."""
        pictures = None
        if want_pictures:
            cam = base.gradcam_inputs(core, ssl.output, ssl.loss)
            pictures = {"input": views.v1, "gradcam": obj.gradcam_map(cam.loss, cam.feature_map)}
        return ssl.loss, {}, pictures, None


class LCRScreening(BaseAlone):
    """`--method lcr` (LCR, CVPR 2023): the screening pooling trained with a KL term, weight `lcr_weight`, towards the
    Grad-CAM map of L_C (docs/method.md "Baselines in the same harness")."""

    needs_screening = True

    def __init__(self, weight: float = 0.01):
        self.weight = weight

    @classmethod
    def from_arguments(cls, objective_args, image_size: int | None = None) -> LCRScreening:
        return cls(objective_args.lcr_weight)

    def screening_loss(self, base, core, ssl: SSLLoss) -> tuple[Tensor, Tensor]:
        """(LCR's KL term, scalar; the Grad-CAM map of L_C it matches, B x H x W)."""
        cam_inputs = base.gradcam_inputs(core, ssl.output, ssl.loss)
        cam = obj.gradcam_map(cam_inputs.loss, cam_inputs.feature_map)
        return obj.lcr_loss(ssl.output.screening_logits, cam), cam

    def loss(self, base, core, ssl: SSLLoss, views: Views, step: int, want_pictures: bool, defer_pair: bool = False):
        loss_lcr, cam = self.screening_loss(base, core, ssl)
        pictures = {"input": views.v1, "gradcam": cam} if want_pictures else None
        return ssl.loss + self.weight * loss_lcr, {"loss_lcr": loss_lcr.detach()}, pictures, None


class SynthesizedPairs(BaseAlone):
    """`--method fgssl`: docs/method.md steps 2-8 on top of the base's L_C.

    Args:
        objective_args: `ObjectiveArguments` (its steps 2-8 knobs).
        image_size: the encoder's input size; the decoded images are resized to it before they are encoded.
    """

    needs_decoder = True

    def __init__(self, objective_args, image_size: int):
        self.args = objective_args
        self.image_size = image_size

    @classmethod
    def from_arguments(cls, objective_args, image_size: int | None = None) -> SynthesizedPairs:
        return cls(objective_args, image_size)

    @property
    def needs_geometric_target(self) -> bool:
        return self.args.recon_target == "geometric"

    def synth_schedule(self) -> tuple[int, int]:
        """(warm-up steps, ramp steps) of L_Cp's weight."""
        return self.args.synth_warmup_steps, self.args.synth_ramp_steps

    def reconstruct(self, core, features: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Step 6: (`D(features)`, B x 3 x S x S; L_R against `target`). `features` (h or A, as the decoder takes)
        reach the encoder's gradient scaled by `recon_encoder_weight`."""
        recon = core.decode(scale_grad(features, self.args.recon_encoder_weight))
        return recon, obj.reconstruction_loss(recon, target)

    @torch.no_grad()
    def synthesized_images(self, core, recon: Tensor, perturbation: obj.Perturbation,
                           idx: Tensor) -> tuple[Tensor, Tensor]:
        """Step 7's inputs, (x_hat, x_hat'), n x 3 x S x S: the rows `idx` of D(h) and the decoding of h' (or A').
        Without gradient: the synthesized images are inputs (L_Cp trains the encoder, not the decoder)."""
        perturbed = perturbation.feature_map if decodes_feature_map(core) else perturbation.features
        return recon[idx].detach(), core.decode(perturbed[idx])

    def pair_loss(self, base, core, perturbed: Tensor, original: Tensor) -> Tensor:
        """Step 7: the base's L_Cp of x_hat' (`perturbed`) and x_hat (`original`), resized to the input size."""
        return base.synthesized_pair_loss(core, to_input_size(perturbed, self.image_size),
                                          to_input_size(original, self.image_size),
                                          recompute=self.args.synth_recompute)

    def loss(self, base, core, ssl: SSLLoss, views: Views, step: int, want_pictures: bool, defer_pair: bool = False):
        """(L = L_C + alpha L_R + nu(step) L_Cp, its terms, the sheet's images when `want_pictures`, None); with
        `defer_pair`, (L_C + alpha L_R, ..., nu(step) L_Cp as a `DeferredLoss`) when L_Cp is on this step."""
        oa = self.args
        out = ssl.output
        h = out.pooler_output
        # 2-5. Variance and Grad-CAM criteria, mask, perturbation of detached copies of h (and A).
        cam = base.gradcam_inputs(core, out, ssl.loss)
        perturbation = perturbation_step(core, cam, oa)
        # 6. Synthesis and reconstruction loss; L_R reaches the encoder with a small weight.
        recon, loss_recon = self.reconstruct(core, core.decoder_features(out), views.recon_target)
        loss = ssl.loss + oa.alpha * loss_recon
        # 7. Synthesized-pair loss on (a fraction of) the batch, once the decoder has warmed up.
        weight = obj.synth_loss_weight(step, oa.nu, oa.synth_warmup_steps, oa.synth_ramp_steps)
        terms = {"loss_recon": loss_recon.detach(), "synth_weight": weight}
        pictures, deferred = None, None
        if weight > 0 or want_pictures:
            idx = obj.synth_subset(h.shape[0], oa.synth_fraction, minimum=base.min_pair_batch).to(h.device)
            x_hat, x_hat_perturbed = self.synthesized_images(core, recon, perturbation, idx)
            if weight > 0 and defer_pair:  # the synthesized images are inputs: L_Cp's graph is a separate one
                deferred = DeferredLoss(weight, lambda: self.pair_loss(base, core, x_hat_perturbed, x_hat))
            elif weight > 0:
                loss_synth = self.pair_loss(base, core, x_hat_perturbed, x_hat)
                # 8. Total.
                loss = loss + weight * loss_synth
                terms["loss_synth"] = loss_synth.detach()
            if want_pictures:
                pictures = {"input": views.v1[idx], "reconstruction": x_hat, "perturbed": x_hat_perturbed,
                            "target": views.recon_target[idx] if views.recon_target is not views.v1 else None,
                            "gradcam": obj.gradcam_map(cam.loss, cam.feature_map)[idx]}
        terms.update(mask_terms(perturbation, core.variance_tracker))
        return loss, terms, pictures, deferred


#: `ObjectiveArguments.method` -> what it adds to the base objective.
METHOD_ADDITIONS = {"plain": BaseAlone, "lcr": LCRScreening, "fgssl": SynthesizedPairs}


def check_model_for_method(method: str, model) -> None:
    """Refuse a model (FGSSLForPreTraining) whose parts do not fit `method`: fgssl trains a decoder and only it, LCR
    pools with the screening map and only it."""
    addition = METHOD_ADDITIONS[method]
    if addition.needs_decoder and model.decoder is None:
        raise ValueError(f"method={method!r} needs a decoder: build the model with FGSSLConfig(use_decoder=True).")
    if not addition.needs_decoder and model.decoder is not None:
        raise ValueError(f"method={method!r} trains no decoder: build the model with use_decoder=False.")
    if addition.needs_screening != (model.config.pooling == "screening"):
        raise ValueError("method='lcr' goes with pooling='screening', and only it.")


class TrainingObjective:
    """One training step's loss (docs/method.md "One training step"): the base objective's L_C (step 1), then what the
    method adds on top. `base`: `MoCoObjective` or `SimSiamObjective`; `addition`: `BaseAlone`, `LCRScreening` or
    `SynthesizedPairs`."""

    def __init__(self, base: MoCoObjective | SimSiamObjective, addition: BaseAlone):
        self.base = base
        self.addition = addition

    def loss(self, model, core, views: Views, step: int, want_pictures: bool = False,
             defer_pair: bool = False) -> StepLoss:
        """The loss of one (micro-)batch at optimiser step `step`. `model` is the (possibly DDP-wrapped) model, `core`
        the same model unwrapped; `want_pictures`: also return the images of a picture sheet; `defer_pair`: leave
        the synthesized-pair loss out of `loss` and return it as `deferred` (`FGSSLTrainer.training_step`)."""
        # 1. SSL loss of the base objective; the online pass goes through `model` so that gradients synchronise.
        ssl = self.base.ssl_loss(model, core, views.v1, views.v2)
        loss, terms, pictures, deferred = self.addition.loss(self.base, core, ssl, views, step, want_pictures,
                                                             defer_pair)
        return StepLoss(loss, ssl.output, {**ssl.terms, **terms}, pictures, deferred)

    def after_optimizer_step(self, core) -> None:
        """Once per optimiser step: the base's bookkeeping (MoCo: momentum update and enqueue)."""
        self.base.after_optimizer_step(core)


def build_objective(objective_args, model, accelerator=None, image_size: int | None = None) -> TrainingObjective:
    """The training objective of `ObjectiveArguments` for `model` (FGSSLForPreTraining): its base from
    `config.base`, its addition from `objective_args.method`. `accelerator`: the Trainer's (None: one process);
    `image_size`: the encoder's input size (fgssl resizes the decoded images to it; default: the size the model's
    config names, `pretrained.trained_image_size`)."""
    check_model_for_method(objective_args.method, model)
    size = image_size or trained_image_size(model.config)
    addition = METHOD_ADDITIONS[objective_args.method].from_arguments(objective_args, size)
    return TrainingObjective(build_base_objective(objective_args, model, accelerator), addition)


__all__ = ["BaseAlone", "DeferredLoss", "LCRScreening", "METHOD_ADDITIONS", "StepLoss", "SynthesizedPairs",
           "TrainingObjective", "Views", "build_objective", "check_model_for_method", "decodes_feature_map", "mask_terms",
           "perturbation_step", "scale_grad", "to_input_size"]
