"""Safe re-runs: the run fingerprint, the refusal to resume a different run, --overwrite_output_dir, the user's
README.md, atomic result files."""

import json
import os
from pathlib import Path

import pytest

from fgssl.training import atomic, checkpoints, pretrain, runinfo
from fgssl.training.cli import UsageError
from fgssl.training.pretrain import parse_args, run_pretraining
from fgssl.training.pretraining import default_output_dir

TINY = ["--max_steps", "1", "--max_train_samples", "32", "--image_size", "32", "--per_device_train_batch_size",
        "16", "--run_evaluation", "false", "--report_to", "none", "--disable_tqdm", "true", "--save_steps", "100",
        "--logging_steps", "1"]


def fingerprint(*argv):
    return runinfo.run_fingerprint(*parse_args(list(argv)))


def fake_finished_run(folder: Path, fp: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_results.json").write_text("{}")
    runinfo.write_run_info(folder, fp)
    return folder


def image_folder(root: Path, n: int) -> Path:
    for i in range(n):
        path = root / "train" / "c0" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded here")
    return root


def test_another_method_is_refused_and_overwrite_replaces_the_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    written = []
    write = atomic.atomic_write_text
    monkeypatch.setattr(atomic, "atomic_write_text", lambda path, text: (written.append(Path(path).name),
                                                                         write(path, text))[1])

    run_pretraining(*parse_args([*TINY, "--method", "plain", "--output_dir", str(out)]))
    assert (out / "README.md").read_text() == "my own notes\n"  # not overwritten without --overwrite_output_dir
    assert {"fgssl_run.json", "training_config.json", "train_results.json"} <= set(written)
    finished = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    with monkeypatch.context() as m:  # the refusal comes before any model or data work
        m.setattr(pretrain, "load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
        m.setattr(pretrain, "build_model", lambda *a, **k: pytest.fail("a model was built"))
        with pytest.raises(UsageError) as err:
            run_pretraining(*parse_args([*TINY, "--method", "lcr", "--output_dir", str(out)]))
    message = str(err.value)
    assert "method: 'plain' there, 'lcr' now" in message
    assert "--output_dir" in message and "--overwrite_output_dir" in message
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == finished

    written.clear()
    run_pretraining(*parse_args([*TINY, "--method", "lcr", "--output_dir", str(out), "--overwrite_output_dir",
                                 "true"]))
    info = json.loads((out / "fgssl_run.json").read_text())
    assert info["fingerprint"]["method"] == "lcr"
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert any("loss_lcr" in row for row in state["log_history"])  # trained afresh, not resumed from moco's state
    assert "README.md" in written and "my own notes" not in (out / "README.md").read_text()
    assert runinfo.readme_is_ours(out)  # the next run may replace the card it wrote


def test_same_folder_name_on_another_dataset_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = image_folder(tmp_path / "a" / "birds", 3), image_folder(tmp_path / "b" / "birds", 3)
    # The default output folder is named after the dataset folder's last name: the same for both.
    assert default_output_dir("fgssl", str(first)) == default_output_dir("fgssl", str(second))
    fake_finished_run(Path(default_output_dir("fgssl", str(first))), fingerprint("--dataset_name", str(first)))

    monkeypatch.setattr(pretrain, "load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    monkeypatch.setattr(pretrain, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(UsageError, match="dataset: another folder") as err:
        run_pretraining(*parse_args(["--dataset_name", str(second)]))
    assert "--output_dir" in str(err.value) and "--overwrite_output_dir" in str(err.value)

    # The same folder with images added is another dataset too; the same folder as it was is the same run.
    output_dir = default_output_dir("fgssl", str(first))
    assert runinfo.check_output_dir(output_dir, fingerprint("--dataset_name", str(first)), False) == "resume"
    image_folder(first, 4)
    with pytest.raises(UsageError, match="dataset.files: 3 there, 4 now"):
        runinfo.check_output_dir(output_dir, fingerprint("--dataset_name", str(first)), False)
    # No absolute path is recorded: a local folder is its name and a hash of its location.
    assert str(tmp_path) not in (Path(output_dir) / runinfo.RUN_INFO).read_text()


def test_fingerprint_holds_what_defines_the_run():
    base = fingerprint()
    for argv in (["--max_steps", "5"], ["--num_train_epochs", "3"], ["--learning_rate", "0.01"],
                 ["--logging_steps", "1"], ["--picture_steps", "7"], ["--save_steps", "3"]):
        assert fingerprint(*argv) == base, argv  # continuing longer or logging differently is the same run
    for argv, key in ((["--seed", "1"], "seed"), (["--image_size", "48"], "image_size"), (["--sigma", "2"], "sigma"),
                      (["--per_device_train_batch_size", "32"], "per_device_train_batch_size"),
                      (["--backbone", "vit-tiny-cpu"], "backbone"), (["--method", "plain"], "method"),
                      (["--max_train_samples", "100"], "max_train_samples"),
                      (["--gradient_accumulation_steps", "2"], "total_batch_size")):
        diffs = runinfo.fingerprint_differences(base, fingerprint(*argv))
        assert any(key in d for d in diffs), (argv, diffs)


def test_folder_with_training_output_but_no_fingerprint_is_refused(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(UsageError, match="without a run fingerprint.*--overwrite_output_dir"):
        runinfo.check_output_dir(tmp_path, fingerprint(), overwrite=False)
    # A folder with only a user's own files is no run: a new run goes there (and leaves their README alone).
    user = tmp_path / "mine"
    user.mkdir()
    (user / "README.md").write_text("notes")
    assert runinfo.check_output_dir(user, fingerprint(), overwrite=False) == "new"
    assert not runinfo.readme_is_ours(user)


def test_overwrite_removes_only_the_previous_runs_files(tmp_path):
    fake_finished_run(tmp_path, fingerprint("--method", "plain"))
    for name in ("checkpoint-2/trainer_state.json", "encoder/config.json", "pictures/pairs_step000001.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    assert runinfo.check_output_dir(tmp_path, fingerprint(), overwrite=True) == "overwrite"
    runinfo.clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = atomic.atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and path.read_text().endswith("\n")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        atomic.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


# ------------------------------------------------------------------------------------------ checkpoints, finished runs

STEPS = [*TINY[2:], "--method", "plain", "--save_steps", "1", "--save_total_limit", "5"]  # TINY without --max_steps


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_checkpoint_cut_short_by_a_full_disk_is_set_aside_and_the_run_resumes(tmp_path, monkeypatch, caplog):
    from fgssl.training.trainer import FGSSLTrainer

    out = tmp_path / "run"
    argv = [*STEPS, "--max_steps", "3", "--output_dir", str(out)]
    save = FGSSLTrainer._save

    def disk_full_at_step_3(self, output_dir=None, state_dict=None):
        if self.state.global_step == 3 and output_dir and "checkpoint-3" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
            raise OSError(28, "No space left on device")
        return save(self, output_dir, state_dict)

    with monkeypatch.context() as m:
        m.setattr(FGSSLTrainer, "_save", disk_full_at_step_3)
        with pytest.raises(OSError, match="No space left"):
            run_pretraining(*parse_args(argv))
    assert not (out / "checkpoint-3").exists()  # never a checkpoint-* folder that is not whole
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()

    with caplog.at_level("WARNING"):
        run_pretraining(*parse_args(argv))
    assert any("checkpoint-2" in r.getMessage() and "Resuming" in r.getMessage() for r in caplog.records)
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and checkpoints.checkpoint_problem(out / "checkpoint-3") is None
    # The half-written save is kept aside, never deleted.
    assert (out / checkpoints.SET_ASIDE / "checkpoint-3" / "model.safetensors").is_file()


def test_a_checkpoint_left_by_kill_9_is_set_aside_with_one_line_and_the_complete_one_resumed(tmp_path, caplog):
    import shutil

    out = tmp_path / "run"
    run_pretraining(*parse_args([*STEPS, "--max_steps", "2", "--output_dir", str(out)]))
    # What kill -9 during a save leaves: checkpoint-3 without its optimizer and with half its trainer state (an
    # older fgssl wrote checkpoints in place), and a save in progress.
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-3")
    (out / "checkpoint-3" / "optimizer.pt").unlink()
    (out / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3, "log_hi')
    (out / checkpoints.STAGING / "checkpoint-4").mkdir(parents=True)
    assert checkpoints.checkpoint_problem(out / "checkpoint-3") == "no optimizer.pt"

    with caplog.at_level("WARNING"):
        run_pretraining(*parse_args([*STEPS, "--max_steps", "3", "--output_dir", str(out)]))
    notes = [r.getMessage() for r in caplog.records if "moved to" in r.getMessage()]
    assert len(notes) == 2 and all("\n" not in note for note in notes), notes  # one line per folder set aside
    assert any(n.startswith("checkpoint-3 is incomplete (no optimizer.pt)") for n in notes), notes
    assert sorted(p.name for p in (out / checkpoints.SET_ASIDE).iterdir()) == ["checkpoint-3", "checkpoint-4"]
    assert json.loads((out / "train_results.json").read_text())["global_step"] == 3
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


def test_a_finished_run_ending_mid_epoch_is_never_trained_again(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = [*STEPS, "--max_steps", "3", "--output_dir", str(out), "--save_total_limit", "2"]  # 2 steps an epoch
    run_pretraining(*parse_args(argv))
    finished = files_of(out)
    assert json.loads((out / "train_results.json").read_text())["global_step"] == 3

    with monkeypatch.context() as m:  # no work at all: no data, no model
        m.setattr(pretrain, "load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
        m.setattr(pretrain, "build_model", lambda *a, **k: pytest.fail("a model was built"))
        capsys.readouterr()
        assert pretrain.cli(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "finished at step 3" in printed[0] and "nothing to do" in printed[0], printed
    assert files_of(out) == finished  # model, results, card and the final checkpoint untouched

    # A run stopped after its last checkpoint but before its final save: resumed at max_steps, no extra step.
    info = json.loads((out / runinfo.RUN_INFO).read_text())
    del info["finished"]
    (out / runinfo.RUN_INFO).write_text(json.dumps(info))
    run_pretraining(*parse_args(argv))
    assert json.loads((out / "train_results.json").read_text())["global_step"] == 3
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    # Asking for more steps continues the same run.
    run_pretraining(*parse_args([*argv, "--max_steps", "4"]))
    assert json.loads((out / "train_results.json").read_text())["global_step"] == 4
