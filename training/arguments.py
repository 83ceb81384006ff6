"""The commands' arguments, one dataclass per concern, each flag defined once.

    DataArguments               the dataset and how it is read: fgssl-pretrain, fgssl-eval and fgssl-finetune
    PretrainingDataArguments    DataArguments plus the pre-training run's held-out split and its evaluation
    ModelArguments              the model a pre-training run builds; its FGSSLConfig knobs are read from
                                FGSSLConfig itself (field list, types, docs, defaults), never copied by hand
    RunArguments                transformers TrainingArguments plus re-runs (--overwrite_output_dir) and --license
    PretrainingArguments        RunArguments with fgssl-pretrain's defaults
    FinetuneArguments           fgssl-finetune's model and LoRA choices (with DataArguments)
    EvalArguments               fgssl-eval's protocol settings (with DataArguments)
    config_file_to_argv         a YAML / JSON config file as flags (fgssl-pretrain's optional first argument)
    DEMO_RECIPE                 the embedded dataset's flags (demo_recipe_argv)

The commands (training.pretrain, training.eval, training.finetune) parse these; the library functions they call
take the objects these arguments describe.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import TrainingArguments

from .backbones import model_config_flags
from .cli import UsageError, closest, refuse_missing_reporters, tensorboard_available
from .data import DatasetFormatArguments
from .evaluation import KNN_K, KNN_TEMPERATURE, LINEAR_VAL_FRACTION

logger = logging.getLogger("fgssl.arguments")


# --------------------------------------------------------------------------------------------- data

DATASET_HELP = ("Hub id, local image folder (train/ and test/ of class folders, or class folders directly), "
                "CUB-200-2011 / Stanford Cars / FGVC-Aircraft folder as downloaded, or save_to_disk folder.")


@dataclass(kw_only=True)
class DataArguments(DatasetFormatArguments):
    """Which images a command reads and how (`training.data.load_splits_from_args` reads every field)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": DATASET_HELP + " fgssl-pretrain: leave out (or 'synthetic') for the embedded synthetic "
                                         "fine-grained dataset."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(
        default=None, metadata={"help": "Label column (default: detected); pre-training does not train on labels, "
                                        "it only evaluates with them."}
    )
    train_split: str = field(
        default="train", metadata={"help": "Split trained on (pre-training: without labels; evaluation: the memory "
                                           "bank and the probe's training data)."}
    )
    eval_split: str | None = field(
        default=None, metadata={"help": "Labelled split evaluated on (default: test, else validation; none: no "
                                        "evaluation split)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Fixed random subset of the train split (default: all of it)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Fixed random subset of the evaluation split (default: all of it)."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes decoding the images (first run only)."})
    cache_size_factor: float = field(
        default=1.0,
        metadata={"help": "Size of the decoded-image cache as a multiple of the image size S. 1 (default): each "
                          "image is cached as its S x S centre crop. F > 1: the WHOLE image at its aspect ratio in "
                          "an F*S x F*S box (longer side F*S, never upsampled), so training crops come from the "
                          "whole image at up to F x the detail, and evaluation resizes and centre-crops as the "
                          "image processor says (crop_pct 0.875). Cache memory grows about F^2 x."},
    )


@dataclass(kw_only=True)
class PretrainingDataArguments(DataArguments):
    """fgssl-pretrain's data arguments: DataArguments, a held-out part of the train split, the final evaluation."""

    holdout_fraction: float = field(
        default=0.0,
        metadata={"help": "Carve this fraction of every class out of the train split (fixed seed), train on the "
                          "rest and evaluate on it instead of the test split: for choosing knobs without the test "
                          "split (e.g. 0.15)."},
    )
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


# --------------------------------------------------------------------------------------------- model

ModelArguments = dataclasses.make_dataclass(
    "ModelArguments",
    [
        ("backbone", str, field(
            default="convnext-tiny-cpu",
            metadata={"help": "A preset (convnext-tiny-cpu, convnext-s16-cpu, vit-tiny-cpu, resnet-tiny-cpu, "
                              "resnet-s16-cpu, vit-s16, convnext-t, resnet50; random init) or a local folder / Hub id "
                              "of a transformers vision backbone to start from (e.g. microsoft/resnet-50: ImageNet "
                              "weights)."})),
        ("model_name_or_path", typing.Optional[str], field(
            default=None, metadata={"help": "An fgssl checkpoint to continue pre-training from (weights only)."})),
        ("image_size", int, field(
            default=64, metadata={"help": "Training resolution (images are cached at this size); the model's "
                                          "config.image_size."})),
        *model_config_flags(),
        ("freeze_stages", int, field(
            default=0,
            metadata={"help": "Freeze the backbone's stem and its first N stages (continuing from pretrained "
                              "weights: only the later stages adapt to the new images); 0 trains everything."})),
    ],
    namespace={"__doc__": "The model a pre-training run builds (`backbones.build_model`): where it starts, the "
                          "resolution, and every FGSSLConfig knob (None: the config's or the checkpoint's value)."},
)
ModelArguments.__module__ = __name__


# --------------------------------------------------------------------------------------------- training runs


def _ours(name: str, what: str) -> dict:
    """Help of a TrainingArguments field whose default fgssl-pretrain changes: what it is and transformers' default
    (argparse adds fgssl's, "(default: ...)")."""
    theirs = next(f for f in dataclasses.fields(TrainingArguments) if f.name == name)
    default = theirs.default if theirs.default is not dataclasses.MISSING else None
    return {"help": f"{what[0].upper() + what[1:]}; fgssl's default, not transformers' ({default!r})."}


@dataclass
class RunArguments(TrainingArguments):
    """transformers TrainingArguments plus what an fgssl run adds: re-runs and the weights' license."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in --output_dir (its checkpoints and results are removed first; a "
                          "README.md there is replaced by the model card) instead of resuming it. Running again "
                          "into a folder resumes its run when the run's fingerprint (fgssl_run.json) matches, and is "
                          "refused when it does not."},
    )
    license: str | None = field(
        default=None,
        metadata={"help": "License of the trained weights for the model cards (a Hub license id, e.g. apache-2.0 or "
                          "cc-by-nc-4.0). Default: none stated; the cards say the weights inherit the terms of "
                          "their training data."},
    )

    def __post_init__(self):
        refuse_missing_reporters(self.report_to)  # asked for and not installed: one line, before any work
        super().__post_init__()


@dataclass
class PretrainingArguments(RunArguments):
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Default: outputs/<method>-<dataset>. Running again into a folder resumes its run when "
                          "the run's fingerprint (fgssl_run.json) matches, and is refused when it does not."},
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

    def __post_init__(self):
        self.output_dir_given = self.output_dir is not None
        if self.report_to is None:  # TensorBoard when it is installed, nothing otherwise
            self.report_to = "tensorboard" if tensorboard_available() else "none"
        if (self.bf16 or self.fp16) and not accelerator_available():
            # The GPU recipes say bf16; the same config on a machine without an accelerator (a smoke test, a CPU
            # user) trains in float32 instead of failing inside TrainingArguments.
            logger.warning("--bf16/--fp16 need a GPU and none is available: training in float32 on the CPU.")
            self.bf16 = self.fp16 = False
        super().__post_init__()


def accelerator_available() -> bool:
    """A CUDA, XPU or MPS device is there."""
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        torch.backends.mps.is_available())


# --------------------------------------------------------------------------------------------- fine-tuning, eval

#: Fine-tuning methods: peft LoRA adapters plus the head, or every weight.
FINETUNE_METHODS = ("lora", "full")


@dataclass(kw_only=True)
class FinetuneArguments(DataArguments):
    """fgssl-finetune's model and method (the optimiser and schedule are RunArguments, transformers')."""

    model_name_or_path: str = field(metadata={"help": "fgssl checkpoint, plain transformers backbone, or Hub id."})
    dataset_name: str = field(metadata={"help": DATASET_HELP})
    method: str = field(default="lora", metadata={"help": "lora (adapters + head) or full (all weights)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Comma-separated module names (default: chosen for the backbone type)."}
    )
    few_shot_k: int | None = field(default=None, metadata={"help": "Keep k labelled training images per class."})
    few_shot_seed: int = field(default=0, metadata={"help": "Seed of the few-shot draw."})
    image_size: int | None = field(
        default=None, metadata={"help": "Input side (default: the side of the model's image processor, else the size "
                                        "it was trained at, else 224)."}
    )


@dataclass(kw_only=True)
class EvalArguments(DataArguments):
    """fgssl-eval's model and protocol settings (the defaults are training.evaluation's)."""

    model_name_or_path: str = field(
        metadata={"help": "fgssl checkpoint folder, plain transformers backbone folder (ViT, ConvNeXt...) or Hub id."}
    )
    dataset_name: str = field(metadata={"help": DATASET_HELP})
    protocols: str = field(default="retrieval,knn,linear", metadata={"help": "Comma-separated: retrieval,knn,linear."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where eval_results.json/.md go (default: <model folder>/eval, or ./eval)."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input side S (default: the side of the model's image processor, else the "
                                        "size it was trained at, else 224). Images are normalised with the model's "
                                        "image processor's mean and std (ImageNet's without one)."}
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cuda, cuda:1, cpu... (default: cuda if available)."})
    knn_k: int = field(default=KNN_K, metadata={"help": "Neighbours of the weighted kNN."})
    knn_temperature: float = field(default=KNN_TEMPERATURE, metadata={"help": "Temperature of the kNN weights."})
    linear_val_fraction: float = field(
        default=LINEAR_VAL_FRACTION, metadata={"help": "Part of train held out to choose the probe's C."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the probe's validation split."})
    chunk_size: int = field(default=256, metadata={"help": "Retrieval queries per similarity block."})


# --------------------------------------------------------------------------------------------- config files


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


__all__ = ["DataArguments", "PretrainingDataArguments", "ModelArguments", "RunArguments", "PretrainingArguments",
           "FinetuneArguments", "EvalArguments", "FINETUNE_METHODS", "config_file_to_argv", "DEMO_RECIPE", "demo_recipe_argv", "accelerator_available"]
