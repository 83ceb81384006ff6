"""Optional training callbacks (the per-optimiser-step momentum/queue callback lives beside the trainer)."""

from __future__ import annotations

import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class KNNMonitorCallback(TrainerCallback):
    """Online kNN monitor: every `every_steps` optimiser steps, weighted-kNN top-1 of the current encoder with a
    labelled bank (a slice of the train split) and queries (a slice of the eval split), logged as `monitor_knn_top1`
    through `Trainer.log`: it reaches every `report_to` integration (TensorBoard, W&B, ...), `log_history` and
    training_curves.png like the loss terms.

    For watching a run only: the reported numbers come from the final evaluation, never from this monitor.
    """

    def __init__(self, trainer, bank, queries, every_steps: int, image_size: int, batch_size: int = 128):
        self.trainer = trainer
        self.bank, self.queries = bank, queries
        self.every_steps = every_steps
        self.image_size = image_size
        self.batch_size = batch_size

    def measure(self) -> float:
        from .evaluation import embed_dataset, knn_top1

        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        encoder = model.get_encoder_model()
        device = self.trainer.args.device
        was_training = encoder.training
        try:
            # Normalised as the training views are (the starting checkpoint's statistics, or ImageNet's).
            norm = {"image_mean": getattr(self.trainer, "image_mean", None),
                    "image_std": getattr(self.trainer, "image_std", None)}
            bank_x, bank_y = embed_dataset(encoder, self.bank, self.batch_size, device, self.image_size,
                                           desc="kNN monitor bank", **norm)
            query_x, query_y = embed_dataset(encoder, self.queries, self.batch_size, device, self.image_size,
                                             desc="kNN monitor queries", **norm)
        finally:
            encoder.train(was_training)
        return knn_top1(bank_x, bank_y, query_x, query_y)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_steps <= 0 or state.global_step % self.every_steps or not state.is_world_process_zero:
            return
        accuracy = self.measure()
        logger.info("step %d: online kNN top-1 %.4f", state.global_step, accuracy)
        self.trainer.log({"monitor_knn_top1": round(float(accuracy), 5)})
