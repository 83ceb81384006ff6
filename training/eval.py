"""The fgssl-eval command: retrieval, kNN and linear-probe evaluation of a frozen encoder (docs/method.md
"Evaluation protocol"). The protocol itself is a library, training.evaluation; this module only reads the
command line and calls it.

    fgssl-eval --model_name_or_path M --dataset_name D [--protocols retrieval,knn,linear] [--output_dir O]
               [--image_size S] [--max_train_samples N] [--max_eval_samples N]

M is an fgssl checkpoint, a plain transformers vision backbone folder, or a Hub id. Writes
O/eval_results.json, O/eval_results.md and two pictures of the test split (training.eval_pictures): retrieval.png
(a fixed sample of queries with their top-5 neighbours) and embedding.png (a 2-D map coloured by class).

In reading order: arguments (training.arguments.EvalArguments) -> checks -> model (training.evaluation.load_encoder)
-> data (training.data) -> protocols (training.evaluation.evaluate_encoder) -> results (write_results).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .arguments import EvalArguments
from .cli import ArgumentParser, UsageError, console_entry, refuse_bad_inputs, refuse_too_small_image, usage_errors
from .evaluation import evaluate_encoder, load_encoder, metric_keys, parse_protocols, write_results
from .pretrained import input_image_size
from .processor import normalization_kwargs, source_processor_settings

logger = logging.getLogger(__name__)


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


def _room_crop(model_name_or_path, data) -> dict:
    """{"crop_pct": the model's image processor's crop} for data decoded with room (--cache_size_factor > 1) when
    that processor says one, else {} (evaluate_encoder's default)."""
    from .data import has_room
    from .processor import processor_crop_pct, read_processor_config

    if not has_room(data.eval):
        return {}
    crop_pct = processor_crop_pct(read_processor_config(model_name_or_path))
    return {} if crop_pct is None else {"crop_pct": crop_pct}


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

    # Model, and the preprocessing it was trained with (training.processor): its mean / std, and its input side
    # unless --image_size (training.pretrained: the processor's side, else the size it was trained at).
    with usage_errors(ValueError, OSError):
        encoder = load_encoder(args.model_name_or_path)
    with usage_errors(ValueError):
        processor_settings = source_processor_settings(args.model_name_or_path)
    image_size = args.image_size or input_image_size(encoder.config, (processor_settings or {}).get("image_size"))

    # Data.
    with usage_errors(ValueError):
        data = load_splits_from_args(args, image_size, require_eval=True)

    # Protocols, then the results beside the pictures.
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model_name_or_path)
    results = evaluate_encoder(
        encoder, data, protocols, batch_size=args.batch_size, device=args.device, image_size=image_size,
        knn_k=args.knn_k, knn_temperature=args.knn_temperature, linear_val_fraction=args.linear_val_fraction,
        seed=args.seed, chunk_size=args.chunk_size, **normalization_kwargs(processor_settings),
        pictures_dir=output_dir, **_room_crop(args.model_name_or_path, data),
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


def print_results(results: dict) -> None:
    """The metrics, one per line in the documented order, then the files written."""
    for key in metric_keys(results):
        print(f"{key}: {results[key]}")
    print(f"Wrote {', '.join(results['output_files'])}")


def main(argv: list[str] | None = None) -> dict:
    """fgssl-eval called from Python: prints the metrics and where they were written, returns the results dict.
    `argv` excludes the program name (default: sys.argv[1:]); `cli` wraps this for the console (exit status)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = build_parser().parse(sys.argv[1:] if argv is None else argv)
    results = run_eval(args)
    print_results(results)
    return results


#: The console script (pyproject.toml [project.scripts]): `main` with one-line usage errors and an exit status.
cli = console_entry(main, "fgssl-eval")

if __name__ == "__main__":
    sys.exit(cli())
