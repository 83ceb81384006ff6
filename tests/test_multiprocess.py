"""Several processes (issue 23): in-batch negatives gathered from every process, and the launch guard."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import run_two_processes
from fgssl.training.objective import info_nce


def test_in_batch_negatives_come_from_every_process(tmp_path):
    batch = 3
    ranks = run_two_processes("in_batch_worker.py", tmp_path, batch, port=29543)
    keys = torch.cat([r["k"] for r in ranks])
    for rank, got in enumerate(ranks):
        torch.testing.assert_close(got["gathered"], keys)
        # By hand: B x (world x B) logits, the positive of query i at column rank * B + i.
        logits = got["q"] @ keys.T / 0.2
        assert logits.shape == (batch, 2 * batch)
        expected = F.cross_entropy(logits, torch.arange(batch) + rank * batch)
        torch.testing.assert_close(got["loss"], expected)
        # Not the loss of this process's own keys alone.
        assert not torch.isclose(got["loss"], info_nce(got["q"], got["k"], None, 0.2))


def test_gathered_keys_must_hold_this_process_keys_at_the_offset():
    q = F.normalize(torch.randn(2, 4), dim=1)
    k = F.normalize(torch.randn(2, 4), dim=1)
    other = F.normalize(torch.randn(2, 4), dim=1)
    torch.testing.assert_close(info_nce(q, k, None, 0.2, batch_keys=torch.cat([k, other]), batch_offset=0),
                               F.cross_entropy(q @ torch.cat([k, other]).T / 0.2, torch.arange(2)))
    with pytest.raises(ValueError, match="batch_keys"):
        info_nce(q, k, None, 0.2, batch_keys=torch.cat([other, k]), batch_offset=0)


def test_processes_the_trainer_does_not_see_are_refused_in_one_line(tmp_path, monkeypatch):
    """`accelerate launch --multi_gpu --num_processes 2` without --use_cpu true on a machine without GPUs."""
    from fgssl.training.cli import UsageError
    from fgssl.training.pretrain import parse_args
    from fgssl.training.pretraining import validate_args

    monkeypatch.setenv("WORLD_SIZE", "2")
    args = parse_args(["--output_dir", str(tmp_path / "out")])
    assert args[2].world_size == 1
    with pytest.raises(UsageError, match="--use_cpu true"):
        validate_args(*args)
    monkeypatch.setenv("WORLD_SIZE", "1")
    validate_args(*parse_args(["--output_dir", str(tmp_path / "out")]))


def test_two_processes_launched_without_use_cpu_are_refused_before_any_data_work(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs and without --use_cpu true."""
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "FGSSL_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
         "--main_process_port", "29552", "-m", "fgssl.training.pretrain", "--dataset_name", str(tmp_path / "absent"),
         "--output_dir", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "but the Trainer sees one" in result.stderr and "--use_cpu true" in result.stderr
    # Each process says it in fgssl's one line (accelerate's launcher then reports the failed children itself).
    assert result.stderr.count("fgssl-pretrain: error: 2 processes were launched") == 2
    assert not (tmp_path / "out").exists()
