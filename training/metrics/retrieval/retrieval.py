"""Retrieval metric: every image queries all the others by cosine similarity.

A self-contained `evaluate` module (numpy only), loaded by path:
`evaluate.load("training/metrics/retrieval")`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Instance retrieval within one labelled set of embeddings. Each image is a query; the gallery is
every other image, ranked by cosine similarity. An image of the same label is a positive.

- `rank{k}`: fraction of queries with a positive among the k most similar images (rank-1 = the
  nearest neighbour has the query's label).
- `map`: mean over queries of the average precision over the full ranking.

Queries without any other image of their label cannot be scored; they are left out of `rank{k}`
and `map`, and their number is reported as `num_queries_without_positive`.

Ties are resolved without looking at the order of the images: `map` treats tied scores as one
block and gives each positive in it the precision at the end of the block (the rule of
`sklearn.metrics.average_precision_score`); for `rank{k}` a positive tied with negatives counts as
ranked after them, so a collapsed encoder (all images equally similar) scores no hits.

The similarity matrix is computed `chunk_size` queries at a time, so memory grows as
chunk_size x N, not N x N.
"""

_KWARGS_DESCRIPTION = """
Args:
    embeddings (`list` of float vectors, N x C): one feature vector per image (need not be normalised).
    labels (`list` of `int`, N): class of each image.
    ks (`tuple` of `int`, default (1, 5)): cut-offs for rank-k.
    chunk_size (`int`, default 256): queries per block of the similarity matrix.
Returns:
    rank{k} (float), map (float), num_queries (int: queries that were scored),
    num_queries_without_positive (int: queries left out). Scores are NaN when no query can be scored.
Examples:
    >>> retrieval = evaluate.load("training/metrics/retrieval")
    >>> retrieval.compute(embeddings=[[1, 0], [1, 0.1], [0, 1]], labels=[0, 0, 1])["num_queries_without_positive"]
    1
"""

_CITATION = """
@inproceedings{wang2024fgssl,
  title={On Learning Discriminative Features from Synthesized Data for Self-Supervised Fine-Grained Visual Recognition},
  author={Wang, Zihu and Liu, Lingqiao and Figueroa Weston, Scott Ricardo and Tian, Samuel and Li, Peng},
  booktitle={ECCV}, year={2024}}
"""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of x (N x C) scaled to unit length (zero rows stay zero), in float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def block_end_positions(sorted_scores: np.ndarray) -> np.ndarray:
    """For scores sorted descending per row (B x N), the index of the last entry equal to each entry (B x N)."""
    b, n = sorted_scores.shape
    is_last_of_block = np.ones((b, n), dtype=bool)
    is_last_of_block[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    positions = np.where(is_last_of_block, np.arange(n)[None, :], n)
    # The nearest block end at or after each position: a running minimum from the right.
    return np.minimum.accumulate(positions[:, ::-1], axis=1)[:, ::-1]


def average_precision_rows(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Tie-aware average precision of each row (B,), from scores (B x N) and a positive mask (B x N).

    Rows without positives get NaN.
    """
    order = np.argsort(-scores, axis=1)  # ties are resolved by blocks below, so no stable sort needed
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    sorted_positives = np.take_along_axis(positives, order, axis=1)
    true_positives = np.cumsum(sorted_positives, axis=1)
    block_end = block_end_positions(sorted_scores)
    precision_at_block_end = np.take_along_axis(true_positives, block_end, axis=1) / (block_end + 1)
    num_positives = sorted_positives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sorted_positives * precision_at_block_end).sum(axis=1) / num_positives


def first_positive_rank(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """1-based rank of the best positive of each row (B,), counting every entry scored >= it (ties pessimistic)."""
    best_positive = np.where(positives, scores, -np.inf).max(axis=1)
    return (scores >= best_positive[:, None]).sum(axis=1)


def retrieval_scores(embeddings, labels, ks=(1, 5), chunk_size=256) -> dict:
    """Leave-one-out retrieval over embeddings (N x C) with labels (N,): rank-k hit rates and mAP."""
    features = l2_normalize(embeddings)
    labels = np.asarray(labels).reshape(-1)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"Expected N x C embeddings and N labels, got {features.shape} and {labels.shape}.")
    if not np.isfinite(features).all():
        raise ValueError("Embeddings contain NaN or inf: the encoder produced invalid features (did training diverge?).")
    n = len(features)
    hits = {k: 0 for k in ks}
    ap_sum, num_scored = 0.0, 0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = np.arange(stop - start)
        scores = features[start:stop] @ features.T
        positives = labels[start:stop, None] == labels[None, :]
        # The query itself is neither a candidate nor a positive.
        scores[rows, start + rows] = -np.inf
        positives[rows, start + rows] = False
        scored = positives.any(axis=1)
        if not scored.any():
            continue
        scores, positives = scores[scored], positives[scored]
        ranks = first_positive_rank(scores, positives)
        for k in ks:
            hits[k] += int((ranks <= k).sum())
        ap_sum += float(average_precision_rows(scores, positives).sum())
        num_scored += int(scored.sum())
    result = {f"rank{k}": (hits[k] / num_scored if num_scored else float("nan")) for k in ks}
    result["map"] = ap_sum / num_scored if num_scored else float("nan")
    result["num_queries"] = num_scored
    result["num_queries_without_positive"] = n - num_scored
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Retrieval(evaluate.Metric):
    """Leave-one-out cosine retrieval: rank-k and mAP."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"embeddings": datasets.Sequence(datasets.Value("float32")), "labels": datasets.Value("int64")}
            ),
        )

    def _compute(self, embeddings, labels, ks=(1, 5), chunk_size=256):
        # evaluate hands list features back as Python lists (its numpy format allows scalars only).
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(labels), -1)
        return retrieval_scores(embeddings, labels, ks=tuple(ks), chunk_size=int(chunk_size))
