"""Model card rendering (offline metadata checks) and fgssl-push failure modes (no token, offline, no network)."""

import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

import fgssl.training.push as push
from fgssl.training.card import render_model_card, write_model_card
from fgssl.training.cli import UsageError

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
    assert data.pipeline_tag == "image-feature-extraction" and data.license is None  # none stated unless --license
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


# ------------------------------------------------------------------------------------------ Hub conventions


def check_hub_metadata(card) -> "ModelCard":
    """The Hub's metadata checks that run offline: the card parses as a ModelCard, the model-index round-trips,
    base_model / datasets are valid repository ids (owner/name), base_model_relation is one of the Hub's, every
    metric of a task and dataset has a type and a name of its own."""
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
    from huggingface_hub.utils import validate_repo_id

    parsed = ModelCard(str(card))
    data = parsed.data
    for repo in [*(data.datasets or []), *([data.base_model] if data.base_model else [])]:
        validate_repo_id(repo)
        assert repo.count("/") == 1, repo
    relation = getattr(data, "base_model_relation", None)
    if relation is not None:
        assert data.base_model and relation in ("adapter", "merge", "quantized", "finetune")
    if data.eval_results:
        name, results = model_index_to_eval_results(eval_results_to_model_index(data.model_name, data.eval_results))
        assert name == data.model_name and len(results) == len(data.eval_results)
        keys = [(r.task_type, r.dataset_type, r.dataset_split, r.metric_type) for r in data.eval_results]
        names = [r.metric_name for r in data.eval_results]
        assert len(set(keys)) == len(keys) and len(set(names)) == len(names), (keys, names)
    if data.license is not None:
        assert data.license == data.license.strip().lower() and " " not in data.license
    return parsed


def test_card_metadata_follows_the_hub_conventions(model_dir):
    # A local dataset folder's name and a local starting folder never reach the metadata; no license is invented.
    card = check_hub_metadata(render_model_card(model_dir, training_config={"method": "moco", "start": "run1",
                                                                           "dataset": "cub100"}))
    assert card.data.datasets is None and card.data.base_model is None and card.data.license is None
    assert "base_model_relation" not in str(card).split("---")[1]
    assert "inherit its terms of use" in card.text and "`run1` (a local checkpoint)" in card.text
    types = [r.metric_type for r in card.data.eval_results]
    assert types == ["retrieval_rank1", "retrieval_rank5", "knn_top1", "linear_probe_top1"]

    # A Hub backbone, a Hub dataset and --license: all in the metadata.
    card = check_hub_metadata(render_model_card(model_dir, training_config={
        "method": "fgssl", "base_model": "google/vit-base-patch16-224", "hub_dataset": "someone/birds",
        "license": "cc-by-nc-4.0"}))
    assert card.data.base_model == "google/vit-base-patch16-224" and card.data.base_model_relation == "finetune"
    assert card.data.datasets == ["someone/birds"] and card.data.license == "cc-by-nc-4.0"
    assert "inherit its terms" not in card.text and "| base_model |" not in card.text


@pytest.mark.parametrize("method, pairs", [("plain", False), ("moco", False), ("lcr", False), ("fgssl", True)])
def test_the_method_line_is_true_for_each_method(model_dir, method, pairs):
    # "moco": a run folder written before --method moco became --method plain reads as plain.
    text = check_hub_metadata(render_model_card(model_dir, training_config={"method": method})).text
    line = next(line for line in text.splitlines() if line.startswith("- **Method:**"))
    assert ("synthesized pairs" in line and "no synthesized pairs" not in line) == pairs, line
    assert ("LCR" in line) == (method == "lcr"), line
    assert ("plain MoCo v2" in line) == (method in ("plain", "moco")), line


def test_every_finetuned_folder_has_a_card_with_the_right_base(tmp_path):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel
    from fgssl.training.finetuning import apply_lora, build_classifier, save_finetuned, write_finetune_cards
    from fgssl.training.processor import build_image_processor

    FGSSLModel(tiny_fgssl_config()).save_pretrained(tmp_path / "run1")
    model = apply_lora(build_classifier(str(tmp_path / "run1"), num_labels=3))
    out = tmp_path / "ft"
    paths = save_finetuned(model, out, build_image_processor(32))
    settings = {"method": "lora", "model_name_or_path": "run1", "dataset_name": "cub100", "base_model": None}
    (out / "finetune_results.json").write_text(json.dumps({"accuracy": 0.5, "settings": settings}))
    write_finetune_cards(paths)
    for name in ("adapter", "merged"):
        card = check_hub_metadata(ModelCard.load(out / name / "README.md"))
        assert card.data.base_model is None, name  # "run1" is a local folder, not a Hub id (peft wrote it there)
        assert "fgssl model card" in card.content and "base_model: run1" not in card.content, name
    assert ModelCard.load(out / "adapter" / "README.md").data.library_name == "peft"

    # Fine-tuned from a Hub checkpoint: the adapter names it as its base, the merged model as the model it tunes.
    settings["base_model"] = "someone/fgssl-vit-cub"
    (out / "finetune_results.json").write_text(json.dumps({"accuracy": 0.5, "settings": settings}))
    write_finetune_cards(paths)
    adapter = check_hub_metadata(ModelCard.load(out / "adapter" / "README.md")).data
    merged = check_hub_metadata(ModelCard.load(out / "merged" / "README.md")).data
    assert (adapter.base_model, adapter.base_model_relation) == ("someone/fgssl-vit-cub", "adapter")
    assert (merged.base_model, merged.base_model_relation) == ("someone/fgssl-vit-cub", "finetune")


def test_the_card_of_a_demo_run_passes_the_metadata_checks(tmp_path):
    from fgssl.training import pretrain

    out = tmp_path / "demo"
    pretrain.main(["--method", "fgssl", "--max_steps", "1", "--max_train_samples", "32", "--max_eval_samples", "16",
                   "--image_size", "32", "--per_device_train_batch_size", "16", "--report_to", "none",
                   "--disable_tqdm", "true", "--compare_with_start", "false", "--linear_backend", "torch",
                   "--license", "mit", "--output_dir", str(out)])
    card = check_hub_metadata(ModelCard.load(out / "README.md"))
    assert card.data.license == "mit" and card.data.datasets is None and card.data.base_model is None
    assert "![Retrieval" in card.content and "![Embedding" in card.content


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
    with pytest.raises(UsageError, match="--push_to_hub: No Hugging Face token found"):  # one line, exit 2
        finetune.main(["--model_name_or_path", str(tmp_path / "m"), "--dataset_name", str(tmp_path / "d"),
                       "--output_dir", str(tmp_path / "out"), "--push_to_hub", "--hub_model_id", "someone/ft",
                       "--use_cpu"])
    assert started == [] and hub_calls == [] and not (tmp_path / "out" / "finetune_results.json").exists()
