"""Tests of training/objective.py: each pure function of docs/method.md's training step against a reference."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from fgssl.modeling.modeling_fgssl import VarianceTracker
from fgssl.training.objective import (
    NUISANCE_MASK_MODES,
    gradcam_map,
    gradcam_mask,
    gradcam_scores,
    info_nce,
    lcr_loss,
    noise_scale,
    nuisance_mask,
    negative_cosine,
    nuisance_perturbation,
    output_std,
    perturb_features,
    reconstruction_loss,
    simsiam_loss,
    simsiam_scoring_loss,
    synth_loss_weight,
    synth_subset,
    variance_mask,
)


def _unit_rows(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ----------------------------------------------------------------------------- step 1: InfoNCE


def test_info_nce_with_queue_matches_hand_written_cross_entropy():
    q, k, queue = _unit_rows(5, 8, seed=0), _unit_rows(5, 8, seed=1), _unit_rows(7, 8, seed=2)
    tau = 0.2
    per_sample = []
    for i in range(5):
        positive = math.exp(float(q[i] @ k[i]) / tau)
        negatives = sum(math.exp(float(q[i] @ n) / tau) for n in queue)
        per_sample.append(-math.log(positive / (positive + negatives)))
    assert info_nce(q, k, queue, temperature=tau).item() == pytest.approx(np.mean(per_sample), rel=1e-10)


def test_info_nce_in_batch_matches_hand_written_cross_entropy():
    q, k = _unit_rows(6, 8, seed=3), _unit_rows(6, 8, seed=4)
    tau = 0.1
    per_sample = []
    for i in range(6):
        scores = [math.exp(float(q[i] @ k[j]) / tau) for j in range(6)]
        per_sample.append(-math.log(scores[i] / sum(scores)))
    expected = np.mean(per_sample)
    assert info_nce(q, k, None, temperature=tau).item() == pytest.approx(expected, rel=1e-10)
    # An empty queue (K = 0) means in-batch negatives (docs/method.md, momentum branch).
    assert info_nce(q, k, q.new_zeros(0, 8), temperature=tau).item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_is_near_zero_for_perfect_alignment_and_tiny_temperature():
    basis = torch.eye(8, dtype=torch.float64)
    q = k = basis[:4]
    queue = basis[4:]  # negatives orthogonal to every query
    assert info_nce(q, k, queue, temperature=0.01).item() < 1e-30
    assert info_nce(q, k, None, temperature=0.01).item() < 1e-30
    # ...and clearly positive when the keys are permuted, so the check above can fail.
    assert info_nce(q, k.roll(1, dims=0), None, temperature=0.01).item() > 10


def test_info_nce_does_not_send_gradient_into_the_keys():
    q = _unit_rows(4, 8, seed=5).requires_grad_()
    k = _unit_rows(4, 8, seed=6).requires_grad_()
    info_nce(q, k, None).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_info_nce_rejects_bad_temperature_and_shapes():
    q = _unit_rows(4, 8)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, q, None, temperature=0.0)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(q, q, _unit_rows(3, 5))


# ----------------------------------------------------------------------------- step 1 with base SimSiam


def test_simsiam_loss_on_hand_made_vectors():
    t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    # D(p, z) = -cos(p, z): aligned -1, orthogonal 0, opposite +1, 45 degrees -1/sqrt(2); the scale does not matter.
    p = t([1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0])
    z = t([5.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0])
    expected = torch.tensor([-1.0, 0.0, 1.0, -1 / math.sqrt(2)], dtype=torch.float64)
    torch.testing.assert_close(negative_cosine(p, z), expected)
    # Symmetric: D(p1, z2) / 2 + D(p2, z1) / 2, each averaged over the batch.
    p1, z2 = t([1.0, 0.0], [0.0, 1.0]), t([1.0, 0.0], [0.0, 1.0])  # mean D = -1
    p2, z1 = t([1.0, 0.0], [1.0, 0.0]), t([0.0, 1.0], [-1.0, 0.0])  # D = 0 and +1: mean 0.5
    assert simsiam_loss(p1, p2, z1, z2).item() == pytest.approx(0.5 * (-1.0 + 0.5))
    assert simsiam_scoring_loss(p1, z2).item() == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="B x d"):
        negative_cosine(p, z[:3])


def test_simsiam_loss_stops_the_gradient_at_the_targets():
    p1, p2 = _unit_rows(4, 8, seed=1).requires_grad_(), _unit_rows(4, 8, seed=2).requires_grad_()
    z1, z2 = _unit_rows(4, 8, seed=3).requires_grad_(), _unit_rows(4, 8, seed=4).requires_grad_()
    simsiam_loss(p1, p2, z1, z2).backward()
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    assert z1.grad is None and z2.grad is None
    # Through a shared network: the target branch z = g(x) gets a gradient only through the prediction of x.
    g = torch.nn.Linear(8, 8, dtype=torch.float64)
    x1, x2 = _unit_rows(4, 8, seed=5), _unit_rows(4, 8, seed=6)
    z1, z2 = g(x1), g(x2)
    (grad_z2,) = torch.autograd.grad(simsiam_loss(z1 * 2, z2 * 3, z1, z2), z2, retain_graph=True)
    # d/dz2 of D(p2, sg(z1)) with p2 = 3 z2 only: the target role of z2 in D(p1, sg(z2)) contributes nothing.
    (expected,) = torch.autograd.grad(0.5 * negative_cosine(z2 * 3, z1).mean(), z2)
    torch.testing.assert_close(grad_z2, expected)


def test_output_std_is_zero_for_a_collapsed_output_and_near_inv_sqrt_d_for_spread_outputs():
    d = 64
    collapsed = torch.randn(1, d).expand(256, d) * torch.rand(256, 1)  # every row the same direction
    assert output_std(collapsed).item() < 1e-6
    spread = torch.randn(4096, d, generator=torch.Generator().manual_seed(0))
    assert output_std(spread).item() == pytest.approx(d ** -0.5, rel=0.05)


# ----------------------------------------------------------------------------- step 2: variance


def _ema_reference(batches: list[np.ndarray], momentum: float) -> tuple[np.ndarray, np.ndarray]:
    mean, var = None, None
    for b in batches:
        bm, bv = b.mean(axis=0), b.var(axis=0)  # population variance
        if mean is None:
            mean, var = bm, bv
        else:
            mean = momentum * mean + (1 - momentum) * bm
            var = momentum * var + (1 - momentum) * bv
    return mean, var


def test_variance_tracker_ema_matches_numpy_reference():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, scale=1 + i, size=(16, 5)) for i in range(4)]
    tracker = VarianceTracker(5, momentum=0.9)
    assert not tracker.initialized
    for b in batches:
        tracker.update(torch.tensor(b, dtype=torch.float32))
    mean, var = _ema_reference(batches, 0.9)
    assert tracker.initialized
    np.testing.assert_allclose(tracker.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tracker.var.numpy(), var, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tracker.std.numpy(), np.sqrt(var), rtol=1e-5, atol=1e-5)


def test_variance_tracker_is_detached_and_checkpoints():
    tracker = VarianceTracker(3, momentum=0.5)
    h = torch.randn(8, 3, requires_grad=True)
    tracker.update(h * 2)
    assert tracker.mean.grad_fn is None and not tracker.var.requires_grad
    restored = VarianceTracker(3, momentum=0.5)
    restored.load_state_dict(tracker.state_dict())
    assert restored.initialized
    torch.testing.assert_close(restored.var, tracker.var)
    torch.testing.assert_close(restored.mean, tracker.mean)


def test_variance_mask_picks_the_low_variance_dimensions_after_tracking():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 0.01, 2.0, 0.5, 0.02, 3.0])
    tracker = VarianceTracker(6, momentum=0.8)
    for _ in range(5):
        tracker.update(torch.randn(64, 6, generator=g) * scales + 5.0)
    mask = variance_mask(tracker.var, rho=2 / 6)
    assert mask.dtype == torch.bool
    assert mask.nonzero().flatten().tolist() == [1, 4]
    assert variance_mask(tracker.var, rho=3 / 6).nonzero().flatten().tolist() == [1, 3, 4]


def test_masks_handle_rho_edges_and_reject_bad_rho():
    var = torch.tensor([3.0, 1.0, 2.0])
    assert not variance_mask(var, 0.0).any()
    assert variance_mask(var, 1.0).all()
    scores = torch.randn(4, 3)
    assert not gradcam_mask(scores, 0.0).any()
    assert gradcam_mask(scores, 1.0).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="rho"):
            variance_mask(var, bad)
        with pytest.raises(ValueError, match="rho"):
            gradcam_mask(scores, bad)


def _tracker_worker(rank: int, world_size: int, store: str, batches: list[torch.Tensor], out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        tracker = VarianceTracker(batches[0].shape[1], momentum=0.7)
        for step_batches in batches[rank::world_size]:
            tracker.update(step_batches)
        torch.save({"mean": tracker.mean, "var": tracker.var}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_variance_tracker_all_reduces_under_torch_distributed(tmp_path):
    # Two ranks each see half of every global batch; both must end with the statistics of the
    # global batches, i.e. what one process gets from the concatenated halves.
    g = torch.Generator().manual_seed(1)
    global_batches = [torch.randn(12, 4, generator=g) * torch.tensor([1.0, 2.0, 0.1, 5.0]) + i for i in range(3)]
    # rank r takes batches[r::2]; interleave so rank 0 gets the first rows of each step, rank 1 the rest
    shards = []
    for b in global_batches:
        shards += [b[:5], b[5:]]  # unequal shard sizes exercise the all-reduced count
    out = str(tmp_path / "stats")
    # fork starts the workers in a fraction of a second (spawn re-imports torch in each, ~10 s on 2 cores).
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    workers = mp.start_processes(
        _tracker_worker, args=(2, str(tmp_path / "store"), shards, out), nprocs=2, join=False,
        start_method=start_method,
    )
    deadline = time.monotonic() + 120
    while not workers.join(timeout=1):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail("the two distributed VarianceTracker workers did not finish within 120 s")
    single = VarianceTracker(4, momentum=0.7)
    for b in global_batches:
        single.update(b)
    for rank in range(2):
        stats = torch.load(f"{out}.{rank}")
        torch.testing.assert_close(stats["mean"], single.mean)
        torch.testing.assert_close(stats["var"], single.var)


# ----------------------------------------------------------------------------- step 3: Grad-CAM


class _TinyEncoder(torch.nn.Module):
    """conv -> A (B x C x H x W) -> h = mean_xy A -> linear -> normalise -> q."""

    def __init__(self, channels: int = 6, dim: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, channels, 3, padding=1)
        self.projector = torch.nn.Linear(channels, dim)

    def forward(self, x):
        a = self.conv(x)
        h = a.mean(dim=(2, 3))
        q = F.normalize(self.projector(h), dim=1)
        return a, h, q


def _moco_setup(batch: int = 5):
    torch.manual_seed(0)
    model = _TinyEncoder().double()
    x = torch.randn(batch, 3, 5, 7, dtype=torch.float64)
    keys, queue = _unit_rows(batch, 4, seed=7), _unit_rows(9, 4, seed=8)
    return model, x, keys, queue


def test_gradcam_scores_equal_backbone_gradcam_per_sample():
    model, x, keys, queue = _moco_setup()
    a, h, q = model(x)
    loss = info_nce(q, keys, queue)
    scores = gradcam_scores(loss, h)
    assert model.conv.weight.grad is None  # only autograd.grad through the projector, no .grad filled

    batch, _, height, width = a.shape
    per_sample_losses = [info_nce(q[i : i + 1], keys[i : i + 1], queue) for i in range(batch)]
    reference = torch.empty_like(scores)
    for i, loss_i in enumerate(per_sample_losses):
        (grad_a,) = torch.autograd.grad(loss_i, a, retain_graph=True)  # through the backbone's A
        other_rows = torch.cat([grad_a[:i], grad_a[i + 1 :]])
        assert other_rows.abs().max() == 0  # sample i's loss depends on its own query only
        alpha = (-grad_a[i]).mean(dim=(1, 2))  # Grad-CAM weights of sample i
        reference[i] = alpha * h[i].detach() * height * width
    # The batch loss is the mean of the per-sample losses: its gradient carries a factor 1/B.
    torch.testing.assert_close(scores * batch, reference)

    # One gradient of the summed loss through the backbone gives the same as the per-sample loop.
    (grad_a_sum,) = torch.autograd.grad(loss * batch, a, retain_graph=True)
    from_sum = (-grad_a_sum).mean(dim=(2, 3)) * h.detach() * height * width
    torch.testing.assert_close(from_sum, reference)

    assert model.conv.weight.grad is None
    loss.backward()  # the graph was retained for the optimiser step
    assert model.conv.weight.grad is not None


def test_gradcam_mask_picks_lowest_scores_per_row():
    scores = torch.tensor([[0.5, -1.0, 2.0, 0.0], [3.0, 2.0, 1.0, -4.0]])
    mask = gradcam_mask(scores, 0.5)
    expected = torch.tensor([[False, True, False, True], [False, False, True, True]])
    assert torch.equal(mask, expected)


def test_gradcam_map_matches_per_sample_classic_gradcam():
    model, x, keys, queue = _moco_setup()
    a, _, q = model(x)
    loss = info_nce(q, keys, queue)
    cam = gradcam_map(loss, a)
    assert cam.shape == (a.shape[0], a.shape[2], a.shape[3])
    assert model.conv.weight.grad is None
    batch = a.shape[0]
    for i in range(batch):
        loss_i = info_nce(q[i : i + 1], keys[i : i + 1], queue)
        (grad_a,) = torch.autograd.grad(loss_i, a, retain_graph=True)
        alpha = (-grad_a[i]).mean(dim=(1, 2))
        expected = torch.relu((alpha[:, None, None] * a[i].detach()).sum(0))
        torch.testing.assert_close(cam[i] * batch, expected)  # mean loss: factor 1/B, relu is homogeneous
    assert (cam >= 0).all() and cam.sum() > 0


# ----------------------------------------------------------------------------- step 4: the mask


def test_nuisance_mask_set_logic():
    var_mask = torch.tensor([True, True, False, False])
    grad_mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    t, f = True, False
    expected = {
        "union": [[t, t, t, f], [t, t, f, t]],
        "intersection": [[t, f, f, f], [f, f, f, f]],
        "variance": [[t, t, f, f], [t, t, f, f]],
        "gradcam": [[t, f, t, f], [f, f, f, t]],
    }
    for mode, rows in expected.items():
        assert torch.equal(nuisance_mask(var_mask, grad_mask, mode), torch.tensor(rows)), mode


def test_random_mode_picks_as_many_dims_per_row_as_union():
    g = torch.Generator().manual_seed(0)
    var_mask = torch.zeros(16, dtype=torch.bool)
    var_mask[:3] = True
    grad_mask = torch.rand(8, 16, generator=g) < torch.linspace(0.0, 0.6, 8)[:, None]
    union = nuisance_mask(var_mask, grad_mask, "union")
    random = nuisance_mask(var_mask, grad_mask, "random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(random.sum(1), union.sum(1))
    assert not torch.equal(random, union)  # chosen at random, not the criteria's dims
    again = nuisance_mask(var_mask, grad_mask, "random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(random, again)


def test_nuisance_mask_rejects_unknown_mode_naming_the_modes():
    with pytest.raises(ValueError) as info:
        nuisance_mask(torch.zeros(3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool), "both")
    for mode in NUISANCE_MASK_MODES:
        assert mode in str(info.value)


# ----------------------------------------------------------------------------- step 5: perturbation


def _feature_batch(batch: int = 6, channels: int = 10):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(batch, channels, generator=g, requires_grad=True)
    mask = torch.rand(batch, channels, generator=g) < 0.4
    mask[0, 0], mask[0, 1] = True, False  # at least one of each
    return h, mask


def test_gaussian_perturbation_changes_exactly_the_masked_entries():
    h, mask = _feature_batch()
    before = h.detach().clone()
    std = torch.linspace(0.5, 2.0, h.shape[1])
    out = perturb_features(h, mask, "gaussian", sigma=0.3, std=std, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out != before, mask)
    assert torch.equal(h.detach(), before)  # a copy, h itself untouched
    assert not out.requires_grad


def test_gaussian_perturbation_scale_is_sigma_times_std():
    h = torch.zeros(4000, 4)
    std = torch.tensor([0.5, 1.0, 2.0, 4.0])
    out = perturb_features(h, torch.ones_like(h, dtype=torch.bool), "gaussian", sigma=0.5, std=std,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.std(0), 0.5 * std, rtol=0.05, atol=0.0)


def test_shuffle_perturbation_takes_other_images_values_on_masked_entries():
    h, mask = _feature_batch()
    out = perturb_features(h, mask, "shuffle", generator=torch.Generator().manual_seed(0))
    values = h.detach()
    assert torch.equal(out != values, mask)
    for i, c in mask.nonzero().tolist():
        others = torch.cat([values[:i, c], values[i + 1 :, c]])
        assert (others == out[i, c]).any()  # the value of another image in the same dimension


def test_shuffle_never_pairs_an_image_with_itself():
    # B = 2: the only permutation without fixed points swaps the two rows.
    pair = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    for seed in range(10):
        swapped = perturb_features(pair, torch.ones(2, 2, dtype=torch.bool), "shuffle",
                                   generator=torch.Generator().manual_seed(seed))
        assert torch.equal(swapped, pair.flip(0))
    # B = 3 (a plain random permutation has a fixed point 2 times in 3): every row always changes.
    rows = torch.tensor([[1.0], [2.0], [3.0]])
    for seed in range(30):
        out = perturb_features(rows, torch.ones(3, 1, dtype=torch.bool), "shuffle",
                               generator=torch.Generator().manual_seed(seed))
        assert (out != rows).all()
        assert sorted(out.flatten().tolist()) == [1.0, 2.0, 3.0]  # a permutation of the batch


def test_perturbation_rejects_unknown_mode_and_missing_std():
    h, mask = _feature_batch()
    with pytest.raises(ValueError, match="gaussian, shuffle"):
        perturb_features(h, mask, "swap")
    with pytest.raises(ValueError, match="std"):
        perturb_features(h, mask, "gaussian")


@pytest.mark.parametrize("mode", ["gaussian", "shuffle"])
def test_feature_map_perturbation_pools_to_the_perturbed_vector(mode):
    # docs/method.md step 5 with the feature_map decoder: the same draw perturbs channels of A, so pool(A') == h'.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 10, 4, 4, generator=g)
    h = a.mean(dim=(2, 3))
    mask = torch.rand(6, 10, generator=g) < 0.5
    std = torch.linspace(0.5, 2.0, 10)
    h_new, a_new = perturb_features(h, mask, mode, sigma=0.7, std=std, generator=torch.Generator().manual_seed(1),
                                    feature_map=a)
    torch.testing.assert_close(a_new.mean(dim=(2, 3)), h_new, rtol=0, atol=1e-6)
    # The same draw as without the map, and unmasked channel maps are untouched at every position.
    alone = perturb_features(h, mask, mode, sigma=0.7, std=std, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(h_new, alone, rtol=0, atol=0)
    keep = ~mask
    assert torch.equal(a_new[keep], a[keep])
    changed = (a_new != a).flatten(2).any(-1)
    assert torch.equal(changed, mask)
    if mode == "gaussian":  # one shift per (sample, channel): the map moves as a whole, its shape is kept
        delta = a_new - a
        torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta))
    else:  # a whole channel map taken from one other image
        for i, c in mask.nonzero().tolist():
            assert any(torch.equal(a_new[i, c], a[j, c]) for j in range(6) if j != i)


def test_noise_scale_per_dim_and_global():
    std = torch.tensor([0.1, 0.2, 0.3, 1.4])
    torch.testing.assert_close(noise_scale(std, "per_dim"), std)
    torch.testing.assert_close(noise_scale(std, "global"), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="per_dim, global"):
        noise_scale(std, "local")
    # Under `global` the low-variance dims of V get noise of the typical size, not the smallest noise.
    h = torch.zeros(4000, 4)
    out = perturb_features(h, torch.ones_like(h, dtype=torch.bool), "gaussian", sigma=1.0,
                           std=noise_scale(std, "global"), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.std(0), torch.full((4,), 0.5), rtol=0.05, atol=0.0)


def test_nuisance_perturbation_is_the_composition_of_steps_2_to_5():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(8, 12, generator=g, requires_grad=True)
    a = h.detach()[:, :, None, None].expand(8, 12, 2, 2).clone()
    keys = F.normalize(torch.randn(8, 12, generator=g), dim=1)
    loss = info_nce(F.normalize(h, dim=1), keys)
    tracker, reference = VarianceTracker(12, 0.5), VarianceTracker(12, 0.5)
    tracker.update(torch.randn(8, 12, generator=g) * torch.linspace(0.1, 2, 12))
    reference.load_state_dict(tracker.state_dict())
    out = nuisance_perturbation(loss, h, tracker, rho_variance=0.25, rho_gradcam=0.25, mask_mode="union",
                                perturbation="gaussian", sigma=0.5, scale="global", feature_map=a,
                                generator=torch.Generator().manual_seed(3))
    # By hand: fold h in, V, G_i, union, perturb with the global scale.
    reference.update(h.detach())
    var_mask = variance_mask(reference.var, 0.25)
    mask = nuisance_mask(var_mask, gradcam_mask(gradcam_scores(loss, h), 0.25), "union")
    h_new, a_new = perturb_features(h, mask, "gaussian", 0.5, std=noise_scale(reference.std, "global"),
                                    generator=torch.Generator().manual_seed(3), feature_map=a)
    assert torch.equal(out.variance_mask, var_mask) and torch.equal(out.mask, mask)
    torch.testing.assert_close(out.features, h_new)
    torch.testing.assert_close(out.feature_map, a_new)
    torch.testing.assert_close(tracker.running_var, reference.running_var)
    # Analysis code can read the statistics without folding the batch in.
    before = tracker.running_var.clone()
    nuisance_perturbation(loss, h, tracker, rho_variance=0.25, rho_gradcam=0.25, update_statistics=False)
    assert torch.equal(tracker.running_var, before)


# ----------------------------------------------------------------------------- step 6: reconstruction


def test_reconstruction_loss_resizes_the_target():
    target = torch.full((2, 3, 32, 24), 0.3)
    recon = torch.full((2, 3, 8, 8), 0.3, requires_grad=True)
    assert reconstruction_loss(recon, target).item() == pytest.approx(0.0, abs=1e-12)
    off = torch.full((2, 3, 8, 8), 0.5, requires_grad=True)
    loss = reconstruction_loss(off, target)
    assert loss.item() == pytest.approx(0.04, rel=1e-5)
    loss.backward()
    assert off.grad is not None and off.grad.abs().sum() > 0


def test_reconstruction_loss_downsamples_with_antialiasing():
    # A one-pixel checkerboard averages to grey when downsampled with antialiasing (aliasing would not).
    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    target = board.float().expand(1, 3, 16, 16)
    grey = torch.full((1, 3, 4, 4), 0.5)
    assert reconstruction_loss(grey, target).item() < 1e-3
    assert reconstruction_loss(torch.zeros(1, 3, 4, 4), target).item() > 0.2


# ----------------------------------------------------------------------------- steps 7-8


def test_synth_loss_weight_schedule():
    weights = [synth_loss_weight(step, nu=2.0, warmup_steps=10, ramp_steps=4) for step in range(20)]
    assert weights[:10] == [0.0] * 10
    assert weights[10:14] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert weights[14:] == [2.0] * 6
    assert synth_loss_weight(3, nu=1.5, warmup_steps=3, ramp_steps=0) == 1.5
    assert synth_loss_weight(2, nu=1.5, warmup_steps=3, ramp_steps=0) == 0.0
    with pytest.raises(ValueError):
        synth_loss_weight(0, nu=-1.0, warmup_steps=0, ramp_steps=0)


def test_synth_subset_sizes():
    g = torch.Generator().manual_seed(0)
    assert synth_subset(10, 0.0, g).numel() == 0
    assert synth_subset(10, 0.01, g).numel() == 1  # at least one when fraction > 0
    assert synth_subset(10, 0.01, g, minimum=2).numel() == 2  # SimSiam's BatchNorm needs two
    assert synth_subset(1, 0.5, g, minimum=2).numel() == 1  # never more than the batch
    assert synth_subset(10, 0.0, g, minimum=2).numel() == 0
    assert synth_subset(10, 0.3, g).numel() == 3
    assert torch.equal(synth_subset(10, 1.0, g), torch.arange(10))
    half = synth_subset(64, 0.5, g)
    assert half.dtype == torch.long and half.numel() == 32
    assert half.unique().numel() == 32 and half.min() >= 0 and half.max() < 64
    assert not torch.equal(half, torch.arange(32))  # drawn at random
    with pytest.raises(ValueError, match="fraction"):
        synth_subset(10, 1.2)


# ----------------------------------------------------------------------------- LCR baseline


def test_lcr_loss_is_zero_for_matching_distributions_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    cam = torch.rand(3, 4, 5, generator=g) + 0.1
    matching = (cam.log() + 7.0).requires_grad_()  # softmax(log cam + c) = cam / sum(cam)
    assert lcr_loss(matching, cam).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    loss = lcr_loss(other, cam)
    assert loss.item() > 1e-3
    loss.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_lcr_loss_is_the_mean_kl_of_cam_to_screening_distribution():
    g = torch.Generator().manual_seed(2)
    cam = torch.rand(4, 3, 5, generator=g)
    logits = torch.randn(4, 3, 5, generator=g)
    cam_dist = cam.flatten(1) / cam.flatten(1).sum(1, keepdim=True)
    reference = F.kl_div(F.log_softmax(logits.flatten(1), dim=1), cam_dist, reduction="batchmean")
    assert lcr_loss(logits, cam).item() == pytest.approx(reference.item(), rel=1e-5)


def test_lcr_loss_leaves_out_samples_with_an_empty_cam():
    g = torch.Generator().manual_seed(1)
    cam = torch.rand(2, 3, 3, generator=g) + 0.1
    logits = torch.randn(2, 3, 3, generator=g)
    with_empty = torch.cat([cam[:1], torch.zeros(1, 3, 3)])
    assert lcr_loss(logits, with_empty).item() == pytest.approx(lcr_loss(logits[:1], cam[:1]).item())
    assert lcr_loss(logits, torch.zeros(2, 3, 3)).item() == 0.0
