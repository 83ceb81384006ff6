"""fgssl-finetune: fine-grained classification from an fgssl checkpoint (or any backbone) with transformers Trainer.

    fgssl-finetune --model_name_or_path M --dataset_name D --output_dir O [--method lora|full]
                   [--few_shot_k K --few_shot_seed S] [--image_size S] [TrainingArguments...]

The model is FGSSLForImageClassification: the encoder `f` (mean-pooled `h`) plus a linear head. `--method full`
trains everything; `--method lora` (default) adds peft LoRA adapters to the backbone's attention / pointwise layers
(chosen per backbone type, see training.finetuning.LORA_TARGET_MODULES) and trains them with the head
(`modules_to_save`). Outputs: O/adapter (LoRA only), O/merged (LoRA merged into the weights) or O/model (full), and
O/finetune_results.json with the test accuracy (the repository's `accuracy` evaluate module). With --push_to_hub
(and --hub_model_id) the token is checked before training and the final model is uploaded with its card
(training.push).

The command, in reading order: arguments (training.arguments) -> checks -> the run's folder (training.runinfo) ->
data (training.data) -> model (training.finetuning.build_classifier, apply_lora) -> Trainer (make_trainer) ->
results (save_finetuned, finetune_results.json, cards, push).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from transformers import IntervalStrategy

from . import runinfo
from .atomic import atomic_write_json
from .arguments import FinetuneArguments, RunArguments
from .cli import ArgumentParser, UsageError, console_entry, refuse_too_small_image, usage_errors
from .finetuning import (RESULTS_JSON, apply_lora, build_classifier, few_shot_indices, finetune_card_metadata,
                         make_trainer, save_finetuned, split_labels, validate_args, write_finetune_cards)
from .portable import portable
from .pretrained import input_image_size
from .processor import normalization_kwargs, source_processor_settings
from .push import push_final_model, take_over_push

logger = logging.getLogger(__name__)


def run_finetune(args: FinetuneArguments, training_args: RunArguments) -> dict:
    """Load data and model, train with Trainer, evaluate, save; returns the results written to finetune_results.json.

    Re-runs behave as fgssl-pretrain's, through the same code (training.runinfo): the output folder is locked
    while the run writes there; a folder holding another run (fingerprint in fgssl_run.json) is refused before any
    work unless --overwrite_output_dir (which removes that run first); the same run resumes from its newest
    complete checkpoint, and a finished one is not trained again (result {"output_dir", "finished": one line}).
    """
    validate_args(args, training_args)
    with runinfo.output_dir_lock(training_args):
        return _finetune(args, training_args)


def _finetune(args: FinetuneArguments, training_args: RunArguments) -> dict:
    from transformers import AutoConfig

    from .. import modeling  # noqa: F401  (lets AutoConfig read fgssl configs)
    from .data import load_splits_from_args

    # The run's folder: the same run resumes or is found finished; another run there is refused before any work.
    output_dir = Path(training_args.output_dir)
    fingerprint = runinfo.finetune_fingerprint(args, training_args)
    folder_state, finished = runinfo.prepare_run(output_dir, fingerprint, training_args, "fgssl-finetune")
    if finished:
        return {"output_dir": str(output_dir), "finished": finished}
    push_repo = take_over_push(training_args)  # the Hub checked now, the final model pushed at the end

    # The starting checkpoint's own preprocessing (training.processor): its mean / std, its side unless --image_size.
    with usage_errors(ValueError, OSError):
        model_config = AutoConfig.from_pretrained(args.model_name_or_path)
    with usage_errors(ValueError):
        processor_settings = source_processor_settings(args.model_name_or_path)
    image_size = args.image_size or input_image_size(model_config, (processor_settings or {}).get("image_size"))
    refuse_too_small_image(model_config, image_size, args.model_name_or_path)

    # Data. Several processes: the main one decodes and caches the images first, the others then read its cache.
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

    # Model: the encoder and a new head for the dataset's classes; LoRA adapters on it unless --method full.
    num_labels = len(data.label_names) if data.label_names else int(train_labels.max()) + 1
    id2label = dict(enumerate(data.label_names)) if data.label_names else None
    with usage_errors(ValueError):
        model = build_classifier(args.model_name_or_path, num_labels, id2label)
        if args.method == "lora":
            targets = args.lora_target_modules.split(",") if args.lora_target_modules else None
            model = apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, targets)

    # Trainer.
    if training_args.load_best_model_at_end:
        logger.warning("load_best_model_at_end selects a checkpoint on the eval split; use a validation split for "
                       "that (--eval_split), never the test split.")
    from .augment import DEFAULT_CROP_PCT
    from .data import has_room

    # A cache with room (--cache_size_factor > 1) is evaluated with the usual centre crop, and the processor says so.
    room = {"crop_pct": DEFAULT_CROP_PCT} if has_room(data.train) else {}
    trainer = make_trainer(model, training_args, train, data.eval, image_size,
                           **normalization_kwargs(processor_settings), **room)
    # Overwrite: the previous run removed now; resume: the newest complete checkpoint (runinfo, as fgssl-pretrain).
    resume = runinfo.start_run(output_dir, fingerprint, folder_state, training_args)
    train_output = trainer.train(resume_from_checkpoint=resume)

    # Results.
    metrics = trainer.evaluate() if data.eval is not None else {}
    paths = save_finetuned(trainer.model, training_args.output_dir, trainer.processing_class)
    results = {
        "accuracy": metrics.get("eval_accuracy"),
        "settings": {
            "model_name_or_path": args.model_name_or_path, "dataset_name": args.dataset_name, "method": args.method,
            "few_shot_k": args.few_shot_k, "few_shot_seed": args.few_shot_seed, "image_size": image_size,
            "learning_rate": training_args.learning_rate, "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps, "seed": training_args.seed, **data.source,
            **finetune_card_metadata(args.model_name_or_path, args.dataset_name,
                                     getattr(training_args, "license", None)),
        },
        "num_images": {"train": len(train), "eval": len(data.eval) if data.eval is not None else 0},
        "train_loss": train_output.training_loss,
        "saved": paths,
    }
    # No absolute machine path in a file that may be pushed or shared: saved folders relative to the output folder.
    shared = {**portable(results), "saved": {name: Path(path).name for name, path in paths.items()}}
    atomic_write_json(output_dir / RESULTS_JSON, shared)
    results["cards"] = write_finetune_cards(paths)
    runinfo.mark_finished(output_dir, training_args, trainer.state.global_step, [RESULTS_JSON, *paths.values()])
    if push_repo is not None:
        final_dir = paths.get("merged") or paths["model"]
        results["pushed"] = push_final_model(final_dir, push_repo, training_args,
                                             f"The fine-tuned model is saved in {final_dir}.",
                                             private=training_args.hub_private_repo)
    return results


def build_parser() -> ArgumentParser:
    parser = ArgumentParser((FinetuneArguments, RunArguments), prog="fgssl-finetune",
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


#: The console script (pyproject.toml [project.scripts]): `main` with one-line usage errors and an exit status.
cli = console_entry(main, "fgssl-finetune")

if __name__ == "__main__":
    sys.exit(cli())
