"""The house rules a test can check (issue 21): benchmarks use the product's public pieces only."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PRODUCT = [*sorted((REPO_ROOT / "modeling").glob("*.py")), *sorted((REPO_ROOT / "training").rglob("*.py"))]


def _private_names_of_the_product() -> set[str]:
    """Every `_name` (single leading underscore, not dunder) the product defines: functions, classes, methods,
    module-level and class-level assignments."""
    names = set()
    for path in PRODUCT:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_benchmarks_use_no_private_name_of_the_product():
    private = _private_names_of_the_product()
    assert "_fit_sklearn_logistic" in private  # the scan sees the product's private names
    uses = []
    # robustness.py is a fault-injection probe, as the tests are: it patches a failing writer and an unreachable Hub
    # into the product's internals on purpose.
    for path in sorted(p for p in (REPO_ROOT / "benchmarks").glob("*.py") if p.name != "robustness.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fgssl"):
                uses += [f"{path.name}: from {node.module} import {a.name}" for a in node.names if a.name in private]
            elif (isinstance(node, ast.Attribute) and node.attr in private
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "args"))):
                uses.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert uses == [], "benchmarks reach into the product's private names:\n" + "\n".join(uses)


#: The loss functions of one training step (training/objective.py): a benchmark that calls one of them re-writes a
#: step of `FGSSLTrainer.compute_loss`; the public pieces (training/bases.py, training/methods.py) compose them.
STEP_FUNCTIONS = {"nuisance_perturbation", "info_nce", "simsiam_loss", "simsiam_scoring_loss", "negative_cosine",
                  "lcr_loss"}


def _benchmark_trees():
    # robustness.py is a fault-injection probe, as the tests are (see above): exempt.
    for path in sorted(p for p in (REPO_ROOT / "benchmarks").glob("*.py") if p.name != "robustness.py"):
        yield path.name, ast.parse(path.read_text())


def _private_attributes(name: str, tree: ast.AST) -> list[str]:
    """Every `x._name` (not dunder) but on `self`, `cls` and `args` (a benchmark's own hidden options)."""
    return [f"{name}:{node.lineno}: .{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "args"))]


def _step_function_uses(name: str, tree: ast.AST) -> list[str]:
    """Every import from fgssl and every call (`f(...)`, `obj.f(...)`) of a STEP_FUNCTIONS name."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fgssl"):
            uses += [f"{name}:{node.lineno}: imports {a.name}" for a in node.names if a.name in STEP_FUNCTIONS]
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called in STEP_FUNCTIONS:
                uses.append(f"{name}:{node.lineno}: {called}(...)")
    return uses


def test_benchmarks_reach_no_private_attribute():
    """No `x._name` on a trainer, a model or anything else of the product or its libraries (transformers'
    `Trainer._clip_grad_norm` included)."""
    uses = [use for name, tree in _benchmark_trees() for use in _private_attributes(name, tree)]
    assert uses == [], "benchmarks reach into private attributes:\n" + "\n".join(uses)


def test_benchmarks_call_no_step_function_of_compute_loss():
    uses = [use for name, tree in _benchmark_trees() for use in _step_function_uses(name, tree)]
    assert uses == [], ("benchmarks re-write steps of compute_loss; call the public pieces (training.bases, "
                        "training.methods) instead:\n" + "\n".join(uses))


def test_the_scans_catch_a_benchmark_written_the_old_way():
    old_way = ast.parse("from fgssl.training import objective as obj\n"
                        "from fgssl.training.objective import lcr_loss\n"
                        "loss = obj.info_nce(out.query, core.momentum_encode(v2), None, 0.2)\n"
                        "trainer._clip_grad_norm(model)\n"
                        "args._memory_child\n")
    assert _step_function_uses("old.py", old_way) == ["old.py:2: imports lcr_loss", "old.py:3: info_nce(...)"]
    assert _private_attributes("old.py", old_way) == ["old.py:4: ._clip_grad_norm"]
