"""Run by tests/test_shuffle_bn.py under torch.distributed.run with 2 CPU processes (gloo).

Each rank encodes its own key images with `training.shuffle_bn.shuffled_keys` (a BatchNorm encoder in training mode,
the same weights on every rank) and saves its images and the keys it got back. Each rank draws its permutation from
a different seed: only rank 0's may be used (broadcast), which the test checks by recomputing the keys by hand.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelerate import PartialState  # noqa: E402

from fgssl.training.shuffle_bn import shuffled_keys  # noqa: E402


def bn_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())


def main(out_dir: str, batch: int):
    state = PartialState(cpu=True)
    rank = state.process_index
    encoder = bn_encoder().train()
    images = torch.randn(batch, 3, 6, 6, generator=torch.Generator().manual_seed(10 + rank))
    generator = torch.Generator().manual_seed(123 if rank == 0 else 999)
    keys = shuffled_keys(encoder, images, generator=generator)
    torch.save({"world_size": state.num_processes, "images": images, "keys": keys}, Path(out_dir) / f"rank{rank}.pt")
    # Leave together: a rank that exits while the other is still inside gloo aborts it ("terminate called without an
    # active exception", seen in CI).
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
