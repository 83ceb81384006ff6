"""`fgssl-pretrain`: self-supervised pre-training (`plain`, `lcr` or `fgssl` on the base `--base moco | simsiam`)
on a Hugging Face dataset.

    fgssl-pretrain                                    # embedded synthetic default, CPU, a few minutes
    fgssl-pretrain --base simsiam --method fgssl      # the synthesized pairs on SimSiam instead of MoCo v2
    fgssl-pretrain configs/cub100_cpu.yaml --seed 1   # a config file, then command-line overrides
    accelerate launch -m fgssl.training.pretrain configs/cub200_vit_s16_gpu.yaml

The command, in reading order: arguments (training.arguments) -> checks (`validate_args`, before any data work)
-> the run's folder (training.runinfo: resume, refuse or overwrite) -> model (training.backbones.build_model) ->
data (training.data) -> FGSSLTrainer (training.trainer) -> results (training.pretraining: model folders, records,
evaluation, card; training.push). `main(argv)` returns the results (library, tests); `cli(argv)` is the console
script and returns the exit status (training.cli).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from transformers import set_seed

from . import runinfo
from .arguments import (ModelArguments, PretrainingArguments, PretrainingDataArguments, config_file_to_argv,
                        demo_recipe_argv)
from .backbones import build_model
from .cli import ArgumentParser, console_entry, usage_errors
from .augment import DEFAULT_CROP_PCT
from .data import collate_uint8, has_room, load_splits_from_args
from .pretraining import (add_knn_monitor, default_output_dir, evaluate_run, refuse_fewer_than_one_batch,
                          run_image_processor, save_model_folders, starting_checkpoint, validate_args, write_run_card,
                          write_run_pictures, write_run_records)
from .push import push_final_model, take_over_push
from .trainer import FGSSLTrainer, ObjectiveArguments

logger = logging.getLogger("fgssl.pretrain")


# --------------------------------------------------------------------------------------------- arguments


def build_parser() -> ArgumentParser:
    return ArgumentParser(
        (ModelArguments, PretrainingDataArguments, PretrainingArguments, ObjectiveArguments),
        prog="fgssl-pretrain",
        description="Self-supervised pre-training (plain, lcr or fgssl). An optional first argument is a YAML/JSON "
                    "config file (e.g. configs/cub100_cpu.yaml); flags after it override it. Without --dataset_name "
                    "the run uses the embedded synthetic dataset and its recipe (configs/demo.yaml), under the flags "
                    "given.",
    )


def parse_args(argv: list[str] | None = None):
    """(ModelArguments, PretrainingDataArguments, PretrainingArguments, ObjectiveArguments) for `argv` (default:
    sys.argv).

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


# --------------------------------------------------------------------------------------------- the run


def run_pretraining(model_args: ModelArguments, data_args: PretrainingDataArguments,
                    training_args: PretrainingArguments, objective_args: ObjectiveArguments) -> dict:
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
    with runinfo.output_dir_lock(training_args):
        return _pretrain(model_args, data_args, training_args, objective_args)


def _pretrain(model_args, data_args, training_args, objective_args) -> dict:
    started = time.time()
    output_dir = Path(training_args.output_dir)
    # The run's folder: the same run resumes or is found finished; another run there is refused before any work.
    fingerprint = runinfo.run_fingerprint(model_args, data_args, training_args, objective_args)
    folder_state, finished = runinfo.prepare_run(output_dir, fingerprint, training_args, "fgssl-pretrain")
    if finished:
        return {"output_dir": str(output_dir), "finished": finished}
    push_repo = take_over_push(training_args)  # the Hub checked now, the final model pushed at the end
    set_seed(training_args.seed)

    # Model, before data: a bad model knob is refused before any decoding. Its config.image_size is the run's size.
    with usage_errors(ValueError):
        model = build_model(model_args, objective_args.method)

    # Data. Several processes: the main one decodes and caches the images first, the others then read its cache.
    with usage_errors(ValueError), training_args.main_process_first(desc="decoding the dataset"):
        data = load_splits_from_args(data_args, model_args.image_size, require_eval=data_args.run_evaluation,
                                     holdout_fraction=data_args.holdout_fraction)
    refuse_fewer_than_one_batch(len(data.train), training_args)

    # Trainer.
    trainer = FGSSLTrainer(
        model=model,
        args=training_args,
        objective_args=objective_args,
        image_size=model_args.image_size,
        # The starting checkpoint's mean / std, if it has them; a cache with room's evaluation crop (crop_pct).
        processing_class=run_image_processor(starting_checkpoint(model_args), model_args.image_size,
                                             **({"crop_pct": DEFAULT_CROP_PCT} if has_room(data.train) else {})),
        train_dataset=data.train,
        data_collator=collate_uint8,
    )
    if data_args.knn_monitor_steps > 0:
        with usage_errors(ValueError):
            add_knn_monitor(trainer, data, data_args.knn_monitor_steps, data_args.knn_monitor_samples,
                            model_args.image_size)
    # Overwrite: the previous run removed now; resume: the newest complete checkpoint (runinfo, as fgssl-finetune).
    resume = runinfo.start_run(output_dir, fingerprint, folder_state, training_args)
    train_result = trainer.train(resume_from_checkpoint=resume)

    # Results: the main process saves, evaluates, writes the card and pushes.
    results = {"output_dir": str(output_dir)}
    if not trainer.is_world_process_zero():
        return results
    save_model_folders(trainer, model, output_dir)
    results.update(write_run_pictures(trainer, output_dir))
    training_config = write_run_records(trainer, data, model_args, data_args, objective_args, train_result, started)
    results["train_results"] = str(output_dir / "train_results.json")
    if data_args.run_evaluation:
        results.update(evaluate_run(trainer, model, data, output_dir, data_args.linear_backend,
                                    data_args.compare_with_start, model_args, objective_args.method))
    card = write_run_card(output_dir, training_config["dataset"], results.get("comparison"),
                          overwrite=getattr(training_args, "overwrite_output_dir", False))
    if card:
        results["card"] = card
    runinfo.mark_finished(output_dir, training_args, trainer.state.global_step,
                          ["model.safetensors", "train_results.json",
                           *(["eval_results.json"] if results.get("eval_results") else [])])
    if push_repo is not None:
        results["hub_url"] = push_final_model(
            output_dir, push_repo, training_args,
            f"The model is saved in {output_dir}; push it later with: fgssl-push {output_dir} {push_repo}")
    return results


# --------------------------------------------------------------------------------------------- command line


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


#: The console script (pyproject.toml [project.scripts]): `main` with one-line usage errors and an exit status.
cli = console_entry(main, "fgssl-pretrain")

if __name__ == "__main__":
    sys.exit(cli())
