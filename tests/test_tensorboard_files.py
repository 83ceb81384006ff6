"""TensorBoard files travel without the machine's name (issue 22): event files renamed at the end of training, the
evaluation pictures written into the same run folder as the training scalars. (TensorBoard itself is optional and
not installed in CI; these check the file handling.)"""

import socket
from types import SimpleNamespace

from fgssl.training.checkpoints import strip_host_from_event_files
from fgssl.training.pretraining import tensorboard_log_dir


def test_event_files_lose_the_host_name_and_never_overwrite(tmp_path):
    host = socket.gethostname()
    first = tmp_path / f"events.out.tfevents.1700000000.{host}.42.0"
    clash = tmp_path / "events.out.tfevents.1700000000.fgssl.42.0"  # a file renamed before, same second and pid
    other = tmp_path / "notes.txt"
    for path, text in ((first, "scalars"), (clash, "earlier"), (other, "x")):
        path.write_text(text)
    renamed = strip_host_from_event_files(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not any(host in name for name in names if name.startswith("events"))
    assert clash.read_text() == "earlier" and len(renamed) == 1 and renamed[0].read_text() == "scalars"
    assert "notes.txt" in names and len(names) == 3


def test_pictures_go_to_the_run_of_the_training_scalars(tmp_path):
    callbacks = [SimpleNamespace(), SimpleNamespace(logging_dir=str(tmp_path / "runs" / "Dec07_10-00-00"))]
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=callbacks))
    assert tensorboard_log_dir(trainer, tmp_path) == tmp_path / "runs" / "Dec07_10-00-00"
    trainer.callback_handler.callbacks = callbacks[:1]
    assert tensorboard_log_dir(trainer, tmp_path) == tmp_path / "runs"
