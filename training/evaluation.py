"""Frozen-encoder evaluation (docs/method.md "Evaluation protocol"): retrieval, weighted kNN and a linear probe.

    load_encoder        an fgssl checkpoint, a plain transformers backbone or a Hub id -> FGSSLModel
                        (training.pretrained.load_pretrained, the one loader)
    embed_dataset       a decoded split (training.data) -> features N x C (float32), labels N
    retrieval_metrics   test split, each image querying all others by cosine similarity: rank-1, rank-5, mAP
    knn_top1            weighted kNN (k 20, T 0.07, weights exp(sim / T)) with the train split as memory bank
    linear_probe_top1   logistic regression on frozen train features; C chosen on a validation part of the
                        train split (never on test), then refit on all of train
    evaluate_encoder    all of the above -> a results dict; write_results -> eval_results.json + .md

Every encoder is measured the same way: `h`, the mean-pooled final feature map of FGSSLModel. Metrics are the
repository's `evaluate` modules (training/metrics), loaded by path, offline. Similarity work is chunked
(chunk x N blocks), so 10,000+ images fit in memory.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import DEFAULT_CROP_PCT, eval_transform, eval_transform_regions
from .metrics import load_metric

logger = logging.getLogger(__name__)

PROTOCOLS = ("retrieval", "knn", "linear")
#: The metric keys of eval_results.json, per protocol.
PROTOCOL_METRICS = {
    "retrieval": ("retrieval_rank1", "retrieval_rank5", "retrieval_map"),
    "knn": ("knn_top1",),
    "linear": ("linear_top1",),
}
KNN_K = 20
KNN_TEMPERATURE = 0.07
#: Inverse regularisation strengths tried by the linear probe (on standardised features).
LINEAR_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
LINEAR_VAL_FRACTION = 0.2
RESULTS_JSON = "eval_results.json"
RESULTS_MD = "eval_results.md"


# --------------------------------------------------------------------------------------------- encoder


def load_encoder(name_or_path: str, **kwargs):
    """The encoder `f` (an FGSSLModel) from an fgssl checkpoint (encoder, classifier or pre-training), a plain
    transformers backbone (wrapped with fgssl's mean pooling), or a Hub id: `training.pretrained.load_pretrained`,
    so every encoder is measured with the same mean pooling of its final feature map.

    Raises:
        OSError: the path is neither a model folder nor a reachable Hub id.
        ValueError: the checkpoint lacks encoder weights (they would silently stay random).
    """
    from ..modeling import FGSSLModel
    from .pretrained import load_pretrained

    return load_pretrained(name_or_path, FGSSLModel, purpose="evaluating it", **kwargs)


def as_encoder(model_or_path):
    """An FGSSLModel from a path/Hub id or from any fgssl model (classifier / pre-training: its `.fgssl`)."""
    if isinstance(model_or_path, (str, Path)):
        return load_encoder(str(model_or_path))
    if hasattr(model_or_path, "get_encoder_model"):
        return model_or_path.get_encoder_model()
    raise TypeError(
        f"Expected a path, a Hub id or an fgssl model, got {type(model_or_path).__name__}; wrap a plain backbone "
        "with FGSSLModel.from_backbone_pretrained."
    )


def default_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def embed_dataset(model, dataset, batch_size: int = 64, device=None, image_size: int | None = None,
                  desc: str = "Embedding", image_mean=None, image_std=None, crop_pct: float | None = None):
    """Embed a decoded split with the frozen encoder.

    Args:
        model: an FGSSLModel (or any fgssl model; its encoder is used).
        dataset: a datasets.Dataset with "pixel_values" (uint8 3 x S x S) and "labels" (training.data).
        batch_size: images per forward pass.
        device: where the model runs (default: CUDA if available).
        image_size: input side the images are resized to (default: the stored S).
        image_mean, image_std: the normalisation the encoder was trained with (3 floats each; default ImageNet's).
        crop_pct: a cache with room (a "valid_hw" column, training.data `cache_size_factor` > 1) is evaluated
            from each image's valid region: shorter side resized to image_size / crop_pct, centre image_size crop
            (`eval_transform_regions`; default DEFAULT_CROP_PCT, 0.875). A square cache (factor 1) ignores it: its
            S x S crop is resized whole, as always.

    Returns:
        (features, labels): float32 numpy N x C (`h`, not normalised) and int64 numpy N.
    """
    encoder = as_encoder(model)
    device = torch.device(device) if device is not None else default_device()
    encoder.to(device).eval()
    # Slicing the numpy view reads whole uint8 batches from Arrow (no per-example tensors, no collation).
    from .data import VALID_HW_COLUMN, has_room

    room = has_room(dataset)
    rows = dataset.with_format("numpy", columns=["pixel_values", "labels", *([VALID_HW_COLUMN] if room else [])])
    features, labels = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        batch = rows[start : start + batch_size]
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixel_values"], dtype=np.uint8)).to(device)
        if room:
            if not image_size:
                raise ValueError("A cache with room (cache_size_factor > 1) holds whole images in boxes larger than "
                                 "the input: pass the encoder's image_size.")
            inputs = eval_transform_regions(pixels, torch.from_numpy(np.asarray(batch[VALID_HW_COLUMN])), image_size,
                                            crop_pct or DEFAULT_CROP_PCT, image_mean, image_std)
        else:
            size = image_size or pixels.shape[-1]
            inputs = eval_transform(pixels, size, image_mean, image_std)
        h = encoder(pixel_values=inputs).pooler_output
        features.append(h.float().cpu().numpy())
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    if not features:
        raise ValueError("The split to embed is empty.")
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


# --------------------------------------------------------------------------------------------- protocols


def retrieval_metrics(features, labels, ks=(1, 5), chunk_size: int = 256) -> dict:
    """Leave-one-out cosine retrieval over one split (the `retrieval` evaluate module).

    features: N x C; labels: N. Returns retrieval_rank{k}, retrieval_map, retrieval_num_queries and
    retrieval_num_queries_without_positive (images alone in their class: left out of rank-k and mAP).
    """
    scores = load_metric("retrieval").compute(
        embeddings=np.asarray(features, dtype=np.float32), labels=np.asarray(labels), ks=tuple(ks),
        chunk_size=chunk_size,
    )
    return {f"retrieval_{name}": value for name, value in scores.items()}


def knn_predict(bank_features, bank_labels, query_features, k: int = KNN_K, temperature: float = KNN_TEMPERATURE,
                chunk_size: int = 1024) -> np.ndarray:
    """Weighted kNN classification (InstDisc / DINO): predicted class of each query (Q,).

    bank_features: M x C with bank_labels M (the memory bank, e.g. the train split); query_features: Q x C.
    Each query takes its k most cosine-similar bank items; item j votes for its class with weight
    exp(sim_j / temperature); the class with the largest summed weight wins (ties: the smaller class id).
    """
    bank = F.normalize(torch.as_tensor(np.asarray(bank_features), dtype=torch.float32), dim=1)
    bank_labels = torch.as_tensor(np.asarray(bank_labels), dtype=torch.int64)
    queries = F.normalize(torch.as_tensor(np.asarray(query_features), dtype=torch.float32), dim=1)
    num_classes = int(bank_labels.max()) + 1
    k = min(k, len(bank))
    predictions = []
    for start in range(0, len(queries), chunk_size):
        sims = queries[start : start + chunk_size] @ bank.T  # chunk x M
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(len(top_sims), num_classes).scatter_add_(1, bank_labels[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions).numpy()


def top1_accuracy(predictions, references) -> float:
    """Top-1 accuracy through the repository's `accuracy` evaluate module."""
    return load_metric("accuracy").compute(predictions=np.asarray(predictions), references=np.asarray(references))[
        "accuracy"
    ]


def knn_top1(train_features, train_labels, test_features, test_labels, k: int = KNN_K,
             temperature: float = KNN_TEMPERATURE, chunk_size: int = 1024) -> float:
    """Top-1 accuracy of weighted kNN on the test split with the train split as memory bank."""
    predictions = knn_predict(train_features, train_labels, test_features, k, temperature, chunk_size)
    return top1_accuracy(predictions, test_labels)


def _fit_sklearn_logistic(features, labels, c: float, max_iter: int, seed: int, init=None):
    """A fitted StandardScaler + multinomial LogisticRegression (or a constant predictor for one class).

    `init`: a fitted pipeline of the same classes whose weights start the solver (warm start along the C path:
    the same convex optimum, reached in far fewer iterations)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(labels)) < 2:
        return DummyClassifier(strategy="most_frequent").fit(features, labels)
    logistic = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, warm_start=init is not None)
    previous = init[-1] if init is not None and hasattr(init, "steps") else None
    if previous is not None and np.array_equal(previous.classes_, np.unique(labels)):
        logistic.coef_, logistic.intercept_ = previous.coef_.copy(), previous.intercept_.copy()
    classifier = make_pipeline(StandardScaler(), logistic)
    with warnings.catch_warnings():
        # A weakly regularised fit may stop at max_iter; its validation score already accounts for that.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return classifier.fit(features, labels)


def validation_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, val) of a seeded split of the train split; stratified when every class can give one image."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    num_val = max(1, int(round(val_fraction * len(labels))))
    stratify = labels if counts.min() >= 2 and len(counts) <= num_val <= len(labels) - len(counts) else None
    return train_test_split(np.arange(len(labels)), test_size=num_val, random_state=seed, stratify=stratify)


#: LogisticRegression's default `tol`: the torch probe stops where sklearn's does.
SKLEARN_TOL = 1e-4


class TorchLogisticProbe:
    """Standardised features + L2-regularised multinomial logistic regression, fitted with L-BFGS in torch on any
    device: sklearn's `make_pipeline(StandardScaler(), LogisticRegression(C=c))`, the same convex objective
    (C x the summed log-loss + half the squared norm of the weights, the intercept unpenalised), so the same optimum.

    features: N x D (numpy or torch), labels: N class ids. `predict` returns numpy class ids.
    """

    def __init__(self, c: float, max_iter: int = 1000, device=None, init: "TorchLogisticProbe | None" = None):
        self.c, self.max_iter, self.init = float(c), int(max_iter), init
        self.device = torch.device(device) if device is not None else default_device()

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def fit(self, features, labels) -> "TorchLogisticProbe":
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=self.device)
        self.classes_ = np.unique(np.asarray(labels))
        y = torch.as_tensor(np.searchsorted(self.classes_, np.asarray(labels)), device=self.device)
        self.mean, std = x.mean(0), x.std(0, unbiased=False)
        self.scale = torch.where(std > 0, std, torch.ones_like(std))  # StandardScaler leaves constant dims at 1
        x = self._standardise(x)
        n, k = x.shape[0], len(self.classes_)
        same = self.init is not None and np.array_equal(self.init.classes_, self.classes_)
        weight = (self.init.weight.clone() if same else torch.zeros(x.shape[1], k, device=self.device)).requires_grad_()
        bias = (self.init.bias.clone() if same else torch.zeros(k, device=self.device)).requires_grad_()
        # sklearn's objective divided by C * n (the same minimiser, better scaled for float32).
        penalty = 1.0 / (2.0 * self.c * n)
        # sklearn's stopping rule on the same (averaged) objective: L-BFGS with 10 corrections stopping when the
        # largest gradient entry is below tol = 1e-4 (scipy's maxcor and gtol as LogisticRegression sets them); a
        # tighter tolerance only spends iterations below what the probe's top-1 can see.
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter, history_size=10,
                                      tolerance_grad=SKLEARN_TOL, tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + penalty * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    @torch.no_grad()
    def predict(self, features) -> np.ndarray:
        x = self._standardise(torch.as_tensor(np.asarray(features), dtype=torch.float32, device=self.device))
        return self.classes_[(x @ self.weight + self.bias).argmax(1).cpu().numpy()]


def summarise_sklearn_warnings(caught, what: str) -> str | None:
    """One log line for the warnings scikit-learn raised during `what` (each fit of the C grid repeats them: six
    identical lines per evaluation otherwise); other warnings are raised again as they were. Returns the line."""
    from collections import Counter

    counts = Counter()
    for w in caught:
        source = str(w.filename).replace("\\", "/")
        if "/sklearn/" in source or type(w.message).__module__.startswith("sklearn"):
            counts[(w.category.__name__, " ".join(str(w.message).split()))] += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not counts:
        return None
    parts = [f"{name} x{n}: {text[:160]}" for (name, text), n in counts.most_common(3)]
    hint = (" (few training images per class: the probe's score is noisy)"
            if any("number of unique classes" in text for _, text in counts) else "")
    line = f"{what}: scikit-learn warned {sum(counts.values())} times{hint}; " + "; ".join(parts)
    logger.warning(line)
    return line


#: Where the linear probe is fitted: sklearn (CPU) or torch (L-BFGS on the evaluation device; the same objective).
LINEAR_BACKENDS = ("sklearn", "torch")


def linear_probe_top1(train_features, train_labels, test_features, test_labels, c_grid=LINEAR_C_GRID,
                      val_fraction: float = LINEAR_VAL_FRACTION, seed: int = 0, max_iter: int = 1000,
                      backend: str = "sklearn", device=None):
    """Linear probe on frozen features: choose C on a validation part of train, refit on all train, test once.

    train_features: N x C, train_labels: N; test_features: M x C, test_labels: M. `backend`: "sklearn" (CPU) or
    "torch" (`TorchLogisticProbe` on `device`, default the evaluation device: the same protocol and objective).
    Returns (top1, info) with info = {"linear_c": chosen C, "linear_val_top1": its validation accuracy,
    "linear_val_scores": {C: validation accuracy}}. The test split is used only for the final score.
    """
    train_features, train_labels = np.asarray(train_features), np.asarray(train_labels)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    if backend not in LINEAR_BACKENDS:
        raise ValueError(f"linear probe backend must be one of {LINEAR_BACKENDS}, got {backend!r}.")
    def fit(features, labels, c, init=None):
        if backend == "torch" and len(np.unique(labels)) >= 2:
            return TorchLogisticProbe(c, max_iter, device, init).fit(features, labels)
        return _fit_sklearn_logistic(features, labels, c, max_iter, seed, init=init)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_idx, val_idx = validation_split(train_labels, val_fraction, seed)
        val_scores, fits = {}, {}
        previous = None
        for c in sorted(c_grid):  # from strong to weak regularisation, each fit starting from the previous optimum
            previous = fits[float(c)] = fit(train_features[fit_idx], train_labels[fit_idx], c, init=previous)
            val_scores[float(c)] = float((previous.predict(train_features[val_idx]) == train_labels[val_idx]).mean())
        # Ties go to the smallest C (the strongest regularisation).
        best_c = max(val_scores, key=lambda c: (val_scores[c], -c))
        classifier = fit(train_features, train_labels, best_c, init=fits[best_c])
    summarise_sklearn_warnings(caught, "linear probe")
    top1 = top1_accuracy(classifier.predict(np.asarray(test_features)), test_labels)
    return top1, {"linear_c": best_c, "linear_val_top1": val_scores[best_c], "linear_val_scores": val_scores}


# --------------------------------------------------------------------------------------------- driver


def parse_protocols(protocols) -> tuple[str, ...]:
    """"retrieval,knn" or ["retrieval", "knn"] -> a validated tuple in canonical order."""
    names = protocols.split(",") if isinstance(protocols, str) else list(protocols)
    names = [n.strip() for n in names if n and n.strip()]
    unknown = sorted(set(names) - set(PROTOCOLS))
    if unknown or not names:
        raise ValueError(f"Unknown or empty protocols {unknown or names}: choose from {list(PROTOCOLS)}, "
                         "comma-separated (e.g. --protocols retrieval,knn).")
    return tuple(p for p in PROTOCOLS if p in names)


def _check_labels(labels, split: str):
    if len(labels) and labels.min() < 0:
        raise ValueError(f"The {split} split has unlabelled images (label -1); retrieval, kNN and the linear "
                         "probe need class labels (pass --label_column).")


def evaluate_encoder(model_or_path, data, protocols=PROTOCOLS, batch_size: int = 64, device=None,
                     image_size: int | None = None, knn_k: int = KNN_K, knn_temperature: float = KNN_TEMPERATURE,
                     linear_c_grid=LINEAR_C_GRID, linear_val_fraction: float = LINEAR_VAL_FRACTION,
                     seed: int = 0, chunk_size: int = 256, linear_backend: str = "sklearn", image_mean=None,
                     image_std=None, pictures_dir=None, crop_pct: float | None = None) -> dict:
    """Run the evaluation protocols on a frozen encoder.

    Args:
        model_or_path: an fgssl model, or anything `load_encoder` accepts.
        data: training.data.PreparedData; `data.eval` is the test split, `data.train` the kNN memory bank and
            the linear probe's training data.
        protocols: any of "retrieval", "knn", "linear" (a list or a comma-separated string).
        linear_backend: "sklearn" (CPU) or "torch" (the same probe fitted on the evaluation device).
        image_mean, image_std: the encoder's normalisation (default: the image processor saved with
            `model_or_path` when it is a folder or Hub id with one, else ImageNet's).
        pictures_dir: where to write retrieval.png and embedding.png of the test split (training.eval_pictures);
            None: no pictures.
        crop_pct: the evaluation crop of a cache with room (data decoded with `cache_size_factor` > 1; see
            `embed_dataset`): default the image processor saved with `model_or_path` when it says one (fgssl's
            processors do), else DEFAULT_CROP_PCT. Ignored for a square cache.

    Returns:
        {metric keys of the chosen protocols (PROTOCOL_METRICS), "settings": {...}, "num_images": {...},
         "seconds": {...}}; the metric values are floats in [0, 1] (NaN if undefined).
    """
    protocols = parse_protocols(protocols)
    if data.eval is None:
        raise ValueError("Evaluation needs a test split (data.eval is None); pass --eval_split.")
    start = step = time.perf_counter()
    seconds = {}
    encoder = as_encoder(model_or_path)
    if image_mean is None and isinstance(model_or_path, (str, Path)):
        from .processor import normalization_kwargs, source_processor_settings

        stats = normalization_kwargs(source_processor_settings(str(model_or_path)))
        image_mean, image_std = stats.get("image_mean"), stats.get("image_std")
    from .data import has_room

    room = has_room(data.eval)
    if room and crop_pct is None and isinstance(model_or_path, (str, Path)):
        from .processor import processor_crop_pct, read_processor_config

        crop_pct = processor_crop_pct(read_processor_config(str(model_or_path)))
    if room:
        crop_pct = float(crop_pct or DEFAULT_CROP_PCT)
    if not image_size:  # the size it was trained at (training.pretrained), else the side the images are stored at
        from .pretrained import trained_image_size

        image_size = trained_image_size(encoder.config, fallback=int(data.eval[0]["pixel_values"].shape[-1]))

    def lap(name):
        """Record the seconds since the previous lap under `name`."""
        nonlocal step
        seconds[name], step = round(time.perf_counter() - step, 3), time.perf_counter()

    norm = {"image_mean": image_mean, "image_std": image_std, **({"crop_pct": crop_pct} if room else {})}
    test_x, test_y = embed_dataset(encoder, data.eval, batch_size, device, image_size, desc="Embedding test", **norm)
    _check_labels(test_y, "test")
    num_images = {"test": int(len(test_y))}
    needs_train = any(p in protocols for p in ("knn", "linear"))
    if needs_train:
        train_x, train_y = embed_dataset(encoder, data.train, batch_size, device, image_size, desc="Embedding train",
                                         **norm)
        _check_labels(train_y, "train")
        num_images["train"] = int(len(train_y))
    lap("embed")

    results, settings = {}, {"protocols": list(protocols), "image_size": int(image_size), "seed": seed}
    settings.update(getattr(data, "source", {}))  # how the data was read (layout, crop_to_bbox): part of the result
    if room:  # the evaluation crop of a cache with room (a square cache is resized whole, as always)
        settings["crop_pct"] = crop_pct
    if image_mean is not None:
        settings.update(image_mean=[float(v) for v in image_mean], image_std=[float(v) for v in image_std])
    if "retrieval" in protocols:
        scores = retrieval_metrics(test_x, test_y, ks=(1, 5), chunk_size=chunk_size)
        results.update({k: scores[k] for k in PROTOCOL_METRICS["retrieval"]})
        num_images["retrieval_queries"] = scores["retrieval_num_queries"]
        num_images["retrieval_queries_without_positive"] = scores["retrieval_num_queries_without_positive"]
        lap("retrieval")
    if "knn" in protocols:
        results["knn_top1"] = knn_top1(train_x, train_y, test_x, test_y, knn_k, knn_temperature)
        settings.update(knn_k=knn_k, knn_temperature=knn_temperature)
        lap("knn")
    if "linear" in protocols:
        results["linear_top1"], info = linear_probe_top1(
            train_x, train_y, test_x, test_y, linear_c_grid, linear_val_fraction, seed, backend=linear_backend,
            device=device,
        )
        settings.update(linear_c_grid=[float(c) for c in linear_c_grid], linear_val_fraction=linear_val_fraction,
                        linear_backend=linear_backend,
                        linear_c=info["linear_c"], linear_val_top1=info["linear_val_top1"])
        lap("linear")
    if isinstance(model_or_path, (str, Path)):
        settings["model_name_or_path"] = str(model_or_path)
    pictures = {}
    if pictures_dir is not None:
        from .eval_pictures import write_eval_pictures

        pictures = write_eval_pictures(test_x, test_y, data.eval, pictures_dir,
                                       label_names=getattr(data, "label_names", None))
        lap("pictures")
    seconds["total"] = round(time.perf_counter() - start, 3)
    out = {**results, "settings": settings, "num_images": num_images, "seconds": seconds}
    if pictures:
        out["pictures"] = {name: Path(path).name for name, path in pictures.items()}
    return out


# --------------------------------------------------------------------------------------------- output


def json_safe(value):
    """NaN / inf -> None (JSON has no NaN); containers recursively; numpy arrays and scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metric_keys(results: dict) -> list[str]:
    """The metric entries of a results dict, in the documented order."""
    return [k for p in PROTOCOLS for k in PROTOCOL_METRICS[p] if k in results]


def results_markdown(results: dict) -> str:
    """A markdown table of the metrics (in %) followed by the settings and image counts."""
    lines = ["| metric | value (%) |", "| --- | --- |"]
    for key in metric_keys(results):
        value = results[key]
        shown = "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.2f}"
        lines.append(f"| {key} | {shown} |")
    for section in ("settings", "num_images", "seconds"):
        if results.get(section):
            lines += ["", f"**{section}**: " + ", ".join(f"{k}={v}" for k, v in results[section].items())]
    return "\n".join(lines) + "\n"


def write_results(results: dict, output_dir) -> tuple[Path, Path]:
    """Write eval_results.json and eval_results.md into output_dir (created); returns both paths.

    Absolute paths in the results (model, dataset) are written relative to the working directory, or as their
    name (training.portable): the files travel with the model to the Hub.
    """
    from .portable import portable

    results = portable(results)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / RESULTS_JSON, output_dir / RESULTS_MD
    from .atomic import atomic_write_json, atomic_write_text

    atomic_write_json(json_path, json_safe(results))
    atomic_write_text(md_path, results_markdown(results))
    return json_path, md_path
