"""Shared fixtures: tiny random backbones (seconds on CPU) and the path to the shared real data."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Tests also run from a plain checkout (no `pip install`): make the top-level packages importable.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CUB100 = REPO_ROOT.parent / "shared" / "data" / "cub100"


def tiny_vit_config(image_size=32):
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=image_size, patch_size=8,
    )


def tiny_convnext_config():
    from transformers import ConvNextConfig

    return ConvNextConfig(hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], num_stages=4)


def tiny_fgssl_config(backbone="vit", **kwargs):
    from fgssl.modeling import FGSSLConfig

    backbone_config = tiny_vit_config() if backbone == "vit" else tiny_convnext_config()
    defaults = dict(
        projector_hidden_size=64, projector_dim=16, queue_size=32,
        decoder_base_size=4, decoder_block_out_channels=[32, 16, 16, 8], decoder_norm_num_groups=4,
    )
    defaults.update(kwargs)
    return FGSSLConfig(backbone_config=backbone_config, **defaults)


@pytest.fixture(params=["vit", "convnext"])
def backbone(request):
    return request.param


@pytest.fixture
def cub100():
    if not CUB100.is_dir():
        pytest.skip(f"{CUB100} is not present")
    return CUB100


def run_two_processes(worker: str, out_dir, *args, port: int, timeout: int = 300) -> list[dict]:
    """Launch tests/scripts/<worker> on 2 CPU processes (torch.distributed.run, gloo) writing <out_dir>/rank<r>.pt;
    fail with the workers' stderr if they fail; return what each rank saved, in rank order."""
    import torch

    script = REPO_ROOT / "tests" / "scripts" / worker
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(script), str(out_dir), *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(Path(out_dir) / f"rank{r}.pt") for r in (0, 1)]
