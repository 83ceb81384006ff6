"""The steps of a pre-training run around `FGSSLTrainer`, as library functions (the command is training.pretrain).

    validate_args(model_args, data_args, training_args, objective_args)   refuse what cannot work, before any work
    default_output_dir(method, dataset_name, base)   outputs/<method>-<dataset> when --output_dir is not given
    run_image_processor(start, image_size)           the image processor the run trains with and saves
    add_knn_monitor(trainer, data, every, n, size)   the optional online kNN top-1
    save_model_folders(trainer, model, output_dir)   model, encoder/ (+ image processor), decoder/
    write_run_pictures(trainer, output_dir)          pictures/ of synthesized pairs, training_curves.png
    write_run_records(...)                           training_config.json and train_results.json
    evaluate_run(trainer, model, data, ...)          retrieval / kNN / linear probe of the encoder, the pictures,
                                                     and the same protocol on the encoder the run started from
    write_run_card(output_dir, dataset, ...)         the model card (README.md), unless a README there is the user's

None of them parses arguments; `validate_args` is the one that reads the argument dataclasses whole.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from . import runinfo
from .atomic import atomic_write_json
from .backbones import backbone_presets, final_feature_map_side
from .cli import (UsageError, refuse_bad_inputs, refuse_below_one, refuse_no_training, refuse_non_finite,
                  refuse_unsynchronised_processes, usage_errors)

logger = logging.getLogger("fgssl.pretrain")


# --------------------------------------------------------------------------------------------- the run's settings


def starting_checkpoint(model_args) -> str | None:
    """The checkpoint the run starts from (--model_name_or_path, else a --backbone that is no preset), or None."""
    if model_args.model_name_or_path:
        return model_args.model_name_or_path
    return None if model_args.backbone in backbone_presets() else model_args.backbone


def default_output_dir(method: str, dataset_name: str | None, base: str | None = None) -> str:
    """outputs/<method>-<dataset> (simsiam-<method>-<dataset> on the SimSiam base)."""
    name = "synthetic" if dataset_name is None else Path(dataset_name.rstrip("/")).name
    prefix = f"simsiam-{method}" if base == "simsiam" else method
    return str(Path("outputs") / f"{prefix}-{name}")


def run_image_processor(start: str | None, image_size: int, crop_pct: float = 1.0):
    """The image processor a run trains with and saves (training.processor): at `image_size`, normalising with the
    mean / std of the image processor of `start` (the checkpoint the run starts from) when it has one (a ViT's 0.5,
    CLIP's...), else ImageNet's; `crop_pct` < 1 for a cache with room (its evaluation crop)."""
    from .processor import (build_image_processor, describe_normalization, normalization_kwargs,
                            source_processor_settings)

    with usage_errors(ValueError):
        stats = normalization_kwargs(source_processor_settings(start))
    if stats:
        logger.info("Images are normalised as %s's image processor does: %s.", start, describe_normalization(**stats))
    return build_image_processor(image_size, **stats, crop_pct=crop_pct)


def checkpoint_config(model_name_or_path: str | None):
    """The FGSSLConfig of an fgssl checkpoint, or None (none given, or unreadable: build_model reports that)."""
    if not model_name_or_path:
        return None
    try:
        from .. import modeling  # noqa: F401  (registers FGSSLConfig with AutoConfig)
        from ..modeling import FGSSLConfig

        return FGSSLConfig.from_pretrained(model_name_or_path)
    except Exception:  # noqa: BLE001
        return None


def effective_queue_size(model_args) -> int:
    """--queue_size, else the checkpoint's, else FGSSLConfig's default (0: in-batch negatives)."""
    from ..modeling.configuration_fgssl import FGSSLConfig

    if model_args.queue_size is not None:
        return model_args.queue_size
    return (checkpoint_config(model_args.model_name_or_path) or FGSSLConfig).queue_size


def backbone_config_for(model_args):
    """The backbone config the run would build (preset, fgssl checkpoint or backbone folder), or None when it
    cannot be read without building the model (then `build_model` reports the problem)."""
    presets = backbone_presets()
    try:
        if model_args.model_name_or_path:
            return checkpoint_config(model_args.model_name_or_path).backbone_config
        if model_args.backbone in presets:
            return presets[model_args.backbone](model_args.image_size)
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_args.backbone)
    except Exception:  # noqa: BLE001  (unreadable here: build_model raises the real error with its fix)
        return None


def validate_args(model_args, data_args, training_args, objective_args) -> None:
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


def refuse_fewer_than_one_batch(num_images: int, training_args) -> None:
    """UsageError when the training split cannot fill one batch of every process (nothing would be trained)."""
    if num_images < training_args.per_device_train_batch_size * max(1, training_args.world_size):
        raise UsageError(
            f"The training split has {num_images} images, fewer than one batch of "
            f"{training_args.per_device_train_batch_size}; lower --per_device_train_batch_size."
        )


# --------------------------------------------------------------------------------------------- during training


def add_knn_monitor(trainer, data, every_steps: int, num_samples: int, image_size: int) -> None:
    """The optional online kNN monitor every `every_steps`: a bank of `num_samples` train images, as many queries
    from the eval split (or the other half of a train slice without one)."""
    from .callbacks import KNNMonitorCallback

    if data.label_column is None:
        raise ValueError("--knn_monitor_steps needs labels: the dataset has no label column (see --label_column).")
    train = data.train.shuffle(seed=0)
    bank = train.select(range(min(num_samples, len(train))))
    if data.eval is not None:
        queries = data.eval.select(range(min(num_samples, len(data.eval))))
    else:
        half = len(bank) // 2
        bank, queries = bank.select(range(half)), bank.select(range(half, len(bank)))
    trainer.add_callback(KNNMonitorCallback(trainer, bank, queries, every_steps, image_size))


# --------------------------------------------------------------------------------------------- after training


def save_model_folders(trainer, model, output_dir) -> None:
    """The pre-training `model` (config, remote code, image processor, training_args.bin), encoder/ with the image
    processor, and decoder/ (diffusers, with its code file) when the method has one. No file holds an absolute
    path of this machine (training.portable) or the Hub token."""
    output_dir = Path(output_dir)
    trainer.save_model(str(output_dir))
    model.fgssl.save_pretrained(output_dir / "encoder")
    if trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(output_dir / "encoder")
    if model.decoder is not None:
        model.decoder.save_pretrained(output_dir / "decoder")


def write_run_pictures(trainer, output_dir) -> dict:
    """pictures/ (the synthesized pairs, training.pictures) and training_curves.png: {"pictures", "curves"}, each a
    path or None."""
    from .pictures import plot_training_curves

    output_dir = Path(output_dir)
    pictures = trainer.write_pictures(output_dir / "pictures")
    curves = plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png",
                                  synth_schedule=trainer.synth_schedule())
    return {"pictures": str(pictures) if pictures else None, "curves": str(curves) if curves else None}


def card_metadata(start: str | None, dataset_name: str | None, license: str | None) -> dict:
    """What the model card's metadata needs to follow the Hub's conventions, recorded in training_config.json (so
    fgssl-push renders the same card): the dataset's Hub id (None for a local folder or the embedded data), the
    starting checkpoint's Hub id (`base_model`; None for a preset or a local folder), the starting checkpoint's
    name, and the license."""
    from .card import hub_repo_id

    return {
        "hub_dataset": hub_repo_id(dataset_name) if dataset_name and dataset_name != "synthetic" else None,
        "base_model": hub_repo_id(start),
        "start": Path(start).name if start and hub_repo_id(start) is None else start,
        "license": license,
    }


def write_run_records(trainer, data, model_args, data_args, objective_args, train_result, started: float) -> dict:
    """training_config.json (how the run was set up: the card and fgssl-push read it) and train_results.json (the
    trainer's metrics, images, skipped images, wall time, SimSiam's last output std). Returns training_config."""
    from .portable import portable

    output_dir = Path(trainer.args.output_dir)
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
        **card_metadata(starting_checkpoint(model_args), data_args.dataset_name,
                        getattr(trainer.args, "license", None)),
    ))
    atomic_write_json(output_dir / "training_config.json", training_config, default=str)
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
    atomic_write_json(output_dir / "train_results.json", portable(metrics), default=str)
    return training_config


def tensorboard_log_dir(trainer, output_dir) -> Path:
    """The folder the run's TensorBoard scalars went to (its callback's), so the pictures sit in the same run."""
    for callback in trainer.callback_handler.callbacks:
        if getattr(callback, "logging_dir", None):
            return Path(callback.logging_dir)
    return Path(output_dir) / "runs"


def log_eval_pictures(trainer, output_dir, pictures) -> None:
    """retrieval.png and embedding.png to TensorBoard too (tags eval/retrieval, eval/embedding) when it is on."""
    report_to = trainer.args.report_to or []
    if not pictures or "tensorboard" not in (report_to if isinstance(report_to, list) else [report_to]):
        return
    from .eval_pictures import log_pictures_to_tensorboard

    try:
        log_pictures_to_tensorboard({name: Path(output_dir) / file for name, file in pictures.items()},
                                    tensorboard_log_dir(trainer, output_dir), trainer.state.global_step)
    except Exception as err:  # noqa: BLE001  (pictures are a nicety: never lose a finished run over them)
        logger.warning("Evaluation pictures not added to TensorBoard: %s", err)


def evaluation_skipped(data) -> str | None:
    """Why the final evaluation cannot run on `data` (no evaluation split, or no class labels), or None."""
    if data.eval is None:
        return "no evaluation split"
    if data.label_column is None:
        return "no class labels (one class folder, or none found)"
    return None


def evaluate_run(trainer, model, data, output_dir, linear_backend: str, compare_with_start: bool, model_args,
                 method: str) -> dict:
    """The frozen-encoder protocol (training.evaluation) on the trained encoder, normalised as in training (the
    saved processor's statistics): eval_results.json / .md, retrieval.png and embedding.png in `output_dir`; with
    `compare_with_start`, the same on the encoder the run started from (training.report: comparison.md).

    Returns {"eval_results": path, ...report's entries}, or {"evaluation_skipped": why} (a warning says why).
    """
    why = evaluation_skipped(data)
    if why:
        # Never silently: a one-class image folder has no label column (datasets drops a single label), a Hub
        # dataset may have no labelled split; retrieval, kNN and the linear probe need two classes or more.
        logger.warning("Evaluation skipped: the dataset has %s; retrieval, kNN and the linear probe need labelled "
                       "images of at least two classes (--label_column, --eval_split; --run_evaluation false "
                       "silences this).", why)
        return {"evaluation_skipped": why}
    from .data import has_room
    from .evaluation import evaluate_encoder, write_results
    from .processor import normalization_kwargs, processor_crop_pct

    output_dir = Path(output_dir)
    norm = normalization_kwargs(trainer.processing_class)
    if has_room(data.eval):  # a cache with room is evaluated with the saved processor's crop
        norm["crop_pct"] = processor_crop_pct(trainer.processing_class)
    image_size = model.config.image_size  # the size it was trained at (training.pretrained)
    eval_results = evaluate_encoder(model.fgssl, data, image_size=image_size, linear_backend=linear_backend,
                                    pictures_dir=output_dir, **norm)
    write_results(eval_results, output_dir)
    results = {"eval_results": str(output_dir / "eval_results.json")}
    log_eval_pictures(trainer, output_dir, eval_results.get("pictures"))
    if compare_with_start:
        from .report import compare_with_start as compare  # the same protocol on the encoder this run started from

        results.update(compare(eval_results, model_args, method, trainer.args.seed, data, output_dir,
                               steps=trainer.state.global_step, linear_backend=linear_backend, **norm))
    return results


def write_run_card(output_dir, dataset: str, comparison: str | None, overwrite: bool) -> str | None:
    """The model card (README.md) with the comparison table when there is one, recorded as ours (runinfo); a
    README.md there that fgssl did not write is left as it is unless `overwrite`. Returns the card's path, or None
    (never fails a finished run: a warning says why)."""
    output_dir = Path(output_dir)
    if not (overwrite or runinfo.readme_is_ours(output_dir)):
        logger.warning("%s is not a card fgssl wrote: left as it is, no model card written (add "
                       "--overwrite_output_dir to replace it with the card).", output_dir / "README.md")
        return None
    try:
        from .card import write_model_card

        card = str(write_model_card(output_dir, dataset_name=dataset))
        if comparison:
            from .report import add_to_card

            add_to_card(card, Path(comparison).read_text())
        runinfo.record_card(output_dir, card)  # after the last edit: the hash marks the card as ours
        return card
    except Exception as err:  # a card is a nicety: never lose a finished run over it
        logger.warning("Model card not written: %s", err)
        return None


__all__ = ["starting_checkpoint", "default_output_dir", "run_image_processor", "effective_queue_size",
           "backbone_config_for", "validate_args", "refuse_fewer_than_one_batch", "add_knn_monitor",
           "save_model_folders", "write_run_pictures", "card_metadata", "write_run_records", "log_eval_pictures", "evaluation_skipped",
           "evaluate_run", "write_run_card"]
