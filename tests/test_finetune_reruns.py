"""fgssl-finetune re-runs through the same mechanism as fgssl-pretrain (training.runinfo): another run into the
folder refused (or replaced with --overwrite_output_dir), the same run resumed from its newest complete checkpoint,
a finished run not trained again, and --eval_split none."""

import json

import pytest
import torch

from fgssl.training import finetune, runinfo
from fgssl.training.cli import UsageError
from test_outputs import image_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    tmp = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    FGSSLModel(tiny_fgssl_config()).save_pretrained(tmp / "model")
    return tmp / "model", image_folder(tmp / "data")


def argv(inputs, out, *extra):
    model, data = inputs
    return ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            "--image_size", "32", "--per_device_train_batch_size", "8", "--max_steps", "2", "--use_cpu",
            "--disable_tqdm", "true", "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no",
            "--seed", "0", *extra]


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_another_run_is_refused_and_overwrite_replaces_it_whole(inputs, tmp_path, monkeypatch):
    out = tmp_path / "ft"
    finetune.main(argv(inputs, out))
    assert {"adapter", "merged", "checkpoint-2", "finetune_results.json"} <= {p.name for p in out.iterdir()}
    before = files_of(out)
    with monkeypatch.context() as m:  # refused before any data or model work
        m.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
        with pytest.raises(UsageError, match="method: 'lora' there, 'full' now.*--overwrite_output_dir"):
            finetune.main(argv(inputs, out, "--method", "full"))
    assert files_of(out) == before

    finetune.main(argv(inputs, out, "--method", "full", "--overwrite_output_dir", "true"))
    names = {p.name for p in out.iterdir()}
    assert "model" in names and not {"adapter", "merged"} & names  # no stale LoRA folders beside the new model
    assert not any(p.name.startswith("adapter_") for p in (out / "checkpoint-2").iterdir())  # no hybrid checkpoint
    assert json.loads((out / "finetune_results.json").read_text())["settings"]["method"] == "full"


def test_the_same_run_resumes_and_a_finished_one_is_not_trained_again(inputs, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "ft"
    finetune.main(argv(inputs, out))
    finished = files_of(out)
    with monkeypatch.context() as m:
        m.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
        capsys.readouterr()
        assert finetune.cli(argv(inputs, out)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "finished at step 2" in printed[0] and "nothing to do" in printed[0], printed
    assert files_of(out) == finished

    # A longer target continues from the newest complete checkpoint (it used to restart from step 0).
    with caplog.at_level("WARNING"):
        finetune.main(argv(inputs, out, "--max_steps", "3"))
    assert any("Resuming from" in r.getMessage() and "checkpoint-2" in r.getMessage() for r in caplog.records)
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert json.loads((out / "finetune_results.json").read_text())["settings"]["max_steps"] == 3


def test_eval_split_none_trains_without_evaluation(inputs, tmp_path):
    out = tmp_path / "ft"
    assert finetune.cli(argv(inputs, out, "--eval_split", "none", "--eval_strategy", "epoch")) == 0
    written = json.loads((out / "finetune_results.json").read_text())
    assert written["accuracy"] is None and written["num_images"]["eval"] == 0
    assert runinfo.read_run_info(out)["finished"]["global_step"] == 2


def test_no_machine_path_in_any_file_of_a_finetune_run(inputs, tmp_path):
    out = tmp_path / "ft"
    finetune.main(argv(inputs, out))
    model_dir = str(inputs[0].parent)
    leaks = [p.relative_to(out).as_posix() for p in out.rglob("*")
             if p.is_file() and (model_dir.encode() in p.read_bytes() or str(tmp_path).encode() in p.read_bytes())]
    assert leaks == []  # checkpoint-*/adapter_config.json and its README used to name the base model's path
