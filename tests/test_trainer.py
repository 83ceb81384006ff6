"""FGSSLTrainer: the objective in a transformers Trainer, momentum/queue bookkeeping, DDP, resume, the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModel, TrainerCallback, TrainingArguments

from conftest import REPO_ROOT, run_two_processes, tiny_fgssl_config
from fgssl.modeling import FGSSLForPreTraining, FGSSLModel
from fgssl.training.data import collate_uint8
from fgssl.training.objective import gradcam_map, gradcam_scores, negative_cosine, simsiam_loss
from fgssl.training.backbones import method_config_kwargs
from fgssl.training.pretrain import parse_args, run_pretraining
from fgssl.training.trainer import FGSSLTrainer, ObjectiveArguments


def random_images(n=32, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return Dataset.from_dict({"pixel_values": images.numpy(), "labels": [0] * n}).with_format("torch")


def make_trainer(tmp_path, method="fgssl", batch=8, steps=3, accumulation=1, dataset=None, model=None,
                 objective=None, **args):
    model = model or FGSSLForPreTraining(tiny_fgssl_config("vit", **method_config_kwargs(method)))
    settings = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=batch, max_steps=steps,
        gradient_accumulation_steps=accumulation, learning_rate=1e-3, report_to="none", save_strategy="no",
        use_cpu=True, remove_unused_columns=False, disable_tqdm=True, logging_steps=1, dataloader_pin_memory=False,
    )
    training_args = TrainingArguments(**{**settings, **args})
    objective = objective or ObjectiveArguments(method=method, synth_warmup_steps=1, synth_ramp_steps=1)
    return FGSSLTrainer(model=model, args=training_args, objective_args=objective, image_size=32,
                        train_dataset=dataset or random_images(), data_collator=collate_uint8)


@pytest.mark.parametrize(
    "method, terms",
    [
        ("plain", {"loss_ssl"}),
        ("lcr", {"loss_ssl", "loss_lcr"}),
        ("fgssl", {"loss_ssl", "loss_recon", "loss_synth", "frac_perturbed", "var_perturbed", "var_kept"}),
    ],
)
def test_each_method_trains_and_logs_its_terms(method, terms, tmp_path):
    trainer = make_trainer(tmp_path, method)
    before = [p.detach().clone() for p in trainer.model.fgssl.parameters()]
    trainer.train()
    logged = set().union(*(row.keys() for row in trainer.state.log_history))
    assert terms <= logged
    changed = [not torch.equal(b, p) for b, p in zip(before, trainer.model.fgssl.parameters())]
    assert all(changed[:3])


@pytest.mark.parametrize(
    "method, terms",
    [
        ("plain", {"loss_ssl", "output_std"}),
        ("lcr", {"loss_ssl", "output_std", "loss_lcr"}),
        ("fgssl", {"loss_ssl", "output_std", "loss_recon", "loss_synth", "frac_perturbed", "var_perturbed"}),
    ],
)
def test_each_method_trains_on_the_simsiam_base_and_logs_its_terms(method, terms, tmp_path):
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", **method_config_kwargs(method)))
    trainer = make_trainer(tmp_path, method, model=model)
    before = [p.detach().clone() for p in [*model.fgssl.parameters(), *model.predictor.parameters()]]
    trainer.train()
    rows = [row for row in trainer.state.log_history if "loss_ssl" in row]
    assert len(rows) == 3 and terms <= set().union(*rows)
    # Negative cosine in [-1, 1]; the normalised outputs spread (collapse would show as ~0; 1/sqrt(16) = 0.25).
    assert all(-1 <= r["loss_ssl"] <= 1 and 0.1 < r["output_std"] < 0.5 for r in rows)
    after = [*model.fgssl.parameters(), *model.predictor.parameters()]
    assert all(not torch.equal(b, p) for b, p in zip(before[:3] + before[-2:], after[:3] + after[-2:]))
    # No momentum branch, no queue: the per-step callback had nothing to update or enqueue.
    assert not model.has_momentum_branch and trainer.pending_keys == []


def synthetic_birds(n=32, size=32):
    """The embedded fine-grained birds (structured images, unlike noise), as the uint8 rows the trainer takes."""
    from fgssl.training.synthetic import render_image, sample_factors

    rng = np.random.default_rng(0)
    images = [np.asarray(render_image(i % 4, sample_factors(rng), size)).transpose(2, 0, 1) for i in range(n)]
    rows = {"pixel_values": np.stack(images), "labels": [i % 4 for i in range(n)]}
    return Dataset.from_dict(rows).with_format("torch")


def test_short_simsiam_run_lowers_the_loss_without_collapse(tmp_path):
    torch.manual_seed(0)
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", **method_config_kwargs("plain")))
    objective = ObjectiveArguments(method="plain", crop_scale_min=0.5, color_jitter=0.2, blur_p=0.0)
    trainer = make_trainer(tmp_path, "plain", model=model, objective=objective, steps=20, learning_rate=3e-3,
                           lr_scheduler_type="constant", dataset=synthetic_birds())
    trainer.train()
    rows = [row for row in trainer.state.log_history if "loss_ssl" in row]
    ssl = [row["loss_ssl"] for row in rows]
    assert len(ssl) == 20 and sum(ssl[-5:]) / 5 < sum(ssl[:5]) / 5 - 0.1
    assert rows[-1]["output_std"] > 0.5 * model.config.projector_dim ** -0.5  # not collapsed to one point


def test_simsiam_gradcam_scores_are_each_samples_own_gradient_with_frozen_batch_statistics(tmp_path):
    torch.manual_seed(0)
    model = FGSSLForPreTraining(tiny_fgssl_config("vit", base="simsiam", **method_config_kwargs("fgssl"))).train()
    trainer = make_trainer(tmp_path, model=model)
    n = 6
    x1, x2 = torch.randn(n, 3, 32, 32), torch.randn(n, 3, 32, 32)
    # The statistics each BatchNorm normalised view 1 by: its first call (the heads run view 1, then view 2).
    stats = {}

    def record(module, inputs, output):
        x = inputs[0].detach()
        stats.setdefault(module, (x.mean(0), x.var(0, unbiased=False)))

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    hooks = [m.register_forward_hook(record) for m in norms]
    out = model(x1, key_pixel_values=x2)
    for hook in hooks:
        hook.remove()
    (z1, z2), (p1, p2) = out.projection.split(n), out.prediction.split(n)
    loss = simsiam_loss(p1, p2, z1, z2)
    cam = trainer.gradcam_inputs(model, out, loss)
    scores = gradcam_scores(cam.loss, cam.features)
    torch.testing.assert_close(cam.features, out.pooler_output)  # the scoring pass sees the same h

    def heads_of_one_sample(h_i):
        """Projector and predictor on one sample, each BatchNorm normalising by the batch's recorded statistics."""
        x = h_i
        for layer in [*model.projector, *model.predictor]:
            if isinstance(layer, torch.nn.BatchNorm1d):
                mean, var = stats[layer]
                x = (x - mean) / torch.sqrt(var + layer.eps)
                x = x * layer.weight + layer.bias if layer.affine else x
            else:
                x = layer(x)
        return x

    grads = torch.empty_like(scores)
    for i in range(n):
        h_i = out.pooler_output[i : i + 1].detach().requires_grad_(True)
        p_i = heads_of_one_sample(h_i)
        torch.testing.assert_close(p_i, p1[i : i + 1])  # the lone sample reproduces its row of the batch forward
        # Sample i's own share of L_C (mean over the batch): D(p1_i, sg z2_i) / 2n + D(p2_i, sg z1_i) / 2n; the
        # second term does not depend on h1_i.
        loss_i = (negative_cosine(p_i, z2[i : i + 1]) + negative_cosine(p2[i : i + 1], z1[i : i + 1])).sum() / (2 * n)
        (grads[i : i + 1],) = torch.autograd.grad(loss_i, h_i)
    reference = -grads * out.pooler_output.detach()
    torch.testing.assert_close(scores, reference)
    # LCR's Grad-CAM map from the same loss is per sample too: with mean pooling, alpha_ic = -dL_i/dh_ic / (H W).
    a = out.feature_map.detach()
    alpha = -grads / (a.shape[2] * a.shape[3])
    torch.testing.assert_close(gradcam_map(cam.loss, cam.feature_map), torch.relu((alpha[:, :, None, None] * a).sum(1)))
    # One gradient of the batch loss through the BatchNorms mixes the samples' losses: not the per-sample scores.
    naive = gradcam_scores(loss, out.pooler_output)
    assert not torch.allclose(naive, reference, rtol=1e-3, atol=1e-3 * float(reference.abs().max()))


def test_fgssl_perturbs_low_variance_dimensions(tmp_path):
    objective = ObjectiveArguments(method="fgssl", mask_mode="variance", rho_variance=0.25, synth_warmup_steps=0)
    trainer = make_trainer(tmp_path, "fgssl", objective=objective, steps=2)
    trainer.train()
    rows = [r for r in trainer.state.log_history if "frac_perturbed" in r]
    assert all(abs(r["frac_perturbed"] - 0.25) < 1e-6 for r in rows)
    assert all(r["var_perturbed"] <= r["var_kept"] for r in rows)


def _one_step_gradients(tmp_path, decoder_input="feature_map", **objective):
    """Encoder and decoder gradients of one fgssl compute_loss on a fixed batch, with fixed random draws."""
    torch.manual_seed(0)
    config = tiny_fgssl_config("vit", decoder_input=decoder_input, **method_config_kwargs("fgssl"))
    model = FGSSLForPreTraining(config)
    objective = ObjectiveArguments(method="fgssl", synth_warmup_steps=0, synth_ramp_steps=0, **objective)
    trainer = make_trainer(tmp_path, model=model, objective=objective)
    batch = collate_uint8([trainer.train_dataset[i] for i in range(8)])
    torch.manual_seed(1)
    trainer.compute_loss(trainer.model, batch).backward()
    flat = lambda module: torch.cat([  # noqa: E731
        (p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in module.parameters()])
    return flat(model.fgssl), flat(model.decoder)


@pytest.mark.parametrize("decoder_input", ["pooled", "feature_map"])
def test_gradient_routing_of_the_synthesized_pair_and_reconstruction(tmp_path, decoder_input):
    run = lambda name, **o: _one_step_gradients(tmp_path / name, decoder_input, **o)  # noqa: E731
    # L_Cp reaches the encoder and never the decoder (the synthesized images are detached inputs).
    enc_cp, dec_cp = run("cp", alpha=0.0, nu=1.0)
    enc_c, _ = run("c", alpha=0.0, nu=0.0)
    assert not torch.allclose(enc_cp, enc_c)
    assert torch.count_nonzero(dec_cp) == 0
    # L_R reaches the decoder, and the encoder only in proportion to recon_encoder_weight.
    enc_r0, dec_r0 = run("r0", alpha=1.0, nu=0.0, recon_encoder_weight=0.0)
    enc_r1, _ = run("r1", alpha=1.0, nu=0.0, recon_encoder_weight=1.0)
    enc_r01, _ = run("r01", alpha=1.0, nu=0.0, recon_encoder_weight=0.1)
    assert torch.count_nonzero(dec_r0) > 0
    torch.testing.assert_close(enc_r0, enc_c)  # weight 0: the encoder sees L_C only
    full = enc_r1 - enc_c
    torch.testing.assert_close(enc_r01 - enc_c, 0.1 * full, rtol=1e-3, atol=1e-4 * float(full.abs().max()))
    assert not torch.allclose(enc_r1, enc_c)


def test_recomputing_the_decoder_and_synthesized_query_passes_gives_the_same_gradients(tmp_path, monkeypatch):
    # Activation checkpointing trades memory for one more forward; the gradients must not change.
    enc, dec = _one_step_gradients(tmp_path / "keep", alpha=1.0, nu=1.0)
    recomputed = []  # what ran under checkpointing: the decoder's blocks (diffusers') and the synthesized queries
    checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                        lambda fn, *a, **k: (recomputed.append(getattr(fn, "__self__", fn)), checkpoint(fn, *a, **k))[1])
    monkeypatch.setattr("fgssl.training.bases.checkpoint", torch.utils.checkpoint.checkpoint)
    enc_re, dec_re = _one_step_gradients(tmp_path / "recompute", alpha=1.0, nu=1.0, synth_recompute=True)
    torch.testing.assert_close(enc_re, enc)
    torch.testing.assert_close(dec_re, dec)
    names = [type(fn).__name__ for fn in recomputed]
    assert "UpDecoderBlock2D" in names and "function" in names, names


@pytest.mark.parametrize("recon_target", ["view", "geometric"])
def test_reconstruction_target_is_the_view_or_its_geometric_part(tmp_path, recon_target, monkeypatch):
    import fgssl.training.objective as obj

    trainer = make_trainer(tmp_path, objective=ObjectiveArguments(method="fgssl", recon_target=recon_target))
    seen = {}
    augment = trainer.augment
    trainer.augment = lambda x, **kw: seen.setdefault("views", augment(x, **kw))
    loss_fn = obj.reconstruction_loss
    monkeypatch.setattr(obj, "reconstruction_loss", lambda recon, target: (seen.setdefault("target", target),
                                                                            loss_fn(recon, target))[1])
    batch = collate_uint8([trainer.train_dataset[i] for i in range(8)])
    trainer.compute_loss(trainer.model, batch)
    views = seen["views"]
    if recon_target == "view":
        assert len(views) == 2 and seen["target"] is views[0]
    else:  # v1's crop and flip without the photometric steps, drawn with v1 at no extra decode
        assert len(views) == 3 and seen["target"] is views[2]
        assert not torch.allclose(views[2], views[0])


def test_gradient_accumulation_gives_one_momentum_update_per_optimiser_step(tmp_path):
    counts = {}
    for name, batch, accumulation in (("2xB", 4, 2), ("2B", 8, 1)):
        trainer = make_trainer(tmp_path / name, batch=batch, accumulation=accumulation, steps=3)
        calls = []
        update = trainer.model.update_momentum
        trainer.model.update_momentum = lambda *a, **k: (calls.append(1), update(*a, **k))
        trainer.train()
        counts[name] = (len(calls), int(trainer.model.queue_ptr))
    # 3 optimiser steps either way: 3 EMA updates and 3 x 8 keys in the queue.
    assert counts["2xB"] == counts["2B"] == (3, 24)


def test_two_processes_stay_in_sync(tmp_path):
    r0, r1 = run_two_processes("ddp_worker.py", tmp_path, 3, 4, port=29531, timeout=600)
    assert r0["world_size"] == 2
    for key in ("running_var", "running_mean", "online", "momentum", "queue"):
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0)
    # 3 steps x 2 ranks x 4 keys, and every key of each rank is in the queue.
    assert r0["queue_ptr"] == r1["queue_ptr"] == 24
    assert not torch.allclose(r0["local_keys"], r1["local_keys"])
    for rank in (r0, r1):
        distance = (rank["local_keys"][:, None] - r0["queue"][None]).abs().amax(-1).min(1).values
        assert (distance < 1e-6).all()


def test_two_processes_stay_in_sync_on_the_simsiam_base(tmp_path):
    r0, r1 = run_two_processes("ddp_worker.py", tmp_path, 2, 4, "simsiam", port=29532, timeout=600)
    assert r0["world_size"] == 2 and "queue" not in r0
    for key in ("running_var", "online", "heads", "predictor"):
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0)


class StopAt(TrainerCallback):
    """Simulates a run killed mid-way (after a checkpoint was written)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_last_checkpoint(tmp_path):
    save = dict(save_strategy="steps", save_steps=2)
    trainer = make_trainer(tmp_path, steps=6, **save)
    trainer.add_callback(StopAt(3))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert checkpoint.is_dir() and not (tmp_path / "out" / "checkpoint-4").exists()
    saved = load_file(checkpoint / "model.safetensors")

    resumed = make_trainer(tmp_path, steps=6, **save)
    seen = {}
    compute_loss = resumed.compute_loss

    def first_step(model, inputs, *a, **k):
        if not seen:
            core = resumed.accelerator.unwrap_model(model)
            seen.update(step=resumed.state.global_step, queue=core.queue.clone(),
                        var=core.variance_tracker.running_var.clone())
        return compute_loss(model, inputs, *a, **k)

    resumed.compute_loss = first_step
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert seen["step"] == 2 and resumed.state.global_step == 6
    torch.testing.assert_close(seen["queue"], saved["queue"])
    torch.testing.assert_close(seen["var"], saved["variance_tracker.running_var"])
    steps = [row["step"] for row in resumed.state.log_history if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_mismatched_method_and_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="decoder"):
        make_trainer(tmp_path, "fgssl", model=FGSSLForPreTraining(tiny_fgssl_config("vit", use_decoder=False)))
    with pytest.raises(ValueError, match="screening"):
        make_trainer(tmp_path, "lcr", model=FGSSLForPreTraining(tiny_fgssl_config("vit", use_decoder=False)))


@pytest.mark.parametrize(
    "argv, field",
    [
        (["--mask_mode", "everything"], "mask_mode"),
        (["--method", "simclr"], "method"),
        (["--rho_variance", "1.5"], "rho_variance"),
        (["--perturbation", "zero"], "perturbation"),
        (["--synth_fraction", "-0.1"], "synth_fraction"),
        (["--hue_jitter", "0.7"], "hue_jitter"),
    ],
)
def test_invalid_objective_knob_is_refused_at_parse_time(argv, field):
    with pytest.raises(ValueError, match=field):
        parse_args(argv)


def test_hue_jitter_defaults_to_a_quarter_of_color_jitter_and_can_span_every_hue():
    assert ObjectiveArguments(color_jitter=0.4).augmentation(32).jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert ObjectiveArguments(color_jitter=0.4, hue_jitter=0.5).augmentation(32).jitter[3] == 0.5
    assert parse_args(["--hue_jitter", "0.5"])[3].hue_jitter == 0.5


@pytest.mark.parametrize(
    "argv, message",
    [(["--queue_size", "-5"], "queue_size"), (["--base", "byol"], r"base must be one of \('moco', 'simsiam'\)")],
)
def test_invalid_model_knob_is_refused_before_any_data_work(tmp_path, monkeypatch, argv, message):
    import fgssl.training.pretrain as pretrain

    monkeypatch.setattr(pretrain, "load_splits_from_args", lambda *a, **k: pytest.fail("data was loaded"))
    args = parse_args([*argv, "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=message):
        run_pretraining(*args)


def test_base_and_method_are_orthogonal_flags():
    model_args, _, _, objective_args = parse_args(["--base", "simsiam", "--method", "plain"])
    assert model_args.base == "simsiam" and objective_args.method == "plain"  # SimSiam alone
    model_args, _, _, objective_args = parse_args(["--method", "lcr"])
    assert model_args.base is None and objective_args.method == "lcr"  # None: FGSSLConfig's default, moco


def test_config_file_then_command_line_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("method: plain\nimage_size: 48\nseed: 3\ndecoder_block_out_channels: [64, 32]\n")
    model_args, data_args, training_args, objective_args = parse_args([str(config), "--seed", "7"])
    assert objective_args.method == "plain" and model_args.image_size == 48 and training_args.seed == 7
    assert model_args.decoder_block_out_channels == [64, 32]
    with pytest.raises(FileNotFoundError, match="configs/"):
        parse_args([str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    # transformers refuses bf16 on a machine without a GPU at parse time.
    extra = ["--bf16", "false"] if "gpu" in path.name and not torch.cuda.is_available() else []
    model_args, data_args, training_args, objective_args = parse_args([str(path), *extra])
    assert objective_args.method in ("plain", "lcr", "fgssl")


def test_no_argument_run_is_configs_demo_yaml_and_a_dataset_keeps_the_library_defaults():
    """`fgssl-pretrain` alone runs DEMO_RECIPE (written out in configs/demo.yaml); flags override it; a run on a
    dataset of the user's keeps MoCo v2's augmentations and the model defaults."""
    from dataclasses import asdict

    resolvable = {"decoder_input", "output_dir", "logging_dir"}  # None in one, resolved to the same value later
    for bare, written in zip(parse_args([]), parse_args([str(REPO_ROOT / "configs" / "demo.yaml")])):
        a, b = asdict(bare), asdict(written)
        assert {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in resolvable} == {}
    model_args, _, _, objective = parse_args([])
    assert (model_args.backbone, model_args.queue_size, objective.hue_jitter) == ("resnet-tiny-cpu", 512, 0.5)
    assert parse_args(["--blur_p", "0.3", "--dataset_name", "synthetic"])[3].blur_p == 0.3
    model_args, _, _, objective = parse_args(["--dataset_name", "data/birds"])
    assert (model_args.backbone, model_args.queue_size, objective.blur_p, objective.hue_jitter) == (
        "convnext-tiny-cpu", None, 0.5, None)


def test_short_cub100_run_lowers_the_loss_and_saves_loadable_models(cub100, tmp_path):
    argv = [
        "--dataset_name", str(cub100), "--max_train_samples", "48", "--max_eval_samples", "24",
        "--image_size", "32", "--backbone", "convnext-tiny-cpu", "--per_device_train_batch_size", "16",
        # Milder views than MoCo v2's so that 30 steps visibly lower InfoNCE on 48 images.
        "--crop_scale_min", "0.5", "--color_jitter", "0.2", "--blur_p", "0",
        "--max_steps", "30", "--learning_rate", "3e-3", "--warmup_steps", "0", "--logging_steps", "1",
        "--save_steps", "1000", "--synth_warmup_steps", "6", "--synth_ramp_steps", "6", "--seed", "0",
        "--output_dir", str(tmp_path / "run"), "--disable_tqdm", "true", "--report_to", "none",
    ]
    results = run_pretraining(*parse_args(argv))
    out = Path(results["output_dir"])
    history = json.loads((out / "train_results.json").read_text())
    assert history["num_train_images"] == 48 and history["skipped_images"] == {"train": 0, "test": 0}
    state = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
    ssl = [row["loss_ssl"] for row in state if "loss_ssl" in row]
    recon = [row["loss_recon"] for row in state if "loss_recon" in row]
    # Averages over a third of the run each: single InfoNCE values are noisy (random views, 16 images a batch).
    first, last = slice(0, 10), slice(-10, None)
    assert len(ssl) == 30
    assert sum(ssl[last]) < sum(ssl[first]) and sum(recon[last]) < sum(recon[first])
    assert type(AutoModel.from_pretrained(out)) is FGSSLModel
    assert type(AutoModel.from_pretrained(out / "encoder")) is FGSSLModel
    assert (out / "decoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert Path(results["pictures"]).is_file() and Path(results["curves"]).is_file()
    assert set(json.loads((out / "eval_results.json").read_text())) >= {"retrieval_map", "knn_top1", "linear_top1"}


@pytest.mark.parametrize("recon_target", ["view", "geometric"])
def test_pairs_sheet_shows_the_reconstruction_target_when_it_is_not_the_view(tmp_path, recon_target):
    from fgssl.training.pictures import save_pair_sheet

    objective = ObjectiveArguments(method="fgssl", recon_target=recon_target, synth_warmup_steps=0)
    trainer = make_trainer(tmp_path, objective=objective, steps=1)
    trainer.train()  # the last step keeps a sheet
    pictures = trainer.pictures
    assert {"input", "reconstruction", "perturbed", "gradcam"} <= set(pictures)
    assert ("target" in pictures) == (recon_target == "geometric")
    if recon_target == "geometric":
        assert pictures["target"].shape == pictures["input"].shape
        assert not torch.allclose(pictures["target"], pictures["input"])
    assert save_pair_sheet(pictures, tmp_path / "sheet.png").stat().st_size > 0


@pytest.mark.parametrize("base", ["moco", "simsiam"])
def test_torch_compile_keeps_h_in_the_graph_for_gradcam(base, tmp_path):
    # The GPU check's --compile runs failed with "differentiated Tensor ... not used in the graph": accelerate
    # compiled the whole model (TrainingArguments sets a backend whenever torch_compile is), so h came back as its
    # own graph output. aot_eager traces through AOTAutograd as inductor does, without compiling kernels.
    torch._dynamo.reset()
    model = FGSSLForPreTraining(tiny_fgssl_config("convnext", base=base, **method_config_kwargs("fgssl")))
    trainer = make_trainer(tmp_path, "fgssl", model=model, steps=2, torch_compile=True,
                           torch_compile_backend="aot_eager")
    assert not trainer.args.torch_compile and trainer.args.torch_compile_backend is None
    assert hasattr(model.fgssl.backbone, "_compiled_call_impl") and model.fgssl.backbone._compiled_call_impl
    trainer.train()  # the whole objective, Grad-CAM included, through accelerate's prepared model
    assert any("loss_synth" in row for row in trainer.state.log_history)
    assert not hasattr(trainer.model_wrapped, "_orig_mod")  # accelerate did not compile the wrapper
    torch._dynamo.reset()
