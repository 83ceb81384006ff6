"""fgssl-finetune: fine-grained classification from an fgssl checkpoint (or any backbone) with transformers Trainer.

    fgssl-finetune --model_name_or_path M --dataset_name D --output_dir O [--method lora|full]
                   [--few_shot_k K --few_shot_seed S] [--image_size S] [TrainingArguments...]

The model is FGSSLForImageClassification: the encoder `f` (mean-pooled `h`) plus a linear head. `--method full`
trains everything; `--method lora` (default) adds peft LoRA adapters to the backbone's attention / pointwise layers
(chosen per backbone type, see LORA_TARGET_MODULES) and trains them with the head (`modules_to_save`).
Outputs: O/adapter (LoRA only), O/merged (LoRA merged into the weights) or O/model (full), and
O/finetune_results.json with the test accuracy (the repository's `accuracy` evaluate module). With --push_to_hub
(and --hub_model_id) the token is checked before training and the final model is uploaded with its card
(training.push.push_to_hub).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from kornia import augmentation as K
from transformers import IntervalStrategy, Trainer, TrainingArguments

from .augment import eval_transform, normalize_images
from .cli import (ArgumentParser, OneLineError, UsageError, console_entry, refuse_bad_inputs, refuse_below_one,
                  refuse_no_training, refuse_non_finite, refuse_too_small_image, refuse_unsynchronised_processes,
                  usage_errors)
from .data import DatasetFormatArguments
from .metrics import load_metric
from .portable import SafeSaveMixin, portable, portable_path
from .processor import build_image_processor, normalization_kwargs, source_processor_settings
from . import runinfo
from .runinfo import SafeCheckpointMixin

logger = logging.getLogger(__name__)

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
FINETUNE_METHODS = ("lora", "full")
RESULTS_JSON = "finetune_results.json"


# --------------------------------------------------------------------------------------------- model


def build_classifier(model_name_or_path: str, num_labels: int, id2label: dict[int, str] | None = None):
    """FGSSLForImageClassification with a fresh `num_labels`-way head on the encoder of `model_name_or_path`.

    An fgssl checkpoint (encoder, pre-training or classifier) loads its encoder weights; a plain transformers
    backbone (ViT, ConvNeXt...) is wrapped with fgssl's mean pooling.

    Raises:
        ValueError: the checkpoint lacks encoder weights (they would silently stay random).
    """
    from .. import modeling  # noqa: F401  (registers the fgssl Auto classes)
    from ..modeling import FGSSLForImageClassification
    from transformers import AutoConfig

    id2label = id2label or {i: str(i) for i in range(num_labels)}
    label_kwargs = dict(num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if AutoConfig.from_pretrained(model_name_or_path).model_type != "fgssl":
        return FGSSLForImageClassification.from_backbone_pretrained(model_name_or_path, **label_kwargs)
    model, info = FGSSLForImageClassification.from_pretrained(
        model_name_or_path, ignore_mismatched_sizes=True, output_loading_info=True, **label_kwargs
    )
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("classifier.")]
    if missing:
        raise ValueError(
            f"{model_name_or_path} lacks encoder weights {sorted(missing)[:5]}...: fine-tuning would start from a "
            "random encoder. Point --model_name_or_path at a folder written by save_pretrained of an fgssl model."
        )
    return model


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
    train=False is the deterministic evaluation view (training.augment.eval_transform).
    """

    def __init__(self, image_size: int, train: bool, image_mean=None, image_std=None):
        self.image_size = int(image_size)
        self.train = train
        self.mean, self.std = image_mean, image_std  # the model's normalisation (default ImageNet's)
        self.augment = K.AugmentationSequential(
            K.RandomResizedCrop((self.image_size, self.image_size), scale=(0.35, 1.0), align_corners=False),
            K.RandomHorizontalFlip(p=0.5),
        )

    def __call__(self, examples) -> dict[str, torch.Tensor]:
        from .data import collate_uint8

        batch = collate_uint8(examples)
        pixels = batch["pixel_values"]
        if self.train:
            pixel_values = normalize_images(self.augment(pixels.float().div(255.0)), self.mean, self.std)
        else:
            pixel_values = eval_transform(pixels, self.image_size, self.mean, self.std)
        return {"pixel_values": pixel_values, "labels": batch["labels"]}


def compute_accuracy(eval_prediction) -> dict[str, float]:
    """Trainer `compute_metrics`: top-1 accuracy of the argmax logits (the repository's accuracy module)."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return load_metric("accuracy").compute(predictions=np.argmax(logits, axis=-1), references=labels)


# --------------------------------------------------------------------------------------------- training


class _EvalCollatorTrainer(SafeCheckpointMixin, SafeSaveMixin, Trainer):
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
                 image_mean=None, image_std=None) -> Trainer:
    """Trainer with augmented training batches, deterministic eval batches, and accuracy as the metric; images are
    normalised with `image_mean` / `image_std` (the starting checkpoint's processor's; default ImageNet's), and the
    saved image processor says so."""
    norm = {"image_mean": image_mean, "image_std": image_std}
    # Our collators read pixel_values/labels themselves; a PeftModel hides the forward signature Trainer inspects.
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    return _EvalCollatorTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=ClassificationCollator(image_size, train=True, **norm),
        eval_collator=ClassificationCollator(image_size, train=False, **norm),
        compute_metrics=compute_accuracy,
        processing_class=build_image_processor(image_size, **norm),
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


def finetune_card_metadata(args, training_args) -> dict:
    """The cards' metadata of a fine-tuning run: the Hub ids of the starting checkpoint and of the dataset (None
    for local folders), and --license."""
    from transformers import AutoConfig

    from .card import hub_repo_id, pretraining_method

    method = pretraining_method(args.model_name_or_path)
    if method is None:  # a Hub id: its config is in the cache by now
        try:
            method = None if AutoConfig.from_pretrained(args.model_name_or_path).model_type == "fgssl" else "none"
        except Exception:  # noqa: BLE001
            method = None
    return {"base_model": hub_repo_id(args.model_name_or_path), "hub_dataset": hub_repo_id(args.dataset_name),
            "license": getattr(training_args, "license", None), "pretraining_method": method}


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

    from .runinfo import require_finite

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


@dataclass
class FinetuneArguments(DatasetFormatArguments):
    """fgssl-finetune arguments (the optimiser and schedule are transformers TrainingArguments)."""

    model_name_or_path: str = field(metadata={"help": "fgssl checkpoint, plain transformers backbone, or Hub id."})
    dataset_name: str = field(metadata={"help": "Image folder, CUB-200-2011 / Stanford Cars / FGVC-Aircraft folder as "
                                                "downloaded, save_to_disk folder or Hub dataset id."})
    method: str = field(default="lora", metadata={"help": "lora (adapters + head) or full (all weights)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Comma-separated module names (default: chosen for the backbone type)."}
    )
    few_shot_k: int | None = field(default=None, metadata={"help": "Keep k labelled training images per class."})
    few_shot_seed: int = field(default=0, metadata={"help": "Seed of the few-shot draw."})
    image_size: int | None = field(default=None, metadata={"help": "Input side (default: backbone's, else 224)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Fixed random subset of train."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Fixed random subset of the test split."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected)."})
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Evaluation split (default: test, else validation; none: no evaluation)."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes decoding the images (first run only)."})


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """transformers TrainingArguments plus fgssl-pretrain's re-run switch and the card's license."""

    license: str | None = field(
        default=None,
        metadata={"help": "License of the fine-tuned weights for the model cards (a Hub license id, e.g. "
                          "cc-by-nc-4.0). Default: none stated; the cards say the weights inherit the terms of "
                          "their training data."},
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in --output_dir (its checkpoints and results are removed first) instead "
                          "of resuming it. Running again into a folder resumes its run when the run's fingerprint "
                          "(fgssl_run.json) matches, and is refused when it does not."},
    )

    def __post_init__(self):
        from .cli import refuse_missing_reporters

        refuse_missing_reporters(self.report_to)  # --report_to tensorboard without it: one line, before any work
        super().__post_init__()


def validate_args(args: FinetuneArguments, training_args: TrainingArguments) -> None:
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


def run_finetune(args: FinetuneArguments, training_args: TrainingArguments) -> dict:
    """Load data and model, train with Trainer, evaluate, save; returns the results written to finetune_results.json.

    Re-runs behave as fgssl-pretrain's, through the same code (training.runinfo): the output folder is locked
    while the run writes there; a folder holding another run (fingerprint in fgssl_run.json) is refused before any
    work unless --overwrite_output_dir (which removes that run first); the same run resumes from its newest
    complete checkpoint, and a finished one is not trained again (result {"output_dir", "finished": one line}).
    """
    validate_args(args, training_args)
    lock = runinfo.RunLock(training_args.output_dir).acquire() if training_args.process_index == 0 else None
    try:
        return _run_finetune_locked(args, training_args)
    finally:
        if lock is not None:
            lock.release()


def _run_finetune_locked(args: FinetuneArguments, training_args: TrainingArguments) -> dict:
    from .data import load_splits_from_args
    from .evaluation import default_image_size

    output_dir = Path(training_args.output_dir)
    fingerprint = runinfo.finetune_fingerprint(args, training_args)
    folder_state, finished = runinfo.prepare_run(output_dir, fingerprint, training_args, "fgssl-finetune")
    if finished:
        return {"output_dir": str(output_dir), "finished": finished}
    push_repo = None
    if training_args.push_to_hub:
        from .push import HubPushError, check_hub_access

        try:  # no token, offline or the Hub unreachable: refused now, not after training
            check_hub_access(training_args.hub_token, check_network=True)
        except HubPushError as err:
            raise UsageError(f"--push_to_hub: {err} (or drop --push_to_hub and push later with fgssl-push).") from err
        push_repo = training_args.hub_model_id or Path(training_args.output_dir).name
        # We push the final model ourselves (weights, remote code, card), not Trainer's intermediate checkpoints.
        training_args.push_to_hub = False
    from transformers import AutoConfig

    from .. import modeling  # noqa: F401  (lets AutoConfig read fgssl configs)

    with usage_errors(ValueError, OSError):
        model_config = AutoConfig.from_pretrained(args.model_name_or_path)
    # The starting checkpoint's own preprocessing (training.processor): its mean / std, its side unless --image_size.
    with usage_errors(ValueError):
        processor_settings = source_processor_settings(args.model_name_or_path)
    image_size = args.image_size or (processor_settings or {}).get("image_size") or default_image_size(model_config)
    refuse_too_small_image(model_config, image_size, args.model_name_or_path)
    # Several processes: the main one decodes and caches the images first, the others then read its cache.
    with usage_errors(ValueError), training_args.main_process_first(desc="decoding the dataset"):
        data = load_splits_from_args(args, image_size, require_eval=True)
    if data.eval is None:  # --eval_split none (or no eval split in unlabelled data): train without evaluating
        if training_args.load_best_model_at_end:
            raise UsageError("--load_best_model_at_end needs an eval split to choose the best checkpoint on; give "
                             "--eval_split (a validation split) or drop --load_best_model_at_end.")
        training_args.eval_strategy = IntervalStrategy.NO
    train, train_labels = data.train, split_labels(data.train)
    if args.few_shot_k:
        train = train.select(few_shot_indices(train_labels, args.few_shot_k, args.few_shot_seed))
    num_labels = len(data.label_names) if data.label_names else int(train_labels.max()) + 1
    id2label = dict(enumerate(data.label_names)) if data.label_names else None
    with usage_errors(ValueError):
        model = build_classifier(args.model_name_or_path, num_labels, id2label)
        if args.method == "lora":
            targets = args.lora_target_modules.split(",") if args.lora_target_modules else None
            model = apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, targets)
    if training_args.load_best_model_at_end:
        logger.warning("load_best_model_at_end selects a checkpoint on the eval split; use a validation split for "
                       "that (--eval_split), never the test split.")
    trainer = make_trainer(model, training_args, train, data.eval, image_size,
                           **normalization_kwargs(processor_settings))
    # Overwrite: the previous run removed now; resume: the newest complete checkpoint (runinfo, as fgssl-pretrain).
    resume = runinfo.start_run(output_dir, fingerprint, folder_state, training_args)
    train_output = trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate() if data.eval is not None else {}
    paths = save_finetuned(trainer.model, training_args.output_dir, trainer.processing_class)
    results = {
        "accuracy": metrics.get("eval_accuracy"),
        "settings": {
            "model_name_or_path": args.model_name_or_path, "dataset_name": args.dataset_name, "method": args.method,
            "few_shot_k": args.few_shot_k, "few_shot_seed": args.few_shot_seed, "image_size": image_size,
            "learning_rate": training_args.learning_rate, "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps, "seed": training_args.seed, **data.source,
            **finetune_card_metadata(args, training_args),
        },
        "num_images": {"train": len(train), "eval": len(data.eval) if data.eval is not None else 0},
        "train_loss": train_output.training_loss,
        "saved": paths,
    }
    from .runinfo import atomic_write_json

    # No absolute machine path in a file that may be pushed or shared: saved folders relative to the output folder.
    shared = {**portable(results), "saved": {name: Path(path).name for name, path in paths.items()}}
    atomic_write_json(Path(training_args.output_dir) / RESULTS_JSON, shared)
    results["cards"] = write_finetune_cards(paths)
    runinfo.mark_finished(output_dir, training_args, trainer.state.global_step, [RESULTS_JSON, *paths.values()])
    if push_repo is not None:
        from .push import HubPushError, push_to_hub

        final_dir = paths.get("merged") or paths["model"]
        try:
            results["pushed"] = push_to_hub(final_dir, push_repo, token=training_args.hub_token,
                                            private=training_args.hub_private_repo)
        except HubPushError as err:  # the results are saved locally: say so, and fail
            raise OneLineError(f"{err} The fine-tuned model is saved in {final_dir}.") from err
    return results


def build_parser() -> ArgumentParser:
    parser = ArgumentParser((FinetuneArguments, FinetuneTrainingArguments), prog="fgssl-finetune",
                            description="Fine-grained classification fine-tuning (LoRA or full) of an encoder.")
    # Defaults suited to a frozen-ish backbone plus a new head; every one can be overridden on the command line.
    parser.set_defaults(learning_rate=5e-4, num_train_epochs=20, per_device_train_batch_size=32, eval_strategy="epoch",
                        save_strategy="epoch", save_total_limit=1, logging_steps=10, report_to="none")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """fgssl-finetune as a library call (returns the results); `argv` (without the program name) defaults to
    sys.argv[1:]. The console script is `cli`, which returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, training_args = build_parser().parse(sys.argv[1:] if argv is None else argv)
    results = run_finetune(args, training_args)
    if results.get("finished"):  # a finished run, not trained again: one line
        print(results["finished"])
        return results
    print(f"accuracy: {results['accuracy']}")
    print(f"Saved {results['saved']} and {Path(training_args.output_dir) / RESULTS_JSON}")
    return results


cli = console_entry(main, "fgssl-finetune")

if __name__ == "__main__":
    sys.exit(cli())
