"""`FGSSLTrainer`: a transformers `Trainer` whose `compute_loss` is one training step of docs/method.md.

`compute_loss` draws the two views and hands them to the training objective (`training/methods.py`): the base
objective of the model (`config.base`, MoCo v2 or SimSiam: `training/bases.py`) and what the method adds on top
(`ObjectiveArguments.method`), composed once by `build_objective`. With MoCo, once per optimiser step (not per
micro-batch) a callback updates the momentum branch and pushes the keys of the whole step (gathered from every
process) into the queue, so gradient accumulation of n x B and steps of n*B do the same MoCo bookkeeping, and every
rank holds the same queue; SimSiam has neither, and the callback does nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from . import objective as obj
from .augment import TwoViewAugment
from .bases import GradCamInputs
from .checkpoints import SafeCheckpointMixin
from .methods import Views, build_objective, check_model_for_method, to_input_size
from .portable import SafeSaveMixin
from .pretrained import trained_image_size

#: What is added to the base objective (config.base, MoCo v2 or SimSiam): nothing ("plain": plain MoCo v2 or plain
#: SimSiam), LCR, or the synthesized pairs of this method.
METHODS = ("plain", "lcr", "fgssl")
#: Backbone model types whose encoders `channels_last` converts (convolutions; ViT-like backbones gain nothing).
CONVOLUTIONAL_BACKBONES = ("resnet", "convnext", "convnextv2", "regnet", "efficientnet", "mobilenet_v2")
#: Spellings of --method that are refused with their new name. "moco" meant "the base alone" from before SimSiam
#: existed, so `--base simsiam --method moco` was plain SimSiam; run folders written then still say "moco".
RENAMED_METHODS = {"moco": "plain"}


def canonical_method(name: str | None) -> str | None:
    """The method a saved run folder (training_config.json, a card) names, in today's spelling ("moco" -> "plain")."""
    return RENAMED_METHODS.get(name, name)


def refuse_renamed_method(name: str) -> None:
    """A one-line error for an old spelling of --method, naming the new one."""
    if name in RENAMED_METHODS:
        raise ValueError(f"--method {name} is now --method {RENAMED_METHODS[name]} (the base objective alone: "
                         f"--base moco trains plain MoCo v2, --base simsiam plain SimSiam).")


@dataclass
class ObjectiveArguments:
    """Knobs of the objective (docs/method.md); every [choice] of docs/method.md is one of them."""

    method: str = field(
        default="fgssl",
        metadata={"help": f"One of {METHODS} on the base objective (--base, MoCo v2 or SimSiam): the base alone "
                          "('plain'), LCR, or the synthesized pairs of this method."},
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
        metadata={"help": "Recompute in backward, instead of keeping, the activations of the method's two extra "
                          "passes: the decoder's for L_R (diffusers' gradient checkpointing of D) and the synthesized "
                          "queries' for L_Cp. Less peak memory for one more forward of each (GPU recipes)."},
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
        refuse_renamed_method(self.method)
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

    @classmethod
    def from_run_folder(cls, run_dir: str | Path) -> ObjectiveArguments:
        """The knobs a pre-training run was trained with: the "objective" of its `training_config.json`. Knobs the
        file predates take their defaults; knobs it names that no longer exist are left out."""
        path = Path(run_dir) / "training_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} holds no training_config.json: not a finished pre-training run.")
        saved = json.loads(path.read_text()).get("objective") or {}
        knobs = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        if "method" in knobs:
            knobs["method"] = canonical_method(knobs["method"])
        return cls(**knobs)


class FGSSLTrainer(SafeCheckpointMixin, SafeSaveMixin, Trainer):
    """Trainer for `FGSSLForPreTraining` with the objective of docs/method.md (`method="fgssl"`) or a baseline.

    Batches hold `pixel_values` as uint8 (decoded and resized once by `training.data`); the two augmented views are
    drawn on the training device. Every save (checkpoints, final folder) also writes the image processor
    (`processing_class`, default `training.processor.build_image_processor(image_size)`) and a `training_args.bin`
    without the Hub token or absolute paths (`SafeSaveMixin`). Checkpoints are written whole or not at all, a
    non-finite loss stops the run, nothing non-finite is saved (`checkpoints.SafeCheckpointMixin`).
    """

    def __init__(self, model=None, args: TrainingArguments = None, objective_args: ObjectiveArguments = None,
                 image_size: int | None = None, **kwargs):
        self.objective_args = objective_args or ObjectiveArguments()
        oa = self.objective_args
        config = model.config
        check_model_for_method(oa.method, model)
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
        size = image_size or trained_image_size(config)
        if kwargs.get("processing_class") is None:
            # Saved by Trainer with the model in every checkpoint and the final folder (preprocessor_config.json).
            from .processor import build_image_processor

            kwargs["processing_class"] = build_image_processor(size)
        super().__init__(model=model, args=args, **kwargs)
        self.model_accepts_loss_kwargs = False
        # The base objective and the method's additions: the one place the base and the method are switched on.
        self.training_objective = build_objective(oa, model, self.accelerator, size)
        # training_step asks compute_loss to defer L_Cp (one process); compute_loss hands it back here.
        self._defer_pair_loss, self._deferred_loss = False, None
        self.channels_last = oa.channels_last and config.backbone_config.model_type in CONVOLUTIONAL_BACKBONES
        if self.channels_last:
            for encoder in (model.fgssl, model.momentum_encoder):
                if encoder is not None:
                    encoder.to(memory_format=torch.channels_last)
        if oa.synth_recompute and model.decoder is not None:  # D's activations recomputed in backward (diffusers)
            model.decoder.enable_gradient_checkpointing()
        if self.base_objective.heads_have_batch_norm and self.accelerator.num_processes > 1:
            synchronise_head_batch_norm(model, self.objective_args.sync_bn, on_gpu=self.args.device.type != "cpu")
        # The views are normalised as the saved image processor normalises (the starting checkpoint's statistics
        # when it has a processor, ImageNet's otherwise: training.processor).
        from .processor import normalization_kwargs

        stats = normalization_kwargs(self.processing_class)
        self.image_mean, self.image_std = stats.get("image_mean"), stats.get("image_std")
        self.augment = oa.augmentation(size, self.image_mean, self.image_std).to(self.args.device)
        self.image_size = size
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
        core = self.accelerator.unwrap_model(model)
        step = self.training_objective.loss(model, core, self.views(inputs["pixel_values"], inputs.get("valid_hw")),
                                            self.state.global_step, want_pictures=self._picture_step(),
                                            defer_pair=self._defer_pair_loss)
        if step.pictures is not None:
            self.keep_pictures(step.pictures)
        self._accumulate_terms(step.terms)
        self._deferred_loss = step.deferred
        return (step.loss, step.output) if return_outputs else step.loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's step (forward, backward of the loss), then, in one process, the synthesized-pair loss L_Cp
        forward and backward on its own: its graph shares nothing with the rest of the step's (the synthesized images
        are inputs), so the gradients are those of one backward of the total, but the activations of the two passes
        are never held together (the peak is the larger pass's, not their sum). Several processes keep one backward:
        DDP synchronises the gradients once per backward. Returns the total loss (detached, scaled as the Trainer
        scales it for gradient accumulation)."""
        self._defer_pair_loss = self.accelerator.num_processes == 1
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._defer_pair_loss = False
        deferred, self._deferred_loss = self._deferred_loss, None
        if deferred is None:
            return loss
        with self.compute_loss_context_manager():
            loss_synth = deferred.compute()
        # Scaled as Trainer.training_step scales the rest (this Trainer's loss is never pre-scaled for accumulation).
        pair = deferred.weight * loss_synth / self.current_gradient_accumulation_steps
        self.accelerator.backward(pair)
        self._accumulate_terms({"loss_synth": loss_synth.detach()}, new_batch=False)
        return self.refuse_non_finite_loss(loss + pair.detach())

    def views(self, pixel_values: torch.Tensor, valid_hw: torch.Tensor | None = None) -> Views:
        """The two augmented views of a uint8 batch (B x 3 x H x W), on the training device, and the target of L_R
        (v1's crop and flip without the photometric steps where the method reconstructs that: docs/method.md step
        6); channels_last where the encoders are. `valid_hw` (B x 2, a cache with room: training.data
        `cache_size_factor` > 1): each image's valid region, where its crops are drawn."""
        geometric = self.training_objective.addition.needs_geometric_target
        if valid_hw is None:
            v1, v2, *rest = self.augment(pixel_values, return_geometric=geometric)
        else:
            v1, v2, *rest = self.augment(pixel_values, return_geometric=geometric, valid_hw=valid_hw)
        recon_target = rest[0] if geometric else v1
        if self.channels_last:
            v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
        return Views(v1, v2, recon_target)

    @property
    def base_objective(self):
        """The model's base objective (`training.bases.MoCoObjective` or `SimSiamObjective`)."""
        return self.training_objective.base

    @property
    def key_encoder_has_batch_norm(self) -> bool:
        """Whether MoCo's key encoder has BatchNorm (then its keys are computed with Shuffle BN)."""
        return self.base_objective.key_encoder_has_batch_norm

    @property
    def pending_keys(self) -> list[torch.Tensor]:
        """MoCo: the keys of this optimiser step's micro-batches, waiting for the queue (SimSiam: none)."""
        return self.base_objective.pending_keys

    def momentum_keys(self, core, images: torch.Tensor) -> torch.Tensor:
        """Keys of `images` from the momentum branch (B x d), with Shuffle BN where the backbone has BatchNorm:
        across processes (`shuffle_bn`) and/or in `shuffle_bn_groups` groups per process (training.shuffle_bn)."""
        return self.base_objective.momentum_keys(core, images)

    def gradcam_inputs(self, core, out, loss_ssl) -> GradCamInputs:
        """The loss, h and A that the Grad-CAM criteria differentiate (docs/method.md step 3; LCR's map): the base
        objective's `gradcam_inputs` (training.bases)."""
        return self.base_objective.gradcam_inputs(core, out, loss_ssl)

    def to_input_size(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded images (S x S) are resized up to the encoder's input size before they are encoded."""
        return to_input_size(images, self.image_size)

    def clip_gradients(self, model) -> float | torch.Tensor | None:
        """Clip the gradients to `max_grad_norm` as the Trainer's loop does before each optimiser step (nothing when
        it is 0); returns the norm before clipping, or None."""
        return self._clip_grad_norm(model) if self.args.max_grad_norm > 0 else None

    # ------------------------------------------------------------------------------------------------------------
    # Once per optimiser step (called by MomentumQueueCallback.on_step_end)
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def momentum_and_queue_step(self):
        """The base objective's bookkeeping once per optimiser step: MoCo's momentum update and enqueue (SimSiam:
        nothing)."""
        self.training_objective.after_optimizer_step(self.accelerator.unwrap_model(self.model))

    # ------------------------------------------------------------------------------------------------------------
    # Logging of every loss term, pictures
    # ------------------------------------------------------------------------------------------------------------
    def _accumulate_terms(self, terms, new_batch: bool = True):
        """Add one micro-batch's `terms` to the sums logged as means; `new_batch=False`: more terms of the same one."""
        for name, value in terms.items():
            self.term_sums[name] += float(value)
        self.term_count += int(new_batch)

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
        return self.training_objective.addition.synth_schedule()

    #: The rows of a picture sheet, in order (input, then what the method shows of it).
    PICTURE_ROWS = ("input", "target", "reconstruction", "perturbed", "gradcam")

    def keep_pictures(self, images: dict[str, torch.Tensor], count: int = 8) -> None:
        """Keep the first `count` images of each row (`PICTURE_ROWS`; None rows left out) for the sheet of this step,
        which `MomentumQueueCallback` writes at the step's end."""
        self.pictures = {name: images[name][:count].detach().float().cpu()
                         for name in self.PICTURE_ROWS if images.get(name) is not None}
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


__all__ = ["FGSSLTrainer", "ObjectiveArguments", "MomentumQueueCallback", "METHODS"]
