"""Safe re-runs: what defines a run (its fingerprint), the check before resuming, the record of a finished run.

Each run writes `fgssl_run.json` into its output folder before training starts: the fingerprint (dataset and the
size of its file list, method, backbone, image size, batch, seed, model and objective knobs) and the hash of the
model card it wrote. Running again into the same folder:

- same fingerprint: the run resumes from its last checkpoint (or re-saves a finished run);
- different fingerprint: refused before any training, naming the differences and the two ways out (a new
  `--output_dir`, or `--overwrite_output_dir`);
- `--overwrite_output_dir`: the previous run's checkpoints and results are removed first, then a fresh run.

Nothing here writes an absolute path: a local dataset or backbone folder is recorded by its name and a hash of
its resolved location.

Its output folder is locked while a run writes there (`RunLock`, `output_dir_lock`). Files are written atomically
(training.atomic); checkpoints that are always whole and weights never non-finite are training.checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from .atomic import atomic_write_json, ignore_errors
from .checkpoints import SET_ASIDE, STAGING, last_complete_checkpoint, portable_name
from .cli import UsageError

logger = logging.getLogger("fgssl.runinfo")

RUN_INFO = "fgssl_run.json"
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
                with ignore_errors():
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


def _cache_room(data_args) -> dict:
    """{"cache_size_factor": F} for a cache with room (F != 1), else {} (the fingerprint of runs before the knob)."""
    factor = float(getattr(data_args, "cache_size_factor", 1.0) or 1.0)
    return {} if factor == 1.0 else {"cache_size_factor": factor}


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
        # A cache with room changes every view; recorded only when on, so runs from before it still resume.
        **_cache_room(data_args),
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
        **_cache_room(args),
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
                with ignore_errors():
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
        with ignore_errors():
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                os.unlink(self.path)
        for folder in self.created:
            try:
                folder.rmdir()  # only when nothing else was written there
            except OSError:
                break


@contextlib.contextmanager
def output_dir_lock(training_args):
    """`RunLock` on `training_args.output_dir`, held by the main process while the block runs (the others write
    nothing there)."""
    lock = RunLock(training_args.output_dir).acquire() if training_args.process_index == 0 else None
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
