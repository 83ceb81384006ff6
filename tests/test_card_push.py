"""Model card rendering (offline metadata checks) and fgssl-push failure modes (no token, offline, no network)."""

import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

import fgssl.training.push as push
from fgssl.training.card import render_model_card, write_model_card

EVAL_RESULTS = {
    "retrieval_rank1": 0.5, "retrieval_rank5": 0.8, "retrieval_map": None, "knn_top1": 0.4, "linear_top1": 0.61234,
    "settings": {"dataset_name": "/data/cub100", "knn_k": 20, "knn_temperature": 0.07, "image_size": 32},
    "num_images": {"test": 10, "train": 20}, "seconds": {"total": 1.0},
}


@pytest.fixture
def model_dir(tmp_path):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    torch.manual_seed(0)
    folder = tmp_path / "model"
    FGSSLModel(tiny_fgssl_config()).save_pretrained(folder)
    (folder / "eval").mkdir()
    (folder / "eval" / "eval_results.json").write_text(json.dumps(EVAL_RESULTS))
    return folder


def write_png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


# ------------------------------------------------------------------------------------------ card


def test_card_carries_the_metrics_of_eval_results(model_dir):
    card = render_model_card(model_dir, repo_id="someone/fgssl-tiny")
    # Re-parse the rendered text offline: the metadata must be valid ModelCardData with a model-index.
    data = ModelCard(str(card)).data
    values = {r.metric_name: r.metric_value for r in data.eval_results}
    assert values == {
        "Retrieval rank-1": 0.5, "Retrieval rank-5": 0.8,
        "kNN top-1, frozen features (k=20)": 0.4, "Linear probe top-1, frozen features": 0.6123,
    }  # the undefined mAP (null in the JSON) is left out
    assert all(r.dataset_split == "test" and r.dataset_name == "cub100" for r in data.eval_results)
    assert data.pipeline_tag == "image-feature-extraction" and data.license == "apache-2.0"
    assert "fgssl" in data.tags and "vit" in data.tags
    assert data.datasets is None  # a local folder is no Hub dataset id
    text = card.text
    assert "| Linear probe top-1, frozen features | 61.23 % |" in text
    assert 'AutoModel.from_pretrained("someone/fgssl-tiny"' in text
    assert "| queue_size | `32` |" in text  # method config from config.json
    assert "Intended use and limitations" in text and "`cub100`" in text
    assert "Synthesized pairs" not in text  # no picture in this folder


def test_card_lists_the_objective_knobs_of_an_fgssl_run(model_dir):
    objective = {"method": "fgssl", "mask_mode": "union", "sigma": 1.5, "noise_scale": "global",
                 "recon_target": "geometric", "crop_scale_min": 0.2}
    text = render_model_card(model_dir, training_config={"method": "fgssl", "objective": objective}).text
    assert "| sigma | `1.5` |" in text and "| recon_target | `geometric` |" in text and "| mask_mode | `union` |" in text
    assert "crop_scale_min" not in text  # augmentation is not a knob of the synthesized pairs
    moco = render_model_card(model_dir, training_config={"method": "moco", "objective": {**objective, "method": "moco"}})
    assert "| sigma |" not in moco.text


def test_card_links_synthesized_pairs_and_copies_outside_pictures(model_dir, tmp_path):
    write_png(model_dir / "pictures" / "synthesized_pairs_step100.png")
    write_png(model_dir / "pictures" / "synthesized_pairs_step200.png")
    card = render_model_card(model_dir, dataset_name="someone/birds")
    assert "![Synthesized pairs](pictures/synthesized_pairs_step200.png)" in card.text
    assert card.data.datasets == ["someone/birds"]

    outside = write_png(tmp_path / "elsewhere" / "pairs.png")
    path = write_model_card(model_dir, pairs_image=outside, repo_id="someone/fgssl-tiny")
    assert (model_dir / "pairs.png").is_file()
    assert "![Synthesized pairs](pairs.png)" in path.read_text()


def test_card_of_a_finetuned_classifier_reports_accuracy(tmp_path):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLForImageClassification

    out = tmp_path / "ft"
    FGSSLForImageClassification(tiny_fgssl_config(num_labels=3)).save_pretrained(out / "merged")
    (out / "finetune_results.json").write_text(json.dumps({"accuracy": 0.875, "settings": {"method": "lora"}}))
    data = ModelCard(str(render_model_card(out / "merged"))).data
    assert data.pipeline_tag == "image-classification"
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("accuracy", 0.875)]


def test_card_without_results_says_so(tmp_path):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    FGSSLModel(tiny_fgssl_config(use_decoder=False)).save_pretrained(tmp_path / "m")
    card = render_model_card(tmp_path / "m")
    assert card.data.eval_results is None and "run `fgssl-eval`" in card.text
    assert "moco" in card.data.tags  # no decoder: the MoCo v2 baseline


# ------------------------------------------------------------------------------------------ push


@pytest.fixture
def hub_calls(monkeypatch):
    """Record (and forbid by default) every call that would reach the Hub."""
    calls = []

    def forbidden(self, *args, **kwargs):
        calls.append(("hub", args, kwargs))
        raise AssertionError("the Hub must not be contacted")

    monkeypatch.setattr(HfApi, "create_repo", forbidden)
    monkeypatch.setattr(HfApi, "upload_folder", forbidden)
    return calls


def test_push_without_token_fails_fast_and_touches_nothing(model_dir, monkeypatch, hub_calls, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(push, "get_token", lambda: None)
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(push.HubPushError, match="No Hugging Face token found"):
        push.push_to_hub(model_dir, "someone/fgssl-tiny")
    with pytest.raises(push.HubPushError, match="hf auth login"):
        push.check_hub_access()
    with pytest.raises(push.HubPushError):
        push.main([str(model_dir), "someone/fgssl-tiny"])
    assert push.cli([str(model_dir), "someone/fgssl-tiny"]) == 1  # the console script: one line, status 1
    err = capsys.readouterr().err
    assert "No Hugging Face token found" in err and len(err.strip().splitlines()) == 1
    assert hub_calls == [] and sorted(p.name for p in model_dir.iterdir()) == before


def test_push_in_offline_mode_fails_before_contacting_the_hub(model_dir, monkeypatch, hub_calls):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(push.HubPushError, match="HF_HUB_OFFLINE"):
        push.push_to_hub(model_dir, "someone/fgssl-tiny", token="hf_dummy")
    assert hub_calls == []


def test_push_connection_error_becomes_a_clear_message(model_dir, monkeypatch):
    import httpx2
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(self, *args, **kwargs):
        raise httpx2.ConnectError("Name or service not known")

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    with pytest.raises(push.HubPushError, match="files are safe") as err:
        push.push_to_hub(model_dir, "someone/fgssl-tiny", token="hf_dummy")
    assert "fgssl-push" in str(err.value) and (model_dir / "model.safetensors").is_file()


def test_push_uploads_weights_config_code_and_card(model_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))

    def upload_folder(self, **kwargs):
        calls["upload"] = kwargs
        calls["files"] = sorted(p.name for p in model_dir.iterdir())
        return "https://huggingface.co/someone/fgssl-tiny/commit/abc"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    (model_dir / "modeling_fgssl.py").unlink()  # a hand-assembled folder: the remote code is restored
    url = push.push_to_hub(model_dir, "someone/fgssl-tiny", token="hf_dummy", private=True)
    assert url.endswith("/commit/abc")
    assert calls["create"] == ("someone/fgssl-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"]["folder_path"] == str(model_dir) and calls["upload"]["repo_id"] == "someone/fgssl-tiny"
    assert "checkpoint-*" in calls["upload"]["ignore_patterns"]
    for name in ("README.md", "config.json", "model.safetensors", "modeling_fgssl.py", "configuration_fgssl.py"):
        assert name in calls["files"], name
    assert ModelCard.load(model_dir / "README.md").data.eval_results


def test_finetune_with_push_to_hub_and_no_token_fails_before_training(tmp_path, monkeypatch, hub_calls):
    from fgssl.training import finetune

    monkeypatch.setattr(push, "get_token", lambda: None)
    started = []
    monkeypatch.setattr("fgssl.training.data.load_splits", lambda *a, **k: started.append(1))
    (tmp_path / "m").mkdir()  # (a missing local path is refused first, as a usage error of its own)
    (tmp_path / "d").mkdir()
    with pytest.raises(finetune.UsageError, match="--push_to_hub: No Hugging Face token found"):  # one line, exit 2
        finetune.main(["--model_name_or_path", str(tmp_path / "m"), "--dataset_name", str(tmp_path / "d"),
                       "--output_dir", str(tmp_path / "out"), "--push_to_hub", "--hub_model_id", "someone/ft",
                       "--use_cpu"])
    assert started == [] and hub_calls == [] and not (tmp_path / "out" / "finetune_results.json").exists()
