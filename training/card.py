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
from .pretrained import input_image_size
from .processor import PROCESSOR_CONFIG_NAME, describe_normalization, processor_image_size
from .trainer import canonical_method

#: metric key -> (task_type, task_name, metric_type, metric_name) of the model-index entry. The model-index groups
#: entries by task type and dataset, and a leaderboard tells metrics apart by their type: every entry has a type
#: and a name of its own (kNN and linear-probe top-1 are different measurements, not two "accuracy" values).
RESULT_SPECS = {
    "retrieval_rank1": ("image-feature-extraction", "Image retrieval (frozen features)", "retrieval_rank1",
                        "Retrieval rank-1"),
    "retrieval_rank5": ("image-feature-extraction", "Image retrieval (frozen features)", "retrieval_rank5",
                        "Retrieval rank-5"),
    "retrieval_map": ("image-feature-extraction", "Image retrieval (frozen features)", "retrieval_map",
                      "Retrieval mAP"),
    "knn_top1": ("image-classification", "Image classification", "knn_top1", "kNN top-1, frozen features (k=20)"),
    "linear_top1": ("image-classification", "Image classification", "linear_probe_top1",
                    "Linear probe top-1, frozen features"),
    "accuracy": ("image-classification", "Image classification", "accuracy", "Top-1 accuracy, fine-tuned"),
}
#: The Hub's base_model_relation values.
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
#: Pictures of the evaluation (training.eval_pictures), looked for next to the card and in its eval/ folder.
EVAL_PICTURES = {"retrieval": "retrieval.png", "embedding": "embedding.png"}
#: Where the picture of synthesized pairs may be, relative to the model folder (first match wins).
PAIRS_IMAGE_PATTERNS = ("*synth*pair*.png", "*pairs*.png", "*synth*.png")
TRAINING_CONFIG_NAMES = ("training_config.json", "fgssl_training_config.json")
#: The first line of every card this module writes: fgssl-push renders such a card again with the repository id;
#: a README.md without it is the user's own and is left alone.
CARD_MARKER = "<!-- fgssl model card"

#: The card's one-line method statement, true for each method (only fgssl learns from synthesized pairs).
METHOD_LINES = {
    "fgssl": "fgssl, self-supervised fine-grained features learned from synthesized pairs ({base} + synthesized "
             "pairs)",
    "plain": "plain {base} self-supervised learning, the baseline of fgssl (no synthesized pairs)",
    "lcr": "LCR, {base} with a screening module matched to Grad-CAM maps (no synthesized pairs)",
}
METHOD_LINES["none"] = "supervised fine-tuning of a plain backbone (no self-supervised fgssl pre-training)"
BASE_NAMES = {"moco": "MoCo v2", "simsiam": "SimSiam"}
#: What the card says when no --license was given.
NO_LICENSE = ("none stated. The weights are derived from {data} and inherit its terms of use: check them before "
              "using or sharing the model (many fine-grained datasets, e.g. CUB-200-2011, are for non-commercial "
              "research only); set one with `--license` (fgssl-pretrain, fgssl-finetune, fgssl-push).")

METHOD_DESCRIPTIONS = {
    "none": "Supervised fine-tuning of a plain transformers backbone with fgssl's mean pooling of the final feature "
            "map and a linear head; no self-supervised pre-training.",
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


def hub_repo_id(name: str | None) -> str | None:
    """`name` when it can only be a Hub repository id ("owner/name", a valid repo id, no local path of that name),
    else None. A bare name ("cub100") is taken for a local folder's name, never put in the card's metadata."""
    if not name or not isinstance(name, str) or name.count("/") != 1 or not is_hub_id(name):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


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


#: training_config.json keys that go to the card's metadata and header, not to its configuration table.
METADATA_KEYS = ("hub_dataset", "base_model", "start", "license")


def pretraining_method(start) -> str | None:
    """The pre-training method of the local checkpoint a fine-tuning started from: its training_config.json's, else
    read from its fgssl config; None for a plain backbone (no fgssl pre-training) or when it cannot be read here."""
    if not start:
        return None
    folder = Path(str(start)).expanduser()
    config = _read_json(folder / "config.json") if folder.is_dir() else None
    if config is None:
        return None
    if config.get("model_type") != "fgssl":
        return "none"
    for candidate in (folder, folder.parent):
        method = (load_training_config(candidate) or {}).get("method")
        if method:
            return canonical_method(method)
    return method_of_config(config)


def method_of_config(config: dict) -> str:
    """The pre-training method an fgssl model config was built for, when no training_config.json says it."""
    return "lcr" if config.get("pooling") == "screening" else "fgssl" if config.get("use_decoder", True) else "plain"


def _config_rows(config: dict, training_config: dict, image_size: int) -> list[tuple[str, str]]:
    """(setting, value) rows: the model's fgssl config, the trained input size, then the pre-training settings."""
    rows = []
    for key in CARD_CONFIG_KEYS:
        if key in config:
            rows.append((key, config[key]))
    # The size trained at (a backbone config's own image_size is often its library default, e.g. 224).
    rows.append(("image_size", image_size))
    rows += [(key, value) for key, value in training_config.items()
             if not isinstance(value, dict) and key not in METADATA_KEYS]
    # The objective's knobs that decide what the synthesized pairs are (fgssl only; the other methods ignore them).
    objective = training_config.get("objective") or {}
    if objective.get("method", training_config.get("method")) == "fgssl":
        rows += [(key, objective[key]) for key in OBJECTIVE_CARD_KEYS if key in objective]
    return [(str(k), f"`{v}`") for k, v in rows]


#: FGSSLConfig fields shown in the card, a reader's choice (what the method and the heads are), not every knob:
#: config.json beside the card holds them all.
CARD_CONFIG_KEYS = ("base", "pooling", "projector_hidden_size", "projector_dim", "momentum", "queue_size",
                    "use_decoder", "decoder_input", "decoder_base_size", "decoder_block_out_channels")
#: ObjectiveArguments fields shown in the card of an fgssl run.
OBJECTIVE_CARD_KEYS = ("mask_mode", "perturbation", "sigma", "noise_scale", "recon_target", "rho_variance",
                       "rho_gradcam", "synth_fraction", "nu", "alpha")


# --------------------------------------------------------------------------------------------- render


def _summary(architecture: str, backbone_type: str, method: str, settings: dict, is_adapter: bool = False) -> str:
    """One sentence saying what the model is."""
    if architecture == "FGSSLForImageClassification":
        how = ("LoRA adapters, in this folder" if is_adapter else "LoRA adapters merged into the weights"
               if settings.get("method") == "lora" else "full fine-tuning")
        if method == "none":
            return (f"A {backbone_type} fine-grained image classifier fine-tuned on labelled images ({how}) from a "
                    "plain backbone (no fgssl pre-training).")
        return (f"A {backbone_type} fine-grained image classifier: an encoder pre-trained with the fgssl `{method}` "
                f"objective, then trained on labelled images ({how}).")
    return (f"A {backbone_type} image encoder pre-trained without labels for fine-grained recognition with the "
            f"fgssl `{method}` objective.")


def render_model_card(model_dir, repo_id: str | None = None, eval_results=None, dataset_name: str | None = None,
                      training_config=None, pairs_image=None, base_model: str | None = None,
                      license: str | None = None, model_name: str | None = None,
                      base_model_relation: str | None = None) -> ModelCard:
    """Render the fgssl model card for the model saved in `model_dir`.

    Args:
        model_dir: folder written by save_pretrained (config.json is read for the backbone and method settings).
        repo_id: the Hub repository the card is for (used in the usage snippet and as model name).
        eval_results: dict or path; default: found next to the model (see load_eval_results).
        dataset_name: the pre-training data (Hub id or local folder); default: the evaluation's dataset.
        training_config: dict of pre-training settings; default: training_config.json in model_dir.
        pairs_image: picture of synthesized pairs; default: found in model_dir (see find_pairs_image). The card
            links it relative to model_dir (use write_model_card to copy an outside picture in).
        base_model: Hub id of the checkpoint the model started from (default: training_config.json's or the
            fine-tuning settings' `base_model`); a local folder's name is never put in the metadata.
        license: the license of the weights (default: the run's --license, else none stated, with a line saying
            that the weights inherit the terms of their training data).
        base_model_relation: how the model derives from base_model (default: "adapter" for a LoRA adapter folder,
            else "finetune").

    Returns:
        huggingface_hub.ModelCard; `card.data` holds the metadata (model-index from the metrics).
    """
    model_dir = Path(model_dir)
    # A LoRA adapter folder (peft) has no config.json: its classifier's config is the merged sibling's.
    is_adapter = (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file()
    config = _read_json(model_dir / "config.json") or (
        _read_json(model_dir.parent / "merged" / "config.json") if is_adapter else None) or {}
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
    # The Hub's conventions: datasets only for real Hub ids, base_model only for a Hub checkpoint, license as given.
    hub_dataset = hub_repo_id(training.get("hub_dataset") or settings.get("hub_dataset") or dataset_name)
    base_model = hub_repo_id(base_model or training.get("base_model") or settings.get("base_model"))
    if base_model:
        base_model_relation = base_model_relation or ("adapter" if is_adapter else "finetune")
        if base_model_relation not in BASE_MODEL_RELATIONS:
            raise ValueError(f"base_model_relation must be one of {BASE_MODEL_RELATIONS}, got {base_model_relation!r}.")
    else:
        base_model_relation = None
    license = license or training.get("license") or settings.get("license") or None
    start = training.get("start") or settings.get("model_name_or_path")
    base = BASE_NAMES.get(config.get("base", "moco"), "MoCo v2")
    eval_pictures = find_eval_pictures(model_dir)
    processor = _read_json(model_dir / PROCESSOR_CONFIG_NAME) or (
        _read_json(model_dir.parent / "merged" / PROCESSOR_CONFIG_NAME) if is_adapter else None) or {}
    backbone = config.get("backbone_config", {})
    method = canonical_method(training.get("method") or (
        settings.get("pretraining_method") or pretraining_method(settings.get("model_name_or_path"))
        if architecture == "FGSSLForImageClassification" else None) or method_of_config(config))
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
        library_name="peft" if is_adapter else "transformers",
        pipeline_tag="image-classification" if architecture == "FGSSLForImageClassification" else "image-feature-extraction",
        tags=["fgssl", "self-supervised-learning", "fine-grained-visual-recognition", "image-feature-extraction",
              backbone.get("model_type", "vision"),
              # The Hub tag names what trained it: the base for the base alone ("moco", "simsiam"), else the method.
              config.get("base", "moco") if method == "plain" else method, *(["lora"] if is_adapter else [])],
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=base_model,
        base_model_relation=base_model_relation,
        metrics=["accuracy"] if any(_metric_value(results.get(k)) is not None
                                    for k in ("accuracy", "knn_top1", "linear_top1")) else None,
        eval_results=eval_results_for_card(results, dataset_type=hub_repo_id(eval_dataset) or eval_label,
                                           dataset_name=eval_label) or None,
    )
    results_rows = [
        (RESULT_SPECS[k][3], f"{100 * _metric_value(results[k]):.2f} %")
        for k in RESULT_SPECS if _metric_value(results.get(k)) is not None
    ]
    hidden = (backbone.get("hidden_sizes") or [backbone.get("hidden_size")])[-1]
    # The side trained at: the saved image processor's, else the config's (training.pretrained, the one rule).
    image_size = input_image_size(config, processor_image_size(model_dir))
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        # Before the push the snippet names the folder as the user would type it, never this machine's layout.
        repo_id=repo_id or portable_path(model_dir.resolve()),
        has_processor=(model_dir / PROCESSOR_CONFIG_NAME).is_file(),
        image_size=image_size,
        summary=_summary(architecture, backbone.get("model_type", "vision"), method, results.get("settings", {}),
                         is_adapter),
        method_name=method,
        method_line=METHOD_LINES.get(method, METHOD_LINES["fgssl"]).format(base=base),
        method_description=METHOD_DESCRIPTIONS.get(method, METHOD_DESCRIPTIONS["fgssl"]).replace("MoCo v2", base),
        backbone_type=backbone.get("model_type", "unknown"),
        backbone_hidden_size=hidden,
        architecture=architecture,
        training_data=(
            "not recorded" if not data_label
            else f"`{data_label}` (labelled images, fine-tuning)" if architecture == "FGSSLForImageClassification"
            else f"`{data_label}` (images only, labels unused in pre-training)"
        ),
        base_model=base_model,
        base_model_relation=base_model_relation,
        start=None if base_model or not start else Path(str(start)).name,
        license=license,
        license_note=NO_LICENSE.format(data=f"`{data_label}`" if data_label else "their training images"),
        is_adapter=is_adapter,
        normalization=describe_normalization(processor.get("image_mean"), processor.get("image_std")),
        eval_pictures={k: v for k, v in eval_pictures.items()},
        config_rows=_config_rows(config, training, image_size),
        pairs_image=pairs_link,
        results_rows=results_rows,
        knn_k=settings.get("knn_k", 20),
        knn_temperature=settings.get("knn_temperature", 0.07),
        eval_dataset=f"`{eval_label}`",
        eval_image_size=settings.get("image_size"),
        intended_use=INTENDED_USE.format(data=f"`{data_label}`" if data_label else "its training images"),
    )


def find_eval_pictures(model_dir) -> dict[str, str]:
    """{"retrieval": link, "embedding": link} of the evaluation pictures next to the card or in its eval/ folder."""
    model_dir = Path(model_dir)
    found = {}
    for name, file in EVAL_PICTURES.items():
        for folder in ("", "eval"):
            path = model_dir / folder / file if folder else model_dir / file
            if path.is_file():
                found[name] = f"{folder}/{file}" if folder else file
                break
    return found


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
    from .atomic import atomic_write_text

    return atomic_write_text(model_dir / "README.md", str(card))
