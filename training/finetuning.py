"""Fine-grained classification on an fgssl encoder (or any backbone) with transformers Trainer, as library
functions (the command is training.finetune).

    build_classifier(name, num_labels)     FGSSLForImageClassification: the encoder `f` (mean-pooled `h`) of an
                                           fgssl checkpoint or a plain backbone (training.pretrained) + a new head
    apply_lora(model, r, alpha, ...)       peft LoRA adapters on the backbone's attention / pointwise layers (per
                                           backbone type, LORA_TARGET_MODULES), the head trained in full
    few_shot_indices(labels, k, seed)      k labelled images per class
    make_trainer(model, args, train, ...)  Trainer: augmented training batches, deterministic evaluation batches,
                                           accuracy (the repository's `accuracy` evaluate module)
    save_finetuned(model, output_dir)      adapter/ + merged/ (LoRA) or model/, each with the image processor
    write_finetune_cards(paths)            a model card in each saved folder
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from kornia import augmentation as K
from transformers import Trainer, TrainingArguments

from .arguments import FINETUNE_METHODS
from .augment import (DEFAULT_CROP_PCT, crop_flip_resize, eval_transform, eval_transform_regions, normalize_images,
                      sample_region_boxes)
from .cli import (UsageError, refuse_bad_inputs, refuse_below_one, refuse_no_training, refuse_non_finite,
                  refuse_unsynchronised_processes)
from .metrics import load_metric
from .portable import SafeSaveMixin, portable_path
from .processor import build_image_processor
from .checkpoints import SafeCheckpointMixin

logger = logging.getLogger("fgssl.finetune")

#: LoRA target module names per backbone model_type, in order of preference. transformers 5 renamed ViT-family
#: attention projections to q_proj / v_proj (peft's built-in table still says query / value); both are listed and
#: the first set present in the model is used.
LORA_TARGET_MODULES = {
    "vit": (("q_proj", "v_proj"), ("query", "value")),
    "dinov2": (("q_proj", "v_proj"), ("query", "value")),
    "dinov2_with_registers": (("q_proj", "v_proj"), ("query", "value")),
    "swin": (("q_proj", "v_proj"), ("query", "value")),
    "convnext": (("pwconv1", "pwconv2"),),
    "convnextv2": (("pwconv1", "pwconv2"),),
    "resnet": (("convolution",),),
}
RESULTS_JSON = "finetune_results.json"


# --------------------------------------------------------------------------------------------- model


def build_classifier(model_name_or_path: str, num_labels: int, id2label: dict[int, str] | None = None):
    """FGSSLForImageClassification with a fresh `num_labels`-way head on the encoder of `model_name_or_path`.

    An fgssl checkpoint (encoder, pre-training or classifier) loads its encoder weights; a plain transformers
    backbone (ViT, ConvNeXt...) is wrapped with fgssl's mean pooling (training.pretrained.load_pretrained).

    Raises:
        ValueError: the checkpoint lacks encoder weights (they would silently stay random).
    """
    from ..modeling import FGSSLForImageClassification
    from .pretrained import load_pretrained

    id2label = id2label or {i: str(i) for i in range(num_labels)}
    return load_pretrained(model_name_or_path, FGSSLForImageClassification, purpose="fine-tuning", fresh_head=True,
                           num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()})


def lora_target_modules(model) -> list[str]:
    """LoRA target module names for the model's backbone type, checked against the modules it really has."""
    backbone_type = model.config.backbone_config.model_type
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    candidates = LORA_TARGET_MODULES.get(backbone_type, ())
    for names in candidates:
        if set(names) <= present:
            return list(names)
    raise ValueError(
        f"No known LoRA target modules for backbone {backbone_type!r} (tried {candidates}); pass "
        "--lora_target_modules with names of its Linear/Conv layers."
    )


def apply_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.1, target_modules=None):
    """Wrap the classifier in a peft LoRA model: adapters on the backbone, the head trained in full.

    Only the LoRA matrices and the head (`modules_to_save=["classifier"]`) require grad; the rest is frozen.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else lora_target_modules(model),
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, config)


def trainable_parameter_names(model) -> list[str]:
    """Names of the parameters that require grad."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------- data


def split_labels(dataset) -> np.ndarray:
    """The "labels" column of a decoded split as an int64 array (N,)."""
    return np.asarray(dataset.with_format("numpy")["labels"][:], dtype=np.int64)


def few_shot_indices(labels, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of k images per class (all of a class with fewer), drawn with a seeded generator."""
    if k < 1:
        raise ValueError(f"few_shot_k must be >= 1, got {k}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


class ClassificationCollator:
    """Batch uint8 examples into normalised pixel_values (B x 3 x S x S float) and labels (B int64).

    train=True adds a light fine-grained augmentation (random resized crop, scale 0.35-1, and horizontal flip);
    train=False is the deterministic evaluation view (training.augment.eval_transform). From a cache with room
    (a "valid_hw" column, training.data `cache_size_factor` > 1) the crop is drawn in each image's valid region
    (training.augment.sample_region_boxes, the same scale range) and the evaluation view resizes the region's
    shorter side to S / crop_pct and centre-crops S (`eval_transform_regions`; crop_pct default 0.875).
    """

    #: Area range of the training crop.
    CROP_SCALE = (0.35, 1.0)

    def __init__(self, image_size: int, train: bool, image_mean=None, image_std=None, crop_pct: float | None = None):
        self.image_size = int(image_size)
        self.train = train
        self.crop_pct = crop_pct
        self.mean, self.std = image_mean, image_std  # the model's normalisation (default ImageNet's)
        self.augment = K.AugmentationSequential(
            K.RandomResizedCrop((self.image_size, self.image_size), scale=self.CROP_SCALE, align_corners=False),
            K.RandomHorizontalFlip(p=0.5),
        )

    def __call__(self, examples) -> dict[str, torch.Tensor]:
        from .data import collate_uint8

        batch = collate_uint8(examples)
        pixels = batch["pixel_values"]
        valid_hw = batch.get("valid_hw")
        if valid_hw is not None:
            return {"pixel_values": self._from_regions(pixels, valid_hw), "labels": batch["labels"]}
        if self.train:
            pixel_values = normalize_images(self.augment(pixels.float().div(255.0)), self.mean, self.std)
        else:
            pixel_values = eval_transform(pixels, self.image_size, self.mean, self.std)
        return {"pixel_values": pixel_values, "labels": batch["labels"]}

    def _from_regions(self, pixels: torch.Tensor, valid_hw: torch.Tensor) -> torch.Tensor:
        """The normalised views of a batch from a cache with room (training or evaluation)."""
        if not self.train:
            return eval_transform_regions(pixels, valid_hw, self.image_size, self.crop_pct or DEFAULT_CROP_PCT,
                                          self.mean, self.std)
        boxes = sample_region_boxes(valid_hw, self.CROP_SCALE)
        flip = torch.rand(len(pixels)) < 0.5
        supersample = max(1, -(-max(pixels.shape[-2:]) // self.image_size))
        views = crop_flip_resize(pixels.float().div(255.0), boxes, flip, self.image_size, supersample)
        return normalize_images(views, self.mean, self.std)


def compute_accuracy(eval_prediction) -> dict[str, float]:
    """Trainer `compute_metrics`: top-1 accuracy of the argmax logits (the repository's accuracy module)."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return load_metric("accuracy").compute(predictions=np.argmax(logits, axis=-1), references=labels)


# --------------------------------------------------------------------------------------------- training


class ClassificationTrainer(SafeCheckpointMixin, SafeSaveMixin, Trainer):
    """Trainer whose evaluation batches use the deterministic view instead of the training augmentation; saves the
    image processor with every checkpoint and no Hub token (SafeSaveMixin)."""

    def __init__(self, *args, eval_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator

    def _save(self, output_dir=None, state_dict=None):
        result = super()._save(output_dir, state_dict)
        portable_adapter_files(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir)
        return result

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def get_test_dataloader(self, test_dataset):
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_test_dataloader(test_dataset)
        finally:
            self.data_collator = train_collator


def make_trainer(model, training_args: TrainingArguments, train_dataset, eval_dataset, image_size: int,
                 image_mean=None, image_std=None, crop_pct: float = 1.0) -> Trainer:
    """Trainer with augmented training batches, deterministic eval batches, and accuracy as the metric; images are
    normalised with `image_mean` / `image_std` (the starting checkpoint's processor's; default ImageNet's), and the
    saved image processor says so. `crop_pct`: the evaluation crop of a cache with room (training.data
    `cache_size_factor` > 1; 1.0 for a square cache), in the eval batches and the saved processor."""
    norm = {"image_mean": image_mean, "image_std": image_std}
    # Our collators read pixel_values/labels themselves; a PeftModel hides the forward signature Trainer inspects.
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    return ClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=ClassificationCollator(image_size, train=True, **norm),
        eval_collator=ClassificationCollator(image_size, train=False, **norm, crop_pct=crop_pct),
        compute_metrics=compute_accuracy,
        processing_class=build_image_processor(image_size, **norm, crop_pct=crop_pct),
    )


def portable_adapter_files(model, folder) -> None:
    """peft records the base model's path in adapter_config.json and its card: rewritten portable after the save
    (peft reads the base model's files from that path while it saves); for the final adapter and every checkpoint."""
    bases = {config.base_model_name_or_path for config in getattr(model, "peft_config", {}).values()}
    for base in sorted(b for b in bases if b and Path(b).is_absolute()):
        for name in ("adapter_config.json", "README.md"):
            path = Path(folder) / name
            if path.is_file():
                path.write_text(path.read_text().replace(base, portable_path(base)))


def finetune_card_metadata(model_name_or_path: str, dataset_name: str, license: str | None) -> dict:
    """The cards' metadata of a fine-tuning run: the Hub ids of the starting checkpoint and of the dataset (None
    for local folders), the license, and how the start was pre-trained ("none" for a plain backbone)."""
    from transformers import AutoConfig

    from .card import hub_repo_id, pretraining_method
    from .pretrained import is_fgssl_config

    method = pretraining_method(model_name_or_path)
    if method is None:  # a Hub id: its config is in the cache by now
        try:
            method = None if is_fgssl_config(AutoConfig.from_pretrained(model_name_or_path)) else "none"
        except Exception:  # noqa: BLE001
            method = None
    return {"base_model": hub_repo_id(model_name_or_path), "hub_dataset": hub_repo_id(dataset_name),
            "license": license, "pretraining_method": method}


def write_finetune_cards(paths: dict[str, str]) -> dict[str, str]:
    """A model card in every folder a user may push (merged/ or model/, and adapter/ in place of peft's stub card
    that names a local path as its base model); reads finetune_results.json above them. Returns {name: card}."""
    from .card import write_model_card

    cards = {}
    for name, folder in paths.items():
        try:
            cards[name] = str(write_model_card(folder))
        except Exception as err:  # noqa: BLE001  (a card is a nicety: never lose a finished run over it)
            logger.warning("Model card of %s not written: %s", folder, err)
    return cards


def save_finetuned(model, output_dir, image_processor=None) -> dict[str, str]:
    """Save the result: for LoRA the adapter (O/adapter) and the merged model (O/merged); else O/model. The image
    processor (training.processor) is saved into each folder when given.

    Returns {"adapter": path, "merged": path} or {"model": path}.
    """
    from peft import PeftModel

    from .checkpoints import require_finite

    require_finite(model, "the fine-tuned model")  # nothing non-finite is ever saved as a result
    output_dir = Path(output_dir)
    if isinstance(model, PeftModel):
        model.save_pretrained(output_dir / "adapter")
        portable_adapter_files(model, output_dir / "adapter")
        merged = model.merge_and_unload()
        merged.save_pretrained(output_dir / "merged")
        paths = {"adapter": str(output_dir / "adapter"), "merged": str(output_dir / "merged")}
    else:
        model.save_pretrained(output_dir / "model")
        paths = {"model": str(output_dir / "model")}
    if image_processor is not None:
        for path in paths.values():
            image_processor.save_pretrained(path)
    return paths


# --------------------------------------------------------------------------------------------- arguments


def validate_args(args, training_args) -> None:
    """Refuse values that cannot work, before loading anything (UsageError naming the option and the fix)."""
    refuse_non_finite(args, training_args)  # --learning_rate inf, --lora_dropout nan...
    refuse_unsynchronised_processes(training_args)
    refuse_bad_inputs(args.image_size, dataset_name=args.dataset_name, model_name_or_path=args.model_name_or_path)
    refuse_no_training(training_args)
    if args.method not in FINETUNE_METHODS:
        raise UsageError(f"--method must be one of {FINETUNE_METHODS}, got {args.method!r}.")
    refuse_below_one(args, ("few_shot_k", "max_train_samples", "max_eval_samples", "image_size"),
                     "leave it out for the default")
    if args.lora_r < 1:
        raise UsageError(f"--lora_r must be >= 1, got {args.lora_r}.")
    if training_args.per_device_train_batch_size < 1:
        raise UsageError("--per_device_train_batch_size must be >= 1, got "
                         f"{training_args.per_device_train_batch_size}.")
    if not training_args.learning_rate > 0:
        raise UsageError(f"--learning_rate must be > 0, got {training_args.learning_rate}.")
    if training_args.gradient_accumulation_steps < 1:
        raise UsageError(f"--gradient_accumulation_steps must be >= 1 (1 = no accumulation), got "
                         f"{training_args.gradient_accumulation_steps}.")
