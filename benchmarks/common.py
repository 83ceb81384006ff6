"""What the benchmark scripts share: the repository root, paths in results made relative to it, JSON files, the
machine a result was measured on, and a training command run as a logged subprocess.

    REPO                          the repository root (the scripts run their commands from there)
    repo_relative(text)           a path or command line with this machine's paths made relative to REPO
    repo_relative_paths(value)    the same for every path and "command" inside a dict / list (results)
    resolve_path(path)            an absolute path: as given if it exists from here, else relative to REPO
    write_json(path, value)       indented JSON and a final newline
    comma_list(text, cast)        "0,1, 2" -> [0, 1, 2]
    knob_argv(knobs)              {"sigma": "2.0"} -> ["--sigma", "2.0"]
    fgssl_command(name, argv)     [python, -m, fgssl.training.<name>, *argv]
    run_logged(command, log)      run it from REPO, stdout and stderr into the log; (exit code, seconds)
    machine_summary()             "cpu, N cores, load L" for a result table

A script run by path (`python benchmarks/x.py`) puts the repository on sys.path itself before importing this module.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repo_relative(text) -> str:
    """`text` (a path or a command line) with this machine's paths made relative to the repository and the
    interpreter written "python": results never record the machine's layout."""
    return str(text).replace(sys.executable, "python").replace(str(REPO) + "/", "").replace(str(REPO), ".")


def repo_relative_paths(value):
    """`value` with every absolute path relative to the repository ("configs/cub100_cpu.yaml", "outputs/bench/...",
    "../shared/data/cub100") and every recorded "command" line likewise: results are committed and must not carry
    the layout of the machine that measured them."""
    from fgssl.training.portable import portable, portable_command

    if isinstance(value, dict):
        return {key: portable_command(shlex.split(item), REPO, parents=1) if key == "command" and isinstance(item, str)
                else repo_relative_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(repo_relative_paths(item) for item in value)
    return portable(value, REPO, parents=1)


def resolve_path(path: str, base: Path = REPO) -> Path:
    """An absolute path: as given if it exists from the current folder, else relative to `base` (the repo)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return (base / candidate).resolve()


def write_json(path, value, **dumps_kwargs) -> Path:
    """`value` as JSON (indent 2 unless given) with a final newline; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(value, **{"indent": 2, **dumps_kwargs}) + "\n")
    return path


def comma_list(text: str, cast=str) -> list:
    """The comma-separated items of `text`, stripped, empty ones left out, each passed through `cast`."""
    return [cast(item.strip()) for item in text.split(",") if item.strip()]


def knob_argv(knobs: dict) -> list[str]:
    """Training flags from {name: value}: {"sigma": "2.0"} -> ["--sigma", "2.0"]."""
    return [a for name, value in knobs.items() for a in (f"--{name}", str(value))]


def fgssl_command(name: str, argv) -> list[str]:
    """The command line of an fgssl training command (`pretrain`, `finetune`, ...) with this interpreter."""
    return [sys.executable, "-m", f"fgssl.training.{name}", *argv]


def run_logged(command: list[str], log_path, mode: str = "a", echo: bool = False, env: dict | None = None
               ) -> tuple[int, float]:
    """Run `command` from the repository root with stdout and stderr into `log_path` (opened with `mode`; `echo`
    first writes the command line into it). Returns (exit code, seconds it ran)."""
    started = time.perf_counter()
    with open(log_path, mode) as log:
        if echo:
            log.write(f"\n$ {shlex.join(command)}\n")
            log.flush()
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    return code, time.perf_counter() - started


def machine_summary() -> str:
    """"<cpu>, <N> cores, load <1-minute load average>": which machine measured a result, and how busy it was."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
