"""Safe re-runs: the run fingerprint, the refusal to resume a different run, --overwrite_output_dir, the user's
README.md, atomic result files."""

import json
import os
from pathlib import Path

import pytest

from fgssl.training import pretrain, runinfo
from fgssl.training.cli import UsageError
from fgssl.training.pretrain import default_output_dir, parse_args, run_pretraining

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
    write = runinfo.atomic_write_text
    monkeypatch.setattr(runinfo, "atomic_write_text", lambda path, text: (written.append(Path(path).name),
                                                                         write(path, text))[1])

    run_pretraining(*parse_args([*TINY, "--method", "moco", "--output_dir", str(out)]))
    assert (out / "README.md").read_text() == "my own notes\n"  # not overwritten without --overwrite_output_dir
    assert {"fgssl_run.json", "training_config.json", "train_results.json"} <= set(written)
    finished = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    with monkeypatch.context() as m:  # the refusal comes before any model or data work
        m.setattr(pretrain, "load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
        m.setattr(pretrain, "build_model", lambda *a, **k: pytest.fail("a model was built"))
        with pytest.raises(UsageError) as err:
            run_pretraining(*parse_args([*TINY, "--method", "lcr", "--output_dir", str(out)]))
    message = str(err.value)
    assert "method: 'moco' there, 'lcr' now" in message
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
                      (["--backbone", "vit-tiny-cpu"], "backbone"), (["--method", "moco"], "method"),
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
    fake_finished_run(tmp_path, fingerprint("--method", "moco"))
    for name in ("checkpoint-2/trainer_state.json", "encoder/config.json", "pictures/pairs_step000001.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    assert runinfo.check_output_dir(tmp_path, fingerprint(), overwrite=True) == "overwrite"
    runinfo.clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = runinfo.atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and path.read_text().endswith("\n")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        runinfo.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind
