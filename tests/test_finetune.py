"""Fine-tuning: LoRA targets and trainable set, training with Trainer, few-shot sampling, saving, CLI."""

import json

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from fgssl.training.finetuning import (
    apply_lora,
    build_classifier,
    few_shot_indices,
    lora_target_modules,
    make_trainer,
    save_finetuned,
    trainable_parameter_names,
)


def colour_task(n, size=32, seed=0):
    """Two classes told apart by colour (class 0 reddish, class 1 bluish), in training.data's uint8 format.

    Colour survives the crop / flip augmentation, so a tiny model can learn it in a few steps.
    """
    import datasets

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.integers(0, 120, size=(n, 3, size, size)).astype(np.uint8)
    pixels[labels == 0, 0] += 135
    pixels[labels == 1, 2] += 135
    features = datasets.Features(
        {"pixel_values": datasets.Array3D((3, size, size), "uint8"), "labels": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict({"pixel_values": pixels, "labels": labels}, features=features).with_format(
        "torch"
    )


def tiny_classifier(backbone="vit", num_labels=2):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLForImageClassification

    torch.manual_seed(0)
    return FGSSLForImageClassification(tiny_fgssl_config(backbone, num_labels=num_labels))


def cpu_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=8, per_device_eval_batch_size=32,
        learning_rate=1e-2, max_steps=10, save_strategy="no", logging_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )
    defaults.update(kwargs)
    return TrainingArguments(**defaults)


def test_lora_targets_follow_the_backbone_module_names():
    # transformers 5 ViT attention uses q_proj / v_proj (not peft's table's query / value).
    assert lora_target_modules(tiny_classifier("vit")) == ["q_proj", "v_proj"]
    assert lora_target_modules(tiny_classifier("convnext")) == ["pwconv1", "pwconv2"]
    peft_model = apply_lora(tiny_classifier("convnext"), r=2, alpha=4)
    wrapped = [n for n, _ in peft_model.named_modules() if n.endswith(("pwconv1.lora_A", "pwconv2.lora_A"))]
    assert len(wrapped) == 8  # two layers in each of the four stages


def test_lora_trains_only_adapters_and_head_and_lowers_the_loss(tmp_path):
    peft_model = apply_lora(tiny_classifier("vit"), r=4, alpha=8, dropout=0.0)
    names = trainable_parameter_names(peft_model)
    assert names and all("lora_" in n or "classifier" in n for n in names), names
    assert any("q_proj.lora_A" in n for n in names) and any("v_proj.lora_B" in n for n in names)
    assert any("classifier.modules_to_save" in n for n in names)
    assert not any("k_proj" in n or "mlp" in n or "embeddings" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}

    train, test = colour_task(64), colour_task(32, seed=1)
    trainer = make_trainer(peft_model, cpu_args(tmp_path), train, test, image_size=32)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    assert 0.0 <= after["eval_accuracy"] <= 1.0
    for name, value in frozen.items():
        assert torch.equal(dict(peft_model.named_parameters())[name], value), f"{name} changed but is frozen"
    # LoRA B starts at zero: after training at least one must have moved.
    assert any(not torch.equal(dict(peft_model.named_parameters())[n], v) for n, v in lora_b.items())


def test_save_adapter_and_merged_model_give_the_same_logits(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    peft_model = apply_lora(tiny_classifier("vit"), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # non-zero B so that merging actually changes the weights
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    peft_model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = peft_model(pixel_values=x).logits
    paths = save_finetuned(peft_model, tmp_path)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForImageClassification.from_pretrained(paths["merged"]).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).logits, expected, atol=1e-4, rtol=1e-4)
    # The adapter reloads on a fresh base model to the same function.
    reloaded = PeftModel.from_pretrained(tiny_classifier("vit"), paths["adapter"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).logits, expected, atol=1e-4, rtol=1e-4)


def test_build_classifier_keeps_encoder_weights(tmp_path):
    from conftest import tiny_fgssl_config, tiny_vit_config
    from fgssl.modeling import FGSSLModel
    from transformers import ViTModel

    torch.manual_seed(0)
    encoder = FGSSLModel(tiny_fgssl_config())
    encoder.save_pretrained(tmp_path / "fgssl")
    model = build_classifier(str(tmp_path / "fgssl"), num_labels=5, id2label={i: f"c{i}" for i in range(5)})
    assert model.classifier.out_features == 5 and model.config.id2label[4] == "c4"
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(model.fgssl.state_dict()[name], value)
    assert len(trainable_parameter_names(model)) == len(list(model.parameters()))  # full fine-tuning

    ViTModel(tiny_vit_config(), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    wrapped = build_classifier(str(tmp_path / "vit"), num_labels=3)
    assert wrapped.classifier.out_features == 3


def test_few_shot_indices_are_k_per_class_and_seeded():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 2)
    chosen = few_shot_indices(labels, k=3, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [3, 3, 2]  # a class with fewer keeps all it has
    assert np.array_equal(chosen, few_shot_indices(labels, k=3, seed=0))
    assert not np.array_equal(chosen, few_shot_indices(labels, k=3, seed=1))
    with pytest.raises(ValueError, match="few_shot_k"):
        few_shot_indices(labels, k=0)


def test_fgssl_finetune_cli_lora_few_shot(tmp_path, cub100):
    from conftest import tiny_fgssl_config
    from fgssl.modeling import FGSSLModel

    from fgssl.training.finetune import main

    torch.manual_seed(0)
    FGSSLModel(tiny_fgssl_config()).save_pretrained(tmp_path / "model")
    out = tmp_path / "ft"
    results = main([
        "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(cub100), "--output_dir", str(out),
        "--max_train_samples", "40", "--max_eval_samples", "8", "--image_size", "32", "--few_shot_k", "1",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--use_cpu", "--save_strategy", "no",
        "--eval_strategy", "no", "--disable_tqdm", "true",
    ])
    written = json.loads((out / "finetune_results.json").read_text())
    assert written["settings"]["method"] == "lora" and written["settings"]["few_shot_k"] == 1
    assert 0.0 <= written["accuracy"] <= 1.0 and written["num_images"]["eval"] == 8
    assert written["num_images"]["train"] <= 40  # one image per class present in the 40-image subset
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "merged" / "config.json").is_file()
    assert results["saved"]["merged"] == str(out / "merged")


def test_trainer_evaluates_on_the_deterministic_view(tmp_path):
    from fgssl.training.augment import eval_transform

    train, test = colour_task(8), colour_task(4, seed=1)
    trainer = make_trainer(tiny_classifier("vit"), cpu_args(tmp_path), train, test, image_size=32)
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    expected = eval_transform(torch.stack([test[i]["pixel_values"] for i in range(4)]).to(torch.uint8), 32)
    torch.testing.assert_close(eval_batch["pixel_values"], expected)
    torch.manual_seed(0)
    train_batch = next(iter(trainer.get_train_dataloader()))
    assert train_batch["pixel_values"].shape == (8, 3, 32, 32)
    assert trainer.data_collator.train  # the swap for evaluation is undone
