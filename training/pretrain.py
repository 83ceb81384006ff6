"""`fgssl-pretrain`: self-supervised pre-training (`moco`, `lcr` or `fgssl` on the base `--base moco | simsiam`)
on a Hugging Face dataset.

    fgssl-pretrain                                    # embedded synthetic default, CPU, a few minutes
    fgssl-pretrain --base simsiam --method fgssl      # the synthesized pairs on SimSiam instead of MoCo v2
    fgssl-pretrain configs/cub100_cpu.yaml --seed 1   # a config file, then command-line overrides
    accelerate launch -m training.pretrain configs/cub200_vit_s16_gpu.yaml

Thin: parse arguments, call `run_pretraining`, print where results went.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .data import DatasetFormatArguments, collate_uint8, load_splits
from .trainer import FGSSLTrainer, ObjectiveArguments

logger = logging.getLogger("fgssl.pretrain")


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------
def _backbone_presets() -> dict:
    from transformers import ConvNextConfig, ResNetConfig, ViTConfig

    return {
        # CPU-sized backbones for the demo, tests and the cub100 CPU benchmark.
        "convnext-tiny-cpu": lambda s: ConvNextConfig(hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1]),
        # Total stride 16 (three stages): a 4 x 4 final map at 64 px, room for Grad-CAM maps and map decoding.
        "convnext-s16-cpu": lambda s: ConvNextConfig(num_stages=3, hidden_sizes=[32, 64, 256], depths=[1, 1, 3]),
        "vit-tiny-cpu": lambda s: ViTConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                                            intermediate_size=768, image_size=s, patch_size=8),
        "resnet-tiny-cpu": lambda s: ResNetConfig(layer_type="basic", embedding_size=32, depths=[1, 1, 1, 1],
                                                  hidden_sizes=[32, 64, 128, 256]),
        # The GPU recipes' architectures (random init; pass a checkpoint path to start from ImageNet weights).
        "vit-s16": lambda s: ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                       intermediate_size=1536, image_size=s, patch_size=16),
        "convnext-t": lambda s: ConvNextConfig(),
    }


def _config_default(name: str, what: str = "") -> str:
    """Help text that names FGSSLConfig's default (the one source of model defaults)."""
    from ..modeling.configuration_fgssl import FGSSLConfig

    default = getattr(FGSSLConfig, name)
    default = list(default) if isinstance(default, tuple) else default
    return f"{what + '; ' if what else ''}default: FGSSLConfig's ({default})."


#: Model knobs passed to FGSSLConfig when given (None: the config's default).
CONFIG_FIELDS = ("base", "projector_hidden_size", "projector_dim", "momentum", "queue_size", "variance_momentum",
                 "decoder_input", "decoder_base_size", "decoder_block_out_channels", "decoder_layers_per_block",
                 "screening_channels", "predictor_hidden_size")


@dataclass
class ModelArguments:
    backbone: str = field(
        default="convnext-tiny-cpu",
        metadata={"help": "A preset (convnext-tiny-cpu, convnext-s16-cpu, vit-tiny-cpu, resnet-tiny-cpu, vit-s16, convnext-t; random "
                          "init) or a local folder / Hub id of a transformers vision backbone to start from."},
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


@dataclass
class DataArguments(DatasetFormatArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id, local image-folder dir, CUB-200-2011 / Stanford Cars / FGVC-Aircraft folder as "
                          "downloaded, or save_to_disk dir; default: the embedded synthetic fine-grained dataset."},
    )
    image_column: str | None = field(default=None)
    label_column: str | None = field(default=None, metadata={"help": "Labels are not used for training."})
    train_split: str = field(default="train")
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
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    run_evaluation: bool = field(
        default=True, metadata={"help": "Run retrieval / kNN / linear probe at the end when labels exist."}
    )
    knn_monitor_steps: int = field(
        default=0, metadata={"help": "Every N steps log an online kNN top-1 on labelled data (0: off)."}
    )
    knn_monitor_samples: int = field(default=1000, metadata={"help": "Bank and query images of the kNN monitor."})


@dataclass
class PretrainingArguments(TrainingArguments):
    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/<method>-<dataset>."})
    per_device_train_batch_size: int = field(default=64)
    learning_rate: float = field(default=1e-3)
    weight_decay: float = field(default=0.05)
    num_train_epochs: float = field(default=30.0)
    lr_scheduler_type: str = field(default="cosine")
    warmup_steps: float = field(default=0.05)
    logging_steps: float = field(default=10)
    save_steps: float = field(default=200)
    save_total_limit: int | None = field(default=2)
    remove_unused_columns: bool = field(default=False)
    dataloader_drop_last: bool = field(default=True)
    report_to: None | str | list[str] = field(default=None, metadata={"help": "Default: tensorboard if installed."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push encoder, code and card at the end."})

    def __post_init__(self):
        self.output_dir_given = self.output_dir is not None
        if self.report_to is None:  # TensorBoard when it is installed, nothing otherwise
            self.report_to = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
        super().__post_init__()


# ---------------------------------------------------------------------------------------------------------------
# Library functions (used by the CLI, tests and benchmarks)
# ---------------------------------------------------------------------------------------------------------------
def method_config_kwargs(method: str) -> dict:
    """What each method needs of the model: fgssl a decoder, lcr the screening pooling, moco neither."""
    return {
        "moco": {"use_decoder": False, "pooling": "mean"},
        "lcr": {"use_decoder": False, "pooling": "screening"},
        "fgssl": {"use_decoder": True, "pooling": "mean"},
    }[method]


def build_model(model_args: ModelArguments, method: str):
    """An `FGSSLForPreTraining` for `method`: from an fgssl checkpoint, a backbone preset, or pretrained weights."""
    from .. import modeling  # noqa: F401  (registers the Auto classes)
    from ..modeling import FGSSLConfig, FGSSLForPreTraining

    config_kwargs = {name: getattr(model_args, name) for name in CONFIG_FIELDS if getattr(model_args, name) is not None}
    config_kwargs.update(image_size=model_args.image_size, **method_config_kwargs(method))
    if model_args.model_name_or_path:
        return FGSSLForPreTraining.from_pretrained(model_args.model_name_or_path, **config_kwargs)
    presets = _backbone_presets()
    if model_args.backbone in presets:
        backbone_config = presets[model_args.backbone](model_args.image_size)
        return FGSSLForPreTraining(FGSSLConfig(backbone_config=backbone_config, **config_kwargs))
    if not (Path(model_args.backbone).exists() or "/" in model_args.backbone):
        raise ValueError(
            f"--backbone {model_args.backbone!r} is neither a preset ({', '.join(presets)}) nor a local folder or "
            "Hub id of a transformers vision backbone."
        )
    return FGSSLForPreTraining.from_backbone_pretrained(model_args.backbone, **config_kwargs)


def default_output_dir(method: str, dataset_name: str | None, base: str | None = None) -> str:
    name = "synthetic" if dataset_name is None else Path(dataset_name.rstrip("/")).name
    prefix = f"simsiam-{method}" if base == "simsiam" else method
    return str(Path("outputs") / f"{prefix}-{name}")


def check_push_possible(training_args) -> None:
    """Refuse `--push_to_hub` before training when it cannot succeed, so no work is lost."""
    if not training_args.push_to_hub:
        return
    from .push import check_hub_access

    check_hub_access(training_args.hub_token)


def run_pretraining(model_args: ModelArguments, data_args: DataArguments, training_args: PretrainingArguments,
                    objective_args: ObjectiveArguments) -> dict:
    """Pre-train, save the model, encoder and decoder, pictures and metrics; return where everything went."""
    started = time.time()
    if not getattr(training_args, "output_dir_given", True):
        training_args.output_dir = default_output_dir(objective_args.method, data_args.dataset_name, model_args.base)
    output_dir = Path(training_args.output_dir)
    push = training_args.push_to_hub
    check_push_possible(training_args)
    training_args.push_to_hub = False  # we push ourselves, at the end, with the card
    set_seed(training_args.seed)

    # Build the model before touching data: a bad model knob is refused before any decoding.
    model = build_model(model_args, objective_args.method)
    data = load_splits(
        data_args.dataset_name,
        model_args.image_size,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        train_split=data_args.train_split,
        eval_split=data_args.eval_split,
        require_eval=data_args.run_evaluation,
        holdout_fraction=data_args.holdout_fraction,
        **data_args.format_kwargs(),
    )
    if len(data.train) < training_args.per_device_train_batch_size * max(1, training_args.world_size):
        raise ValueError(
            f"The training split has {len(data.train)} images, fewer than one batch of "
            f"{training_args.per_device_train_batch_size}; lower --per_device_train_batch_size."
        )

    trainer = FGSSLTrainer(
        model=model,
        args=training_args,
        objective_args=objective_args,
        image_size=model_args.image_size,
        train_dataset=data.train,
        data_collator=collate_uint8,
    )
    if data_args.knn_monitor_steps > 0:
        add_knn_monitor(trainer, data, data_args, model_args.image_size)
    resume = training_args.resume_from_checkpoint
    if resume in (None, "last", "auto") and output_dir.is_dir():
        last = get_last_checkpoint(str(output_dir))
        if last is not None:
            logger.warning("Resuming from %s (delete the output folder to start over).", last)
            resume = last
    if resume in ("last", "auto"):
        resume = None
    train_result = trainer.train(resume_from_checkpoint=resume)

    results = {"output_dir": str(output_dir)}
    if trainer.is_world_process_zero():
        results.update(save_outputs(trainer, model, data, data_args, model_args, objective_args, train_result,
                                    started))
        if push:
            from .push import HubPushError, push_to_hub

            repo_id = training_args.hub_model_id or output_dir.name
            try:
                results["hub_url"] = push_to_hub(output_dir, repo_id, token=training_args.hub_token)
            except HubPushError as err:  # the run is saved locally: say how to push it later
                logger.error("%s\nThe model is saved in %s; push it later with: fgssl-push %s %s",
                             err, output_dir, output_dir, repo_id)
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


def save_outputs(trainer, model, data, data_args, model_args, objective_args, train_result, started) -> dict:
    """The final save: pre-training model, encoder, decoder (diffusers), pictures, curves, metrics, card."""
    from .pictures import plot_training_curves

    output_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(output_dir))
    model.fgssl.save_pretrained(output_dir / "encoder")
    if model.decoder is not None:
        model.decoder.save_pretrained(output_dir / "decoder")
    pictures = trainer.write_pictures(output_dir / "pictures")
    curves = plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
    training_config = dict(
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
    )
    (output_dir / "training_config.json").write_text(json.dumps(training_config, indent=2, default=str))
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
    (output_dir / "train_results.json").write_text(json.dumps(metrics, indent=2, default=str))
    results = {"pictures": str(pictures) if pictures else None, "curves": str(curves) if curves else None,
               "train_results": str(output_dir / "train_results.json")}
    if data_args.run_evaluation and data.eval is not None and data.label_column is not None:
        from .evaluation import evaluate_encoder, write_results

        eval_results = evaluate_encoder(model.fgssl, data, image_size=model_args.image_size)
        write_results(eval_results, output_dir)
        results["eval_results"] = str(output_dir / "eval_results.json")
    try:
        from .card import write_model_card

        results["card"] = str(write_model_card(output_dir, dataset_name=training_config["dataset"]))
    except Exception as err:  # a card is a nicety: never lose a finished run over it
        logger.warning("Model card not written: %s", err)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def config_file_to_argv(path: str) -> list[str]:
    """A YAML/JSON config file as command-line arguments, so later arguments on the command line override it."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist (shipped configs are in configs/).")
    values = yaml.safe_load(file.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of argument names to values.")
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def parse_args(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = config_file_to_argv(argv[0]) + argv[1:]
    parser = HfArgumentParser((ModelArguments, DataArguments, PretrainingArguments, ObjectiveArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model_args, data_args, training_args, objective_args = parse_args(argv)
    results = run_pretraining(model_args, data_args, training_args, objective_args)
    if int(os.environ.get("RANK", "0")) == 0:
        print("\nfgssl-pretrain finished.")
        for name, value in results.items():
            if value:
                print(f"  {name:>14}: {value}")
    return results


if __name__ == "__main__":
    main()
