"""Evaluation protocol: retrieval / accuracy evaluate modules, kNN, linear probe, and the fgssl-eval CLI."""

import json
import math

import numpy as np
import pytest
import torch

from fgssl.training.evaluation import (
    PROTOCOL_METRICS,
    embed_dataset,
    evaluate_encoder,
    knn_predict,
    knn_top1,
    linear_probe_top1,
    load_encoder,
    parse_protocols,
    retrieval_metrics,
    write_results,
)
from fgssl.training.metrics import load_metric, metric_path


def unit_vectors_at(degrees):
    """2-d unit vectors at the given angles: cosine similarity is the cosine of the angle between them."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# ------------------------------------------------------------------------------------------ retrieval metric


def test_retrieval_hand_computed_case():
    # Angles (label): a 0 (0), b 30 (0), c 10 (1), d 100 (1), e 180 (2, alone), f 105 (1).
    # a: c-, b+            -> first positive at 2, AP 1/2
    # b: c-, a+            -> 2, AP 1/2
    # c: a-, b-, d+, f+    -> 3, AP (1/3 + 2/4) / 2
    # d: f+, b-, e-, c+    -> 1, AP (1 + 2/4) / 2
    # f: d+, {b-, e-} tie, c+ -> 1, AP (1 + 2/4) / 2
    # e has no other image of its class: left out and counted.
    x = unit_vectors_at([0, 30, 10, 100, 180, 105])
    labels = [0, 0, 1, 1, 2, 1]
    scores = load_metric("retrieval").compute(embeddings=x, labels=labels, ks=(1, 2, 5))
    assert scores["num_queries"] == 5
    assert scores["num_queries_without_positive"] == 1
    assert scores["rank1"] == pytest.approx(2 / 5)
    assert scores["rank2"] == pytest.approx(4 / 5)
    assert scores["rank5"] == pytest.approx(1.0)
    expected_map = (1 / 2 + 1 / 2 + (1 / 3 + 2 / 4) / 2 + 0.75 + 0.75) / 5
    assert scores["map"] == pytest.approx(expected_map)


def test_retrieval_ties_between_positive_and_negative():
    # p and n are the same vector: for query q the positive p ties with the negative n.
    # Tied block -> AP is the precision at the block's end (1/2); rank-1 counts the tie against us.
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    labels = [0, 0, 1]  # q, p, n; n is alone in its class
    scores = load_metric("retrieval").compute(embeddings=x, labels=labels)
    assert scores["num_queries"] == 2 and scores["num_queries_without_positive"] == 1
    assert scores["rank1"] == 0.0
    assert scores["rank5"] == 1.0
    assert scores["map"] == pytest.approx(0.5)


def test_retrieval_single_class_and_collapsed_encoder():
    rng = np.random.default_rng(0)
    one_class = load_metric("retrieval").compute(embeddings=rng.normal(size=(7, 4)), labels=[3] * 7)
    assert one_class["rank1"] == 1.0 and one_class["map"] == pytest.approx(1.0)
    # Every image identical: no ordering information, so no rank-1 hits and mAP = fraction of positives.
    collapsed = load_metric("retrieval").compute(embeddings=np.ones((6, 4)), labels=[0, 0, 0, 1, 1, 1])
    assert collapsed["rank1"] == 0.0
    assert collapsed["map"] == pytest.approx(2 / 5)


def test_retrieval_all_queries_alone_gives_nan_and_count():
    scores = load_metric("retrieval").compute(embeddings=np.eye(3), labels=[0, 1, 2])
    assert scores["num_queries"] == 0 and scores["num_queries_without_positive"] == 3
    assert math.isnan(scores["map"]) and math.isnan(scores["rank1"])


def test_retrieval_rejects_non_finite_embeddings():
    x = np.ones((3, 2))
    x[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_metric("retrieval").compute(embeddings=x, labels=[0, 0, 1])


def reference_retrieval(x, labels, k):
    """Independent implementation: sklearn AP per query; rank of the best positive counting ties against it."""
    from sklearn.metrics import average_precision_score

    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    aps, hits = [], 0
    for i in range(len(x)):
        others = np.arange(len(x)) != i
        positive = labels[others] == labels[i]
        if not positive.any():
            continue
        aps.append(average_precision_score(positive, sims[i, others]))
        best = sims[i, others][positive].max()
        hits += int((sims[i, others] >= best).sum() <= k)
    return float(np.mean(aps)), hits / len(aps)


@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_sklearn_average_precision(seed):
    rng = np.random.default_rng(seed)
    # Small integer vectors: many exact ties in cosine similarity, where the tie rule matters.
    x = rng.integers(-1, 2, size=(40, 3)).astype(np.float64)
    x[np.abs(x).sum(1) == 0, 0] = 1.0
    labels = rng.integers(0, 4, size=40)
    labels[0] = 9  # one query without positive
    expected_map, expected_rank5 = reference_retrieval(x, labels, k=5)
    scores = retrieval_metrics(x, labels)
    assert scores["retrieval_map"] == pytest.approx(expected_map, abs=1e-9)
    assert scores["retrieval_rank5"] == pytest.approx(expected_rank5)
    assert scores["retrieval_num_queries_without_positive"] == 1


def test_retrieval_chunked_equals_unchunked():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=50)
    whole = load_metric("retrieval").compute(embeddings=x, labels=labels, chunk_size=1000)
    for chunk_size in (1, 7):
        chunked = load_metric("retrieval").compute(embeddings=x, labels=labels, chunk_size=chunk_size)
        assert chunked.keys() == whole.keys()
        for key in whole:
            assert chunked[key] == pytest.approx(whole[key], abs=1e-12), key


def test_accuracy_module_and_metric_path():
    scores = load_metric("accuracy").compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    assert scores["accuracy"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="Unknown metric"):
        metric_path("not_a_metric")


# ------------------------------------------------------------------------------------------ kNN


def test_knn_weighted_vote_by_hand():
    # Query at 0 degrees. One class-1 item at 0 degrees (sim 1); three class-0 items at 60 degrees (sim 0.5).
    # T=0.07: exp(1/0.07) = 1.6e6 > 3 exp(0.5/0.07) = 3.8e3 -> class 1.
    # T=10:   exp(0.1) = 1.105 < 3 exp(0.05) = 3.15           -> class 0 (nearly a majority vote).
    # A class-2 item at 180 degrees falls outside k=4 and must not vote.
    bank = unit_vectors_at([0, 60, 60, 60, 180])
    bank_labels = np.array([1, 0, 0, 0, 2])
    query = unit_vectors_at([0])
    assert knn_predict(bank, bank_labels, query, k=4, temperature=0.07)[0] == 1
    assert knn_predict(bank, bank_labels, query, k=4, temperature=10.0)[0] == 0
    # With k=5 at T=10 the far class-2 item votes too, but only weakly: class 0 still wins.
    assert knn_predict(bank, bank_labels, query, k=5, temperature=10.0)[0] == 0
    # k=1: only the nearest neighbour votes.
    assert knn_predict(bank, bank_labels, query, k=1, temperature=10.0)[0] == 1
    # A query at 180 degrees with k=1 takes class 2; k larger than the bank is clipped.
    assert knn_predict(bank, bank_labels, unit_vectors_at([180]), k=1)[0] == 2
    assert knn_predict(bank, bank_labels, query, k=100, temperature=10.0)[0] == 0


def test_knn_top1_chunked_accuracy():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 5
    train_y, test_y = rng.integers(0, 4, 80), rng.integers(0, 4, 30)
    train_x = centers[train_y] + rng.normal(size=(80, 16))
    test_x = centers[test_y] + rng.normal(size=(30, 16))
    assert knn_top1(train_x, train_y, test_x, test_y, k=20, chunk_size=7) == pytest.approx(1.0)
    # Shuffled test labels: the prediction no longer matches (accuracy well below 1).
    assert knn_top1(train_x, train_y, test_x, rng.permutation(test_y), k=20) < 0.7


# ------------------------------------------------------------------------------------------ linear probe


def test_linear_probe_separable_data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 32)) * 3
    train_y, test_y = np.repeat(np.arange(5), 30), rng.integers(0, 5, 60)
    train_x = centers[train_y] + rng.normal(size=(150, 32))
    test_x = centers[test_y] + rng.normal(size=(60, 32))
    top1, info = linear_probe_top1(train_x, train_y, test_x, test_y, seed=0)
    assert top1 >= 0.97
    assert info["linear_c"] in info["linear_val_scores"]
    assert info["linear_val_top1"] == max(info["linear_val_scores"].values())


def test_linear_probe_random_labels_is_near_chance():
    rng = np.random.default_rng(1)
    train_x, test_x = rng.normal(size=(200, 16)), rng.normal(size=(400, 16))
    train_y, test_y = rng.integers(0, 4, 200), rng.integers(0, 4, 400)
    top1, _ = linear_probe_top1(train_x, train_y, test_x, test_y, c_grid=(0.01, 1.0))
    assert 0.15 < top1 < 0.37  # chance is 0.25


def test_linear_probe_selects_c_without_test_labels():
    # The probe must give the same answer whatever the test labels are (they are used only for the score).
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 8)), rng.integers(0, 3, 60)
    tx = rng.normal(size=(20, 8))
    _, info_a = linear_probe_top1(x, y, tx, np.zeros(20, int))
    _, info_b = linear_probe_top1(x, y, tx, np.ones(20, int))
    assert info_a == info_b


# ------------------------------------------------------------------------------------------ encoder + CLI


def tiny_split(n, num_classes, size=32, seed=0):
    """An in-memory split in training.data's format: uint8 pixel_values 3 x S x S, int64 labels."""
    import datasets

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    pixels = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    features = datasets.Features(
        {"pixel_values": datasets.Array3D((3, size, size), "uint8"), "labels": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict({"pixel_values": pixels, "labels": labels}, features=features).with_format(
        "torch"
    )


def test_load_encoder_wraps_a_plain_backbone_and_embeds(tmp_path):
    from conftest import tiny_vit_config
    from fgssl.modeling import FGSSLModel
    from transformers import ViTModel

    from fgssl.training.augment import eval_transform

    torch.manual_seed(0)
    ViTModel(tiny_vit_config(), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    encoder = load_encoder(str(tmp_path / "vit"))
    assert isinstance(encoder, FGSSLModel)
    split = tiny_split(5, 2)
    features, labels = embed_dataset(encoder, split, batch_size=2, device="cpu")
    assert features.shape == (5, 32) and features.dtype == np.float32
    assert labels.tolist() == [0, 1, 0, 1, 0]
    pixels = torch.stack([split[i]["pixel_values"] for i in range(5)]).to(torch.uint8)
    with torch.no_grad():
        expected = encoder(pixel_values=eval_transform(pixels, 32)).pooler_output
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)


def test_evaluate_encoder_protocol_subsets_and_results_files(tmp_path):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    from fgssl.training.data import PreparedData

    torch.manual_seed(0)
    model = FGSSLModel(tiny_fgssl_config())
    data = PreparedData(train=tiny_split(12, 3), eval=tiny_split(6, 3, seed=1), label_names=None)
    results = evaluate_encoder(model, data, "knn,retrieval", batch_size=4, device="cpu")
    assert set(results) == {*PROTOCOL_METRICS["retrieval"], "knn_top1", "settings", "num_images", "seconds"}
    assert results["num_images"] == {"test": 6, "train": 12, "retrieval_queries": 6,
                                      "retrieval_queries_without_positive": 0}
    assert results["settings"]["knn_k"] == 20
    results["retrieval_map"] = float("nan")  # JSON has no NaN: written as null
    json_path, md_path = write_results(results, tmp_path / "out")
    written = json.loads(json_path.read_text())
    assert written["retrieval_map"] is None and 0 <= written["knn_top1"] <= 1
    assert "| knn_top1 |" in md_path.read_text()
    with pytest.raises(ValueError, match="choose from"):
        parse_protocols("retrieval,svm")


def test_fgssl_eval_cli_on_cub100(tmp_path, cub100):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    from fgssl.training.eval import main

    torch.manual_seed(0)
    FGSSLModel(tiny_fgssl_config()).save_pretrained(tmp_path / "model")
    out = tmp_path / "eval"
    main([
        "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(cub100),
        "--max_train_samples", "20", "--max_eval_samples", "10", "--image_size", "32",
        "--output_dir", str(out), "--batch_size", "8", "--device", "cpu",
    ])
    results = json.loads((out / "eval_results.json").read_text())
    metrics = {"retrieval_rank1", "retrieval_rank5", "retrieval_map", "knn_top1", "linear_top1"}
    assert set(results) == metrics | {"settings", "num_images", "seconds", "pictures"}
    assert results["pictures"] == {"retrieval": "retrieval.png", "embedding": "embedding.png"}
    assert results["num_images"]["train"] == 20 and results["num_images"]["test"] == 10
    assert results["num_images"]["retrieval_queries"] + results["num_images"]["retrieval_queries_without_positive"] == 10
    for key in ("knn_top1", "linear_top1"):
        assert 0.0 <= results[key] <= 1.0
    assert results["settings"]["image_size"] == 32
    assert (out / "eval_results.md").is_file()


def test_torch_linear_probe_agrees_with_sklearn_on_a_fixed_problem():
    """The torch probe minimises sklearn's objective: the same weights, the same predictions, the same chosen C."""
    from fgssl.training.evaluation import TorchLogisticProbe, _fit_sklearn_logistic, linear_probe_top1

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 24))
    train_y, test_y = rng.integers(0, 5, 300), rng.integers(0, 5, 200)
    train_x = centres[train_y] + 1.5 * rng.normal(size=(300, 24)) + 3.0  # overlapping classes, not centred
    test_x = centres[test_y] + 1.5 * rng.normal(size=(200, 24)) + 3.0
    reference = _fit_sklearn_logistic(train_x, train_y, 0.1, 1000, 0)
    probe = TorchLogisticProbe(0.1, device="cpu").fit(train_x, train_y)
    np.testing.assert_allclose(probe.weight.numpy().T, reference[-1].coef_, atol=2e-3, rtol=0)
    assert (probe.predict(test_x) == reference.predict(test_x)).mean() >= 0.99
    top_sklearn, info_sklearn = linear_probe_top1(train_x, train_y, test_x, test_y)
    top_torch, info_torch = linear_probe_top1(train_x, train_y, test_x, test_y, backend="torch", device="cpu")
    assert info_torch["linear_c"] == info_sklearn["linear_c"]
    assert abs(top_torch - top_sklearn) <= 0.01
    with pytest.raises(ValueError, match="backend"):
        linear_probe_top1(train_x, train_y, test_x, test_y, backend="cuml")
