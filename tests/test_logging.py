"""What a user watches during a run: the kNN monitor and the pairs sheets in TensorBoard (through Trainer.log and
the TensorBoard callback), sheets spread over the run, and curves that mark the synthesized-pair schedule."""

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from transformers import TrainingArguments
from transformers.integrations import TensorBoardCallback

from conftest import tiny_fgssl_config
from fgssl.modeling import FGSSLForPreTraining
from fgssl.training.callbacks import KNNMonitorCallback
from fgssl.training.data import collate_uint8
from fgssl.training.pictures import plot_training_curves, smooth
from fgssl.training.backbones import method_config_kwargs
from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments


class FakeSummaryWriter:
    """Records what TensorBoard would be sent (tensorboard itself is an optional dependency)."""

    def __init__(self):
        self.scalars, self.images = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_image(self, tag, image, step, dataformats="CHW"):
        self.images.append((tag, np.asarray(image).shape, step, dataformats))

    def add_text(self, *args, **kwargs):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def labelled_images(n=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return Dataset.from_dict({"pixel_values": images.numpy(), "labels": [i % 2 for i in range(n)]}).with_format("torch")


def test_tensorboard_gets_the_knn_monitor_and_the_pairs_sheets(tmp_path):
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", **method_config_kwargs("fgssl")))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=6, learning_rate=1e-3,
        report_to="none", save_strategy="no", use_cpu=True, remove_unused_columns=False, disable_tqdm=True,
        logging_steps=1, dataloader_pin_memory=False,
    )
    objective = ObjectiveArguments(method="fgssl", synth_warmup_steps=1, synth_ramp_steps=1)  # picture_steps 0
    data = labelled_images()
    trainer = FGSSLTrainer(model=model, args=args, objective_args=objective, image_size=32, train_dataset=data,
                           data_collator=collate_uint8)
    # As with report_to=tensorboard, with a recording writer in place of tensorboard's.
    tensorboard = TensorBoardCallback.__new__(TensorBoardCallback)
    writer = FakeSummaryWriter()
    tensorboard.tb_writer, tensorboard._SummaryWriter, tensorboard.logging_dir = writer, None, None
    trainer.add_callback(tensorboard)
    trainer.add_callback(KNNMonitorCallback(trainer, data.select(range(8)), data.select(range(8, 16)), 3, 32))
    trainer.train()

    monitor = [(tag, step) for tag, _, step in writer.scalars if tag.endswith("monitor_knn_top1")]
    assert monitor == [("train/monitor_knn_top1", 3), ("train/monitor_knn_top1", 6)]
    assert [row["step"] for row in trainer.state.log_history if "monitor_knn_top1" in row] == [3, 6]
    # picture_steps 0: a sheet every ceil(6 / 4) = 2 steps after the first, and the last step.
    assert [(tag, step) for tag, _, step, _ in writer.images] == [("pairs", 2), ("pairs", 4), ("pairs", 5)]
    assert all(shape[-1] == 3 and fmt == "HWC" for _, shape, _, fmt in writer.images)
    sheets = sorted(p.name for p in (tmp_path / "out" / "pictures").glob("*.png"))
    assert sheets == ["pairs_step000002.png", "pairs_step000004.png", "pairs_step000005.png"]


def test_auto_picture_steps_give_about_four_sheets(tmp_path):
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", **method_config_kwargs("plain")))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = FGSSLTrainer(model=model, args=args, objective_args=ObjectiveArguments(method="plain"), image_size=32)
    trainer.state.max_steps = 270
    assert trainer.picture_every() == 68  # sheets at 68, 136, 204 and the last step
    trainer.objective_args.picture_steps = 50
    assert trainer.picture_every() == 50
    assert trainer.synth_schedule() is None


def shaded_pixels(path):
    """Pixels of the warm-up shading colour (matplotlib grey 0.85 = 217)."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - 217).max(axis=-1) <= 1).sum())


def test_curves_mark_the_synthesized_pair_schedule_and_smooth_noisy_terms(tmp_path):
    rng = np.random.default_rng(0)
    history = [{"step": s, "loss": 3.0 - s / 100 + rng.normal(0, 0.5), "loss_synth": 1.0 + rng.normal(0, 0.5)}
               for s in range(1, 101)]
    history += [{"step": s, "monitor_knn_top1": 0.1 + s / 1000} for s in (25, 50, 75, 100)]
    marked = plot_training_curves(history, tmp_path / "marked.png", synth_schedule=(30, 20))
    plain = plot_training_curves(history, tmp_path / "plain.png")
    assert shaded_pixels(marked) > 10 * shaded_pixels(plain) + 1000  # a few grey pixels come from antialiasing
    noisy = [row["loss_synth"] for row in history if "loss_synth" in row]
    assert np.std(smooth(noisy)[20:]) < 0.5 * np.std(noisy)
    assert smooth([2.0] * 10) == [2.0] * 10
