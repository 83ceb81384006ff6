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
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from .cli import UsageError

RUN_INFO = "fgssl_run.json"
#: Files of a finished run (besides checkpoint-* folders) that mean "this folder holds a run".
RUN_FILES = ("train_results.json", "training_config.json", "model.safetensors")
#: What `--overwrite_output_dir` removes of a previous run before the new one starts (checkpoint-* folders too).
PREVIOUS_RUN_FILES = (RUN_INFO, "train_results.json", "training_config.json", "eval_results.json",
                      "eval_results.md", "training_curves.png", "trainer_state.json", "training_args.bin")
PREVIOUS_RUN_FOLDERS = ("encoder", "decoder", "pictures")
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
