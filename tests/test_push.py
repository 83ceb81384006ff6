"""fgssl-push as the Hub sees it: an allow-list of files (never stray ones), and the card rendered for the repo id."""

import json

import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

import fgssl.training.push as push
from conftest import tiny_fgssl_config
from fgssl.modeling import FGSSLForPreTraining
from fgssl.training.card import write_model_card
from fgssl.training.processor import build_image_processor


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


@pytest.fixture
def run_folder(tmp_path):
    """A folder laid out like a pre-training run, plus the local state and stray files a real one collects."""
    torch.manual_seed(0)
    run = tmp_path / "fgssl-run"
    model = FGSSLForPreTraining(tiny_fgssl_config("convnext"))
    processor = build_image_processor(32)
    model.save_pretrained(run)
    processor.save_pretrained(run)
    model.fgssl.save_pretrained(run / "encoder")
    processor.save_pretrained(run / "encoder")
    model.decoder.save_pretrained(run / "decoder")
    Image.new("RGB", (8, 8)).save(run / "training_curves.png")
    (run / "pictures").mkdir()
    Image.new("RGB", (8, 8)).save(run / "pictures" / "pairs_step000003.png")
    (run / "train_results.json").write_text("{}")
    (run / "training_config.json").write_text(json.dumps({"method": "fgssl", "dataset": "birds"}))
    (run / "eval_results.json").write_text(json.dumps({"knn_top1": 0.5}))
    (run / "eval_results.md").write_text("| metric |")
    write_model_card(run)  # the card of the local save, before any repo id is known
    # Local state and strays: none of it belongs on the Hub.
    for name in ("checkpoint-2/model.safetensors", "checkpoint-2/config.json", "checkpoint-2/optimizer.pt",
                 "runs/Nov30/events.out.tfevents.1", "training_args.bin", "notes.txt", ".env", "secrets.json",
                 "encoder/debug.log", "pictures/scratch.txt", "data/img.png", "wandb/run-1/files/config.yaml",
                 "__pycache__/x.pyc", "extra.safetensors", "sub/model.safetensors"):
        touch(run / name)
    return run


@pytest.fixture
def fake_hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = {}

    class Url(str):  # like huggingface_hub's RepoUrl: a str with the resolved repo_id
        repo_id = "someone/fgssl-run"

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)
        return Url("https://huggingface.co/someone/fgssl-run")

    def upload_folder(self, **kwargs):
        calls["upload"] = kwargs
        return "https://huggingface.co/someone/fgssl-run/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def uploaded_files(folder, kwargs):
    """The files upload_folder sends for these arguments (the same filter huggingface_hub applies)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return set(filter_repo_objects(files, allow_patterns=kwargs.get("allow_patterns"),
                                   ignore_patterns=kwargs.get("ignore_patterns")))


def test_push_uploads_the_allow_list_and_no_stray_file(run_folder, fake_hub):
    push.push_to_hub(run_folder, "fgssl-run", token="hf_dummy")
    assert fake_hub["upload"]["allow_patterns"] == push.ALLOW_PATTERNS
    assert uploaded_files(run_folder, fake_hub["upload"]) == {
        "config.json", "model.safetensors", "configuration_fgssl.py", "modeling_fgssl.py", "decoder_fgssl.py",
        "preprocessor_config.json", "README.md", "train_results.json", "training_config.json", "eval_results.json",
        "eval_results.md", "training_curves.png", "pictures/pairs_step000003.png",
        "encoder/config.json", "encoder/model.safetensors", "encoder/configuration_fgssl.py",
        "encoder/modeling_fgssl.py", "encoder/decoder_fgssl.py", "encoder/preprocessor_config.json",
        "decoder/config.json", "decoder/diffusion_pytorch_model.safetensors", "decoder/decoder_fgssl.py",
    }


def test_push_renders_the_card_for_the_full_repo_id(run_folder, fake_hub):
    before = (run_folder / "README.md").read_text()
    assert 'from_pretrained("fgssl-run"' in before  # the local card names the folder, not this machine's path
    push.push_to_hub(run_folder, "fgssl-run", token="hf_dummy")
    # "fgssl-run" alone lands in the token owner's namespace: the card shows the id users will type.
    assert fake_hub["upload"]["repo_id"] == "someone/fgssl-run"
    card = (run_folder / "README.md").read_text()
    assert 'AutoImageProcessor.from_pretrained("someone/fgssl-run")' in card
    assert 'AutoModel.from_pretrained("someone/fgssl-run", trust_remote_code=True)' in card
    assert str(run_folder.parent) not in card and "`birds`" in card


def test_push_keeps_a_readme_of_the_users_own(run_folder, fake_hub):
    (run_folder / "README.md").write_text("# My model\n\nMy own words.\n")
    push.push_to_hub(run_folder, "someone/fgssl-run", token="hf_dummy")
    assert (run_folder / "README.md").read_text() == "# My model\n\nMy own words.\n"
    assert "README.md" in uploaded_files(run_folder, fake_hub["upload"])
