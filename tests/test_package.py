"""One import namespace: the built wheel installs `fgssl` (fgssl.modeling, fgssl.training, fgssl.hub_cards) and
nothing else at the top level, and the installed package runs its CLI from outside the repository."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from conftest import REPO_ROOT

#: What the build reads from the repository (copied, so that the build leaves no build/ or egg-info behind).
SOURCES = ("pyproject.toml", "README.md", "fgssl", "modeling", "training", "hub_cards")


def test_wheel_installs_one_namespace_and_runs_outside_the_repository(tmp_path):
    source = tmp_path / "src"
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("fgssl-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
    strays = [n for n in names if not n.startswith(("fgssl/", f"{dist_info}/"))]
    assert strays == [], strays  # no top-level modeling/, training/, hub_cards/
    for needed in ("fgssl/__init__.py", "fgssl/modeling/modeling_fgssl.py", "fgssl/training/pretrain.py",
                   "fgssl/training/cli.py", "fgssl/training/metrics/retrieval/retrieval.py",
                   "fgssl/hub_cards/model_card_template.md"):
        assert needed in names, needed

    target = tmp_path / "site"
    install = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    # The installed copy only: this venv's site-packages (torch, transformers...) without running its .pth files
    # (-S), so the editable install of this checkout cannot answer; the working directory is outside the repo.
    site_packages = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sorted(site_packages)]),
           "HF_HUB_OFFLINE": "1"}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    check = (
        "import importlib.util, fgssl, fgssl.training.cli\n"
        f"assert fgssl.__file__.startswith({str(target)!r}), fgssl.__file__\n"
        "assert fgssl.FGSSLModel.__module__.startswith('fgssl.modeling')\n"
        "for name in ('modeling', 'training', 'hub_cards'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
    )
    imported = subprocess.run([sys.executable, "-S", "-c", check], cwd=outside, env=env, capture_output=True,
                              text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    help_run = subprocess.run([sys.executable, "-S", "-m", "fgssl.training.pretrain", "--help"], cwd=outside,
                              env=env, capture_output=True, text=True, timeout=300)
    assert help_run.returncode == 0, help_run.stderr[-3000:]
    assert "usage: fgssl-pretrain" in help_run.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_sets_up_once_then_runs_the_two_commands(tmp_path):
    venv = tmp_path / "venv"
    # Not the settings of a make this test runs under (.ci/run's `make test VENV=.venv-ci EDITABLE=` passes them
    # down through MAKEFLAGS), nor the caller's own TORCH_INDEX and friends.
    unset = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "VENV", "TORCH_SPEC", "TORCH_INDEX", "EDITABLE", "ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in unset}

    def dry_run(target, *settings):
        result = subprocess.run(["make", "-n", "-C", str(REPO_ROOT), target, f"VENV={venv}", *settings],
                                capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        return [line.strip() for line in result.stdout.splitlines() if not line.startswith("make")]

    demo = dry_run("demo")
    assert f"-m venv {venv}" in demo[0]
    assert any('install -q "torch==2.13.0"' in line and "--index-url" not in line for line in demo)
    assert any('install -q -e ".[dev]"' in line for line in demo)
    assert demo[-1] == f"{venv}/bin/fgssl-pretrain"
    test = dry_run("test", "TORCH_INDEX=https://download.pytorch.org/whl/cu128")
    assert any("--index-url https://download.pytorch.org/whl/cu128" in line for line in test)
    assert test[-1] == f"{venv}/bin/python -m pytest -q tests"
    # Set up once: afterwards only the command runs.
    (venv / "bin").mkdir(parents=True)
    (venv / ".fgssl-installed").touch()
    assert dry_run("demo") == [f"{venv}/bin/fgssl-pretrain"]
    # CI goes through the same target, with the torch pin; the README starts with the two commands.
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    assert "TORCH_SPEC=torch==2.13.0" in (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    assert readme[2] == "```bash" and readme[5] == "```"
    assert readme[3].startswith("make demo") and readme[4].startswith("make test")
