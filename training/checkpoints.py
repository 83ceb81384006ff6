"""Trainer checkpoints that are always whole, and weights that are never non-finite.

    last_complete_checkpoint(output_dir)   the newest complete checkpoint-<step> (incomplete ones set aside)
    checkpoint_problem(folder)             what makes a checkpoint incomplete, or None
    SafeCheckpointMixin                    for Trainer subclasses: checkpoints staged then renamed; a non-finite
                                           loss stops the run; nothing non-finite is saved
    require_finite(model, what)            NonFiniteError when a weight holds nan or inf
    portable_tensorboard(trainer)          TensorBoard event files without this machine's name or paths

Used by the trainers (training.trainer, training.finetuning) and by training.runinfo when a run resumes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from pathlib import Path

from .atomic import ignore_errors
from .cli import OneLineError

logger = logging.getLogger("fgssl.runinfo")

#: Where a checkpoint is written before it is renamed to checkpoint-<step> (a crash leaves it here, never there).
STAGING = ".checkpoint-saving"
#: Where incomplete checkpoints (and a crashed save's leftovers) are moved on resume: set aside, never deleted.
SET_ASIDE = "incomplete-checkpoints"

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
#: A checkpoint is complete with one of these weight files and every file of CHECKPOINT_STATE, all readable.
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin",
                "model.safetensors.index.json", "pytorch_model.bin.index.json")
CHECKPOINT_STATE = ("optimizer.pt", "scheduler.pt", "trainer_state.json")


def _readable(path: Path) -> bool:
    """The file reads back whole: JSON parses, a torch zip archive passes its CRCs, a safetensors file is as long
    as its header says."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with path.open("rb") as f:
                length = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            return path.stat().st_size == 8 + length + end
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        else:
            return path.stat().st_size > 0
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return False
    return True


def checkpoint_problem(folder) -> str | None:
    """What makes `folder` an incomplete checkpoint ("no optimizer.pt", "model.safetensors unreadable"), or None
    when weights, optimizer, scheduler and trainer state are all present and readable."""
    folder = Path(folder)
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        return "no weights"
    for path in [weights[0], *(folder / name for name in CHECKPOINT_STATE)]:
        if not path.is_file():
            return f"no {path.name}"
        if not _readable(path):
            return f"{path.name} unreadable"
    return None


def set_aside(output_dir, folder) -> Path:
    """Move `folder` into `output_dir`/incomplete-checkpoints/ (a free name there); never deletes anything."""
    target_dir = Path(output_dir) / SET_ASIDE
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / Path(folder).name
    n = 1
    while target.exists():
        target, n = target_dir / f"{Path(folder).name}-{n}", n + 1
    os.replace(folder, target)
    return target


def last_complete_checkpoint(output_dir, move_aside: bool = True) -> str | None:
    """The newest complete `checkpoint-<step>` of `output_dir`, or None.

    Newer incomplete ones (a process killed while saving with an older version, a full disk) and a crashed save's
    leftovers (.checkpoint-saving/) are moved into incomplete-checkpoints/ with a one-line warning each (only
    skipped when `move_aside` is off, e.g. on ranks other than 0).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    staging = output_dir / STAGING
    if move_aside and staging.is_dir():
        for leftover in sorted(staging.iterdir()):
            logger.warning("%s was being saved when a run stopped: moved to %s (not used).", leftover.name,
                           portable_name(set_aside(output_dir, leftover), output_dir))
        with ignore_errors():
            staging.rmdir()
    found = sorted(((int(m.group(1)), p) for p in output_dir.iterdir()
                    if (m := CHECKPOINT_NAME.match(p.name)) and p.is_dir()), reverse=True)
    for _, folder in found:
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        if move_aside:
            logger.warning("%s is incomplete (%s): moved to %s, resuming from the newest complete checkpoint.",
                           folder.name, problem, portable_name(set_aside(output_dir, folder), output_dir))
    return None


def portable_name(path: Path, output_dir: Path) -> str:
    return Path(path).relative_to(output_dir).as_posix() if Path(path).is_relative_to(output_dir) else Path(path).name


# --------------------------------------------------------------------------------------------- the trainers


class NonFiniteError(OneLineError):
    """A loss or a weight is nan or infinite: the run stops; the last checkpoint saved before stays as it was."""


def non_finite_parameters(model) -> list[str]:
    """Names of the parameters and buffers of `model` holding a nan or an infinity (floating point only)."""
    import torch

    bad = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
            bad.append(name)
    return bad


def require_finite(model, what: str) -> None:
    """NonFiniteError naming `what` when any weight of `model` is non-finite (nothing is saved then)."""
    bad = non_finite_parameters(model)
    if bad:
        raise NonFiniteError(f"{what}: {len(bad)} weight tensors hold nan or inf (first: {bad[0]}); nothing saved. "
                             "Lower --learning_rate (or check the data); the last checkpoint is kept.")


class SafeCheckpointMixin:
    """For `Trainer` subclasses (pre-training and fine-tuning alike):

    - every checkpoint is written into `.checkpoint-saving/checkpoint-<step>` and renamed to `checkpoint-<step>`
      once whole, then the rotation runs: a `checkpoint-*` folder is always complete, and the rotation never
      removes the last complete one for a half-written one;
    - a non-finite loss stops the run (NonFiniteError naming the step) before the optimiser step, and no weights
      holding nan or inf are ever saved;
    - resuming a run that already reached `max_steps` (in the middle of an epoch) trains no further step.
    """

    _staging_dir: str | None = None

    def _get_output_dir(self, trial):
        return self._staging_dir or super()._get_output_dir(trial)

    def _save(self, output_dir=None, state_dict=None):
        require_finite(self.accelerator.unwrap_model(self.model), f"step {self.state.global_step}")
        return super()._save(output_dir, state_dict)

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = Path(super()._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        staging = run_dir / STAGING
        if self.args.should_save and staging.is_dir():
            for leftover in list(staging.iterdir()):
                set_aside(run_dir, leftover)
        self._staging_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()
        if self.args.should_save:
            staged, final = staging / name, run_dir / name
            best = self.state.best_global_step
            if best and (best == self.state.global_step or (run_dir / f"checkpoint-{best}").is_dir()):
                self.state.best_model_checkpoint = str(run_dir / f"checkpoint-{best}")
                self.state.save_to_json(str(staged / "trainer_state.json"))
            if final.exists():
                logger.warning("%s existed already: moved to %s.", name,
                               portable_name(set_aside(run_dir, final), run_dir))
            os.replace(staged, final)
            with ignore_errors():
                staging.rmdir()
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def train(self, *args, **kwargs):
        portable_tensorboard(self)
        return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        return self.refuse_non_finite_loss(super().training_step(model, inputs, num_items_in_batch))

    def refuse_non_finite_loss(self, loss):
        """`loss`, or NonFiniteError when it is nan or infinite (the run stops before the optimiser step)."""
        import torch

        if not bool(torch.isfinite(loss).all()):
            raise NonFiniteError(
                f"step {self.state.global_step + 1}: the loss is {float(loss)}; the run stops here (the last "
                "checkpoint saved before is kept). Lower --learning_rate or check the data and settings.")
        return loss

    def _run_epoch(self, *args, **kwargs):
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True  # resumed at max_steps mid-epoch: no extra step
            return None
        return super()._run_epoch(*args, **kwargs)


def strip_host_from_event_files(logging_dir) -> list[Path]:
    """Rename TensorBoard's `events.out.tfevents.<time>.<host name>.<pid>.<n>` files to
    `events.out.tfevents.<time>.fgssl.<pid>.<n>`: TensorBoard reads any `events.out.tfevents.*` file, and the run
    folder travels (Hub, colleagues) without naming the machine it was trained on."""
    import socket

    host = socket.gethostname()
    renamed = []
    for path in Path(logging_dir).glob(f"events.out.tfevents.*.{host}.*"):
        target, n = path.with_name(path.name.replace(f".{host}.", ".fgssl.", 1)), 1
        while target.exists():  # two writers in the same second and process (training scalars, then pictures)
            target, n = path.with_name(path.name.replace(f".{host}.", f".fgssl{n}.", 1)), n + 1
        path.rename(target)
        renamed.append(target)
    return renamed


def portable_tensorboard(trainer) -> None:
    """TensorBoard event files without this machine's name or paths: the log folder is <output_dir>/runs/<date
    and time> (transformers adds the host name), and the "args" text holds portable paths and no token (the model
    config text, which may name the folder the model was loaded from, is left out: config.json has it)."""
    from datetime import datetime

    from transformers.integrations import TensorBoardCallback

    from .portable import portable_training_args

    class PortableTensorBoardCallback(TensorBoardCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if self.logging_dir is None:
                self.logging_dir = os.path.join(args.output_dir, "runs", datetime.now().strftime("%b%d_%H-%M-%S"))
            kwargs.pop("model", None)
            return super().on_train_begin(portable_training_args(args), state, control, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):
            super().on_train_end(args, state, control, **kwargs)  # closes the writer: the event files are complete
            if self.logging_dir:
                strip_host_from_event_files(self.logging_dir)

    for callback in trainer.callback_handler.callbacks:
        if type(callback) is TensorBoardCallback:
            callback.__class__ = PortableTensorBoardCallback


__all__ = ["STAGING", "SET_ASIDE", "CHECKPOINT_NAME", "WEIGHT_FILES", "CHECKPOINT_STATE", "checkpoint_problem",
           "set_aside", "last_complete_checkpoint", "portable_name", "NonFiniteError", "non_finite_parameters",
           "require_finite", "SafeCheckpointMixin", "portable_tensorboard", "strip_host_from_event_files"]
