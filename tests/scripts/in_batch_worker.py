"""Run by tests/test_multiprocess.py under torch.distributed.run with 2 CPU processes (gloo).

Each rank draws its own queries and keys, gathers every rank's keys with accelerate (as
training.bases.MoCoObjective.ssl_loss does) and computes the in-batch InfoNCE against the keys of the whole global
batch; it saves its tensors and loss.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelerate import PartialState  # noqa: E402
from accelerate.utils import gather  # noqa: E402

from fgssl.training.objective import info_nce  # noqa: E402


def main(out_dir: str, batch: int):
    state = PartialState(cpu=True)
    rank = state.process_index
    generator = torch.Generator().manual_seed(100 + rank)
    q = F.normalize(torch.randn(batch, 8, generator=generator), dim=1)
    k = F.normalize(torch.randn(batch, 8, generator=generator), dim=1)
    everything = gather(k)
    loss = info_nce(q, k, None, 0.2, batch_keys=everything, batch_offset=rank * batch)
    torch.save({"q": q, "k": k, "gathered": everything, "loss": loss, "world_size": state.num_processes},
               Path(out_dir) / f"rank{rank}.pt")
    # Leave together: a rank that exits while the other is still inside gloo aborts it ("terminate called without an
    # active exception", seen in CI).
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
