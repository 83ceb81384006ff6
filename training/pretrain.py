"""`fgssl-pretrain`: self-supervised pre-training (`moco`, `lcr` or `fgssl` on the base `--base moco | simsiam`)
on a Hugging Face dataset.

    fgssl-pretrain                                    # embedded synthetic default, CPU, a few minutes
    fgssl-pretrain --base simsiam --method fgssl      # the synthesized pairs on SimSiam instead of MoCo v2
    fgssl-pretrain configs/cub100_cpu.yaml --seed 1   # a config file, then command-line overrides
    accelerate launch -m fgssl.training.pretrain configs/cub200_vit_s16_gpu.yaml

Thin: parse arguments, check them (`validate_args`, before any data work), call `run_pretraining`, print where
results went. `main(argv)` returns the results (library, tests); `cli(argv)` is the console script and returns the
exit status (training.cli).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from transformers import TrainingArguments, set_seed

from . import runinfo
from .cli import (ArgumentParser, UsageError, closest, console_entry, refuse_bad_inputs, refuse_below_one,
                  refuse_missing_reporters, refuse_no_training, refuse_non_finite, refuse_unsynchronised_processes,
                  tensorboard_available, usage_errors)
from .data import DatasetFormatArguments, collate_uint8, load_splits_from_args
from .backbones import (CONFIG_FIELDS, backbone_presets, backbone_stages, build_model,  # noqa: F401  (the API)
                        final_feature_map_side, freeze_backbone_stages, method_config_kwargs)
from .trainer import FGSSLTrainer, ObjectiveArguments

logger = logging.getLogger("fgssl.pretrain")


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------


def _config_default(name: str, what: str = "") -> str:
    """Help text that names FGSSLConfig's default (the one source of model defaults)."""
    from ..modeling.configuration_fgssl import FGSSLConfig

    default = getattr(FGSSLConfig, name)
    default = list(default) if isinstance(default, tuple) else default
    return f"{what + '; ' if what else ''}default: FGSSLConfig's ({default})."




@dataclass
class ModelArguments:
    backbone: str = field(
        default="convnext-tiny-cpu",
        metadata={"help": "A preset (convnext-tiny-cpu, convnext-s16-cpu, vit-tiny-cpu, resnet-tiny-cpu, resnet-s16-cpu, "
                          "vit-s16, convnext-t, resnet50; random init) or a local folder / Hub id of a transformers "
                          "vision backbone to start from (e.g. microsoft/resnet-50: ImageNet weights)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An fgssl checkpoint to continue pre-training from (weights only)."}
    )
    image_size: int = field(default=64, metadata={"help": "Training resolution (images are cached at this size)."})
    # Model knobs left at None take FGSSLConfig's default: the config class is the one source of defaults.
    base: str | None = field(
        default=None,
        metadata={"help": _config_default("base", "the base SSL objective, moco (MoCo v2) or simsiam (SimSiam); "
                                                  "--method adds nothing, LCR or the synthesized pairs to it")},
    )
    projector_hidden_size: int | None = field(default=None, metadata={"help": _config_default("projector_hidden_size")})
    projector_dim: int | None = field(default=None, metadata={"help": _config_default("projector_dim")})
    predictor_hidden_size: int | None = field(
        default=None, metadata={"help": _config_default("predictor_hidden_size", "simsiam: predictor bottleneck; "
                                                                                  "None = projector_dim // 4")}
    )
    momentum: float | None = field(default=None, metadata={"help": _config_default("momentum", "EMA of the key encoder")})
    queue_size: int | None = field(
        default=None, metadata={"help": _config_default("queue_size", "MoCo queue length K; 0 = in-batch negatives")}
    )
    variance_momentum: float | None = field(
        default=None, metadata={"help": _config_default("variance_momentum", "EMA of the running feature statistics")}
    )
    decoder_input: str | None = field(
        default=None, metadata={"help": _config_default("decoder_input", "pooled (h) or feature_map (A)")}
    )
    decoder_base_size: int | None = field(
        default=None, metadata={"help": _config_default("decoder_base_size", "pooled only; feature_map: the map side")}
    )
    decoder_block_out_channels: list[int] | None = field(
        default=None,
        metadata={"help": _config_default("decoder_block_out_channels", "S = base * 2**(blocks - 1)")},
    )
    decoder_layers_per_block: int | None = field(default=None, metadata={"help": _config_default("decoder_layers_per_block")})
    screening_channels: int | None = field(default=None, metadata={"help": _config_default("screening_channels", "LCR")})
    freeze_stages: int = field(
        default=0,
        metadata={"help": "Freeze the backbone's stem and its first N stages (continuing from pretrained weights: only "
                          "the later stages adapt to the new images); 0 trains everything."},
    )


@dataclass
class DataArguments(DatasetFormatArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id, local image-folder dir, CUB-200-2011 / Stanford Cars / FGVC-Aircraft folder as "
                          "downloaded, or save_to_disk dir; default: the embedded synthetic fine-grained dataset."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected); labels "
                                                                     "are not used for training, only to evaluate."})
    train_split: str = field(default="train", metadata={"help": "Split trained on (without labels)."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Labelled split for the final evaluation (default: test, else validation; "
                                        "none: no evaluation)."}
    )
    holdout_fraction: float = field(
        default=0.0,
        metadata={"help": "Carve this fraction of every class out of the train split (fixed seed), train on the "
                          "rest and evaluate on it instead of the test split: for choosing knobs without the test "
                          "split (e.g. 0.15)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Fixed random subset of the train "
                                                                          "split (default: all of it)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Fixed random subset of the evaluation "
                                                                         "split (default: all of it)."})
    run_evaluation: bool = field(
        default=True, metadata={"help": "Run retrieval / kNN / linear probe at the end when labels exist."}
    )
    compare_with_start: bool = field(
        default=True, metadata={"help": "Also evaluate the encoder the run started from (random init for a preset "
                                        "backbone) and print both in one table (comparison.md, the card)."}
    )
    linear_backend: str = field(
        default="sklearn",
        metadata={"help": "Where the final linear probe is fitted: sklearn (CPU) or torch (the same probe and "
                          "objective, L-BFGS on the training device: fast on a GPU)."},
    )
    knn_monitor_steps: int = field(
        default=0, metadata={"help": "Every N steps log an online kNN top-1 on labelled data (0: off)."}
    )
    knn_monitor_samples: int = field(default=1000, metadata={"help": "Bank and query images of the kNN monitor."})


def _ours(name: str, what: str) -> dict:
    """Help of a TrainingArguments field whose default fgssl-pretrain changes: what it is and transformers' default
    (argparse adds fgssl's, "(default: ...)")."""
    import dataclasses

    theirs = next(f for f in dataclasses.fields(TrainingArguments) if f.name == name)
    default = theirs.default if theirs.default is not dataclasses.MISSING else None
    return {"help": f"{what[0].upper() + what[1:]}; fgssl's default, not transformers' ({default!r})."}


@dataclass
class PretrainingArguments(TrainingArguments):
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Default: outputs/<method>-<dataset>. Running again into a folder resumes its run when "
                          "the run's fingerprint (fgssl_run.json) matches, and is refused when it does not."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in --output_dir (its checkpoints and results are removed first; a "
                          "README.md there is replaced by the model card) instead of resuming it."},
    )
    # TrainingArguments fields whose default fgssl changes: --help shows fgssl's default and transformers' own.
    per_device_train_batch_size: int = field(default=64, metadata=_ours("per_device_train_batch_size",
                                                                        "images per process and step"))
    learning_rate: float = field(default=1e-3, metadata=_ours("learning_rate", "AdamW's peak learning rate"))
    weight_decay: float = field(default=0.05, metadata=_ours("weight_decay", "AdamW's weight decay"))
    num_train_epochs: float = field(default=30.0, metadata=_ours("num_train_epochs", "passes over the training "
                                                                 "split; --max_steps overrides it"))
    lr_scheduler_type: str = field(default="cosine", metadata=_ours("lr_scheduler_type", "learning-rate schedule"))
    warmup_steps: float = field(default=0.05, metadata=_ours("warmup_steps", "linear warm-up: steps, or a fraction "
                                                             "of the run when < 1"))
    logging_steps: float = field(default=10, metadata=_ours("logging_steps", "log the loss terms every N steps"))
    save_steps: float = field(default=200, metadata=_ours("save_steps", "checkpoint every N steps"))
    save_total_limit: int | None = field(default=2, metadata=_ours("save_total_limit", "checkpoints kept"))
    remove_unused_columns: bool = field(default=False, metadata=_ours("remove_unused_columns", "the collator reads "
                                                                      "the uint8 pixel_values itself"))
    dataloader_drop_last: bool = field(default=True, metadata=_ours("dataloader_drop_last", "a short last batch "
                                                                    "would change the contrastive task"))
    report_to: None | str | list[str] = field(default=None, metadata={"help": "Default: tensorboard if installed."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push encoder, code and card at the end."})
    license: str | None = field(
        default=None,
        metadata={"help": "License of the trained weights for the model card (a Hub license id, e.g. apache-2.0 or "
                          "cc-by-nc-4.0). Default: none stated; the card says the weights inherit the terms of "
                          "their training data."},
    )

    def __post_init__(self):
        self.output_dir_given = self.output_dir is not None
        if self.report_to is None:  # TensorBoard when it is installed, nothing otherwise
            self.report_to = "tensorboard" if tensorboard_available() else "none"
        refuse_missing_reporters(self.report_to)  # asked for and not installed: one line, before any work
        if (self.bf16 or self.fp16) and not _accelerator_available():
            # The GPU recipes say bf16; the same config on a machine without an accelerator (a smoke test, a CPU
            # user) trains in float32 instead of failing inside TrainingArguments.
            logger.warning("--bf16/--fp16 need a GPU and none is available: training in float32 on the CPU.")
            self.bf16 = self.fp16 = False
        super().__post_init__()


def _accelerator_available() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        torch.backends.mps.is_available())


# ---------------------------------------------------------------------------------------------------------------
# Library functions (used by the CLI, tests and benchmarks)
# ---------------------------------------------------------------------------------------------------------------
def starting_checkpoint(model_args: ModelArguments) -> str | None:
    """The checkpoint the run starts from (--model_name_or_path, else a --backbone that is no preset), or None."""
    if model_args.model_name_or_path:
        return model_args.model_name_or_path
    return None if model_args.backbone in backbone_presets() else model_args.backbone


def run_image_processor(model_args: ModelArguments):
    """The image processor the run trains with and saves (training.processor): at --image_size, normalising with
    the mean / std of the starting checkpoint's own image processor when it has one (a ViT's 0.5, CLIP's...),
    else ImageNet's."""
    from .processor import (build_image_processor, describe_normalization, normalization_kwargs,
                            source_processor_settings)

    source = starting_checkpoint(model_args)
    with usage_errors(ValueError):
        stats = normalization_kwargs(source_processor_settings(source))
    if stats:
        logger.info("Images are normalised as %s's image processor does: %s.", source, describe_normalization(**stats))
    return build_image_processor(model_args.image_size, **stats)


def default_output_dir(method: str, dataset_name: str | None, base: str | None = None) -> str:
    name = "synthetic" if dataset_name is None else Path(dataset_name.rstrip("/")).name
    prefix = f"simsiam-{method}" if base == "simsiam" else method
    return str(Path("outputs") / f"{prefix}-{name}")


def check_push_possible(training_args) -> None:
    """Refuse `--push_to_hub` before training when it cannot succeed (no token, offline, the Hub unreachable or
    the token refused), so no work is lost: a one-line UsageError."""
    if not training_args.push_to_hub:
        return
    from .push import HubPushError, check_hub_access

    try:
        check_hub_access(training_args.hub_token, check_network=True)
    except HubPushError as err:
        raise UsageError(f"--push_to_hub: {err} (or drop --push_to_hub and push later with fgssl-push).") from err


def _checkpoint_config(model_args: ModelArguments):
    """The FGSSLConfig of --model_name_or_path, or None (none given, or unreadable: build_model reports that)."""
    if not model_args.model_name_or_path:
        return None
    try:
        from .. import modeling  # noqa: F401  (registers FGSSLConfig with AutoConfig)
        from ..modeling import FGSSLConfig

        return FGSSLConfig.from_pretrained(model_args.model_name_or_path)
    except Exception:  # noqa: BLE001
        return None


def effective_queue_size(model_args: ModelArguments) -> int:
    """--queue_size, else the checkpoint's, else FGSSLConfig's default (0: in-batch negatives)."""
    from ..modeling.configuration_fgssl import FGSSLConfig

    if model_args.queue_size is not None:
        return model_args.queue_size
    checkpoint = _checkpoint_config(model_args)
    return (checkpoint or FGSSLConfig).queue_size


def backbone_config_for(model_args: ModelArguments):
    """The backbone config the run would build (preset, fgssl checkpoint or backbone folder), or None when it
    cannot be read without building the model (then `build_model` reports the problem)."""
    presets = backbone_presets()
    try:
        if model_args.model_name_or_path:
            return _checkpoint_config(model_args).backbone_config
        if model_args.backbone in presets:
            return presets[model_args.backbone](model_args.image_size)
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_args.backbone)
    except Exception:  # noqa: BLE001  (unreadable here: build_model raises the real error with its fix)
        return None


def validate_args(model_args: ModelArguments, data_args: DataArguments, training_args: PretrainingArguments,
                  objective_args: ObjectiveArguments) -> None:
    """Refuse settings that cannot work, before any data work; each message names the option and the fix.

    Raises:
        UsageError
    """
    refuse_unsynchronised_processes(training_args)
    refuse_non_finite(model_args, data_args, training_args, objective_args)  # --learning_rate inf, --sigma nan...
    refuse_bad_inputs(model_args.image_size, dataset_name=data_args.dataset_name, backbone=model_args.backbone,
                      model_name_or_path=model_args.model_name_or_path)
    refuse_no_training(training_args)
    batch = training_args.per_device_train_batch_size
    if batch < 1:
        raise UsageError(f"--per_device_train_batch_size must be >= 1, got {batch}.")
    if effective_queue_size(model_args) == 0 and batch < 2:
        raise UsageError(
            f"--per_device_train_batch_size {batch} with in-batch negatives (--queue_size 0): an image has no other "
            "image in its batch to be told apart from, so the contrastive loss is 0 at every step. Use "
            "--per_device_train_batch_size 2 or more (the default is 64), or a MoCo queue (e.g. --queue_size 4096)."
        )
    if not training_args.learning_rate > 0:
        raise UsageError(f"--learning_rate must be > 0, got {training_args.learning_rate} (the default is 1e-3).")
    if training_args.gradient_accumulation_steps < 1:
        raise UsageError(f"--gradient_accumulation_steps must be >= 1 (1 = no accumulation), got "
                         f"{training_args.gradient_accumulation_steps}.")
    groups = objective_args.shuffle_bn_groups
    if groups > 1 and batch // groups < 2:
        raise UsageError(
            f"--shuffle_bn_groups {groups} with --per_device_train_batch_size {batch}: each group of the key batch "
            "needs at least 2 images for its BatchNorm statistics. Use fewer groups (1 = off) or a larger batch."
        )
    if objective_args.method == "fgssl" and not objective_args.synth_fraction > 0:
        raise UsageError(
            f"--synth_fraction {objective_args.synth_fraction} with --method fgssl synthesizes no pair at all. Use a "
            "value in (0, 1] (the default is 1.0); to switch the synthesized-pair loss off on purpose use --nu 0."
        )
    refuse_below_one(data_args, ("max_train_samples", "max_eval_samples", "knn_monitor_samples"),
                     "leave it out to use every image")
    if data_args.linear_backend not in ("sklearn", "torch"):
        raise UsageError(f"--linear_backend must be sklearn or torch, got {data_args.linear_backend!r}.")
    if data_args.knn_monitor_steps < 0:
        raise UsageError(f"--knn_monitor_steps must be >= 0 (0 = off), got {data_args.knn_monitor_steps}.")
    if model_args.image_size < 1:
        raise UsageError(f"--image_size must be >= 1, got {model_args.image_size}.")
    backbone_config = backbone_config_for(model_args)
    side = final_feature_map_side(backbone_config, model_args.image_size) if backbone_config is not None else None
    if side is not None and side < 1:
        smallest = next(s for s in range(1, 4097) if final_feature_map_side(backbone_config, s) >= 1)
        raise UsageError(
            f"--image_size {model_args.image_size} is smaller than the total stride of the backbone "
            f"({model_args.model_name_or_path or model_args.backbone}, {backbone_config.model_type}): its final "
            f"feature map would be {side}x{side}. Use --image_size {smallest} or more."
        )


def run_pretraining(model_args: ModelArguments, data_args: DataArguments, training_args: PretrainingArguments,
                    objective_args: ObjectiveArguments) -> dict:
    """Pre-train, save the model, encoder and decoder, pictures and metrics; return where everything went.

    The output folder is locked while the run writes there (`runinfo.RunLock`): a second run into it is refused
    while this one is alive. A run found finished there (the same run, its step count reached) is not trained
    again: the result is {"output_dir", "finished": the one line saying so}.

    Raises:
        UsageError: a setting that cannot work (`validate_args`), an output folder holding a different run
            (`runinfo.check_output_dir`) or in use by a live run; all before any data work.
    """
    validate_args(model_args, data_args, training_args, objective_args)
    if not getattr(training_args, "output_dir_given", True):
        training_args.output_dir = default_output_dir(objective_args.method, data_args.dataset_name, model_args.base)
    lock = runinfo.RunLock(training_args.output_dir).acquire() if training_args.process_index == 0 else None
    try:
        return _run_pretraining_locked(model_args, data_args, training_args, objective_args)
    finally:
        if lock is not None:
            lock.release()


def _run_pretraining_locked(model_args: ModelArguments, data_args: DataArguments,
                            training_args: PretrainingArguments, objective_args: ObjectiveArguments) -> dict:
    started = time.time()
    if not getattr(training_args, "output_dir_given", True):
        training_args.output_dir = default_output_dir(objective_args.method, data_args.dataset_name, model_args.base)
    output_dir = Path(training_args.output_dir)
    fingerprint = runinfo.run_fingerprint(model_args, data_args, training_args, objective_args)
    folder_state, finished = runinfo.prepare_run(output_dir, fingerprint, training_args, "fgssl-pretrain")
    if finished:
        return {"output_dir": str(output_dir), "finished": finished}
    push = training_args.push_to_hub
    check_push_possible(training_args)
    training_args.push_to_hub = False  # we push ourselves, at the end, with the card
    set_seed(training_args.seed)

    # Build the model before touching data: a bad model knob is refused before any decoding.
    with usage_errors(ValueError):
        model = build_model(model_args, objective_args.method)
    # Several processes: the main one decodes and caches the images first, the others then read its cache.
    with usage_errors(ValueError), training_args.main_process_first(desc="decoding the dataset"):
        data = load_splits_from_args(data_args, model_args.image_size, require_eval=data_args.run_evaluation)
    if len(data.train) < training_args.per_device_train_batch_size * max(1, training_args.world_size):
        raise UsageError(
            f"The training split has {len(data.train)} images, fewer than one batch of "
            f"{training_args.per_device_train_batch_size}; lower --per_device_train_batch_size."
        )

    trainer = FGSSLTrainer(
        model=model,
        args=training_args,
        objective_args=objective_args,
        image_size=model_args.image_size,
        processing_class=run_image_processor(model_args),  # the starting checkpoint's mean / std, if it has them
        train_dataset=data.train,
        data_collator=collate_uint8,
    )
    if data_args.knn_monitor_steps > 0:
        with usage_errors(ValueError):
            add_knn_monitor(trainer, data, data_args, model_args.image_size)
    # Overwrite: the previous run removed now; resume: the newest complete checkpoint (runinfo, as fgssl-finetune).
    resume = runinfo.start_run(output_dir, fingerprint, folder_state, training_args)
    train_result = trainer.train(resume_from_checkpoint=resume)

    results = {"output_dir": str(output_dir)}
    if trainer.is_world_process_zero():
        results.update(save_outputs(trainer, model, data, data_args, model_args, objective_args, train_result,
                                    started))
        runinfo.mark_finished(output_dir, training_args, trainer.state.global_step,
                              ["model.safetensors", "train_results.json",
                               *(["eval_results.json"] if results.get("eval_results") else [])])
        if push:
            from .push import HubPushError, push_to_hub

            repo_id = training_args.hub_model_id or output_dir.name
            try:
                results["hub_url"] = push_to_hub(output_dir, repo_id, token=training_args.hub_token)
            except HubPushError as err:  # the run is saved locally: say how to push it later, and fail
                from .cli import OneLineError

                raise OneLineError(f"{err} The model is saved in {output_dir}; push it later with: fgssl-push "
                                   f"{output_dir} {repo_id}") from err
    return results


def add_knn_monitor(trainer, data, data_args, image_size: int) -> None:
    """The optional online kNN monitor: bank from the train split, queries from the eval split (or a train slice)."""
    from .callbacks import KNNMonitorCallback

    if data.label_column is None:
        raise ValueError("--knn_monitor_steps needs labels: the dataset has no label column (see --label_column).")
    n = data_args.knn_monitor_samples
    train = data.train.shuffle(seed=0)
    bank = train.select(range(min(n, len(train))))
    if data.eval is not None:
        queries = data.eval.select(range(min(n, len(data.eval))))
    else:
        half = len(bank) // 2
        bank, queries = bank.select(range(half)), bank.select(range(half, len(bank)))
    trainer.add_callback(KNNMonitorCallback(trainer, bank, queries, data_args.knn_monitor_steps, image_size))


def card_metadata(model_args, data_args, training_args) -> dict:
    """What the model card's metadata needs to follow the Hub's conventions, recorded in training_config.json (so
    fgssl-push renders the same card): the dataset's Hub id (None for a local folder or the embedded data), the
    starting checkpoint's Hub id (`base_model`; None for a preset or a local folder), the starting checkpoint's
    name, and --license."""
    from .card import hub_repo_id

    start = starting_checkpoint(model_args)
    dataset = data_args.dataset_name
    return {
        "hub_dataset": hub_repo_id(dataset) if dataset and dataset != "synthetic" else None,
        "base_model": hub_repo_id(start),
        "start": Path(start).name if start and hub_repo_id(start) is None else start,
        "license": getattr(training_args, "license", None),
    }


def log_eval_pictures(trainer, output_dir, pictures) -> None:
    """retrieval.png and embedding.png to TensorBoard too (tags eval/retrieval, eval/embedding) when it is on."""
    report_to = trainer.args.report_to or []
    if not pictures or "tensorboard" not in (report_to if isinstance(report_to, list) else [report_to]):
        return
    from .eval_pictures import log_pictures_to_tensorboard

    try:
        log_pictures_to_tensorboard({name: Path(output_dir) / file for name, file in pictures.items()},
                                    trainer.args.logging_dir or Path(output_dir) / "runs", trainer.state.global_step)
    except Exception as err:  # noqa: BLE001  (pictures are a nicety: never lose a finished run over them)
        logger.warning("Evaluation pictures not added to TensorBoard: %s", err)


def save_outputs(trainer, model, data, data_args, model_args, objective_args, train_result, started) -> dict:
    """The final save: pre-training model, encoder, decoder (diffusers), pictures, curves, metrics, card.

    The model folder and encoder/ carry the image processor (preprocessor_config.json); decoder/ carries its code
    file. No file holds an absolute path of this machine (training.portable) or the Hub token.
    """
    from .pictures import plot_training_curves
    from .portable import portable

    output_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(output_dir))  # model, config, remote code, image processor, training_args.bin
    model.fgssl.save_pretrained(output_dir / "encoder")
    if trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(output_dir / "encoder")
    if model.decoder is not None:
        model.decoder.save_pretrained(output_dir / "decoder")
    pictures = trainer.write_pictures(output_dir / "pictures")
    curves = plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png",
                                  synth_schedule=trainer.synth_schedule())
    training_config = portable(dict(
        method=objective_args.method,
        dataset=data_args.dataset_name or "embedded-synthetic",
        data=data.source,
        seed=trainer.args.seed,
        epochs=trainer.args.num_train_epochs,
        max_steps=trainer.state.max_steps,
        batch_size=trainer.args.per_device_train_batch_size * trainer.args.world_size,
        learning_rate=trainer.args.learning_rate,
        objective=asdict(objective_args),
        model=asdict(model_args),
        **card_metadata(model_args, data_args, trainer.args),
    ))
    runinfo.atomic_write_json(output_dir / "training_config.json", training_config, default=str)
    metrics = dict(train_result.metrics)
    metrics.update(
        method=objective_args.method,
        dataset=training_config["dataset"],
        global_step=trainer.state.global_step,
        num_train_images=len(data.train),
        skipped_images=data.num_skipped,
        wall_seconds=round(time.time() - started, 1),
    )
    # SimSiam's collapse monitor as last logged (benchmarks report whether a run collapsed).
    output_std = next((row["output_std"] for row in reversed(trainer.state.log_history) if "output_std" in row), None)
    if output_std is not None:
        metrics["output_std"] = output_std
    runinfo.atomic_write_json(output_dir / "train_results.json", portable(metrics), default=str)
    results = {"pictures": str(pictures) if pictures else None, "curves": str(curves) if curves else None,
               "train_results": str(output_dir / "train_results.json")}
    if data_args.run_evaluation and (data.eval is None or data.label_column is None):
        # Never silently: a one-class image folder has no label column (datasets drops a single label), a Hub
        # dataset may have no labelled split; retrieval, kNN and the linear probe need two classes or more.
        why = "no evaluation split" if data.eval is None else "no class labels (one class folder, or none found)"
        logger.warning("Evaluation skipped: the dataset has %s; retrieval, kNN and the linear probe need labelled "
                       "images of at least two classes (--label_column, --eval_split; --run_evaluation false "
                       "silences this).", why)
        results["evaluation_skipped"] = why
    if data_args.run_evaluation and data.eval is not None and data.label_column is not None:
        from .evaluation import evaluate_encoder, write_results

        # Normalised as in training (the saved processor's statistics); retrieval.png and embedding.png beside.
        from .processor import normalization_kwargs

        norm = normalization_kwargs(trainer.processing_class)
        eval_results = evaluate_encoder(model.fgssl, data, image_size=model_args.image_size,
                                        linear_backend=data_args.linear_backend, pictures_dir=output_dir, **norm)
        write_results(eval_results, output_dir)
        results["eval_results"] = str(output_dir / "eval_results.json")
        log_eval_pictures(trainer, output_dir, eval_results.get("pictures"))
    if "eval_results" in results and data_args.compare_with_start:
        from .report import compare_with_start  # the same protocol on the encoder this run started from

        results.update(compare_with_start(eval_results, model_args, objective_args.method, trainer.args.seed, data,
                                          output_dir, steps=trainer.state.global_step,
                                          linear_backend=data_args.linear_backend, **norm))
    if not (getattr(trainer.args, "overwrite_output_dir", False) or runinfo.readme_is_ours(output_dir)):
        logger.warning("%s is not a card fgssl wrote: left as it is, no model card written (add "
                       "--overwrite_output_dir to replace it with the card).", output_dir / "README.md")
        return results
    try:
        from .card import write_model_card

        results["card"] = str(write_model_card(output_dir, dataset_name=training_config["dataset"]))
        if results.get("comparison"):
            from .report import add_to_card

            add_to_card(results["card"], Path(results["comparison"]).read_text())
        runinfo.record_card(output_dir, results["card"])  # after the last edit: the hash marks the card as ours
    except Exception as err:  # a card is a nicety: never lose a finished run over it
        logger.warning("Model card not written: %s", err)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def config_file_to_argv(path: str, valid_keys=None) -> list[str]:
    """A YAML/JSON config file as command-line arguments, so later arguments on the command line override it.

    Keys are argument names spelled exactly (`sigma`, not `sigm`); with `valid_keys`, any other key is refused
    naming the closest valid one.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist (shipped configs are in configs/).")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"Config file {path} is not valid YAML/JSON: {err}") from err
    if not isinstance(values, dict):
        raise UsageError(f"Config file {path} must hold a mapping of argument names to values.")
    if valid_keys is not None:
        for key in values:
            if key not in valid_keys:
                suggestion = closest(str(key), valid_keys)
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                raise UsageError(f"Config file {path}: unknown key {key!r}{hint} (keys are argument names spelled "
                                 "in full, as listed by fgssl-pretrain --help)")
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def build_parser() -> ArgumentParser:
    return ArgumentParser(
        (ModelArguments, DataArguments, PretrainingArguments, ObjectiveArguments),
        prog="fgssl-pretrain",
        description="Self-supervised pre-training (moco, lcr or fgssl). An optional first argument is a YAML/JSON "
                    "config file (e.g. configs/cub100_cpu.yaml); flags after it override it. Without --dataset_name "
                    "the run uses the embedded synthetic dataset and its recipe (configs/demo.yaml), under the flags "
                    "given.",
    )


#: The embedded dataset's recipe (configs/demo.yaml writes it out, benchmarks/results/demo/ measures it): a run
#: without --dataset_name (or with `--dataset_name synthetic`) starts from these flags, and every flag or config key
#: given comes after them and wins. The library defaults stay MoCo v2's, for real images at 224 px; these are for
#: 1,000 synthetic 64 px images on 2 CPU cores (benchmarks/results/demo/variants.md: how they were chosen).
DEMO_RECIPE: dict[str, str | list[str]] = {
    # The tiny ConvNeXt hardly learns the wing mark in 450 steps even with labels (36 %); this ResNet does (99.5 %).
    "backbone": "resnet-tiny-cpu",
    # Hundreds of negatives per query: enough of them differ from it in the mark alone.
    "queue_size": "512",
    # Every view keeps the mark whole and sharp (it is ~15 px at 64 px)...
    "crop_scale_min": "0.4",
    "blur_p": "0",
    # ...and any hue: the colour scheme, each image's own, is no instance cue.
    "hue_jitter": "0.5",
    # From the 2 x 2 map to 32 px, so that D(h) draws the mark's shape.
    "decoder_block_out_channels": ["64", "32", "16", "8", "8"],
}


def demo_recipe_argv(argv: list[str]) -> list[str]:
    """DEMO_RECIPE as flags when `argv` trains on the embedded dataset, else []."""
    for i, arg in enumerate(argv):
        if arg == "--dataset_name":
            value = argv[i + 1] if i + 1 < len(argv) else ""
        elif arg.startswith("--dataset_name="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if value not in ("", "synthetic"):
            return []
    argv_out = []
    for key, value in DEMO_RECIPE.items():
        argv_out += [f"--{key}", *([value] if isinstance(value, str) else value)]
    return argv_out


def parse_args(argv: list[str] | None = None):
    """(ModelArguments, DataArguments, PretrainingArguments, ObjectiveArguments) for `argv` (default: sys.argv).

    Without a dataset (the embedded one), DEMO_RECIPE's flags come first (the flags given override them).

    Raises:
        UsageError: an unknown or abbreviated flag, an unknown config key, an invalid value.
        FileNotFoundError: the config file does not exist.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = config_file_to_argv(argv[0], valid_keys=parser.field_names()) + argv[1:]
    return parser.parse(demo_recipe_argv(argv) + argv)


def main(argv: list[str] | None = None) -> dict:
    """fgssl-pretrain as a library call: returns where everything went (the console script is `cli`)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model_args, data_args, training_args, objective_args = parse_args(argv)
    results = run_pretraining(model_args, data_args, training_args, objective_args)
    if results.get("finished"):  # a finished run, not trained again: one line
        print(results["finished"])
        return results
    if int(os.environ.get("RANK", "0")) == 0:
        print("\nfgssl-pretrain finished.")
        for name, value in results.items():
            if value:
                print(f"  {name:>14}: {value}")
        from .report import print_comparison

        print_comparison(results)
    return results


cli = console_entry(main, "fgssl-pretrain")

if __name__ == "__main__":
    sys.exit(cli())
