"""Mistakes a new user makes, refused in one line (exit 2) before any data work, or handled: an empty dataset name,
a missing local path, an output folder that is a file or read-only, an impossible image size, a run of 0 steps,
--push_to_hub without a token or a reachable Hub, a final push that fails (exit 1, results kept)."""

import json
import os

import pytest
import torch

from fgssl.training import eval as eval_cli
from fgssl.training import finetune, pretrain, push
from test_reruns import STEPS, TINY

FT = ["--model_name_or_path", "m", "--dataset_name", "d"]


@pytest.fixture
def tiny_model(tmp_path):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    torch.manual_seed(0)
    FGSSLModel(tiny_fgssl_config()).save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


CASES = [
    (pretrain, [*TINY, "--dataset_name", ""], "--dataset_name is empty"),
    (finetune, ["--model_name_or_path", "m", "--dataset_name", ""], "--dataset_name is empty"),
    (eval_cli, ["--model_name_or_path", "./no/such/model", "--dataset_name", "d"], "no such file or folder"),
    (finetune, ["--model_name_or_path", "/no/such/model", "--dataset_name", "d"], "no such file or folder"),
    (pretrain, [*TINY, "--image_size", "100000"], "--image_size 100000 is larger than"),
    (finetune, [*FT, "--image_size", "100000"], "--image_size 100000 is larger than"),
    (pretrain, [*TINY, "--max_steps", "0"], "trains no step"),
    (finetune, [*FT, "--max_steps", "0"], "trains no step"),
    (finetune, [*FT, "--num_train_epochs", "0"], "trains no step"),
]


@pytest.mark.parametrize("command, argv, message", CASES)
def test_one_line_usage_errors_before_any_data_work(tmp_path, capsys, monkeypatch, command, argv, message):
    monkeypatch.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    out = tmp_path / "out"
    assert command.cli([*argv, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_an_output_dir_that_is_a_file_or_read_only_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for target, message in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "cannot be created")):
        assert pretrain.cli([*TINY, "--output_dir", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        assert pretrain.cli([*TINY, "--output_dir", str(tmp_path / "ro")]) == 2
        assert "not writable" in capsys.readouterr().err


def test_too_small_an_image_for_the_backbone_is_a_usage_error(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    capsys.readouterr()
    for command in (finetune, eval_cli):
        assert command.cli(["--model_name_or_path", tiny_model, "--dataset_name", "d", "--image_size", "4",
                            "--output_dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "smaller than the total stride" in err[0] and "--image_size 8" in err[0], err


@pytest.mark.parametrize("command, argv", [(pretrain, TINY), (finetune, FT)])
def test_push_to_hub_is_refused_before_training_without_a_token_or_the_hub(tmp_path, capsys, monkeypatch, command,
                                                                            argv):
    monkeypatch.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    monkeypatch.setattr(push, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(push, "_offline", lambda: False)
    assert command.cli([*argv, "--push_to_hub", "true", "--output_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--push_to_hub" in err[0] and "token" in err[0], err

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(push.HfApi, "whoami", unreachable)
    assert command.cli([*argv, "--push_to_hub", "true", "--hub_token", "hf_fake", "--output_dir",
                        str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Cannot reach the Hugging Face Hub" in err[0], err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_failed_final_push_exits_1_with_the_results_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(push, "check_hub_access", lambda *a, **k: "hf_fake")

    def refused(folder, repo_id, **kwargs):
        raise push.HubPushError(f"Could not push {folder} to {repo_id} (ConnectError).")

    monkeypatch.setattr(push, "push_to_hub", refused)
    out = tmp_path / "run"
    assert pretrain.cli([*STEPS, "--max_steps", "1", "--push_to_hub", "true", "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fgssl-pretrain: error: Could not push") and "fgssl-push" in err[-1], err[-1]
    assert (out / "model.safetensors").is_file() and json.loads((out / "train_results.json").read_text())


def test_the_old_spelling_of_the_base_alone_is_refused_with_the_new_name(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "fgssl.training.pretrain", "--method", "moco", "--output_dir",
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--method moco is now --method plain" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_run_folder_that_says_moco_reads_as_plain(tmp_path):
    import json

    from fgssl.training.trainer import ObjectiveArguments

    (tmp_path / "training_config.json").write_text(json.dumps({"method": "moco", "objective": {"method": "moco"}}))
    assert ObjectiveArguments.from_run_folder(tmp_path).method == "plain"
