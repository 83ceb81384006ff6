"""Evaluation metrics kept in the repository as `evaluate` modules, loaded by path (offline).

Each metric is a folder `training/metrics/<name>/<name>.py`; `evaluate.load(<folder>)` imports it
without touching the network.
"""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metric modules in this folder."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def metric_path(name: str) -> str:
    """Folder of the metric module `name` (a string, as `evaluate.load` expects)."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"Unknown metric {name!r}: choose one of {available_metrics()} (folders in {METRICS_DIR}).")
    return str(path)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """The repository's `evaluate` module `name` (e.g. "retrieval", "accuracy"), loaded by path.

    Inputs are kept in memory by default (no Arrow cache files or file locks on disk); kwargs go to evaluate.load.
    """
    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(name), **kwargs)
