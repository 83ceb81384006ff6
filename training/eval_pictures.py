"""Pictures of a frozen-encoder evaluation: how fine-grained researchers judge an embedding, by its neighbours.

    retrieval.png   a fixed sample of test queries (seeded, the same for every encoder evaluated on the same split),
                    each with its top-5 cosine neighbours among the other test images; a neighbour of the query's
                    class is framed green and ticked, any other red and crossed
    embedding.png   the test embeddings (L2-normalised, as retrieval sees them) mapped to 2-D, coloured by class:
                    UMAP when `umap-learn` is installed, else t-SNE (up to TSNE_MAX_POINTS images), else PCA

`write_eval_pictures` writes both (a few seconds on a CPU); fgssl-eval and the end of fgssl-pretrain call it, and the
model card shows them. retrieval.png shows dataset images: it is never written under benchmarks/results/ (the shared
data's images stay out of the project; tests/test_results_tree.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger(__name__)

RETRIEVAL_PNG = "retrieval.png"
EMBEDDING_PNG = "embedding.png"
#: Queries shown in retrieval.png, and neighbours per query.
NUM_QUERIES = 8
TOP_K = 5
#: t-SNE above this many points is slow on a CPU: PCA instead (UMAP, when installed, takes any number).
TSNE_MAX_POINTS = 1000
#: At most this many points are drawn in embedding.png (a fixed sample beyond).
MAX_MAP_POINTS = 5000
CORRECT, WRONG = "#1a9850", "#d73027"


def _unit(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sample_queries(labels, num_queries: int = NUM_QUERIES, seed: int = 0) -> np.ndarray:
    """A fixed (seeded) sample of query indices, drawn among images whose class has another test image."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    eligible = np.flatnonzero(np.isin(labels, classes[counts >= 2]))
    if len(eligible) == 0:
        eligible = np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(num_queries, len(eligible)), replace=False))


def nearest_neighbours(features, queries, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """(indices Q x k, cosine similarities Q x k) of each query's k nearest other images (itself left out)."""
    x = _unit(features)
    sims = x[np.asarray(queries)] @ x.T
    sims[np.arange(len(queries)), np.asarray(queries)] = -np.inf
    k = min(k, len(x) - 1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def embedding_2d(features, seed: int = 0) -> tuple[np.ndarray, str]:
    """(N x 2 coordinates, method name) of the L2-normalised features: UMAP if installed, else t-SNE up to
    TSNE_MAX_POINTS points, else PCA."""
    x = _unit(features)
    n = len(x)
    if n >= 10:
        try:
            import umap  # noqa: PLC0415

            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, metric="cosine")
            return reducer.fit_transform(x), "UMAP"
        except ImportError:
            pass
        if n <= TSNE_MAX_POINTS:
            from sklearn.manifold import TSNE

            tsne = TSNE(n_components=2, perplexity=float(min(30, (n - 1) / 3)), init="pca", random_state=seed)
            return tsne.fit_transform(x), "t-SNE"
    centred = x - x.mean(0, keepdims=True)
    if n < 2 or not np.any(centred):
        return np.zeros((n, 2), dtype=np.float32), "PCA"
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "PCA"


def _class_name(label: int, label_names) -> str:
    return str(label_names[label]) if label_names and 0 <= label < len(label_names) else str(int(label))


def _frame(ax, color: str, width: float = 3.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def save_retrieval_sheet(images, labels, features, path, queries=None, k: int = TOP_K, label_names=None,
                         title: str = "") -> Path:
    """One row per query: the query, then its k nearest neighbours (green: its class, red: another).

    images: uint8 N x 3 x S x S of the whole split, or a callable idx -> uint8 M x 3 x S x S (only the shown ones are
    read); labels: N; features: N x C.
    """
    path = Path(path)
    labels = np.asarray(labels)
    queries = sample_queries(labels) if queries is None else np.asarray(queries)
    neighbours, sims = nearest_neighbours(features, queries, k)
    shown = np.concatenate([queries[:, None], neighbours], axis=1)  # Q x (1 + k)
    fetch = images if callable(images) else (lambda idx: np.asarray(images)[idx])
    flat = np.asarray(fetch(shown.reshape(-1)))
    pictures = flat.reshape(*shown.shape, *flat.shape[1:]).transpose(0, 1, 3, 4, 2)  # Q x (1+k) x S x S x 3
    rows, cols = shown.shape
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols + 0.3, 1.6 * rows + 0.5), squeeze=False)
    for r in range(rows):
        query_label = int(labels[shown[r, 0]])
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(pictures[r, c])
            if c == 0:
                _frame(ax, "black", 2.0)
                ax.set_title(f"query: {_class_name(query_label, label_names)}"[:24], fontsize=6)
                continue
            same = int(labels[shown[r, c]]) == query_label
            _frame(ax, CORRECT if same else WRONG)
            color = CORRECT if same else WRONG
            ax.set_title(f"{'✓' if same else '✗'} {sims[r, c - 1]:.2f}", fontsize=7, color=color)
    precision = float(np.mean(labels[neighbours] == labels[queries][:, None])) if neighbours.size else float("nan")
    fig.suptitle((title + "\n" if title else "") + f"top-{cols - 1} neighbours of {rows} fixed test queries "
                 f"(green: same class; {100 * precision:.0f} % of those shown)", fontsize=8)
    return _save_figure(fig, path)


def save_embedding_map(features, labels, path, label_names=None, seed: int = 0, title: str = "") -> Path:
    """The test embeddings in 2-D (embedding_2d), one colour per class."""
    path = Path(path)
    labels = np.asarray(labels)
    features = np.asarray(features)
    if len(labels) > MAX_MAP_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), MAX_MAP_POINTS, replace=False))
        features, labels = features[keep], labels[keep]
    coords, method = embedding_2d(features, seed)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "hsv")
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for i, c in enumerate(classes):
        mask = labels == c
        color = cmap(i) if len(classes) <= 20 else cmap(i / max(len(classes), 1))
        ax.scatter(coords[mask, 0], coords[mask, 1], s=9, color=color, alpha=0.8, linewidths=0,
                   label=_class_name(int(c), label_names)[:18])
    if len(classes) <= 20:
        ax.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title((title + "\n" if title else "") + f"{len(labels)} test embeddings, {len(classes)} classes "
                 f"({method})", fontsize=8)
    return _save_figure(fig, path)


def under_benchmark_results(path) -> bool:
    """True when `path` lies under a benchmarks/results/ folder (no picture of dataset images may go there)."""
    parts = Path(path).resolve().parts
    return any(a == "benchmarks" and b == "results" for a, b in zip(parts, parts[1:]))


def write_eval_pictures(features, labels, dataset, output_dir, label_names=None, seed: int = 0,
                        title: str = "") -> dict[str, Path]:
    """retrieval.png and embedding.png of a test split into `output_dir`; returns {"retrieval", "embedding"}: path.

    features: N x C test embeddings; labels: N; dataset: the decoded test split (training.data: uint8
    "pixel_values"), read only for the images shown. Under benchmarks/results/ only embedding.png is written.
    """
    output_dir = Path(output_dir)
    labels = np.asarray(labels)
    written = {}
    if len(labels) < 2:
        return written
    if under_benchmark_results(output_dir):
        logger.warning("retrieval.png not written: %s is under benchmarks/results/, where no picture of dataset "
                       "images goes.", output_dir)
    else:
        from .data import VALID_HW_COLUMN, has_room

        room = has_room(dataset)
        rows = dataset.with_format("numpy", columns=["pixel_values", *([VALID_HW_COLUMN] if room else [])])

        def picture(row):
            pixels = np.asarray(row["pixel_values"]).astype(np.uint8)
            if not room:
                return pixels
            # A cache with room: the centre square of the image's valid region, at the box's side.
            from PIL import Image

            (h, w), side = (int(v) for v in row[VALID_HW_COLUMN]), pixels.shape[-1]
            m = min(h, w)
            top, left = (h - m) // 2, (w - m) // 2
            square = Image.fromarray(pixels[:, top : top + m, left : left + m].transpose(1, 2, 0))
            return np.asarray(square.resize((side, side), Image.Resampling.BICUBIC)).transpose(2, 0, 1)

        def fetch(idx):
            return np.stack([picture(rows[int(i)]) for i in idx]).astype(np.uint8)

        written["retrieval"] = save_retrieval_sheet(fetch, labels, features, output_dir / RETRIEVAL_PNG,
                                                    queries=sample_queries(labels, seed=seed),
                                                    label_names=label_names, title=title)
    written["embedding"] = save_embedding_map(features, labels, output_dir / EMBEDDING_PNG, label_names, seed, title)
    return written


def log_pictures_to_tensorboard(paths: dict, log_dir, step: int = 0, prefix: str = "eval") -> bool:
    """Add the pictures to TensorBoard (tags `eval/retrieval`, `eval/embedding`) under `log_dir`; False when
    TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False
    from PIL import Image

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for name, path in paths.items():
            with Image.open(path) as picture:
                writer.add_image(f"{prefix}/{name}", np.asarray(picture.convert("RGB")), step, dataformats="HWC")
    finally:
        writer.close()
    from .checkpoints import strip_host_from_event_files

    strip_host_from_event_files(log_dir)
    return True


__all__ = ["EMBEDDING_PNG", "RETRIEVAL_PNG", "embedding_2d", "log_pictures_to_tensorboard", "nearest_neighbours",
           "sample_queries", "save_embedding_map", "save_retrieval_sheet", "write_eval_pictures"]


def _save_figure(fig, path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns its path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
