"""What the five console scripts (fgssl-pretrain, fgssl-eval, fgssl-finetune, fgssl-push, fgssl-prepare) share.

- Exit status: 0 on success, 2 on a usage error (bad flag, bad value, bad path, bad config file), 1 on any other
  failure, 130 when interrupted.
- A usage error is ONE line on stderr, `<prog>: error: <what is wrong and how to fix it>`, with no traceback.
  `--traceback` on the command line or `FGSSL_DEBUG=1` in the environment prints the traceback as well (`--debug`
  is TrainingArguments' own flag, `--debug underflow_overflow`, and is left to it).
- Each module keeps `main(argv) -> results` for library and test use; `console_entry(main, prog)` turns it into the
  console-script entry (`cli(argv) -> int`), which is what pyproject.toml's [project.scripts] points at. The entry
  first keeps freed host memory for reuse (`training/host_memory.py`: glibc's trim and mmap thresholds raised).
- `ArgumentParser` is transformers' `HfArgumentParser` with `allow_abbrev=False` (a prefix of a flag is not taken
  for the flag), a `parse` that refuses unknown flags naming the closest valid one, and argparse's own errors
  raised as `UsageError` instead of printing the usage block.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
import traceback
from collections.abc import Callable, Iterable

from transformers import HfArgumentParser

from .host_memory import keep_freed_memory

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: The flag that asks for tracebacks: not `--debug`, which TrainingArguments owns (`--debug underflow_overflow`).
DEBUG_FLAG = "--traceback"
DEBUG_ENV = "FGSSL_DEBUG"
EPILOG = (
    "Exit status: 0 on success, 2 on a usage error (one line on stderr), 1 on any other failure. Add --traceback "
    "or set FGSSL_DEBUG=1 to see the full traceback of an error."
)


class UsageError(ValueError):
    """A mistake in what the user asked for (flag, value, path, config file); the message names the option and
    the fix. Console scripts print it as one line and exit with status 2."""


class OneLineError(RuntimeError):
    """A failure whose message says it all (a non-finite loss, a failed final push): console scripts print it as
    one line and exit with status 1."""


def refuse_non_finite(*args_objects) -> None:
    """UsageError for the first float argument (of any of the argument dataclasses) that is nan or infinite."""
    import math
    from dataclasses import fields, is_dataclass

    for args in args_objects:
        for f in fields(args) if is_dataclass(args) else ():
            values = getattr(args, f.name, None)
            for value in values if isinstance(values, (list, tuple)) else (values,):
                if isinstance(value, float) and not math.isfinite(value):
                    raise UsageError(f"--{f.name} must be a finite number, got {value} (leave it out for the "
                                     "default).")


#: The largest --image_size accepted: fine-grained recipes use 224-518 px; 100000 px would allocate hundreds of GiB.
MAX_IMAGE_SIZE = 2048


def refuse_bad_inputs(image_size=None, **names) -> None:
    """UsageError, before any data work, for what every command refuses alike: a name flag given empty (an unset
    shell variable: `--dataset_name ""`), a local path that does not exist (it would be tried as a Hub id, with
    retries, and blamed on the connection), an --image_size no batch could hold. `names` maps flag names (without
    dashes) to values."""
    from .data import _looks_like_local_path

    for flag, value in names.items():
        if value is None:
            continue
        if not str(value).strip():
            raise UsageError(f"--{flag} is empty (an unset shell variable?); give a folder or a Hub id, or leave the "
                             "flag out for the default.")
        if _looks_like_local_path(str(value)) and not os.path.exists(os.path.expanduser(str(value))):
            raise UsageError(f"--{flag} {value}: no such file or folder; check the path (or pass a Hub id).")
    if image_size is not None and image_size > MAX_IMAGE_SIZE:
        gib = 3 * image_size * image_size / 2**30
        raise UsageError(f"--image_size {image_size} is larger than {MAX_IMAGE_SIZE} (one image alone would take "
                         f"{gib:.1f} GiB as uint8); fine-grained recipes use 224 to 518.")
    for flag in ("backbone", "model_name_or_path"):  # last: a Hub id while offline, with no copy in the cache
        refuse_uncached_hub_model(flag, names.get(flag))


def tensorboard_available() -> bool:
    """True when transformers' TensorBoard integration can write (tensorboard or tensorboardX installed)."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def refuse_missing_reporters(report_to) -> None:
    """UsageError, at parse time (before any data work), for `--report_to tensorboard` without TensorBoard."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "tensorboard" in [str(getattr(n, "value", n)) for n in names] and not tensorboard_available():
        raise UsageError('--report_to tensorboard needs TensorBoard, which is not installed: pip install '
                         '"fgssl[tensorboard]" (or pass --report_to none).')


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: Hub ids only resolve from the local cache."""
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f in ("1", "true", "yes", "on") for f in flags)


OFFLINE_FIX = ("unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) on a machine with network access to download it "
               "once, or pass a local folder written by save_pretrained")


def refuse_uncached_hub_model(flag: str, value: str | None) -> None:
    """UsageError for a model flag naming a Hub id while offline (HF_HUB_OFFLINE) with no copy in the cache: it
    could only fail later, deep inside transformers."""
    from .data import _looks_like_local_path

    if not value or _looks_like_local_path(str(value)) or os.path.exists(os.path.expanduser(str(value))):
        return
    if flag == "backbone":
        from .backbones import backbone_presets

        if value in backbone_presets():
            return
    if not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        cached = try_to_load_from_cache(str(value), "config.json")
    except (HFValidationError, ValueError):
        return  # not a repository id at all: the command reports it
    if not isinstance(cached, str):
        raise UsageError(f"--{flag} {value} is a Hub id, and HF_HUB_OFFLINE is set with no copy of it in the cache: "
                         f"{OFFLINE_FIX}.")


def refuse_no_training(training_args) -> None:
    """UsageError for a run that would train no step (--max_steps 0, or 0 epochs): its model would be saved and
    described as trained."""
    if training_args.max_steps == 0 or (training_args.max_steps < 0 and not training_args.num_train_epochs > 0):
        raise UsageError(f"--max_steps {training_args.max_steps} / --num_train_epochs {training_args.num_train_epochs}"
                         " trains no step; give --max_steps >= 1 or --num_train_epochs > 0.")


def refuse_too_small_image(config, image_size: int, source: str) -> None:
    """UsageError when `image_size` is below the total stride of the backbone of `config` (an fgssl config or a
    plain backbone's): its final feature map would be empty."""
    from .backbones import final_feature_map_side

    backbone_config = getattr(config, "backbone_config", None) or config
    try:
        side = final_feature_map_side(backbone_config, image_size)
    except Exception:  # noqa: BLE001  (an unknown backbone type: the model reports it)
        return
    if side is not None and side < 1:
        smallest = next(s for s in range(1, 4097) if final_feature_map_side(backbone_config, s) >= 1)
        raise UsageError(f"--image_size {image_size} is smaller than the total stride of {source} "
                         f"({backbone_config.model_type}); use --image_size {smallest} or more.")


def refuse_below_one(args, names, hint: str) -> None:
    """UsageError for the first of the optional counts `names` of `args` that is given and < 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1 when given, got {value} ({hint}).")


@contextlib.contextmanager
def usage_errors(*types: type[BaseException]):
    """Re-raise the given exception types as `UsageError` (the original is kept as `__cause__`).

    For the set-up phase of a command (loading the data, building the model), where a ValueError or a missing
    file is a wrong argument, not a bug.
    """
    try:
        yield
    except UsageError:
        raise
    except types as err:
        raise UsageError(str(err)) from err


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `name` (difflib), or None when nothing is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


class _UsageErrorsMixin:
    """argparse errors as `UsageError` (no usage block), unknown flags named with the closest valid one."""

    def error(self, message: str):  # argparse calls this for a bad value, a missing argument...; it must not return
        raise UsageError(f"{message} (see {self.prog} --help)")

    def long_options(self) -> list[str]:
        return sorted(o for o in self._option_string_actions if o.startswith("--"))

    def field_names(self) -> set[str]:
        """Every argument name (the dataclass field names), as a config file spells them."""
        return {a.dest for a in self._actions if a.dest != "help"}

    def check_flags(self, argv: list[str]) -> None:
        """Refuse the first unknown flag (before argparse would complain about something else, such as a missing
        required argument), naming the closest valid one."""
        for arg in argv:
            if arg == "--":
                return
            if arg.startswith("--") or (arg.startswith("-") and len(arg) > 1 and arg[1].isalpha()):
                if arg.split("=", 1)[0] not in self._option_string_actions:
                    raise UsageError(self.unknown_argument_message([arg]))

    def unknown_argument_message(self, remaining: list[str]) -> str:
        flags = [a for a in remaining if a.startswith("-")]
        if not flags:
            return f"unexpected argument {remaining[0]!r} (see {self.prog} --help)"
        name = flags[0].split("=", 1)[0]
        suggestion = closest(name, self.long_options())
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        return f"unrecognized option {name}{hint} (see {self.prog} --help; flags must be spelled in full)"


class SimpleArgumentParser(_UsageErrorsMixin, argparse.ArgumentParser):
    """argparse.ArgumentParser with allow_abbrev=False whose errors are `UsageError`s (for fgssl-push)."""

    def __init__(self, prog: str, **kwargs):
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(prog=prog, allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        self.check_flags(args)
        namespace, remaining = self.parse_known_args(args, namespace)
        if remaining:
            raise UsageError(self.unknown_argument_message(remaining))
        return namespace


class ArgumentParser(_UsageErrorsMixin, HfArgumentParser):
    """HfArgumentParser that never guesses and never prints a usage block: errors are `UsageError`s."""

    def __init__(self, dataclass_types, prog: str, description: str | None = None, **kwargs):
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(dataclass_types, prog=prog, description=description, allow_abbrev=False, **kwargs)

    def parse(self, argv: list[str]) -> tuple:
        """The dataclasses for `argv`; an unknown flag or an invalid value raises `UsageError`."""
        argv = list(argv)
        self.check_flags(argv)
        _, remaining = self.parse_known_args(argv)  # unknown arguments before any dataclass runs its checks
        if remaining:
            raise UsageError(self.unknown_argument_message(remaining))
        with usage_errors(ValueError, TypeError):
            outputs = self.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
        return outputs


def debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """(argv without our `--traceback`, whether tracebacks were asked for by the flag or FGSSL_DEBUG). `--debug` is
    never ours: it is TrainingArguments' (fgssl-pretrain, fgssl-finetune)."""
    argv = list(argv)
    flag = False
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == DEBUG_FLAG:
            del argv[i]
            flag = True
            break
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return argv, flag or env


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def console_entry(main: Callable[[list[str]], object], prog: str,
                  one_line_failures: tuple[type[BaseException], ...] = ()) -> Callable[..., int]:
    """The console-script entry of `main`: runs `main(argv)` and returns the exit status (never the results).

    Usage errors (`UsageError`, a missing file) print one line and give 2; `one_line_failures` (failures whose
    message says it all, e.g. an unreachable Hub) print one line and give 1; anything else prints its traceback
    and gives 1.
    """

    def cli(argv: list[str] | None = None) -> int:
        argv, debug = debug_requested(sys.argv[1:] if argv is None else argv)
        keep_freed_memory()  # the process's own allocator setting, before any tensor exists
        try:
            main(argv)
        except SystemExit as exit_:  # argparse's --help (0), or a command that chose its own status
            code = exit_.code
            if code is None or isinstance(code, int):
                return code or EXIT_OK
            print(f"{prog}: error: {code}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (UsageError, FileNotFoundError, OneLineError, *one_line_failures) as err:
            if debug:
                traceback.print_exc()
            print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE if isinstance(err, (UsageError, FileNotFoundError)) else EXIT_FAILURE
        except Exception:
            traceback.print_exc()
            print(f"{prog}: failed (the traceback above says where; please report it if it is a bug)",
                  file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK

    cli.__name__ = cli.__qualname__ = "cli"
    cli.__doc__ = f"Console-script entry of {prog}: exit status 0 on success, 2 on a usage error, 1 on a failure."
    return cli


def refuse_unsynchronised_processes(training_args) -> None:
    """Refuse a launch that started several processes the Trainer does not see as one job.

    `accelerate launch --multi_gpu --num_processes N` (or torchrun) on a machine without GPUs sets WORLD_SIZE=N, but
    the Trainer, lacking `--use_cpu true`, then runs N unsynchronised copies of the whole run into one folder.
    """
    import os

    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and training_args.world_size == 1:
        raise UsageError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but the Trainer sees one: on a machine "
            "without GPUs each would train the whole run alone. Add --use_cpu true to train with the "
            f"{launched} CPU processes together (accelerate launch --multi_gpu --num_processes {launched} -m "
            "fgssl.training.pretrain ... --use_cpu true), or launch one process."
        )
