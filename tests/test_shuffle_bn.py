"""Shuffle BN (training/shuffle_bn.py) and the ResNet-50 backbone of the paper's setting (issue 20)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, run_two_processes, tiny_fgssl_config
from fgssl.training.shuffle_bn import grouped_encode, has_batch_norm, shuffled_keys

sys.path.insert(0, str(REPO_ROOT / "tests" / "scripts"))
from shuffle_bn_worker import bn_encoder  # noqa: E402


def test_two_processes_encode_a_shuffled_batch_and_get_their_keys_back_in_order(tmp_path):
    batch = 4
    ranks = run_two_processes("shuffle_bn_worker.py", tmp_path, batch, port=29541)
    assert ranks[0]["world_size"] == 2
    # By hand: rank 0's permutation of the gathered batch; rank r encodes rows r*B:(r+1)*B of the shuffled batch
    # (BatchNorm statistics of that sub-batch); each key goes back to its image's original place.
    everything = torch.cat([r["images"] for r in ranks])
    order = torch.randperm(2 * batch, generator=torch.Generator().manual_seed(123))
    encoder = bn_encoder().train()
    with torch.no_grad():
        shuffled = torch.cat([encoder(everything[order[r * batch:(r + 1) * batch]]) for r in (0, 1)])
    expected = torch.empty_like(shuffled)
    expected[order] = shuffled
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["keys"], expected[r * batch:(r + 1) * batch])
        with torch.no_grad():  # not the plain encoding of the rank's own batch: the statistics did change
            assert not torch.allclose(got["keys"], encoder(got["images"]), atol=1e-4)


def test_one_process_emulation_normalises_shuffled_groups_and_restores_the_order():
    encoder = bn_encoder().train()
    images = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    keys = shuffled_keys(encoder, images, groups=2, generator=torch.Generator().manual_seed(5))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        shuffled = torch.cat([encoder(images[order[:4]]), encoder(images[order[4:]])])
        plain = encoder(images)
    expected = torch.empty_like(shuffled)
    expected[order] = shuffled
    torch.testing.assert_close(keys, expected)
    assert not torch.allclose(keys, plain, atol=1e-4)
    # One group is the plain encoding; the helper splits into consecutive sub-batches.
    torch.testing.assert_close(shuffled_keys(encoder, images, groups=1), plain)
    with torch.no_grad():
        torch.testing.assert_close(grouped_encode(encoder, images, 2), torch.cat([encoder(images[:4]),
                                                                                 encoder(images[4:])]))


def _trainer(tmp_path, kind: str, groups: int):
    from transformers import TrainingArguments

    from fgssl.modeling import FGSSLForPreTraining
    from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments

    if kind == "resnet":
        from transformers import ResNetConfig

        config = tiny_fgssl_config(queue_size=0, use_decoder=False).to_dict()
        config.update(backbone_config=ResNetConfig(layer_type="basic", embedding_size=8, depths=[1, 1],
                                                   hidden_sizes=[8, 16]).to_dict())
        from fgssl.modeling import FGSSLConfig

        config = FGSSLConfig(**{k: v for k, v in config.items() if k in ("backbone_config", "projector_hidden_size",
                                                                       "projector_dim", "queue_size", "use_decoder")})
    else:
        config = tiny_fgssl_config(kind, queue_size=0, use_decoder=False)
    model = FGSSLForPreTraining(config).train()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    return FGSSLTrainer(model=model, args=args, objective_args=ObjectiveArguments(method="plain",
                                                                                  shuffle_bn_groups=groups),
                        image_size=32), model


@pytest.mark.parametrize("kind", ["convnext", "vit"])
def test_layernorm_backbones_keep_their_keys_and_positive_logits(tmp_path, kind):
    trainer, model = _trainer(tmp_path, kind, groups=4)
    assert not trainer.key_encoder_has_batch_norm
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    query = model.project(model.encode(images).pooler_output).detach()
    keys = trainer.momentum_keys(model, images)
    torch.testing.assert_close(keys, model.momentum_encode(images))
    torch.testing.assert_close((query * keys).sum(1), (query * model.momentum_encode(images)).sum(1))


def test_batchnorm_backbone_keys_are_computed_in_shuffled_groups(tmp_path):
    trainer, model = _trainer(tmp_path, "resnet", groups=2)
    assert trainer.key_encoder_has_batch_norm and has_batch_norm(model.momentum_encoder)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    keys = trainer.momentum_keys(model, images)
    torch.manual_seed(3)
    order = torch.randperm(8)
    shuffled = torch.cat([model.momentum_encode(images[order[:4]]), model.momentum_encode(images[order[4:]])])
    expected = torch.empty_like(shuffled)
    expected[order] = shuffled
    torch.testing.assert_close(keys, expected)


def test_shuffle_bn_groups_below_one_is_refused():
    from fgssl.training.trainer import ObjectiveArguments

    with pytest.raises(ValueError, match="shuffle_bn_groups"):
        ObjectiveArguments(shuffle_bn_groups=0)


# ---------------------------------------------------------------------------------------------------------------
# ResNet-50: the paper's backbone
# ---------------------------------------------------------------------------------------------------------------
def test_resnet50_preset_is_torchvisions_resnet50_shape():
    from transformers import ResNetConfig

    from fgssl.training.backbones import backbone_presets, final_feature_map_side

    config = backbone_presets()["resnet50"](224)
    reference = ResNetConfig()
    assert (config.layer_type, list(config.depths), list(config.hidden_sizes)) == (
        "bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048])
    assert config.to_dict() == reference.to_dict()
    assert final_feature_map_side(config, 224) == 7


def test_resnet50_folder_weights_load_into_both_encoders_with_a_7x7_map(tmp_path):
    """A local folder saved from ResNetConfig() (the layout of microsoft/resnet-50) starts pre-training."""
    from transformers import ResNetConfig, ResNetModel

    from fgssl.modeling import FGSSLForPreTraining

    torch.manual_seed(0)
    backbone = ResNetModel(ResNetConfig())
    with torch.no_grad():
        backbone.embedder.embedder.convolution.weight.fill_(0.01)  # a known value a fresh init would not have
    backbone.save_pretrained(tmp_path / "resnet-50")
    model = FGSSLForPreTraining.from_backbone_pretrained(tmp_path / "resnet-50", projector_dim=256, queue_size=16)
    saved = backbone.state_dict()
    for name, value in model.fgssl.backbone.state_dict().items():
        assert torch.equal(value, saved[name]), name
    online = dict(model.fgssl.named_parameters())
    for name, value in model.momentum_encoder.named_parameters():
        assert torch.equal(value, online[name]), name
    assert has_batch_norm(model.momentum_encoder)
    model.eval()
    with torch.no_grad():
        feature_map = model.encode(torch.zeros(1, 3, 224, 224)).feature_map
    assert tuple(feature_map.shape) == (1, 2048, 7, 7)


def cub_layout(root, classes: int = 4, per_class: int = 5):
    """A CUB-200-2011 folder as downloaded: `per_class` images a class, the last of each class the test split."""
    from test_layouts import _photo, _write_lines

    images, labels, flags, boxes = [], [], [], []
    names = [f"{i:03d}.Bird_{i}" for i in range(1, classes + 1)]
    for class_id, folder in enumerate(names, start=1):
        for k in range(per_class):
            image_id = len(images) + 1
            _photo(root / "images" / folder / f"b{k}.jpg", shade=image_id)
            images.append(f"{image_id} {folder}/b{k}.jpg")
            labels.append(f"{image_id} {class_id}")
            flags.append(f"{image_id} {int(k < per_class - 1)}")
            boxes.append(f"{image_id} 1.0 1.0 20.0 20.0")
    _write_lines(root / "classes.txt", [f"{i} {n}" for i, n in enumerate(names, start=1)])
    _write_lines(root / "images.txt", images)
    _write_lines(root / "image_class_labels.txt", labels)
    _write_lines(root / "train_test_split.txt", flags)
    _write_lines(root / "bounding_boxes.txt", boxes)
    return root


def hub_cache_with_resnet50(cache):
    """The local Hub cache layout of `microsoft/resnet-50` (random weights of its ResNetConfig()), for offline runs."""
    from transformers import ResNetConfig, ResNetModel

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--microsoft--resnet-50"
    torch.manual_seed(0)
    ResNetModel(ResNetConfig()).save_pretrained(repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return cache


def test_the_papers_recipe_runs_two_steps_on_cpu(tmp_path, config="cub200_resnet50_mocov2_gpu.yaml"):
    """The GPU recipe as a user runs it (microsoft/resnet-50 from the Hub cache, offline), 2 steps at 64 px on CPU."""
    import os

    cub = cub_layout(tmp_path / "CUB_200_2011")
    env = {k: v for k, v in os.environ.items() if k != "FGSSL_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache_with_resnet50(tmp_path / "hub")))
    out = tmp_path / "out"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fgssl-pretrain"), str(REPO_ROOT / "configs" / config), "--dataset_name",
         str(cub), "--max_steps", "2", "--image_size", "64", "--per_device_train_batch_size", "8", "--output_dir",
         str(out), "--run_evaluation", "false", "--dataloader_num_workers", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training in float32 on the CPU" in result.stderr  # the recipe's bf16 needs a GPU
    assert (out / "model.safetensors").is_file() and (out / "encoder" / "config.json").is_file()


@pytest.mark.parametrize("name", ["cub200", "cars", "aircraft"])
def test_every_resnet50_recipe_says_lcrs_numbers(name):
    """Each dataset's recipe parses to LCR's MoCo v2 setting (and the SimSiam variant to SimSiam's)."""
    from fgssl.training.pretrain import parse_args

    model_args, _, training_args, objective = parse_args([str(REPO_ROOT / "configs" / f"{name}_resnet50_mocov2_gpu.yaml"),
                                                          "--output_dir", "unused"])
    assert model_args.backbone == "microsoft/resnet-50" and model_args.image_size == 224
    assert (model_args.queue_size, model_args.momentum, model_args.projector_dim) == (65536, 0.999, 256)
    assert objective.temperature == 0.2 and objective.shuffle_bn and objective.shuffle_bn_groups == 4
    assert training_args.optim == "sgd" and training_args.optim_args == "momentum=0.9"
    assert (training_args.learning_rate, training_args.weight_decay, training_args.num_train_epochs) == (0.03, 1e-4, 100)
    assert training_args.per_device_train_batch_size == 128 and training_args.lr_scheduler_type == "cosine"
    if name == "cub200":
        model_args, _, training_args, _ = parse_args([str(REPO_ROOT / "configs" / "cub200_resnet50_simsiam_gpu.yaml"),
                                                      "--output_dir", "unused"])
        assert model_args.base == "simsiam" and training_args.learning_rate == 0.025


def test_batchnorm_backbone_returns_float32_features_under_autocast():
    """accelerate hands a mixed-precision model's outputs back as float32 copies; Grad-CAM differentiates the loss
    with respect to the returned A and h, so a ResNet (which ends in bf16) must return them in float32 itself."""
    from transformers import ResNetConfig

    from fgssl.modeling import FGSSLConfig, FGSSLForPreTraining

    backbone = ResNetConfig(layer_type="basic", embedding_size=8, depths=[1, 1], hidden_sizes=[8, 16])
    model = FGSSLForPreTraining(FGSSLConfig(backbone_config=backbone, projector_hidden_size=16, projector_dim=8,
                                            queue_size=0, use_decoder=False)).train()
    images = torch.randn(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values=images)
        loss = out.query.float().sum()
    assert out.feature_map.dtype == out.pooler_output.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, out.pooler_output)  # h is on the loss's path
    assert grad.shape == out.pooler_output.shape
    # Without autocast nothing is cast: a bfloat16 model keeps bfloat16 features.
    encoder = model.fgssl.to(torch.bfloat16)
    assert encoder(images.to(torch.bfloat16)).pooler_output.dtype == torch.bfloat16


def test_accelerate_launch_runs_two_cpu_processes_of_a_batchnorm_backbone(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 ... --use_cpu true`: two real processes (the Trainer sees a
    world of 2: 16 images at 4 a process make one epoch in 2 steps), Shuffle BN across them and in groups."""
    import json
    import os

    cub = cub_layout(tmp_path / "CUB_200_2011", classes=4, per_class=5)
    env = {k: v for k, v in os.environ.items() if k != "FGSSL_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
         "--main_process_port", "29551", "-m", "fgssl.training.pretrain", "--use_cpu", "true",
         "--backbone", "resnet-tiny-cpu", "--dataset_name", str(cub), "--image_size", "32", "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--queue_size", "16", "--method", "fgssl", "--shuffle_bn_groups", "2",
         "--run_evaluation", "false", "--dataloader_num_workers", "0", "--output_dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train = json.loads((out / "train_results.json").read_text())
    assert train["epoch"] == 1.0, train  # one process would have seen half an epoch in 2 steps


def test_more_shuffle_bn_groups_than_the_batch_allows_is_refused_before_data_work():
    from fgssl.training.cli import UsageError
    from fgssl.training.pretrain import parse_args
    from fgssl.training.pretraining import validate_args

    with pytest.raises(UsageError, match="--shuffle_bn_groups 4 with --per_device_train_batch_size 6"):
        validate_args(*parse_args(["--shuffle_bn_groups", "4", "--per_device_train_batch_size", "6",
                                   "--output_dir", "unused"]))
    validate_args(*parse_args(["--shuffle_bn_groups", "3", "--per_device_train_batch_size", "6",
                               "--output_dir", "unused"]))


def test_simsiam_heads_are_synchronised_on_gpu_processes_and_scoring_still_works():
    from fgssl.modeling import FGSSLForPreTraining
    from fgssl.modeling.modeling_fgssl import run_with_frozen_batch_statistics
    from fgssl.training.trainer import synchronise_head_batch_norm

    model = FGSSLForPreTraining(tiny_fgssl_config("convnext", base="simsiam", use_decoder=False)).train()
    with pytest.raises(ValueError, match="--sync_bn true needs GPU"):
        synchronise_head_batch_norm(model, True, on_gpu=False)
    assert not synchronise_head_batch_norm(model, None, on_gpu=False)
    assert not synchronise_head_batch_norm(model, False, on_gpu=True)
    features = torch.randn(6, model.config.hidden_size)
    expected = run_with_frozen_batch_statistics(model.projector, features)
    assert synchronise_head_batch_norm(model, None, on_gpu=True)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.projector.modules())
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.predictor.modules())
    # One process (no process group): the frozen-statistics scoring pass gives the same values as before.
    torch.testing.assert_close(run_with_frozen_batch_statistics(model.projector, features), expected)
