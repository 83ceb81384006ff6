"""What is committed under benchmarks/results/: numbers and plots, never pictures of shared data (dataset images).

../shared/data/cub100/SOURCE.md: its images never go into the project. Sheets of views of dataset images
(benchmarks/synth_pairs.py's pairs sheets) are written into the run folders under outputs/ instead.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT

RESULTS = "benchmarks/results"
#: Basenames of pictures that show dataset images (views, reconstructions of them).
DATASET_PICTURES = ("synth_pairs_*.png", "synth_pairs.png", "pairs_step*.png", "retrieval.png")


def tracked(under: str) -> list[str]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--", under], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_no_picture_of_dataset_images_is_tracked_under_results():
    pictures = [path for path in tracked(RESULTS) if any(Path(path).match(p) for p in DATASET_PICTURES)]
    assert pictures == [], f"pictures of dataset images tracked under {RESULTS}/ (git rm them): {pictures}"


def test_no_picture_of_dataset_images_lies_under_results():
    pictures = [p for pattern in DATASET_PICTURES for p in (REPO_ROOT / RESULTS).rglob(pattern)]
    assert pictures == []


def test_synth_pairs_writes_its_sheet_into_the_run_folder(tmp_path):
    from benchmarks import synth_pairs

    run = tmp_path / "outputs" / "bench" / "fgssl-seed0"
    assert synth_pairs.sheet_path(run, "synth_pairs_test") == run / "synth_pairs_test.png"
    with pytest.raises(SystemExit, match="benchmarks/results"):
        synth_pairs.sheet_path(REPO_ROOT / RESULTS / "cub100_s16" / "fgssl-seed0", "synth_pairs")
