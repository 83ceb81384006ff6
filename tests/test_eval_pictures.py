"""Pictures of an evaluation (issue 23, item 5): retrieval.png (fixed test queries and their top-5 neighbours, right
and wrong class marked) and embedding.png (2-D map of the test embeddings by class), in the card and TensorBoard."""

import sys
import types

import numpy as np
import pytest
from PIL import Image

from fgssl.training import eval_pictures
from fgssl.training.eval_pictures import (embedding_2d, nearest_neighbours, sample_queries, save_retrieval_sheet,
                                          write_eval_pictures)
from test_backbone_processor import png_folder, vit_folder


def clustered(n_per_class=6, num_classes=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 5
    labels = np.repeat(np.arange(num_classes), n_per_class)
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_queries_are_a_fixed_sample_and_neighbours_leave_the_query_out():
    features, labels = clustered()
    assert sample_queries(labels).tolist() == sample_queries(labels).tolist()  # the same for every encoder
    queries = sample_queries(labels, num_queries=4)
    neighbours, sims = nearest_neighbours(features, queries, k=5)
    assert neighbours.shape == (4, 5) and not (neighbours == queries[:, None]).any()
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # most similar first
    assert (labels[neighbours[:, 0]] == labels[queries]).all()  # well-separated classes: right class first


def test_embedding_map_uses_tsne_then_pca_without_umap(monkeypatch):
    features, _ = clustered()
    monkeypatch.setitem(sys.modules, "umap", None)  # not installed
    coords, method = embedding_2d(features)
    assert coords.shape == (len(features), 2) and method == "t-SNE"
    monkeypatch.setattr(eval_pictures, "TSNE_MAX_POINTS", 5)
    assert embedding_2d(features)[1] == "PCA"


def test_retrieval_sheet_marks_right_and_wrong_neighbours(tmp_path):
    features, labels = clustered()
    images = np.zeros((len(labels), 3, 16, 16), np.uint8)
    path = save_retrieval_sheet(images, labels, features, tmp_path / "retrieval.png")
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3).astype(int)
    green = np.all(np.abs(pixels - [0x1A, 0x98, 0x50]) < 20, axis=1).sum()
    assert green > 100  # right-class neighbours are framed green


def test_fgssl_eval_writes_both_pictures_and_the_card_shows_them(tmp_path):
    from fgssl.training import eval as eval_cli
    from fgssl.training.card import render_model_card

    model = vit_folder(tmp_path / "vit")
    results = eval_cli.main(["--model_name_or_path", str(model), "--dataset_name", str(png_folder(tmp_path / "data")),
                             "--protocols", "retrieval", "--device", "cpu"])
    for name in ("retrieval.png", "embedding.png"):
        assert (model / "eval" / name).is_file() and str(model / "eval" / name) in results["output_files"]
        with Image.open(model / "eval" / name) as picture:
            assert picture.size[0] > 200
    text = render_model_card(model).text
    assert "![Retrieval: test queries and their top-5 neighbours](eval/retrieval.png)" in text
    assert "![Embedding of the test split](eval/embedding.png)" in text


def test_no_picture_of_dataset_images_under_benchmark_results(tmp_path):
    features, labels = clustered()
    import datasets

    split = datasets.Dataset.from_dict({"pixel_values": np.zeros((len(labels), 3, 8, 8), np.uint8).tolist(),
                                        "labels": labels.tolist()})
    written = write_eval_pictures(features, labels, split, tmp_path / "benchmarks" / "results" / "x")
    assert set(written) == {"embedding"} and not (tmp_path / "benchmarks" / "results" / "x" / "retrieval.png").exists()
    assert set(write_eval_pictures(features, labels, split, tmp_path / "run")) == {"retrieval", "embedding"}


def test_pictures_reach_tensorboard_when_it_is_on(tmp_path, monkeypatch):
    added = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_image(self, tag, image, step, dataformats):
            added.append((tag, image.shape[-1], step, dataformats))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    features, labels = clustered()
    path = save_retrieval_sheet(np.zeros((len(labels), 3, 8, 8), np.uint8), labels, features, tmp_path / "r.png")
    assert eval_pictures.log_pictures_to_tensorboard({"retrieval": path}, tmp_path / "runs", step=7)
    assert added == [("eval/retrieval", 3, 7, "HWC")]

    from fgssl.training.pretraining import log_eval_pictures

    trainer = types.SimpleNamespace(args=types.SimpleNamespace(report_to=["tensorboard"]),
                                    state=types.SimpleNamespace(global_step=3),
                                    callback_handler=types.SimpleNamespace(callbacks=[]))
    log_eval_pictures(trainer, tmp_path, {"retrieval": "r.png"})
    assert added[-1] == ("eval/retrieval", 3, 3, "HWC")
    trainer.args.report_to = ["none"]
    log_eval_pictures(trainer, tmp_path, {"retrieval": "r.png"})
    assert len(added) == 2
