"""Safe re-runs: what defines a pre-training run (its fingerprint), the check before resuming, atomic writes.

Each run writes `fgssl_run.json` into its output folder before training starts: the fingerprint (dataset and the
size of its file list, method, backbone, image size, batch, seed, model and objective knobs) and the hash of the
model card it wrote. Running again into the same folder:

- same fingerprint: the run resumes from its last checkpoint (or re-saves a finished run);
- different fingerprint: refused before any training, naming the differences and the two ways out (a new
  `--output_dir`, or `--overwrite_output_dir`);
- `--overwrite_output_dir`: the previous run's checkpoints and results are removed first, then a fresh run.

Nothing here writes an absolute path: a local dataset or backbone folder is recorded by its name and a hash of
its resolved location.

`atomic_write_text` / `atomic_write_json` are the one way results and cards are written: a temporary file in the
same folder, then `os.replace`, so a crash or a full disk never leaves half a results file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

from .cli import OneLineError, UsageError

logger = logging.getLogger("fgssl.runinfo")

RUN_INFO = "fgssl_run.json"
#: Where a checkpoint is written before it is renamed to checkpoint-<step> (a crash leaves it here, never there).
STAGING = ".checkpoint-saving"
#: Where incomplete checkpoints (and a crashed save's leftovers) are moved on resume: set aside, never deleted.
SET_ASIDE = "incomplete-checkpoints"
#: The lock of a live run in its output folder (process id and start time).
LOCK = ".fgssl.lock"
#: Files of a finished run (besides checkpoint-* folders) that mean "this folder holds a run".
RUN_FILES = ("train_results.json", "training_config.json", "model.safetensors", "finetune_results.json")
#: What `--overwrite_output_dir` removes of a previous run before the new one starts (checkpoint-* folders too).
PREVIOUS_RUN_FILES = (RUN_INFO, "train_results.json", "training_config.json", "eval_results.json",
                      "eval_results.md", "training_curves.png", "trainer_state.json", "training_args.bin",
                      "finetune_results.json")
PREVIOUS_RUN_FOLDERS = ("encoder", "decoder", "pictures", "adapter", "merged", "model", STAGING, SET_ASIDE)
#: Objective knobs that change what is written, not what is learned.
NOT_FINGERPRINTED = ("picture_steps",)


# --------------------------------------------------------------------------------------------- atomic writes


def atomic_write_text(path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace` (atomic on POSIX and
    Windows): readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path, value, **kwargs) -> Path:
    """`atomic_write_text` of `json.dumps(value, indent=2)` plus a final newline."""
    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(value, **kwargs) + "\n")


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


# --------------------------------------------------------------------------------------------- fingerprint


def _location_hash(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


def folder_identity(path: Path) -> dict:
    """A local folder by its name, a hash of where it is, and its file list's size (files, bytes); dot-files and
    dot-folders (caches, .DS_Store) are not counted."""
    files = size = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                files += 1
                with _suppress():
                    size += os.stat(os.path.join(root, name)).st_size
    return {"name": path.resolve().name, "location": _location_hash(path), "files": files, "bytes": size}


def dataset_identity(dataset_name: str | None) -> dict:
    """The embedded dataset, a local folder (see `folder_identity`) or a Hub id.

    Raises:
        UsageError: a name that can only be a local path does not exist.
    """
    from .data import SYNTHETIC_NAME, _looks_like_local_path
    from .synthetic import GENERATOR_VERSION

    if dataset_name is None or (dataset_name == SYNTHETIC_NAME and not Path(dataset_name).exists()):
        return {"name": "embedded-synthetic", "generator_version": GENERATOR_VERSION}
    path = Path(dataset_name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--dataset_name {dataset_name}: is a file; pass the dataset's folder (image folder "
                             "with train/ and test/, or a save_to_disk folder) or a Hub dataset id.")
        return folder_identity(path)
    if _looks_like_local_path(dataset_name):
        raise UsageError(f"--dataset_name {dataset_name}: no such folder; check the path (or pass a Hub dataset "
                         "id, or leave --dataset_name out for the embedded dataset).")
    return {"hub_id": dataset_name}


def model_source_identity(name: str | None) -> str | dict | None:
    """A preset or Hub id as given; a local folder as its name and a hash of its location."""
    if name is None:
        return None
    path = Path(name).expanduser()
    if path.exists():
        return {"name": path.resolve().name, "location": _location_hash(path)}
    return name


def run_fingerprint(model_args, data_args, training_args, objective_args) -> dict:
    """What defines a pre-training run: two runs with the same fingerprint are the same run."""
    model = asdict(model_args)
    model["backbone"] = model_source_identity(model_args.backbone)
    model["model_name_or_path"] = model_source_identity(model_args.model_name_or_path)
    objective = {k: v for k, v in asdict(objective_args).items() if k not in NOT_FINGERPRINTED}
    world = max(1, int(getattr(training_args, "world_size", 1) or 1))
    batch = training_args.per_device_train_batch_size
    fingerprint = {
        "dataset": dataset_identity(data_args.dataset_name),
        "train_split": data_args.train_split,
        "max_train_samples": data_args.max_train_samples,
        **({"dataset_format": data_args.format_kwargs()} if hasattr(data_args, "format_kwargs") else {}),
        "holdout_fraction": getattr(data_args, "holdout_fraction", 0.0),
        "method": objective.pop("method"),
        "backbone": model.pop("backbone"),
        "image_size": model.pop("image_size"),
        "per_device_train_batch_size": batch,
        "total_batch_size": batch * world * training_args.gradient_accumulation_steps,
        "seed": training_args.seed,
        "model": model,
        "objective": objective,
    }
    return json.loads(json.dumps(fingerprint, default=str))  # as it reads back from fgssl_run.json (tuples: lists)


def finetune_fingerprint(args, training_args) -> dict:
    """What defines a fine-tuning run (fgssl-finetune): two runs with the same fingerprint are the same run.

    Like `run_fingerprint`: the step / epoch target, learning rate and logging are not part of it (a rerun with a
    later target continues the run)."""
    known = ("method", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "few_shot_k", "few_shot_seed",
             "image_size", "max_train_samples", "max_eval_samples", "image_column", "label_column", "train_split",
             "eval_split")
    world = max(1, int(getattr(training_args, "world_size", 1) or 1))
    batch = training_args.per_device_train_batch_size
    fingerprint = {
        "dataset": dataset_identity(args.dataset_name),
        "model_name_or_path": model_source_identity(args.model_name_or_path),
        **({"dataset_format": args.format_kwargs()} if hasattr(args, "format_kwargs") else {}),
        **{name: getattr(args, name, None) for name in known},
        "per_device_train_batch_size": batch,
        "total_batch_size": batch * world * training_args.gradient_accumulation_steps,
        "seed": training_args.seed,
    }
    return json.loads(json.dumps(fingerprint, default=str))


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def fingerprint_differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences, `key: <old> there, <new> now`, dataset and method first."""
    before, after = _flatten(old), _flatten(new)
    keys = sorted(set(before) | set(after), key=lambda k: (not k.startswith(("dataset", "method")), k))
    diffs = []
    for key in keys:
        if before.get(key) == after.get(key):
            continue
        if key.endswith(".location"):
            what = key.rsplit(".", 1)[0]
            name = after.get(f"{what}.name") or before.get(f"{what}.name")
            diffs.append(f"{what}: another folder ({name!r} now is not the folder that run used)")
        else:
            diffs.append(f"{key}: {before.get(key)!r} there, {after.get(key)!r} now")
    return diffs


# --------------------------------------------------------------------------------------------- the output folder


def read_run_info(output_dir) -> dict | None:
    try:
        return json.loads((Path(output_dir) / RUN_INFO).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _checkpoints(output_dir: Path) -> list[Path]:
    return [p for p in output_dir.glob("checkpoint-*") if p.is_dir()]


def holds_a_run(output_dir) -> bool:
    """True when the folder has training state or a finished run's files (not just a user's own files)."""
    output_dir = Path(output_dir)
    return bool(_checkpoints(output_dir)) or any((output_dir / name).is_file() for name in RUN_FILES)


def check_output_dir(output_dir, fingerprint: dict, overwrite: bool) -> str:
    """Decide what running into `output_dir` means: "new", "resume" or "overwrite" (nothing is changed here).

    Raises:
        UsageError: the folder holds a different run (or a run without a fingerprint) and `overwrite` is off;
            the message names the differences and the two ways out.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir() or not holds_a_run(output_dir):
        return "new"
    if overwrite:
        return "overwrite"
    ways_out = ("To keep it, pass a new --output_dir; to replace it, add --overwrite_output_dir (removes its "
                "checkpoints and results).")
    info = read_run_info(output_dir)
    if info is None or "fingerprint" not in info:
        raise UsageError(f"{output_dir} already holds training output without a run fingerprint ({RUN_INFO}), so "
                         f"it cannot be resumed safely. {ways_out}")
    diffs = fingerprint_differences(info["fingerprint"], fingerprint)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise UsageError(f"{output_dir} holds a different run, so it will not be resumed ({shown}). {ways_out}")
    return "resume"


def prepare_run(output_dir, fingerprint: dict, training_args, prog: str) -> tuple[str, str | None]:
    """Before any data work, for every training command: what running into `output_dir` means (see
    `check_output_dir`), and the one line to print instead of training when it holds this run finished."""
    state = check_output_dir(output_dir, fingerprint, bool(getattr(training_args, "overwrite_output_dir", False)))
    return state, (finished_message(output_dir, training_args, prog) if state == "resume" else None)


def start_run(output_dir, fingerprint: dict, folder_state: str, training_args) -> str | None:
    """Right before training (model and data ready): on process 0 remove the previous run under
    --overwrite_output_dir and record the fingerprint; returns the checkpoint to resume from (the newest complete
    one, see `last_complete_checkpoint`; or the --resume_from_checkpoint given), None for a fresh start."""
    output_dir = Path(output_dir)
    process_zero = training_args.process_index == 0
    if process_zero:
        if folder_state == "overwrite":
            removed = clear_previous_run(output_dir)
            if removed:
                logger.warning("--overwrite_output_dir: removed the previous run's %s from %s.", ", ".join(removed),
                               output_dir)
        write_run_info(output_dir, fingerprint)
    resume = training_args.resume_from_checkpoint
    if resume not in (None, "last", "auto"):
        return resume
    if folder_state == "overwrite":
        return None  # a fresh run (decided before process 0 cleared the folder, so every process agrees)
    last = last_complete_checkpoint(output_dir, move_aside=process_zero)
    if last is not None:
        logger.warning("Resuming from %s (add --overwrite_output_dir to start over).", last)
        changed = schedule_change_message(last, training_args)
        if changed and process_zero:
            logger.warning(changed)
    return last


#: Schedulers whose learning rate does not depend on the run's length (resuming with another length changes nothing).
LENGTH_FREE_SCHEDULERS = ("constant",)


def schedule_change_message(checkpoint, training_args) -> str | None:
    """One line when resuming `checkpoint` with another step / epoch target than it was trained for, else None.

    The learning-rate schedule (cosine, linear...) is a function of the run's length: the checkpoint's run was
    annealing towards 0 at its own last step, and the resumed run recomputes it for the new length, so the rate
    jumps back up where the old schedule had brought it down (or, at the old end, it was 0). The line says so and
    gives the fixes."""
    state_path = Path(checkpoint) / "trainer_state.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    scheduler = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
    if scheduler in LENGTH_FREE_SCHEDULERS:
        return None
    old_steps, old_epochs = state.get("max_steps"), state.get("num_train_epochs")
    if training_args.max_steps > 0:
        if not old_steps or int(old_steps) == int(training_args.max_steps):
            return None
        was, now = f"{old_steps} steps", f"{training_args.max_steps} steps"
    else:
        import math

        if old_epochs is None or int(old_epochs) == math.ceil(training_args.num_train_epochs):
            return None
        was, now = f"{old_epochs} epochs", f"{training_args.num_train_epochs:g} epochs"
    return (f"{Path(checkpoint).name} was trained on a {scheduler} learning-rate schedule for {was}, and this run asks "
            f"for {now}: the schedule is recomputed for {now} from step {state.get('global_step', '?')}, so the "
            "learning rate jumps away from where the old schedule had brought it (0 at its end). To finish the run "
            f"as planned keep its target ({was}); to anneal again from its weights start a new run from them "
            f"(--model_name_or_path {portable_name(Path(checkpoint), Path.cwd())} --output_dir <a new folder>), or "
            "add --overwrite_output_dir to train from scratch with the new schedule.")


def clear_previous_run(output_dir) -> list[str]:
    """Remove a previous run's checkpoints and results (only fgssl's own files; a user's README.md is replaced
    later by the card, other files are left alone). Returns the names removed."""
    output_dir = Path(output_dir)
    removed = []
    for path in _checkpoints(output_dir):
        shutil.rmtree(path)
        removed.append(path.name)
    for name in PREVIOUS_RUN_FOLDERS:
        if (output_dir / name).is_dir():
            shutil.rmtree(output_dir / name)
            removed.append(name)
    for name in PREVIOUS_RUN_FILES:
        if (output_dir / name).is_file():
            (output_dir / name).unlink()
            removed.append(name)
    return removed


def write_run_info(output_dir, fingerprint: dict) -> Path:
    """Record the fingerprint (keeping the hash of the card this run already wrote, if any)."""
    from .. import __version__

    old = read_run_info(output_dir) or {}
    info = {"fgssl_version": __version__, "fingerprint": fingerprint}
    if old.get("fingerprint") == fingerprint and "card_sha256" in old:
        info["card_sha256"] = old["card_sha256"]
    return atomic_write_json(Path(output_dir) / RUN_INFO, info, default=str)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readme_is_ours(output_dir) -> bool:
    """True when the folder has no README.md, or the one there is the card an fgssl run wrote (unchanged)."""
    readme = Path(output_dir) / "README.md"
    if not readme.is_file():
        return True
    info = read_run_info(output_dir) or {}
    return info.get("card_sha256") == _sha256(readme)


def record_card(output_dir, card_path) -> None:
    """Remember the card we wrote, so that the next run may replace it (and never a README the user wrote)."""
    info = read_run_info(output_dir)
    if info is not None:
        info["card_sha256"] = _sha256(Path(card_path))
        atomic_write_json(Path(output_dir) / RUN_INFO, info, default=str)


# --------------------------------------------------------------------------------------------- checkpoints

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
        with _suppress():
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


# --------------------------------------------------------------------------------------------- finished runs


def mark_finished(output_dir, training_args, global_step: int, files) -> None:
    """Record in fgssl_run.json that the run finished: its step count, the step / epoch target it was asked for,
    and its final files (a rerun with the same target does nothing while they are all there)."""
    info = read_run_info(output_dir)
    if info is None:
        return
    info["finished"] = {"global_step": int(global_step), "max_steps": int(training_args.max_steps),
                        "num_train_epochs": float(training_args.num_train_epochs),
                        "files": sorted({Path(f).name for f in files})}
    atomic_write_json(Path(output_dir) / RUN_INFO, info, default=str)


def finished_message(output_dir, training_args, prog: str = "fgssl") -> str | None:
    """The one line to print when `output_dir` holds this run finished (final files present, the asked step count
    reached), else None (then the run resumes or starts)."""
    output_dir = Path(output_dir)
    done = (read_run_info(output_dir) or {}).get("finished")
    if not done or not all((output_dir / name).exists() for name in done.get("files", ())):
        return None
    steps = done["global_step"]
    if training_args.max_steps > 0:
        reached = steps >= training_args.max_steps
    else:
        reached = done.get("max_steps", -1) <= 0 and done["num_train_epochs"] >= training_args.num_train_epochs
    if not reached:
        return None
    return (f"{prog}: {output_dir} holds this run, finished at step {steps}: nothing to do (raise --max_steps or "
            "--num_train_epochs to train it further, or add --overwrite_output_dir to train it again).")


# --------------------------------------------------------------------------------------------- the lock


def process_start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    now = process_start_time(pid)
    return started is None or now is None or now == started  # another process with a recycled pid: not alive


class RunLock:
    """`output_dir`/.fgssl.lock while a run writes there: a second run into the folder is refused (UsageError)
    while the first one's process is alive; the lock of a dead process (kill -9, a crash) is taken over."""

    def __init__(self, output_dir):
        self.path = Path(output_dir) / LOCK
        self.held = False
        self.created: list[Path] = []  # folders this lock created (removed again when left empty)

    def acquire(self) -> "RunLock":
        import atexit

        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--output_dir {folder} is a file; pass a folder (a new one, or this run's).")
        self.created = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--output_dir {folder} cannot be created ({err.strerror}); pass a folder you can "
                             "write to.") from err
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--output_dir {folder} is not writable; pass a folder you can write to.")
        me = {"pid": os.getpid(), "started": process_start_time(os.getpid())}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text())
                    pid = int(other["pid"])
                except (OSError, ValueError, KeyError, TypeError):
                    other, pid = {}, None
                if pid == os.getpid() or (pid is None and time.time() - _mtime(self.path) < 5):
                    if pid is None:  # being written by another process right now
                        time.sleep(0.2)
                        continue
                elif pid is not None and _alive(pid, other.get("started")):
                    raise UsageError(f"{folder} is in use by another run (process {pid}, lock file {LOCK}); wait "
                                     "for it to finish, or pass another --output_dir.") from None
                else:
                    logger.warning("%s: taking over the lock of a run that is no longer running (process %s).",
                                   folder, pid)
                with _suppress():
                    os.unlink(self.path)
                continue
            except OSError as err:  # read-only folder or file system
                raise UsageError(f"--output_dir {folder} is not writable ({err.strerror}); pass a folder you can "
                                 "write to.") from err
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise UsageError(f"{folder}: could not take the lock {LOCK}; is another run starting there? Retry.")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with _suppress():
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                os.unlink(self.path)
        for folder in self.created:
            try:
                folder.rmdir()  # only when nothing else was written there
            except OSError:
                break


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


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
            with _suppress():
                staging.rmdir()
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def train(self, *args, **kwargs):
        portable_tensorboard(self)
        return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        import torch

        loss = super().training_step(model, inputs, num_items_in_batch)
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

    for callback in trainer.callback_handler.callbacks:
        if type(callback) is TensorBoardCallback:
            callback.__class__ = PortableTensorBoardCallback
