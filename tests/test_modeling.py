"""Foundation: configs, the four model classes, Auto classes, save/load, remote code and Hub-cache loading."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    ConvNextModel,
    ViTModel,
)

from conftest import REPO_ROOT, tiny_convnext_config, tiny_fgssl_config, tiny_vit_config
from fgssl.modeling import (
    FGSSLConfig,
    FGSSLDecoder,
    FGSSLForImageClassification,
    FGSSLForPreTraining,
    FGSSLModel,
)


def pixels(batch=2, size=32, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# Shapes and semantics
# ---------------------------------------------------------------------------------------------------------------
def test_encoder_outputs_feature_map_and_mean_pooled_vector(backbone):
    model = FGSSLModel(tiny_fgssl_config(backbone)).eval()
    out = model(pixels())
    c = model.config.hidden_size
    assert out.pooler_output.shape == (2, c)
    assert out.feature_map.dim() == 4 and out.feature_map.shape[:2] == (2, c)
    # h is exactly the spatial mean of A (docs/method.md step 3 depends on it).
    torch.testing.assert_close(out.pooler_output, out.feature_map.mean(dim=(2, 3)))
    assert out.last_hidden_state is not None


def test_vit_feature_map_is_the_patch_grid_without_cls():
    model = FGSSLModel(tiny_fgssl_config("vit")).eval()
    x = pixels()
    out = model(x)
    assert out.feature_map.shape == (2, 32, 4, 4)  # 32 px / patch 8
    tokens = out.last_hidden_state  # B x (1 + 16) x C
    torch.testing.assert_close(out.feature_map[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])


def test_vit_accepts_other_resolutions():
    model = FGSSLModel(tiny_fgssl_config("vit")).eval()
    assert model(pixels(size=48)).feature_map.shape == (2, 32, 6, 6)


def tiny_backbone_config(model_type):
    from transformers import ResNetConfig, SwinConfig

    if model_type == "resnet":
        return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1], layer_type="basic")
    if model_type == "swin":
        return SwinConfig(image_size=32, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2)
    return tiny_vit_config() if model_type == "vit" else tiny_convnext_config()


@pytest.mark.parametrize("model_type, sizes", [("vit", (8, 24, 33)), ("convnext", (32, 40, 63)),
                                               ("resnet", (8, 33, 64)), ("swin", (16, 36))])
def test_feature_map_side_from_the_config_matches_the_backbone(model_type, sizes):
    from fgssl.modeling.configuration_fgssl import backbone_stride, feature_map_side

    backbone_config = tiny_backbone_config(model_type)
    for size in sizes:
        config = FGSSLConfig(backbone_config=backbone_config, image_size=size, decoder_block_out_channels=[8])
        model = FGSSLModel(config).eval()
        with torch.no_grad():
            side = model(torch.zeros(1, 3, size, size)).feature_map.shape[-1]
        assert side == feature_map_side(backbone_config, size), (model_type, size)
        assert config.decoder_base_size == max(1, side)  # the map decoder starts from the map's own grid
        if size % backbone_stride(backbone_config) == 0:
            assert side * backbone_stride(backbone_config) == size


def test_screening_pooling_weights_the_feature_map():
    model = FGSSLModel(tiny_fgssl_config("vit", pooling="screening")).eval()
    out = model(pixels())
    assert out.screening_map.shape == (2, 4, 4)
    assert out.screening_map.min() >= 0 and out.screening_map.max() <= 1
    expected = (out.feature_map * out.screening_map[:, None]).mean(dim=(2, 3))
    torch.testing.assert_close(out.pooler_output, expected)


def test_classifier_loss_and_labels():
    config = tiny_fgssl_config("convnext", id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    model = FGSSLForImageClassification(config)
    out = model(pixels(batch=4), labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, 3)
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 1]))
    torch.testing.assert_close(out.loss, expected)
    assert model.config.id2label[2] == "c"


@pytest.mark.parametrize("decoder_input", ["pooled", "feature_map"])
def test_pretraining_pieces(backbone, decoder_input):
    model = FGSSLForPreTraining(tiny_fgssl_config(backbone, decoder_input=decoder_input))
    x = pixels()
    encoded = model.encode(x)
    h = encoded.pooler_output
    q = model.project(h)
    k = model.momentum_encode(x)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(2))
    assert not k.requires_grad
    # The momentum branch starts as an exact copy of the online branch.
    torch.testing.assert_close(q, k)
    features = model.decoder_features(encoded)
    if decoder_input == "pooled":
        assert features is h
        side = model.config.decoder_image_size
    else:  # the map decoder starts from A's own grid: S = H * 2 ** (blocks - 1)
        assert features is encoded.feature_map and features.dim() == 4
        side = features.shape[-1] * 2 ** (len(model.config.decoder_block_out_channels) - 1)
    recon = model.decode(features)
    assert recon.shape == (2, 3, side, side)
    with pytest.raises(ValueError, match="decodes"):  # the wrong input is named, not a shape error deep inside
        model.decode(encoded.feature_map if decoder_input == "pooled" else h)
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    # The running feature statistics are a declared submodule: saved with the model, mean 0 / var 1 at start.
    assert "variance_tracker.running_var" in model.state_dict()
    torch.testing.assert_close(model.variance_tracker.running_var, torch.ones(model.config.hidden_size))


def test_momentum_update_is_an_ema():
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", momentum=0.9))
    online = next(model.fgssl.parameters())
    mom = next(model.momentum_encoder.parameters())
    before = mom.detach().clone()
    with torch.no_grad():
        online.add_(1.0)
    model.update_momentum()
    torch.testing.assert_close(mom, 0.9 * before + 0.1 * online.detach())


def test_enqueue_is_a_ring_buffer():
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", queue_size=5, projector_dim=2))
    for start in (0, 3):
        keys = torch.arange(start, start + 3, dtype=torch.float32)[:, None].repeat(1, 2)
        model.enqueue(keys)
    # 6 keys into 5 slots: key 5 overwrote slot 0, pointer wrapped to 1.
    assert model.queue[:, 0].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    assert int(model.queue_ptr) == 1


def test_in_batch_mode_has_an_empty_queue():
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", queue_size=0))
    model.enqueue(torch.randn(4, 16))
    assert model.queue.shape == (0, 16)


def test_moco_baseline_has_no_decoder():
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", use_decoder=False))
    assert model.decoder is None
    with pytest.raises(ValueError, match="use_decoder"):
        model.decode(torch.randn(2, 32))


# ---------------------------------------------------------------------------------------------------------------
# The SimSiam base
# ---------------------------------------------------------------------------------------------------------------
def test_simsiam_builds_projector_and_predictor_and_no_momentum_branch_or_queue():
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", projector_dim=16))
    layers = [type(m).__name__ for m in model.projector]
    # SimSiam's projector: three linear layers, each followed by BatchNorm, no ReLU after the last.
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    # The predictor is a bottleneck: d -> d / 4 -> d.
    assert [m.out_features for m in model.predictor if isinstance(m, torch.nn.Linear)] == [4, 16]
    assert not model.has_momentum_branch and model.momentum_encoder is None and model.queue is None
    keys = model.state_dict().keys()
    assert any(k.startswith("predictor.") for k in keys)
    assert not [k for k in keys if k.startswith(("momentum_", "queue"))]
    with pytest.raises(ValueError, match="momentum branch"):
        model.momentum_encode(pixels())
    with pytest.raises(ValueError, match="momentum branch"):
        model.update_momentum()


def test_simsiam_forward_sends_both_views_through_one_call_with_heads_per_view():
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", use_decoder=False)).train()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    x1, x2 = pixels(batch=4, seed=1), pixels(batch=4, seed=2)
    out = model(x1, key_pixel_values=x2)
    assert len(calls) == 1  # one call of the (DDP-wrapped) model per step: DDP synchronises once
    assert out.projection.shape == out.prediction.shape == (8, 16) and out.key is None
    assert out.pooler_output.shape == (4, 32)
    # Each view's BatchNorm uses that view's batch statistics, as the paper's two separate passes.
    for view, rows in ((x1, slice(0, 4)), (x2, slice(4, 8))):
        z, p = model.simsiam_heads(model.encode(view).pooler_output)
        torch.testing.assert_close(out.projection[rows], z)
        torch.testing.assert_close(out.prediction[rows], p)
    torch.testing.assert_close(out.query, torch.nn.functional.normalize(out.projection[:4], dim=1))
    with pytest.raises(ValueError, match="at least 2 images"):
        model(x1[:1], key_pixel_values=x2[:1])


def test_frozen_batch_statistics_keep_values_and_decouple_the_samples():
    from fgssl.modeling.modeling_fgssl import run_with_frozen_batch_statistics

    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", use_decoder=False)).train()
    h = torch.randn(6, 32)
    bn = model.projector[1]
    z, p = model.simsiam_heads(h)
    running = bn.running_mean.clone()
    z_frozen, p_frozen = model.simsiam_heads(h, freeze_batch_statistics=True)
    torch.testing.assert_close(z_frozen, z)
    torch.testing.assert_close(p_frozen, p)
    torch.testing.assert_close(bn.running_mean, running)  # the scoring pass folds nothing into the running stats
    # The gradient of the other rows' outputs reaches sample 0 in the real forward (BatchNorm couples the batch),
    # and not with the statistics frozen.
    for frozen, coupled in ((True, False), (False, True)):
        leaf = h.clone().requires_grad_(True)
        out = run_with_frozen_batch_statistics(model.projector, leaf) if frozen else model.projector(leaf)
        (grad,) = torch.autograd.grad(out[1:].square().sum(), leaf)
        assert bool(grad[0].abs().max() > 0) is coupled
    # In eval mode the running statistics are used, as in the ordinary forward.
    model.eval()
    torch.testing.assert_close(run_with_frozen_batch_statistics(model.projector, h), model.projector(h))


def test_frozen_batch_statistics_run_under_bf16_autocast_like_the_ordinary_forward():
    # The GPU recipes score Grad-CAM under bf16 autocast; on CPU a bf16 batch mean beside float32 BN weights was refused.
    from fgssl.modeling.modeling_fgssl import run_with_frozen_batch_statistics

    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", use_decoder=False)).train()
    h = torch.randn(6, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        frozen, ordinary = run_with_frozen_batch_statistics(model.projector, h), model.projector(h)
    torch.testing.assert_close(frozen.float(), ordinary.float(), atol=0.05, rtol=0.05)


def test_simsiam_folder_loads_through_the_auto_classes_and_exports_the_backbone(tmp_path):
    model = FGSSLForPreTraining(tiny_fgssl_config("convnext", base="simsiam")).eval()
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "model.safetensors")
    assert not [k for k in saved if k.startswith(("momentum_", "queue"))]
    assert any(k.startswith("predictor.") for k in saved)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is FGSSLForPreTraining and loaded.config.base == "simsiam"
    x = pixels(batch=3)
    a, b = model(x, key_pixel_values=x.flip(0)), loaded(x, key_pixel_values=x.flip(0))
    torch.testing.assert_close(a.prediction, b.prediction, rtol=0, atol=0)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is FGSSLModel
    torch.testing.assert_close(encoder(x).pooler_output, model.encode(x).pooler_output)
    model.export_backbone(tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is ConvNextModel


# ---------------------------------------------------------------------------------------------------------------
# Save / load round trips
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FGSSLModel, FGSSLForImageClassification, FGSSLForPreTraining])
def test_round_trip_identical_outputs(cls, backbone, tmp_path):
    model = cls(tiny_fgssl_config(backbone, num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    x = pixels()
    kwargs = {"return_reconstruction": True} if cls is FGSSLForPreTraining else {}
    a, b = model(x, **kwargs), loaded(x, **kwargs)
    if cls is FGSSLForPreTraining:
        assert a.reconstruction is not None
    for name in ("pooler_output", "logits", "query", "reconstruction"):
        if getattr(a, name, None) is not None:
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    if cls is FGSSLForPreTraining:
        torch.testing.assert_close(loaded.queue, model.queue)
        for p, q in zip(model.momentum_encoder.parameters(), loaded.momentum_encoder.parameters()):
            torch.testing.assert_close(p, q)


def test_auto_classes(tmp_path):
    pre = FGSSLForPreTraining(tiny_fgssl_config("convnext")).eval()
    pre.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, FGSSLConfig)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is FGSSLModel
    x = pixels()
    torch.testing.assert_close(encoder(x).pooler_output, pre.encode(x).pooler_output)
    clf = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=7)
    assert type(clf) is FGSSLForImageClassification and clf.classifier.out_features == 7
    torch.testing.assert_close(clf.fgssl(x).pooler_output, pre.encode(x).pooler_output)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is FGSSLForPreTraining
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(saved["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoModelForPreTraining"
    }
    for name in ("modeling_fgssl.py", "configuration_fgssl.py", "decoder_fgssl.py"):
        assert (tmp_path / name).is_file()


def test_pretraining_from_encoder_checkpoint_copies_momentum(tmp_path):
    FGSSLModel(tiny_fgssl_config("vit")).save_pretrained(tmp_path)
    pre = FGSSLForPreTraining.from_pretrained(tmp_path)
    for p, q in zip(pre.fgssl.parameters(), pre.momentum_encoder.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("decoder_input", ["pooled", "feature_map"])
def test_decoder_saves_alone_in_diffusers_format(tmp_path, decoder_input):
    decoder = FGSSLForPreTraining(tiny_fgssl_config("vit", decoder_input=decoder_input)).decoder
    decoder.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = FGSSLDecoder.from_pretrained(tmp_path)
    assert loaded.config.input_type == decoder_input  # the config's words
    features = torch.randn(2, 32, 4, 4) if decoder_input == "feature_map" else torch.randn(2, 32)
    torch.testing.assert_close(loaded(features), decoder(features))


@pytest.mark.parametrize("old_word, decoder_input", [("vector", "pooled"), ("map", "feature_map")])
def test_decoder_saved_with_the_old_input_words_still_loads(tmp_path, old_word, decoder_input):
    # Decoders saved before the decoder spoke FGSSLConfig's words wrote input_type "vector" / "map".
    decoder = FGSSLForPreTraining(tiny_fgssl_config("vit", decoder_input=decoder_input)).decoder
    decoder.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "input_type": old_word}))
    loaded = FGSSLDecoder.from_pretrained(tmp_path)
    assert loaded.config.input_type == decoder_input
    features = torch.randn(2, 32, 4, 4) if decoder_input == "feature_map" else torch.randn(2, 32)
    torch.testing.assert_close(loaded(features), decoder(features))
    assert FGSSLDecoder.from_config({**config, "input_type": old_word}).config.input_type == decoder_input


def test_from_backbone_pretrained_and_export(backbone, tmp_path):
    plain_cls = ViTModel if backbone == "vit" else ConvNextModel
    plain = plain_cls(tiny_vit_config() if backbone == "vit" else tiny_convnext_config())
    plain.save_pretrained(tmp_path / "plain")
    model = FGSSLForPreTraining.from_backbone_pretrained(tmp_path / "plain", projector_dim=8, queue_size=0)
    for (name, p) in model.fgssl.backbone.state_dict().items():
        torch.testing.assert_close(p, plain.state_dict()[name])
    for p, q in zip(model.fgssl.parameters(), model.momentum_encoder.parameters()):
        torch.testing.assert_close(p, q)
    # Export for users who want no custom code: a plain transformers folder with the same weights.
    model.export_backbone(tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is plain_cls
    x = pixels()
    torch.testing.assert_close(exported(x).last_hidden_state, model.fgssl.eval()(x).last_hidden_state)


# ---------------------------------------------------------------------------------------------------------------
# Loading without the package (remote code) and through a local Hub cache
# ---------------------------------------------------------------------------------------------------------------
BLOCK_PACKAGE = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('modeling', 'training', 'fgssl', 'conftest'):
            raise ModuleNotFoundError('blocked: ' + name)
        return None
sys.meta_path.insert(0, _Block())
sys.path = [p for p in sys.path if p not in ('', {repo!r})]
"""


def run_python(code, tmp_path, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    env.update(env_extra or {})
    script = BLOCK_PACKAGE.replace('{repo!r}', repr(str(REPO_ROOT))) + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_remote_code_without_the_package(tmp_path):
    model = FGSSLForPreTraining(tiny_fgssl_config("vit")).eval()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    x = pixels()
    torch.save(x, tmp_path / "x.pt")
    out = run_python(
        f"""
        import torch
        try:
            import fgssl.modeling
            raise SystemExit('package still importable')
        except ModuleNotFoundError:
            pass
        from transformers import AutoModel, AutoModelForImageClassification
        m = AutoModel.from_pretrained({str(ckpt)!r}, trust_remote_code=True).eval()
        assert type(m).__name__ == 'FGSSLModel' and 'transformers_modules' in type(m).__module__, type(m).__module__
        x = torch.load({str(tmp_path / 'x.pt')!r})
        torch.save(m(x).pooler_output, {str(tmp_path / 'h.pt')!r})
        c = AutoModelForImageClassification.from_pretrained({str(ckpt)!r}, num_labels=4, trust_remote_code=True)
        print('classes', c(x).logits.shape[-1])
        """,
        tmp_path,
    )
    assert "classes 4" in out
    torch.testing.assert_close(torch.load(tmp_path / "h.pt"), model.encode(x).pooler_output)


def test_from_pretrained_org_name_through_local_hub_cache(tmp_path):
    model = FGSSLModel(tiny_fgssl_config("convnext")).eval()
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--name"
    snapshot = repo / "snapshots" / sha
    model.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    x = pixels()
    torch.save(x, tmp_path / "x.pt")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    # With the package installed (Auto registration) ...
    run_python(
        f"""
        import sys; sys.meta_path.pop(0); sys.path.insert(0, {str(REPO_ROOT)!r})
        import torch, modeling
        from transformers import AutoModel
        m = AutoModel.from_pretrained('org/name').eval()
        assert type(m).__name__ == 'FGSSLModel'
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})).pooler_output, {str(tmp_path / 'a.pt')!r})
        """,
        tmp_path,
        env,
    )
    # ... and without it, through remote code.
    run_python(
        f"""
        import torch
        from transformers import AutoModel
        m = AutoModel.from_pretrained('org/name', trust_remote_code=True).eval()
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})).pooler_output, {str(tmp_path / 'b.pt')!r})
        """,
        tmp_path,
        env,
    )
    expected = model(x).pooler_output
    torch.testing.assert_close(torch.load(tmp_path / "a.pt"), expected)
    torch.testing.assert_close(torch.load(tmp_path / "b.pt"), expected)


# ---------------------------------------------------------------------------------------------------------------
# Config validation: every field refused with its name and allowed range
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"pooling": "max"}, "pooling"),
        ({"base": "byol"}, r"base must be one of \('moco', 'simsiam'\)"),
        ({"predictor_hidden_size": 0}, "predictor_hidden_size"),
        ({"screening_channels": 0}, "screening_channels"),
        ({"projector_hidden_size": 0}, "projector_hidden_size"),
        ({"projector_dim": -1}, "projector_dim"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"queue_size": -1}, "queue_size"),
        ({"queue_size": 2.5}, "queue_size"),
        ({"use_decoder": "yes"}, "use_decoder"),
        ({"decoder_base_size": 0}, "decoder_base_size"),
        ({"decoder_layers_per_block": 0}, "decoder_layers_per_block"),
        ({"decoder_norm_num_groups": 0}, "decoder_norm_num_groups"),
        ({"decoder_block_out_channels": []}, "decoder_block_out_channels"),
        ({"decoder_block_out_channels": [30, 16], "decoder_norm_num_groups": 8}, "decoder_block_out_channels"),
        ({"initializer_range": 0}, "initializer_range"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FGSSLConfig(backbone_config=tiny_vit_config(), **kwargs)


def test_config_refuses_unsupported_backbone():
    from transformers import BertConfig

    with pytest.raises(ValueError, match="backbone_config"):
        FGSSLConfig(backbone_config=BertConfig())


def test_config_accepts_a_dict_backbone_and_round_trips(tmp_path):
    config = FGSSLConfig(backbone_config=tiny_vit_config().to_dict(), queue_size=0)
    assert config.backbone_config.model_type == "vit" and config.hidden_size == 32
    config.save_pretrained(tmp_path)
    again = FGSSLConfig.from_pretrained(tmp_path)
    assert again.queue_size == 0 and again.backbone_config.hidden_size == 32
    assert FGSSLConfig().backbone_config.model_type == "convnext"
