"""A model to start from or to measure, read once: an fgssl checkpoint or a plain transformers vision backbone.

    is_fgssl_config(config)           an fgssl config, or a plain backbone's
    load_pretrained(name, cls)        the fgssl model class `cls` (FGSSLModel, FGSSLForImageClassification...)
                                      from an fgssl checkpoint or, wrapped with fgssl's mean pooling, a plain
                                      backbone; refuses a checkpoint without its encoder weights
    trained_image_size(config)        the input side a model was trained at: `config.image_size` of an fgssl
                                      model (set when the model is built: the pre-training resolution), else the
                                      backbone's own image_size, else 224
    input_image_size(config, side)    what a command feeds a model it loads: the side of its saved image
                                      processor (training.processor), else `trained_image_size`

fgssl-eval (training.evaluation.load_encoder), fgssl-finetune (training.finetuning.build_classifier), the trainer,
the model card and the commands all ask these functions; none repeats the rules.
"""

from __future__ import annotations

#: The side assumed for a model that records none (the ImageNet resolution of most vision checkpoints).
DEFAULT_IMAGE_SIZE = 224


def is_fgssl_config(config) -> bool:
    """True for an fgssl config (an object or a config.json dict), False for a plain backbone's."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type == "fgssl"


def trained_image_size(config, fallback: int = DEFAULT_IMAGE_SIZE) -> int:
    """The input side `config` (an fgssl or plain backbone config, object or dict) was trained at.

    An fgssl config's `image_size` is the single truth once its model is built (`backbones.build_model` sets it to
    the run's resolution); a plain backbone's own `image_size` (ViT's) comes next, then `fallback`.
    """
    get = (lambda c, name: c.get(name)) if isinstance(config, dict) else (lambda c, name: getattr(c, name, None))
    size = get(config, "image_size") if is_fgssl_config(config) else None
    backbone = get(config, "backbone_config") if is_fgssl_config(config) else config
    size = size or (get(backbone, "image_size") if backbone is not None else None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else fallback


def input_image_size(config, processor_side: int | None = None) -> int:
    """The side to feed a model with `config`: the side of its saved image processor (`processor_side`, e.g.
    `training.processor.processor_image_size(folder)`) when it has one, else the size it was trained at."""
    return int(processor_side) if processor_side else trained_image_size(config)


def load_pretrained(name_or_path: str, model_class, purpose: str = "using it", fresh_head: bool = False, **kwargs):
    """`model_class` (an fgssl model class) from an fgssl checkpoint, or from a plain transformers backbone wrapped
    with fgssl's mean pooling (`from_backbone_pretrained`), so every encoder is pooled the same way.

    An fgssl folder of any kind (encoder, classifier or pre-training checkpoint) gives its encoder weights; the
    weights `model_class` adds on top (a classifier's head) start fresh; with `fresh_head`, a head the checkpoint
    has in another size (a classifier of other classes) is replaced too. `kwargs` go to `from_pretrained` /
    `from_backbone_pretrained` (num_labels, id2label...).

    Raises:
        OSError: the path is neither a model folder nor a reachable Hub id.
        ValueError: the checkpoint lacks encoder weights (`purpose` would silently start from a random encoder).
    """
    from transformers import AutoConfig

    from .. import modeling  # noqa: F401  (registers the fgssl Auto classes)

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise OSError(
            f"Cannot load a model config from {name_or_path!r} ({err}). Pass a local folder with config.json "
            "(an fgssl checkpoint or a transformers vision backbone) or a Hub id with network access."
        ) from err
    if not is_fgssl_config(config):
        return model_class.from_backbone_pretrained(name_or_path, **kwargs)
    if fresh_head:
        kwargs["ignore_mismatched_sizes"] = True
    model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    # A fresh head is expected to be missing; anything of the encoder (backbone, screening) is not.
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("classifier.")]
    if missing:
        raise ValueError(
            f"{name_or_path} lacks encoder weights {sorted(missing)[:5]}...: {purpose} would start from a random "
            "encoder. Point --model_name_or_path at a folder written by save_pretrained of an fgssl model."
        )
    return model


__all__ = ["DEFAULT_IMAGE_SIZE", "is_fgssl_config", "trained_image_size", "input_image_size", "load_pretrained"]
