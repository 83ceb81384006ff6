"""One run per output folder: a second run is refused in one line while the first one is alive; the lock of a dead
process (kill -9, a crash) is taken over."""

import json
import subprocess
import sys

import pytest

from fgssl.training import finetune, pretrain, runinfo
from test_reruns import TINY


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def lock_of(folder, process):
    folder.mkdir(parents=True, exist_ok=True)
    started = runinfo.process_start_time(process.pid)
    (folder / runinfo.LOCK).write_text(json.dumps({"pid": process.pid, "started": started}))


@pytest.mark.parametrize("command, argv", [
    (pretrain, TINY),
    (finetune, ["--model_name_or_path", "m", "--dataset_name", "d"]),
])
def test_a_second_run_into_a_live_runs_folder_is_refused_in_one_line(tmp_path, capsys, monkeypatch, live_process,
                                                                      command, argv):
    monkeypatch.setattr("fgssl.training.data.load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    out = tmp_path / "run"
    lock_of(out, live_process)
    assert command.cli([*argv, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"in use by another run (process {live_process.pid}" in err[0], err
    assert json.loads((out / runinfo.LOCK).read_text())["pid"] == live_process.pid  # the live run's lock stays


def test_the_lock_of_a_dead_process_is_taken_over_and_released(tmp_path, live_process, caplog):
    out = tmp_path / "run"
    lock_of(out, live_process)
    live_process.kill()
    live_process.wait()
    with caplog.at_level("WARNING"):
        lock = runinfo.RunLock(out).acquire()
    assert any("no longer running" in r.getMessage() for r in caplog.records)
    assert json.loads((out / runinfo.LOCK).read_text())["pid"] != live_process.pid
    lock.release()
    assert not (out / runinfo.LOCK).exists()


def test_a_recycled_pid_is_not_taken_for_the_live_run(tmp_path, live_process):
    out = tmp_path / "run"
    (out).mkdir()
    (out / runinfo.LOCK).write_text(json.dumps({"pid": live_process.pid, "started": "0"}))  # another process's
    runinfo.RunLock(out).acquire().release()


def test_a_finished_run_releases_its_lock(tmp_path):
    out = tmp_path / "run"
    pretrain.run_pretraining(*pretrain.parse_args([*TINY, "--method", "plain", "--output_dir", str(out)]))
    assert not (out / runinfo.LOCK).exists() and (out / "model.safetensors").is_file()
