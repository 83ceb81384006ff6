"""Rough edges a Hugging Face user meets (issue 23, item 4): TensorBoard asked for and missing, a Hub id while
offline, resuming with another schedule, --help without fgssl's defaults, a clashing --debug, sklearn's warnings."""

import dataclasses
import json
import logging
import warnings

import numpy as np
import pytest

from fgssl.training import cli as cli_module
from fgssl.training import eval as eval_cli
from fgssl.training import finetune, pretrain, pretraining, runinfo
from fgssl.training.arguments import EvalArguments, FinetuneArguments, PretrainingArguments, PretrainingDataArguments
from fgssl.training.cli import debug_requested
from test_reruns import TINY

FT = ["--model_name_or_path", "m", "--dataset_name", "d"]


@pytest.fixture
def no_data(monkeypatch):
    monkeypatch.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command, argv", [(pretrain, TINY), (finetune, FT)])
def test_report_to_tensorboard_without_it_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch, no_data, command,
                                                                    argv):
    monkeypatch.setattr(cli_module, "tensorboard_available", lambda: False)
    assert command.cli([*argv, "--report_to", "tensorboard", "--output_dir", str(tmp_path / "out")]) == 2
    line = one_line(capsys)
    assert 'pip install "fgssl[tensorboard]"' in line and "Traceback" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, argv", [
    (pretrain, [*TINY, "--backbone", "someone/no-such-backbone"]),
    (finetune, ["--model_name_or_path", "someone/no-such-model", "--dataset_name", "d"]),
    (eval_cli, ["--model_name_or_path", "someone/no-such-model", "--dataset_name", "d"]),
])
def test_a_hub_id_while_offline_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch, no_data, command, argv):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert command.cli([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    line = one_line(capsys)
    assert "HF_HUB_OFFLINE" in line and "someone/no-such-" in line, line
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_backbone_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch, no_data):
    from fgssl.modeling import FGSSLForPreTraining
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(pretraining, "backbone_config_for", lambda *a: None)  # (no network probe in validation)

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(FGSSLForPreTraining, "from_backbone_pretrained", unreachable)
    assert pretrain.cli([*TINY, "--backbone", "someone/vit", "--output_dir", str(tmp_path / "out")]) == 2
    line = one_line(capsys)
    assert "--backbone someone/vit" in line and "HF_HUB_OFFLINE" in line and "report it" not in line


def test_resuming_with_another_schedule_says_so_with_the_fix(tmp_path, caplog):
    checkpoint = tmp_path / "run" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3, "max_steps": 3,
                                                               "num_train_epochs": 2}))
    args = pretrain.parse_args([*TINY, "--max_steps", "6", "--output_dir", str(tmp_path / "run")])[2]
    message = runinfo.schedule_change_message(checkpoint, args)
    assert "3 steps" in message and "6 steps" in message and "cosine" in message
    assert "--model_name_or_path" in message and "--overwrite_output_dir" in message and "\n" not in message
    same = pretrain.parse_args([*TINY, "--max_steps", "3", "--output_dir", str(tmp_path / "run")])[2]
    assert runinfo.schedule_change_message(checkpoint, same) is None
    constant = pretrain.parse_args([*TINY, "--max_steps", "6", "--lr_scheduler_type", "constant"])[2]
    assert runinfo.schedule_change_message(checkpoint, constant) is None

    # start_run warns (one line) when it resumes such a checkpoint.
    fingerprint = runinfo.run_fingerprint(*pretrain.parse_args([*TINY, "--output_dir", str(tmp_path / "run")]))
    import unittest.mock

    with unittest.mock.patch.object(runinfo, "last_complete_checkpoint", lambda *a, **k: str(checkpoint)), \
            caplog.at_level(logging.WARNING):
        assert runinfo.start_run(tmp_path / "run", fingerprint, "resume", args) == str(checkpoint)
    assert any("6 steps" in r.getMessage() for r in caplog.records)


def expanded_help(parser, action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


def test_help_shows_fgssl_defaults_of_training_arguments_and_every_data_flag():
    from transformers import TrainingArguments

    parser = pretrain.build_parser()
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    theirs = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    changed = [f for f in dataclasses.fields(PretrainingArguments)
               if f.name in theirs and f.default is not dataclasses.MISSING and f.default != theirs[f.name]
               and f.name not in ("output_dir", "report_to")]
    assert {"learning_rate", "per_device_train_batch_size", "num_train_epochs", "weight_decay"} <= {f.name for f in
                                                                                                   changed}
    for f in changed:
        text = expanded_help(parser, actions[f"--{f.name}"])
        assert f"(default: {f.default})" in text and "transformers'" in text, (f.name, text)
    for command, data_class in ((pretrain, PretrainingDataArguments), (eval_cli, EvalArguments),
                                (finetune, FinetuneArguments)):
        parser = command.build_parser()
        actions = {a.dest: a for a in parser._actions}
        for f in dataclasses.fields(data_class):
            assert actions[f.name].help, (command.__name__, f.name)


def test_traceback_flag_does_not_clash_with_training_arguments_debug(monkeypatch, capsys):
    monkeypatch.delenv("FGSSL_DEBUG", raising=False)
    assert debug_requested(["--seed", "1", "--traceback"]) == (["--seed", "1"], True)
    assert debug_requested(["--debug", "underflow_overflow"]) == (["--debug", "underflow_overflow"], False)
    assert debug_requested(["--debug"]) == (["--debug"], False)  # TrainingArguments' flag, never taken for ours
    argv = ["--per_device_train_batch_size", "1", "--queue_size", "0", "--output_dir", "unused"]
    assert pretrain.cli([*argv, "--traceback"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert "--traceback" in pretrain.build_parser().format_help()


def test_sklearn_warnings_are_summarised_in_one_line(caplog):
    from fgssl.training.evaluation import linear_probe_top1

    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 16)).astype(np.float32)
    labels = np.arange(40) % 20  # two images a class: sklearn warns at every fit of the C grid
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        linear_probe_top1(features, labels, features[:10], labels[:10])
    assert [w for w in escaped if "sklearn" in str(w.filename)] == []
    lines = [r.getMessage() for r in caplog.records if "scikit-learn warned" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "noisy" in lines[0], lines
