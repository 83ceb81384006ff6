"""benchmarks/step_cost.py's step floor and benchmarks/peer_step.py's plain MoCo v2 loop, on tiny inputs (issue 24:
the step against its floor, a peer in the same run). The timings themselves are benchmarks, not tests."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import peer_step  # noqa: E402
import step_cost  # noqa: E402


def test_variant_names_map_to_the_plain_method():
    assert step_cost.parse_variant("moco") == ("moco", "plain", 1.0)
    assert step_cost.parse_variant("simsiam") == ("simsiam", "plain", 1.0)
    assert step_cost.parse_variant("simsiam-fgssl-0.25") == ("simsiam", "fgssl", 0.25)
    assert step_cost.canonical_variant("moco") == "moco" and step_cost.canonical_variant("simsiam") == "simsiam"
    with pytest.raises(ValueError, match="Unknown variant"):
        step_cost.parse_variant("byol")


def test_the_floor_is_timed_beside_the_steps_and_checked_against_its_target():
    settings = step_cost.BenchSettings(backbone="resnet-tiny-cpu", batch_size=4, image_size=32)
    result = step_cost.run_benchmark(settings, variants=["moco"], reps=2, warmup=1, breakdown_reps=1,
                                     measure_memory=False, count_flops=False, log=lambda *a: None)
    floor = result["floor"]
    assert floor["median_ms"] > 0 and floor["moco_over_floor"] > 0 and floor["target"] == 1.25
    assert any(t["target"].startswith("moco step / its floor") for t in result["targets"])
    assert "its floor" in step_cost.to_markdown(result)


def test_the_floor_runs_the_backbone_only_and_leaves_no_gradients():
    settings = step_cost.BenchSettings(backbone="resnet-tiny-cpu", batch_size=4, image_size=32)
    with __import__("tempfile").TemporaryDirectory() as tmp:
        trainer = step_cost.build_trainer("moco", settings, tmp)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        step_cost.floor_step(trainer, step_cost.make_batch(settings))()
        assert all(p.grad is None for p in trainer.model.parameters())
        assert all((p == before[n]).all() for n, p in trainer.model.named_parameters())  # no optimiser step


def test_the_plain_moco_loop_trains_on_the_same_views(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train",):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    args = argparse.Namespace(dataset_name=str(tmp_path), backbone="resnet-tiny-cpu", image_size=32, batch_size=4,
                              queue_size=8, learning_rate=0.03, weight_decay=1e-4, warmup=1, steps=2,
                              channels_last=False, compile=False, bf16=False, device="cpu")
    result = peer_step.plain_moco_step(args)
    assert result["step_seconds"] > 0 and np.isfinite(result["final_loss"])
    argv = peer_step.fgssl_argv(args, 3, str(tmp_path / "out"))
    assert argv[argv.index("--method") + 1] == "plain" and argv[argv.index("--max_steps") + 1] == "3"
