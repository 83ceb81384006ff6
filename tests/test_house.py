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
