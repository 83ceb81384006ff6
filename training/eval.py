"""fgssl-eval: retrieval, kNN and linear-probe evaluation of a frozen encoder (docs/method.md "Evaluation protocol").

    fgssl-eval --model_name_or_path M --dataset_name D [--protocols retrieval,knn,linear] [--output_dir O]
               [--image_size S] [--max_train_samples N] [--max_eval_samples N]

M is an fgssl checkpoint, a plain transformers vision backbone folder, or a Hub id. Writes
O/eval_results.json, O/eval_results.md and two pictures of the test split (training.eval_pictures): retrieval.png
(a fixed sample of queries with their top-5 neighbours) and embedding.png (a 2-D map coloured by class). The work
is done by training.evaluation.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cli import (ArgumentParser, UsageError, console_entry, refuse_bad_inputs, refuse_too_small_image,
                  usage_errors)
from .data import DatasetFormatArguments
from .evaluation import (
    KNN_K,
    KNN_TEMPERATURE,
    LINEAR_VAL_FRACTION,
    default_image_size,
    evaluate_encoder,
    load_encoder,
    metric_keys,
    parse_protocols,
    write_results,
)

logger = logging.getLogger(__name__)


@dataclass
class EvalArguments(DatasetFormatArguments):
    """Command-line arguments of fgssl-eval."""

    model_name_or_path: str = field(
        metadata={"help": "fgssl checkpoint folder, plain transformers backbone folder (ViT, ConvNeXt...) or Hub id."}
    )
    dataset_name: str = field(
        metadata={"help": "Image folder (train/ and test/ of class folders), CUB-200-2011 / Stanford Cars / "
                          "FGVC-Aircraft folder as downloaded, save_to_disk folder or Hub dataset id."}
    )
    protocols: str = field(default="retrieval,knn,linear", metadata={"help": "Comma-separated: retrieval,knn,linear."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where eval_results.json/.md go (default: <model folder>/eval, or ./eval)."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input side S (default: the side of the model's image processor, else the "
                                        "backbone's image_size, else 224). Images are normalised with the model's "
                                        "image processor's mean and std (ImageNet's without one)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Fixed random subset of the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Fixed random subset of the test split."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected)."})
    train_split: str = field(default="train", metadata={"help": "Split used as memory bank / probe training data."})
    eval_split: str | None = field(default=None, metadata={"help": "Test split (default: test, else validation)."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    device: str | None = field(default=None, metadata={"help": "cuda, cuda:1, cpu... (default: cuda if available)."})
    knn_k: int = field(default=KNN_K, metadata={"help": "Neighbours of the weighted kNN."})
    knn_temperature: float = field(default=KNN_TEMPERATURE, metadata={"help": "Temperature of the kNN weights."})
    linear_val_fraction: float = field(
        default=LINEAR_VAL_FRACTION, metadata={"help": "Part of train held out to choose the probe's C."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the probe's validation split."})
    chunk_size: int = field(default=256, metadata={"help": "Retrieval queries per similarity block."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes decoding the images (first run only)."})


def default_output_dir(model_name_or_path: str) -> Path:
    """<model folder>/eval for a local model, else ./eval/<hub id with / replaced>."""
    path = Path(model_name_or_path)
    return path / "eval" if path.is_dir() else Path("eval") / model_name_or_path.replace("/", "__")


def validate_args(args: EvalArguments) -> None:
    """Refuse values that cannot work, before loading anything (UsageError naming the option and the fix)."""
    refuse_bad_inputs(args.image_size, dataset_name=args.dataset_name, model_name_or_path=args.model_name_or_path)
    for name in ("max_train_samples", "max_eval_samples", "image_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1 when given, got {value} (leave it out for the default).")
    for name in ("batch_size", "knn_k", "chunk_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if not args.knn_temperature > 0:
        raise UsageError(f"--knn_temperature must be > 0, got {args.knn_temperature} (the protocol uses 0.07).")
    if not 0 < args.linear_val_fraction < 1:
        raise UsageError(f"--linear_val_fraction must be in (0, 1), got {args.linear_val_fraction}.")


def run_eval(args: EvalArguments) -> dict:
    """Load the encoder and the data, run the protocols, write the results; returns the results dict."""
    from .data import load_splits_from_args

    validate_args(args)
    with usage_errors(ValueError):
        protocols = parse_protocols(args.protocols)
    if args.image_size:  # before loading any weights
        from transformers import AutoConfig

        from .. import modeling  # noqa: F401  (lets AutoConfig read fgssl configs)

        with usage_errors(ValueError, OSError):
            refuse_too_small_image(AutoConfig.from_pretrained(args.model_name_or_path), args.image_size,
                                   args.model_name_or_path)
    with usage_errors(ValueError, OSError):
        encoder = load_encoder(args.model_name_or_path)
    from .processor import normalization_kwargs, source_processor_settings

    # The model's own preprocessing (training.processor): its mean / std, and its input side unless --image_size.
    with usage_errors(ValueError):
        processor_settings = source_processor_settings(args.model_name_or_path)
    image_size = args.image_size or (processor_settings or {}).get("image_size") or default_image_size(encoder.config)
    with usage_errors(ValueError):
        data = load_splits_from_args(args, image_size, require_eval=True)
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model_name_or_path)
    results = evaluate_encoder(
        encoder, data, protocols, batch_size=args.batch_size, device=args.device, image_size=image_size,
        knn_k=args.knn_k, knn_temperature=args.knn_temperature, linear_val_fraction=args.linear_val_fraction,
        seed=args.seed, chunk_size=args.chunk_size, **normalization_kwargs(processor_settings),
        pictures_dir=output_dir,
    )
    results["settings"].update(
        model_name_or_path=args.model_name_or_path, dataset_name=args.dataset_name,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
    )
    results["num_images"]["skipped_unreadable"] = dict(data.num_skipped)
    json_path, md_path = write_results(results, output_dir)
    results["output_files"] = [str(json_path), str(md_path),
                               *(str(output_dir / name) for name in results.get("pictures", {}).values())]
    return results


def build_parser() -> ArgumentParser:
    return ArgumentParser(EvalArguments, prog="fgssl-eval",
                          description="Retrieval, kNN and linear-probe evaluation of a frozen encoder.")


def main(argv: list[str] | None = None) -> dict:
    """fgssl-eval as a library call (returns the results); `argv` (without the program name) defaults to
    sys.argv[1:]. The console script is `cli`, which returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = build_parser().parse(sys.argv[1:] if argv is None else argv)
    results = run_eval(args)
    for key in metric_keys(results):
        print(f"{key}: {results[key]}")
    print(f"Wrote {', '.join(results['output_files'])}")
    return results


cli = console_entry(main, "fgssl-eval")

if __name__ == "__main__":
    sys.exit(cli())
