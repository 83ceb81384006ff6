"""The four console scripts as a user meets them: exit status, one-line usage errors, --traceback, validation.

The installed scripts run as subprocesses (what a shell, a scheduler or CI sees); the rest runs in-process.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fgssl.training import eval as eval_cli
from fgssl.training import finetune, pretrain, push
from fgssl.training.cli import UsageError, debug_requested
from fgssl.training.arguments import config_file_to_argv
from fgssl.training.backbones import backbone_presets, final_feature_map_side
from fgssl.training.pretrain import parse_args, run_pretraining

SCRIPTS = ("fgssl-pretrain", "fgssl-eval", "fgssl-finetune", "fgssl-push", "fgssl-prepare")


def script(name: str) -> str:
    """The installed console script (next to this Python first, as in a venv)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e . (or make test)"
    return found


def run_scripts(commands: list[list[str]], cwd, timeout=300) -> list[subprocess.CompletedProcess]:
    """Run commands side by side (each one mostly imports torch), outside the repository, no tracebacks asked."""
    env = {k: v for k, v in os.environ.items() if k != "FGSSL_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def run(command):
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(run, commands))


def test_help_exits_0_for_every_script(tmp_path):
    results = run_scripts([[script(name), "--help"] for name in SCRIPTS], tmp_path)
    for name, result in zip(SCRIPTS, results):
        assert result.returncode == 0, (name, result.stderr[-2000:])
        assert f"usage: {name}" in result.stdout and "Traceback" not in result.stderr, name
        assert "FGSSL_DEBUG" in result.stdout, name  # the epilog says how to see a traceback
    pretrain_help = results[0].stdout
    for flag in ("--sigma", "--decoder_block_out_channels", "--overwrite_output_dir", "--learning_rate"):
        assert flag in pretrain_help


BAD_FLAGS = [
    # Abbreviations used to be taken for the full flag (`--sigm 3` set sigma): now refused, the flag named.
    ("fgssl-pretrain", ["--sigm", "3"], "--sigm", "--sigma"),
    ("fgssl-eval", ["--model_name_or_path", "m", "--dataset_name", "d", "--protocol", "knn"], "--protocol",
     "--protocols"),
    ("fgssl-finetune", ["--few_shot", "5"], "--few_shot", "--few_shot_k"),
    ("fgssl-push", ["folder", "me/repo", "--privat"], "--privat", "--private"),
    ("fgssl-prepare", ["src", "dst", "--crop_to_box"], "--crop_to_box", "--crop_to_bbox"),
]


def test_bad_flag_exits_2_with_one_line(tmp_path):
    results = run_scripts([[script(name), *argv] for name, argv, _, _ in BAD_FLAGS], tmp_path)
    for (name, _, flag, named), result in zip(BAD_FLAGS, results):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith(f"{name}: error: unrecognized option {flag};") and named in lines[0], lines[0]


def test_tiny_runs_exit_0(tmp_path):
    """fgssl-pretrain on the embedded dataset, then fgssl-eval and fgssl-finetune on what it saved: status 0, no
    results dict on stderr (it used to be `sys.exit(main())` with a dict: status 1 after every success)."""
    run = tmp_path / "run"
    (pre,) = run_scripts([[
        script("fgssl-pretrain"), "--method", "plain", "--max_steps", "2", "--max_train_samples", "64",
        "--image_size", "32", "--per_device_train_batch_size", "16", "--run_evaluation", "false",
        "--output_dir", str(run), "--report_to", "none", "--disable_tqdm", "true", "--save_steps", "100",
    ]], tmp_path)
    assert pre.returncode == 0, pre.stderr[-3000:]
    assert "fgssl-pretrain finished" in pre.stdout and "{'output_dir'" not in pre.stderr
    assert json.loads((run / "train_results.json").read_text())["global_step"] == 2
    evaluation, tuned = run_scripts([
        [script("fgssl-eval"), "--model_name_or_path", str(run), "--dataset_name", "synthetic", "--protocols", "knn",
         "--image_size", "32", "--max_train_samples", "64", "--max_eval_samples", "32", "--device", "cpu",
         "--output_dir", str(tmp_path / "eval")],
        [script("fgssl-finetune"), "--model_name_or_path", str(run), "--dataset_name", "synthetic",
         "--method", "full", "--max_steps", "1", "--max_train_samples", "32", "--max_eval_samples", "16",
         "--image_size", "32", "--per_device_train_batch_size", "8", "--use_cpu", "--output_dir",
         str(tmp_path / "ft"), "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true"],
    ], tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "knn_top1" in json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert (tmp_path / "ft" / "finetune_results.json").is_file()


def test_push_exits_0_when_pushed(tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi, constants

    (tmp_path / "m").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: "https://huggingface.co/me/m/commit/1")
    assert push.cli([str(tmp_path / "m"), "me/m", "--token", "hf_fake", "--no_card"]) == 0
    assert "commit/1" in capsys.readouterr().out
    assert push.main([str(tmp_path / "m"), "me/m", "--token", "hf_fake", "--no_card"]).endswith("commit/1")


# --------------------------------------------------------------------------------------------- the wrapper


def test_usage_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv("FGSSL_DEBUG", raising=False)
    argv = ["--per_device_train_batch_size", "1", "--queue_size", "0", "--output_dir", "unused"]
    assert pretrain.cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--per_device_train_batch_size" in err[0] and "--queue_size" in err[0]
    assert pretrain.cli([*argv, "--traceback"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("FGSSL_DEBUG", "1")
    assert pretrain.cli(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_main_returns_results_and_cli_returns_the_status(monkeypatch, capsys):
    monkeypatch.setattr(pretrain, "run_pretraining", lambda *a: {"output_dir": "outputs/x"})
    assert pretrain.main(["--output_dir", "outputs/x"]) == {"output_dir": "outputs/x"}
    assert pretrain.cli(["--output_dir", "outputs/x"]) == 0

    def bug(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pretrain, "run_pretraining", bug)
    assert pretrain.cli(["--output_dir", "outputs/x"]) == 1  # not a usage error: traceback shown
    assert "Traceback" in capsys.readouterr().err


def test_traceback_flag_is_ours_and_debug_is_training_arguments(monkeypatch):
    monkeypatch.delenv("FGSSL_DEBUG", raising=False)
    assert debug_requested(["--seed", "1", "--traceback"]) == (["--seed", "1"], True)
    assert debug_requested(["--traceback", "--seed", "1"]) == (["--seed", "1"], True)
    # TrainingArguments' own --debug <option> is left to it.
    assert debug_requested(["--debug", "underflow_overflow"]) == (["--debug", "underflow_overflow"], False)


def test_eval_and_finetune_usage_errors_exit_2(tmp_path, capsys):
    assert eval_cli.cli(["--model_name_or_path", "m", "--dataset_name", "d", "--max_eval_samples", "0"]) == 2
    assert "--max_eval_samples" in capsys.readouterr().err
    assert finetune.cli(["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", str(tmp_path),
                         "--learning_rate", "0"]) == 2
    assert "--learning_rate" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- validation


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if data is loaded or a model is built: validation must come first."""
    monkeypatch.setattr(pretrain, "load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    monkeypatch.setattr(pretrain, "build_model", lambda *a, **k: pytest.fail("a model was built"))


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--per_device_train_batch_size", "1", "--queue_size", "0"], "--per_device_train_batch_size"),
        (["--per_device_train_batch_size", "0", "--queue_size", "64"], "--per_device_train_batch_size"),
        (["--backbone", "convnext-tiny-cpu", "--image_size", "16"], "--image_size 32"),  # total stride 32
        (["--backbone", "vit-tiny-cpu", "--image_size", "4"], "--image_size 8"),  # patch 8
        (["--learning_rate", "-0.001"], "--learning_rate"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps"),
        (["--synth_fraction", "0"], "--synth_fraction"),
        (["--max_train_samples", "0"], "--max_train_samples"),
        (["--max_eval_samples", "0"], "--max_eval_samples"),
        (["--dataset_name", "./no/such/folder"], "--dataset_name"),
    ],
)
def test_bad_settings_are_refused_before_any_data_work(argv, named, tmp_path, no_work):
    with pytest.raises(UsageError) as err:
        run_pretraining(*parse_args([*argv, "--output_dir", str(tmp_path / "out")]))
    assert named in str(err.value)
    assert not (tmp_path / "out").exists()


def test_valid_edge_settings_pass_validation(tmp_path):
    from fgssl.training.pretraining import validate_args

    for argv in (["--per_device_train_batch_size", "1", "--queue_size", "64"],  # a queue supplies negatives
                 ["--method", "plain", "--synth_fraction", "0"],  # synth_fraction only matters for fgssl
                 ["--backbone", "resnet-tiny-cpu", "--image_size", "8"],  # padded strides: never below 1x1
                 ["--image_size", "32"]):
        validate_args(*parse_args([*argv, "--output_dir", str(tmp_path)]))


@pytest.mark.parametrize("preset, sizes", [("convnext-tiny-cpu", (32, 40, 63)), ("vit-tiny-cpu", (8, 24, 33)),
                                           ("resnet-tiny-cpu", (8, 33)), ("resnet-s16-cpu", (8, 33, 64))])
def test_feature_map_side_from_the_config_matches_the_backbone(preset, sizes):
    import torch

    from fgssl.modeling import FGSSLConfig, FGSSLModel

    for size in sizes:
        backbone_config = backbone_presets()[preset](size)
        model = FGSSLModel(FGSSLConfig(backbone_config=backbone_config, image_size=size)).eval()
        with torch.no_grad():
            feature_map = model(torch.zeros(1, 3, size, size)).feature_map
        assert feature_map.shape[-1] == final_feature_map_side(backbone_config, size), (preset, size)


def test_abbreviated_flag_is_refused():
    with pytest.raises(UsageError, match="--sigma"):
        parse_args(["--sigm", "3"])
    assert parse_args(["--sigma", "3"])[3].sigma == 3.0


def test_yaml_keys_are_exact(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("method: plain\nsigm: 3\n")
    with pytest.raises(UsageError, match="'sigm'.*'sigma'"):
        parse_args([str(config)])
    config.write_text("method: plain\nsigma: 3\n")
    assert parse_args([str(config)])[3].sigma == 3.0
    # Without a list of valid keys (library use) the file is read as before.
    assert config_file_to_argv(str(config)) == ["--method", "plain", "--sigma", "3"]
