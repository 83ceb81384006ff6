"""Files we write travel (to the Hub, into the repository, to a colleague): no absolute machine path, no token.

    portable_path(path, start)     an absolute path as relative to `start` or the working directory, else its name
    portable(value, start)         the same for every absolute-path string inside a dict / list (results, configs)
    portable_command(tokens, ...)  a recorded command line the same way, token by token ("python -m ...")
    portable_training_args(args)   a copy of TrainingArguments without tokens and with portable paths
    SafeSaveMixin                  a Trainer mixin: every training_args.bin it saves is that copy
"""

from __future__ import annotations

import copy
import os
from dataclasses import fields
from pathlib import Path


def _is_absolute_path(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and Path(value).is_absolute()


def portable_path(path, start=None, parents: int = 0) -> str:
    """`path` as written into a shared file.

    A relative path is kept as it is. An absolute one becomes relative to `start` (e.g. the output folder) when it
    is inside it (or inside one of its first `parents` parent folders: "../shared/data"), else relative to the
    working directory when it is inside that, else just its last component (the folder or file name: it names
    the thing without the machine's layout).
    """
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    resolved = path.resolve()
    bases = []
    if start is not None:
        start = Path(start).resolve()
        bases += [(start, "")] + [(start.parents[i], "../" * (i + 1)) for i in range(min(parents, len(start.parents)))]
    cwd = Path.cwd().resolve()
    if cwd.parent != cwd:  # started from "/": every path is "inside" it, and "tmp/..." is no portable path
        bases.append((cwd, ""))
    for base, up in bases:
        if resolved == base or resolved.is_relative_to(base):
            relative = resolved.relative_to(base).as_posix()
            return up.rstrip("/") or "." if relative == "." else up + relative
    return path.name or path.as_posix()


def portable(value, start=None, parents: int = 0):
    """A copy of `value` (dicts, lists, tuples, scalars) with every absolute path string made portable."""
    if isinstance(value, dict):
        return {key: portable(item, start, parents) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(item, start, parents) for item in value)
    if _is_absolute_path(value):
        return portable_path(value, start, parents)
    return value


def portable_command(tokens, start=None, parents: int = 0) -> str:
    """A command line (list of tokens) to record: its interpreter as "python", every absolute path portable."""
    import shlex

    tokens = [str(token) for token in tokens]
    if tokens and Path(tokens[0]).name.startswith("python"):
        tokens[0] = "python"
    return shlex.join(portable(tokens, start, parents))


def portable_training_args(args):
    """A shallow copy of `args` (TrainingArguments) fit to be saved: every `*_token` field None, paths portable."""
    clean = copy.copy(args)
    for field in fields(args):
        value = getattr(args, field.name, None)
        if field.name.endswith("_token") and isinstance(value, str):
            setattr(clean, field.name, None)
        elif _is_absolute_path(value):
            setattr(clean, field.name, portable_path(value))
    return clean


class SafeSaveMixin:
    """For `Trainer` subclasses: the `training_args.bin` written with the model (final folder and every checkpoint)
    holds no Hub token and no absolute path. Trainer pickles `self.args` there; it sees the clean copy while it saves.
    """

    def _save(self, output_dir=None, state_dict=None):
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        args, self.args = self.args, portable_training_args(self.args)
        try:
            return super()._save(output_dir, state_dict)
        finally:
            self.args = args


__all__ = ["portable_path", "portable", "portable_command", "portable_training_args", "SafeSaveMixin"]
