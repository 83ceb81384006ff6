"""Run by tests/test_trainer.py under torch.distributed.run with 2 CPU processes (gloo).

Trains a tiny fgssl model for a few steps on random uint8 images and writes, per rank, everything that must stay in
sync across ranks plus the keys this rank produced.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import Dataset  # noqa: E402
from conftest import tiny_fgssl_config  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from fgssl.modeling import FGSSLForPreTraining  # noqa: E402
from fgssl.training.data import collate_uint8  # noqa: E402
from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments  # noqa: E402


def main(out_dir: str, steps: int, batch: int, base: str = "moco"):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    data = Dataset.from_dict({"pixel_values": images.numpy(), "labels": [0] * 64}).with_format("torch")
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", queue_size=64, base=base))
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-3,
        report_to="none", save_strategy="no", use_cpu=True, ddp_backend="gloo", remove_unused_columns=False,
        disable_tqdm=True, logging_steps=1, dataloader_pin_memory=False,
    )
    objective = ObjectiveArguments(method="fgssl", synth_warmup_steps=1, synth_ramp_steps=0)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=objective, image_size=32,
                           train_dataset=data, data_collator=collate_uint8)
    # The keys this rank computed: the trainer gathers them (B x d) from every rank before they are enqueued.
    local_keys = []
    gather = trainer.accelerator.gather

    def recording_gather(tensor):
        if tensor.dim() == 2 and tensor.shape == (batch, model.config.projector_dim):
            local_keys.append(tensor.detach().clone())
        return gather(tensor)

    trainer.accelerator.gather = recording_gather
    trainer.train()
    rank = dist.get_rank()
    state = {
        "world_size": dist.get_world_size(),
        "running_var": model.variance_tracker.running_var.clone(),
        "running_mean": model.variance_tracker.running_mean.clone(),
        "online": torch.cat([p.detach().flatten() for p in model.fgssl.parameters()]),
        "heads": torch.cat([p.detach().flatten() for p in model.projector.parameters()]),
    }
    if model.has_momentum_branch:
        state.update(
            momentum=torch.cat([p.detach().flatten() for p in model.momentum_encoder.parameters()]),
            queue=model.queue.clone(), queue_ptr=int(model.queue_ptr), local_keys=torch.cat(local_keys),
        )
    else:
        state["predictor"] = torch.cat([p.detach().flatten() for p in model.predictor.parameters()])
    torch.save(state, Path(out_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
