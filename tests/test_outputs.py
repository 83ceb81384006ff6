"""What a pre-training run leaves on disk, as a user (and the Hub) gets it: an image processor in every model folder
and checkpoint, no absolute path of this machine and no Hub token in any file, the kNN monitor in the logs."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, pipeline

from conftest import REPO_ROOT
from fgssl.modeling import FGSSLModel
from fgssl.training.pretrain import parse_args, run_pretraining

FAKE_TOKEN = "hf_FAKEtokenNEVERonDISK0123456789abcdef"


def image_folder(root: Path) -> Path:
    """A tiny labelled image folder (2 classes, train/ and test/), in a few PIL modes and shapes."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for label, colour in enumerate(((220, 40, 40), (40, 40, 220))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 40, (36 + 4 * (i % 3), 44, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                image = image.convert("RGBA") if i % 4 == 1 else image.convert("L") if i % 4 == 2 else image
                image.save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    data = image_folder(tmp / "data")
    argv = [
        "--dataset_name", str(data), "--output_dir", str(tmp / "run"), "--backbone", "convnext-tiny-cpu",
        "--image_size", "32", "--per_device_train_batch_size", "8", "--max_steps", "4", "--save_steps", "2",
        "--logging_steps", "1", "--warmup_steps", "0", "--synth_warmup_steps", "1", "--synth_ramp_steps", "1",
        "--knn_monitor_steps", "2", "--knn_monitor_samples", "8", "--hub_token", FAKE_TOKEN,
        "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", "--dataloader_pin_memory", "false",
    ]
    run_pretraining(*parse_args(argv))
    return tmp, tmp / "run"


def test_no_absolute_path_and_no_token_in_any_output_file(run_dir):
    tmp, run = run_dir
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.relative_to(run).as_posix() for p in files}
    assert {"training_args.bin", "checkpoint-2/training_args.bin", "train_results.json", "training_config.json",
            "eval_results.json", "README.md"} <= names
    needles = {str(tmp).encode(), str(tmp.resolve()).encode(), FAKE_TOKEN.encode()}
    leaks = [(name, needle.decode()) for path, name in zip(files, (p.relative_to(run).as_posix() for p in files))
             for needle in needles if needle in path.read_bytes()]
    assert leaks == []
    args = torch.load(run / "training_args.bin", weights_only=False)
    assert args.hub_token is None and args.output_dir == "run"
    assert json.loads((run / "training_config.json").read_text())["dataset"] == "data"


def test_every_model_folder_and_checkpoint_has_the_image_processor(run_dir):
    _, run = run_dir
    for folder in (run, run / "encoder", run / "checkpoint-2", run / "checkpoint-4"):
        processor = AutoImageProcessor.from_pretrained(folder)
        assert processor.crop_size == {"height": 32, "width": 32}, folder
        assert processor.size == {"shortest_edge": 32} and list(processor.image_mean) == [0.485, 0.456, 0.406]
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    for folder in (run, run / "encoder"):
        model = AutoModel.from_pretrained(folder).eval()
        assert type(model) is FGSSLModel
        inputs = AutoImageProcessor.from_pretrained(folder)(images=image, return_tensors="pt")
        with torch.no_grad():
            expected = model(**inputs).pooler_output
        pooled = pipeline("image-feature-extraction", model=str(folder), pool=True)(image)
        torch.testing.assert_close(torch.tensor(pooled), expected, atol=1e-5, rtol=1e-4)


def test_card_uses_the_processor_and_the_trained_size(run_dir):
    _, run = run_dir
    card = (run / "README.md").read_text()
    assert 'AutoImageProcessor.from_pretrained("' in card and "1 x 3 x 32 x 32" in card
    assert 'pipeline("image-feature-extraction"' in card and "pool=True" in card


def test_knn_monitor_is_logged_through_the_trainer(run_dir):
    _, run = run_dir
    history = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    monitor = [row for row in history if "monitor_knn_top1" in row]
    assert [row["step"] for row in monitor] == [2, 4]
    assert all(0.0 <= row["monitor_knn_top1"] <= 1.0 and "epoch" in row for row in monitor)
    # Several sheets of synthesized pairs over the run by default (picture_steps 0), and the curves.
    assert len(list((run / "pictures").glob("pairs_step*.png"))) >= 3
    assert (run / "training_curves.png").is_file()


# ------------------------------------------------------------------------------------------ committed files

# A path of the machine a file was written on: under a home, a work tree or the root user's folder.
MACHINE_PATH = re.compile(r"(?<![\w.$}-])/(?:" + "|".join(("work", "home", "root", "Users", "mnt")) + r")/")


def test_committed_results_and_docs_carry_no_machine_path():
    roots = [REPO_ROOT / name for name in ("benchmarks", "training", "modeling", "hub_cards", "configs", "fgssl")]
    files = [p for root in roots for p in root.rglob("*") if p.suffix in (".json", ".md", ".py", ".sh", ".yaml")]
    files += [REPO_ROOT / "README.md", REPO_ROOT / "pyproject.toml"]
    assert len(files) > 20
    found = [f"{p.relative_to(REPO_ROOT)}: {m.group(0)}" for p in files if "__pycache__" not in p.parts
             for m in MACHINE_PATH.finditer(p.read_text(errors="replace"))]
    assert found == []


def test_benchmark_results_are_written_relative_to_the_repository():
    from benchmarks.common import repo_relative_paths

    shared = REPO_ROOT.parent / "shared" / "data" / "cub100"
    record = {"run_dir": str(REPO_ROOT / "outputs" / "bench" / "moco-seed0"), "data": str(shared), "seed": 0,
              "command": f"{sys.executable} -m fgssl.training.pretrain {REPO_ROOT / 'configs' / 'a.yaml'} --seed 0"}
    assert repo_relative_paths({"runs": [record]}) == {"runs": [{
        "run_dir": "outputs/bench/moco-seed0", "data": "../shared/data/cub100", "seed": 0,
        "command": "python -m fgssl.training.pretrain configs/a.yaml --seed 0",
    }]}


def test_a_backbone_started_from_a_local_folder_leaves_no_path_in_the_config(tmp_path):
    from transformers import ConvNextModel

    from conftest import tiny_convnext_config
    from fgssl.modeling import FGSSLForPreTraining

    ConvNextModel(tiny_convnext_config()).save_pretrained(tmp_path / "plain")
    model = FGSSLForPreTraining.from_backbone_pretrained(tmp_path / "plain", queue_size=0, use_decoder=False)
    model.save_pretrained(tmp_path / "out")
    assert str(tmp_path) not in (tmp_path / "out" / "config.json").read_text()


def test_a_one_class_dataset_says_why_it_is_not_evaluated(tmp_path, caplog):
    """A one-class image folder has no label column: evaluation is skipped with a line saying why, not silently."""
    import logging
    import shutil

    data = image_folder(tmp_path / "data")
    for split in ("train", "test"):
        shutil.rmtree(data / split / "class1")
    argv = ["--dataset_name", str(data), "--output_dir", str(tmp_path / "run"), "--backbone", "convnext-tiny-cpu",
            "--image_size", "32", "--per_device_train_batch_size", "4", "--max_steps", "1", "--method", "plain",
            "--report_to", "none", "--disable_tqdm", "true", "--compare_with_start", "false"]
    with caplog.at_level(logging.WARNING):
        results = run_pretraining(*parse_args(argv))
    assert results.get("evaluation_skipped") and "eval_results" not in results
    assert any("Evaluation skipped" in r.getMessage() and "two classes" in r.getMessage() for r in caplog.records)
