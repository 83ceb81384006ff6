"""Model cards for fgssl models: hub_cards/model_card_template.md rendered with huggingface_hub ModelCard.

    render_model_card(model_dir, ...)  -> ModelCard: model-index from eval_results.json (and finetune_results.json),
                                          training data, method and config, intended use and limits, and the
                                          picture of synthesized pairs when there is one
    write_model_card(model_dir, ...)   -> model_dir/README.md (the picture copied next to it when needed)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..hub_cards import MODEL_CARD_TEMPLATE
from .portable import portable_path
from .processor import PROCESSOR_CONFIG_NAME, processor_image_size

#: metric key -> (task_type, task_name, metric_type, metric_name) of the model-index entry.
RESULT_SPECS = {
    "retrieval_rank1": ("image-feature-extraction", "Image retrieval (frozen features)", "rank1", "Retrieval rank-1"),
    "retrieval_rank5": ("image-feature-extraction", "Image retrieval (frozen features)", "rank5", "Retrieval rank-5"),
    "retrieval_map": ("image-feature-extraction", "Image retrieval (frozen features)", "map", "Retrieval mAP"),
    # The model-index groups entries by task type and dataset (not task name): the metric name tells them apart.
    "knn_top1": ("image-classification", "Image classification", "accuracy", "kNN top-1, frozen features (k=20)"),
    "linear_top1": ("image-classification", "Image classification", "accuracy", "Linear probe top-1, frozen features"),
    "accuracy": ("image-classification", "Image classification", "accuracy", "Top-1 accuracy, fine-tuned"),
}
#: Where the picture of synthesized pairs may be, relative to the model folder (first match wins).
PAIRS_IMAGE_PATTERNS = ("*synth*pair*.png", "*pairs*.png", "*synth*.png")
TRAINING_CONFIG_NAMES = ("training_config.json", "fgssl_training_config.json")
#: The first line of every card this module writes: fgssl-push renders such a card again with the repository id;
#: a README.md without it is the user's own and is left alone.
CARD_MARKER = "<!-- fgssl model card"

METHOD_DESCRIPTIONS = {
    "fgssl": (
        "MoCo v2 contrastive learning plus synthesized pairs (Wang et al., ECCV 2024): the feature dimensions that "
        "carry nuisance are found with a variance criterion and a Grad-CAM criterion induced from the SSL loss, "
        "perturbed, and decoded back to images with a diffusers decoder; the encoder is trained to treat the image "
        "decoded from the original features and the one decoded from the perturbed features as the same image, so "
        "it becomes invariant to the nuisance dimensions. The product is the encoder `f` (backbone + global average "
        "pooling); projector, momentum branch and decoder stay in the pre-training checkpoint."
    ),
    "moco": "MoCo v2 contrastive learning (the baseline of fgssl, without synthesized pairs).",
    "lcr": (
        "LCR (CVPR 2023): MoCo v2 with a screening module trained to match the Grad-CAM map of the SSL loss; the "
        "feature is the final feature map weighted by the screening map, then pooled."
    ),
}
INTENDED_USE = (
    "Feature extraction for fine-grained visual recognition (species, car models, aircraft variants): image "
    "retrieval, kNN or linear classification on the embedding, or a starting point for fine-tuning "
    "(`fgssl-finetune`, full or LoRA). The features were learned without labels from {data}; expect them to "
    "transfer best to images of the same domain. They are not meant for decisions about people. Self-supervised "
    "features inherit the biases of the training images (viewpoints, backgrounds, photographers' choices), and "
    "scores measured on one dataset's test split do not guarantee accuracy elsewhere."
)


# --------------------------------------------------------------------------------------------- inputs


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_eval_results(model_dir, eval_results=None) -> dict:
    """Metrics for the card: a dict, a path to eval_results.json, or found next to the model.

    Looks for eval/eval_results.json and eval_results.json in model_dir (fgssl-eval's default output) and
    finetune_results.json in model_dir or its parent (fgssl-finetune writes it above merged/). Returns {} if none.
    """
    if isinstance(eval_results, dict):
        return dict(eval_results)
    model_dir = Path(model_dir)
    if eval_results is not None:
        found = _read_json(Path(eval_results))
        if found is None:
            raise FileNotFoundError(f"No evaluation results at {eval_results}; run fgssl-eval first.")
        return found
    results = {}
    for path in (model_dir / "finetune_results.json", model_dir.parent / "finetune_results.json",
                 model_dir / "eval_results.json", model_dir / "eval" / "eval_results.json"):
        found = _read_json(path)
        if found:
            results.update(found)
    return results


def find_pairs_image(model_dir) -> Path | None:
    """The picture of synthesized pairs in model_dir (searched recursively; the last by name, i.e. latest step)."""
    model_dir = Path(model_dir)
    for pattern in PAIRS_IMAGE_PATTERNS:
        matches = sorted(p for p in model_dir.rglob(pattern) if p.is_file())
        if matches:
            return matches[-1]
    return None


def load_training_config(model_dir, training_config=None) -> dict:
    """The pre-training settings: a dict, or training_config.json next to the model, else {}."""
    if isinstance(training_config, dict):
        return dict(training_config)
    for name in TRAINING_CONFIG_NAMES:
        found = _read_json(Path(model_dir) / name)
        if found is not None:
            return found
    return {}


def is_hub_id(name: str | None) -> bool:
    """True for "name" or "owner/name" that is not an existing local path."""
    return bool(name) and not Path(name).expanduser().exists() and name.count("/") <= 1 and not name.startswith((".", "/", "~"))


def _metric_value(value) -> float | None:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), 4)


def eval_results_for_card(results: dict, dataset_type: str, dataset_name: str) -> list[EvalResult]:
    """model-index entries (huggingface_hub EvalResult) for every metric present and defined in `results`."""
    entries = []
    settings = results.get("settings", {})
    for key, (task_type, task_name, metric_type, metric_name) in RESULT_SPECS.items():
        value = _metric_value(results.get(key))
        if value is None:
            continue
        args = {"k": settings.get("knn_k"), "temperature": settings.get("knn_temperature")} if key == "knn_top1" else None
        entries.append(EvalResult(
            task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name,
            dataset_split="test", metric_type=metric_type, metric_name=metric_name, metric_value=value,
            metric_args={k: v for k, v in args.items() if v is not None} if args else None,
        ))
    return entries


def _config_rows(config: dict, training_config: dict, image_size: int) -> list[tuple[str, str]]:
    """(setting, value) rows: the model's fgssl config, the trained input size, then the pre-training settings."""
    rows = []
    for key in ("base", "pooling", "projector_hidden_size", "projector_dim", "momentum", "queue_size", "use_decoder",
                "decoder_input", "decoder_base_size", "decoder_block_out_channels"):
        if key in config:
            rows.append((key, config[key]))
    # The size trained at (a backbone config's own image_size is often its library default, e.g. 224).
    rows.append(("image_size", image_size))
    rows += [(key, value) for key, value in training_config.items() if not isinstance(value, dict)]
    # The objective's knobs that decide what the synthesized pairs are (fgssl only; the other methods ignore them).
    objective = training_config.get("objective") or {}
    if objective.get("method", training_config.get("method")) == "fgssl":
        rows += [(key, objective[key]) for key in OBJECTIVE_CARD_KEYS if key in objective]
    return [(str(k), f"`{v}`") for k, v in rows]


#: ObjectiveArguments fields shown in the card of an fgssl run.
OBJECTIVE_CARD_KEYS = ("mask_mode", "perturbation", "sigma", "noise_scale", "recon_target", "rho_variance",
                       "rho_gradcam", "synth_fraction", "nu", "alpha")


# --------------------------------------------------------------------------------------------- render


def _summary(architecture: str, backbone_type: str, method: str, settings: dict) -> str:
    """One sentence saying what the model is."""
    if architecture == "FGSSLForImageClassification":
        how = "LoRA adapters merged into the weights" if settings.get("method") == "lora" else "full fine-tuning"
        return (f"A {backbone_type} fine-grained image classifier: an encoder pre-trained with the fgssl `{method}` "
                f"objective, then trained on labelled images ({how}).")
    return (f"A {backbone_type} image encoder pre-trained without labels for fine-grained recognition with the "
            f"fgssl `{method}` objective.")


def render_model_card(model_dir, repo_id: str | None = None, eval_results=None, dataset_name: str | None = None,
                      training_config=None, pairs_image=None, base_model: str | None = None,
                      license: str = "apache-2.0", model_name: str | None = None) -> ModelCard:
    """Render the fgssl model card for the model saved in `model_dir`.

    Args:
        model_dir: folder written by save_pretrained (config.json is read for the backbone and method settings).
        repo_id: the Hub repository the card is for (used in the usage snippet and as model name).
        eval_results: dict or path; default: found next to the model (see load_eval_results).
        dataset_name: the pre-training data (Hub id or local folder); default: the evaluation's dataset.
        training_config: dict of pre-training settings; default: training_config.json in model_dir.
        pairs_image: picture of synthesized pairs; default: found in model_dir (see find_pairs_image). The card
            links it relative to model_dir (use write_model_card to copy an outside picture in).
        base_model: Hub id of the backbone weights the model started from, if any.

    Returns:
        huggingface_hub.ModelCard; `card.data` holds the metadata (model-index from the metrics).
    """
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json") or {}
    results = load_eval_results(model_dir, eval_results)
    settings = results.get("settings", {})
    training = load_training_config(model_dir, training_config)
    dataset_name = (dataset_name or training.get("dataset_name") or training.get("dataset")
                    or settings.get("dataset_name"))
    data_label = Path(dataset_name).name if dataset_name and not is_hub_id(dataset_name) else dataset_name
    eval_dataset = settings.get("dataset_name") or dataset_name or "unknown"
    eval_label = Path(eval_dataset).name if not is_hub_id(eval_dataset) else eval_dataset
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else model_dir.resolve().name)
    architecture = (config.get("architectures") or ["FGSSLModel"])[0]
    backbone = config.get("backbone_config", {})
    method = training.get("method") or (
        "lcr" if config.get("pooling") == "screening" else "fgssl" if config.get("use_decoder", True) else "moco"
    )
    if pairs_image is None:
        pairs_image = find_pairs_image(model_dir)
    pairs_link = None
    if pairs_image is not None:
        pairs_image = Path(pairs_image)
        pairs_link = (
            pairs_image.resolve().relative_to(model_dir.resolve()).as_posix()
            if _is_inside(pairs_image, model_dir)
            else pairs_image.name  # write_model_card copies it next to the card
        )

    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name="transformers",
        pipeline_tag="image-classification" if architecture == "FGSSLForImageClassification" else "image-feature-extraction",
        tags=["fgssl", "self-supervised-learning", "fine-grained-visual-recognition", "image-feature-extraction",
              backbone.get("model_type", "vision"), method],
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        base_model=base_model,
        metrics=sorted({spec[2] for key, spec in RESULT_SPECS.items() if _metric_value(results.get(key)) is not None})
        or None,
        eval_results=eval_results_for_card(results, dataset_type=eval_label, dataset_name=eval_label) or None,
    )
    results_rows = [
        (RESULT_SPECS[k][3], f"{100 * _metric_value(results[k]):.2f} %")
        for k in RESULT_SPECS if _metric_value(results.get(k)) is not None
    ]
    hidden = (backbone.get("hidden_sizes") or [backbone.get("hidden_size")])[-1]
    image_size = _input_size(model_dir, config, training)
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        # Before the push the snippet names the folder as the user would type it, never this machine's layout.
        repo_id=repo_id or portable_path(model_dir.resolve()),
        has_processor=(model_dir / PROCESSOR_CONFIG_NAME).is_file(),
        image_size=image_size,
        summary=_summary(architecture, backbone.get("model_type", "vision"), method, results.get("settings", {})),
        method_name=method,
        method_description=METHOD_DESCRIPTIONS.get(method, METHOD_DESCRIPTIONS["fgssl"]),
        backbone_type=backbone.get("model_type", "unknown"),
        backbone_hidden_size=hidden,
        architecture=architecture,
        training_data=(
            "not recorded" if not data_label
            else f"`{data_label}` (labelled images, fine-tuning)" if architecture == "FGSSLForImageClassification"
            else f"`{data_label}` (images only, labels unused in pre-training)"
        ),
        base_model=base_model,
        license=license,
        config_rows=_config_rows(config, training, image_size),
        pairs_image=pairs_link,
        results_rows=results_rows,
        knn_k=settings.get("knn_k", 20),
        knn_temperature=settings.get("knn_temperature", 0.07),
        eval_dataset=f"`{eval_label}`",
        eval_image_size=settings.get("image_size"),
        intended_use=INTENDED_USE.format(data=f"`{data_label}`" if data_label else "its training images"),
    )


def _input_size(model_dir: Path, config: dict, training: dict) -> int:
    """The side the encoder was trained at: the saved image processor's, else the config's, else 224."""
    size = (processor_image_size(model_dir) or config.get("image_size") or training.get("model", {}).get("image_size")
            or config.get("backbone_config", {}).get("image_size") or 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def is_fgssl_card(path) -> bool:
    """True when `path` is a README.md written by this module (so it may be rendered again)."""
    path = Path(path)
    return path.is_file() and CARD_MARKER in path.read_text(encoding="utf-8", errors="replace")


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def write_model_card(model_dir, **kwargs) -> Path:
    """Render the card into model_dir/README.md; a pairs picture from outside model_dir is copied in first."""
    model_dir = Path(model_dir)
    pairs_image = kwargs.get("pairs_image")
    if pairs_image is not None and not _is_inside(Path(pairs_image), model_dir):
        # The card links pictures relative to itself, and only model_dir is uploaded.
        target = model_dir / Path(pairs_image).name
        shutil.copy2(pairs_image, target)
        kwargs["pairs_image"] = target
    card = render_model_card(model_dir, **kwargs)
    from .runinfo import atomic_write_text

    return atomic_write_text(model_dir / "README.md", str(card))
