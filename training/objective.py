"""The training objective of docs/method.md, as small pure functions (tensors in, tensors out).

Read this file top to bottom beside docs/method.md (``docs/method.md`` in the development tree), section
"One training step":

=====  ==========================================  ==========================================
step   what                                        here
=====  ==========================================  ==========================================
1      SSL loss L_C = InfoNCE(q, k, queue, tau)    :func:`info_nce`
1      ... or, base SimSiam, the negative cosine   :func:`simsiam_loss`, :func:`output_std` (collapse)
2      variance criterion, the set V               :class:`VarianceTracker`, :func:`variance_mask`
3      Grad-CAM criterion, the sets G_i            :func:`gradcam_scores`, :func:`gradcam_mask`
3      ... its loss with SimSiam (per sample)      :func:`simsiam_scoring_loss`
4      nuisance mask M                             :func:`nuisance_mask`
5      perturbation h -> h' (and A -> A')          :func:`noise_scale`, :func:`perturb_features`
2-5    the whole chain, ONE function               :func:`nuisance_perturbation` (``methods.perturbation_step``)
6      reconstruction loss L_R                     :func:`reconstruction_loss`
7      synthesized-pair loss L_Cp (subset)         :func:`info_nce` / :func:`simsiam_loss`, :func:`synth_subset`
8      total loss, ramp of nu                      :func:`synth_loss_weight`
LCR    baseline: Grad-CAM map + KL term            :func:`gradcam_map`, :func:`lcr_loss`
=====  ==========================================  ==========================================

Shapes: B batch, C feature dimensions of ``h``, d projector output, K queue length,
H x W spatial size of the feature map ``A``, S the decoder's output size.

The networks are run by the base objectives and the methods (``training/bases.py``, ``training/methods.py``),
which hand the tensors in; the only piece of ``modeling`` used here is
:class:`VarianceTracker`, a declared submodule of the pre-training model (it is training state saved with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..modeling.modeling_fgssl import VarianceTracker

NUISANCE_MASK_MODES = ("union", "intersection", "variance", "gradcam", "random")
PERTURBATION_MODES = ("gaussian", "shuffle")
#: docs/method.md step 5 [choice]: the gaussian noise of a dimension in its own running std, or in the mean one.
NOISE_SCALES = ("per_dim", "global")
#: docs/method.md step 6 [choice]: L_R's target, the view v1 itself or its crop and flip without photometric jitter.
RECON_TARGETS = ("view", "geometric")


# --------------------------------------------------------------------------------------------
# Argument checks shared by several steps
# --------------------------------------------------------------------------------------------


def _check_fraction(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a fraction in [0, 1], else raise a ValueError naming it."""
    value = float(value)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value}.")
    return value


def _num_selected(fraction: float, total: int) -> int:
    """How many of ``total`` items a ``fraction`` selects, rounded to the nearest integer.

    Rounding (not flooring) keeps e.g. 0.29 * 100 = 28.999... at 29; ``fraction`` 0 gives 0, 1 gives all.
    """
    return min(total, int(math.floor(fraction * total + 0.5)))


def _check_matrix(t: Tensor, name: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor (B x C), got shape {tuple(t.shape)}.")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) noise drawn on the generator's device (a CPU generator cannot draw on CUDA)."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal noise drawn on the generator's device, moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device).to(device)


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    draw_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=draw_device).to(device)


# --------------------------------------------------------------------------------------------
# Step 1 (and step 7): InfoNCE, the MoCo v2 contrastive loss
# --------------------------------------------------------------------------------------------


def info_nce(q: Tensor, k: Tensor, negatives: Tensor | None = None, temperature: float = 0.2,
             batch_keys: Tensor | None = None, batch_offset: int = 0) -> Tensor:
    """InfoNCE loss of queries against their positive keys (docs/method.md steps 1 and 7).

    Args:
        q: B x d queries, L2-normalised (carry the gradient).
        k: B x d positive keys, L2-normalised; row i is the positive of query i.
        negatives: K x d queue of negative keys (MoCo v2: logits ``[q_i . k_i, q_i @ queue.T]``,
            the positive at index 0), or ``None`` (or an empty K = 0 queue) for in-batch negatives:
            logits ``q @ k.T``, the positive of row i at column i.
        temperature: tau > 0.
        batch_keys: in-batch negatives only: the keys of the whole global batch, (world x B) x d, gathered from
            every process in rank order, this process's `k` at rows ``batch_offset .. batch_offset + B``; then the
            logits are ``q @ batch_keys.T`` (B x world*B) and the positive of row i is column ``batch_offset + i``,
            so the negatives grow with the number of processes (as SimCLR and MoCo v3 do). Default: `k` alone.

    Returns:
        Scalar, the mean over the batch of the per-sample cross-entropy.

    Keys and negatives are targets: they are detached here, as in MoCo (stop-gradient on the key
    branch). Hence sample i's loss depends only on its own query q_i, which is what lets step 3 read
    every per-sample gradient off one gradient of the (mean) loss.
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be B x d, got {tuple(q.shape)} and {tuple(k.shape)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    k = k.detach()
    if negatives is not None and negatives.shape[0] == 0:
        negatives = None  # docs/method.md: queue size K = 0 means in-batch negatives
    if negatives is None:
        keys = k if batch_keys is None else batch_keys.detach()
        if batch_keys is not None and not torch.equal(keys[batch_offset:batch_offset + k.shape[0]], k):
            raise ValueError("batch_keys must hold k at rows batch_offset .. batch_offset + B (the gathered keys).")
        logits = q @ keys.T  # B x B (or B x world*B); row i's positive at column batch_offset + i
        labels = torch.arange(q.shape[0], device=q.device) + batch_offset
    else:
        if negatives.dim() != 2 or negatives.shape[1] != q.shape[1]:
            raise ValueError(
                f"negatives must be K x d with d = {q.shape[1]} (the queue), got {tuple(negatives.shape)}."
            )
        positive = (q * k).sum(dim=1, keepdim=True)  # B x 1
        negative = q @ negatives.detach().to(q.dtype).T  # B x K
        logits = torch.cat([positive, negative], dim=1)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, labels)


# --------------------------------------------------------------------------------------------
# Step 1 (and step 7) with base SimSiam: symmetric negative cosine with stop-gradient
# --------------------------------------------------------------------------------------------


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's ``D(p, z)`` per sample: ``-cos(p_i, sg(z_i))``, B values in [-1, 1].

    Args:
        p: B x d predictor outputs (carry the gradient).
        z: B x d projector outputs of the other view: the target, detached here (SimSiam's stop-gradient, without
            which the two branches collapse together).
    """
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"p and z must both be B x d, got {tuple(p.shape)} and {tuple(z.shape)}.")
    return -F.cosine_similarity(p, z.detach(), dim=1)


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """SimSiam's symmetric loss ``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2``, averaged over the batch (docs/method.md
    "Base SSL objective": L_C, and L_Cp on the synthesized pair).

    Args:
        p1, p2: B x d predictor outputs of views 1 and 2.
        z1, z2: B x d projector outputs of views 1 and 2 (targets: no gradient flows into them).

    Returns:
        Scalar in [-1, 1]; -1 when every prediction points along the other view's projection.
    """
    return 0.5 * (negative_cosine(p1, z2).mean() + negative_cosine(p2, z1).mean())


def simsiam_scoring_loss(p1: Tensor, z2: Tensor) -> Tensor:
    """The part of the SimSiam L_C that depends on view 1's features: ``mean_i D(p1_i, sg(z2_i)) / 2``, scalar.

    Its gradient with respect to ``h1`` is that of :func:`simsiam_loss` (``z1`` enters only as a stop-gradient
    target). SimSiam's BatchNorm couples the samples of a batch, so compute ``p1`` from ``h1`` with the batch
    statistics held constant (``FGSSLForPreTraining.simsiam_heads(h1, freeze_batch_statistics=True)``): then
    sample i's term depends on ``h1_i`` alone, and row i of the gradient of this loss is sample i's own gradient,
    which is what :func:`gradcam_scores` needs (as with MoCo, a mean loss scales every row by 1/B).
    """
    return 0.5 * negative_cosine(p1, z2).mean()


def output_std(z: Tensor) -> Tensor:
    """Collapse monitor (SimSiam paper, Fig. 2): mean over dimensions of the per-dimension std over the batch of
    the L2-normalised projector output. ~0 when every image maps to one point (collapse), ~1/sqrt(d) when the
    outputs spread like random unit vectors.

    Args:
        z: B x d projector outputs (B >= 2).

    Returns:
        Scalar, detached.
    """
    _check_matrix(z, "z")
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


# --------------------------------------------------------------------------------------------
# Step 2: variance criterion (running statistics of h, the set V)
# --------------------------------------------------------------------------------------------


def variance_mask(var: Tensor, rho: float) -> Tensor:
    """The set V of docs/method.md step 2: the ``rho`` fraction of dimensions with the lowest variance.

    Args:
        var: C running variances (``VarianceTracker.var``).
        rho: rho_v in [0, 1]; the count is ``round(rho * C)`` (0 -> empty mask, 1 -> every dimension).

    Returns:
        Bool C mask, True on the selected low-variance dimensions (the same for every sample).
    """
    rho = _check_fraction(rho, "rho (rho_v)")
    if var.dim() != 1:
        raise ValueError(f"var must be a 1-D tensor of C variances, got shape {tuple(var.shape)}.")
    n = _num_selected(rho, var.shape[0])
    mask = torch.zeros(var.shape, dtype=torch.bool, device=var.device)
    mask[torch.topk(var.detach(), n, largest=False).indices] = True
    return mask


# --------------------------------------------------------------------------------------------
# Step 3: Grad-CAM criterion induced from the SSL loss (the sets G_i)
# --------------------------------------------------------------------------------------------


def gradcam_scores(loss: Tensor, h: Tensor) -> Tensor:
    """Per-sample, per-dimension Grad-CAM contributions ``s_ic = (d(-L)/dh_ic) * h_ic`` (step 3).

    With ``h = mean_xy A`` the Grad-CAM weight of channel c (spatial mean of ``d(-L)/dA_c``) is
    ``d(-L)/dh_c / (H * W)``, so ``s_ic`` is channel c's share of sample i's pre-ReLU CAM, up to
    the constant factor H * W.

    The gradient is taken with ``torch.autograd.grad(loss, h, retain_graph=True)``: it runs back
    through the projector only (never the backbone), fills no ``.grad``, and leaves the graph intact
    for the later ``loss.backward()``. Because each sample's loss depends only on its own query
    (see :func:`info_nce`), row i of the gradient of the batch loss is sample i's own gradient; for a
    *mean* loss every row is scaled by 1/B, which does not change the per-row ranking. A loss whose samples
    are coupled (SimSiam's BatchNorm) must first be made per-sample: :func:`simsiam_scoring_loss`.

    Args:
        loss: scalar SSL loss L_C computed from ``h`` (e.g. :func:`info_nce` of ``g(h)``), or a loss with the same
            gradient rows per sample (:func:`simsiam_scoring_loss`).
        h: B x C pooled features that ``loss`` was computed from (part of its graph).

    Returns:
        B x C scores, detached.
    """
    _check_matrix(h, "h")
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}; reduce it (mean) first.")
    if not h.requires_grad:
        raise ValueError("h does not require grad: compute the loss from h inside the autograd graph.")
    (grad_h,) = torch.autograd.grad(loss, h, retain_graph=True)
    return (-grad_h * h).detach()


def gradcam_mask(scores: Tensor, rho: float) -> Tensor:
    """The sets G_i of docs/method.md step 3: per row, the ``rho`` fraction of dimensions with the lowest score.

    Args:
        scores: B x C scores from :func:`gradcam_scores`.
        rho: rho_g in [0, 1]; the count per row is ``round(rho * C)``.

    Returns:
        Bool B x C mask, True on the dimensions the SSL objective relies on least for that image.
    """
    rho = _check_fraction(rho, "rho (rho_g)")
    _check_matrix(scores, "scores")
    n = _num_selected(rho, scores.shape[1])
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    lowest = torch.topk(scores.detach(), n, dim=1, largest=False).indices  # B x n
    return mask.scatter_(1, lowest, True)


# --------------------------------------------------------------------------------------------
# Step 4: the nuisance mask M
# --------------------------------------------------------------------------------------------


def _random_mask_like(counts: Tensor, num_features: int, generator: torch.Generator | None) -> Tensor:
    """Bool B x C mask with ``counts[i]`` dimensions of row i chosen uniformly at random."""
    keys = _rand((counts.shape[0], num_features), generator, counts.device)
    ranks = keys.argsort(dim=1).argsort(dim=1)  # a uniformly random ranking of the dims per row
    return ranks < counts.unsqueeze(1)


def nuisance_mask(
    var_mask: Tensor, grad_mask: Tensor, mode: str, generator: torch.Generator | None = None
) -> Tensor:
    """Combine the two criteria into the nuisance mask M (docs/method.md step 4).

    Args:
        var_mask: bool C, the set V (:func:`variance_mask`), shared by all samples.
        grad_mask: bool B x C, the sets G_i (:func:`gradcam_mask`).
        mode: ``union`` (V or G_i, the default of the method), ``intersection`` (V and G_i),
            ``variance`` (V only), ``gradcam`` (G_i only), or ``random``: per row, as many dimensions
            as ``union`` picks, chosen uniformly at random (the control showing whether the criteria
            matter).
        generator: random source for ``random``.

    Returns:
        Bool B x C mask, True on the dimensions to perturb.
    """
    if mode not in NUISANCE_MASK_MODES:
        raise ValueError(f"Unknown nuisance mask mode {mode!r}; choose one of {', '.join(NUISANCE_MASK_MODES)}.")
    _check_matrix(grad_mask, "grad_mask")
    if var_mask.shape != grad_mask.shape[1:]:
        raise ValueError(
            f"var_mask must have one entry per feature dimension (C = {grad_mask.shape[1]}), "
            f"got shape {tuple(var_mask.shape)}."
        )
    var_rows = var_mask.bool().unsqueeze(0).expand_as(grad_mask)
    grad_mask = grad_mask.bool()
    union = var_rows | grad_mask
    if mode == "union":
        return union
    if mode == "intersection":
        return var_rows & grad_mask
    if mode == "variance":
        return var_rows.clone()
    if mode == "gradcam":
        return grad_mask.clone()
    return _random_mask_like(union.sum(dim=1), grad_mask.shape[1], generator)


# --------------------------------------------------------------------------------------------
# Step 5: perturbation of the nuisance dimensions
# --------------------------------------------------------------------------------------------


def _derangement(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A random permutation of ``range(n)`` with no fixed point when n > 1 (one random n-cycle).

    Each element is sent to its successor in a random ordering, so no row is paired with itself and
    every masked entry of :func:`perturb_features` (mode ``shuffle``) takes another image's value.
    """
    order = _randperm(n, generator, device)
    pi = torch.empty_like(order)
    pi[order] = order.roll(-1)
    return pi


def noise_scale(std: Tensor, mode: str = "per_dim") -> Tensor:
    """The scale ``s_c`` of the gaussian perturbation (docs/method.md step 5 [choice]), C.

    ``per_dim``: the running std of each dimension. V holds the dimensions of lowest std, so under ``per_dim``
    they get the smallest noise by construction. ``global``: the mean running std over all dimensions, so every
    selected dimension gets noise of the data's typical size.
    """
    if mode not in NOISE_SCALES:
        raise ValueError(f"Unknown noise scale {mode!r}; choose one of {', '.join(NOISE_SCALES)}.")
    if std.dim() != 1:
        raise ValueError(f"std must be a 1-D tensor of C standard deviations, got shape {tuple(std.shape)}.")
    std = std.detach()
    return std if mode == "per_dim" else std.mean().expand_as(std)


def perturb_features(
    h: Tensor,
    mask: Tensor,
    mode: str = "gaussian",
    sigma: float = 1.0,
    std: Tensor | None = None,
    generator: torch.Generator | None = None,
    feature_map: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Perturb the masked (nuisance) entries of a detached copy of ``h`` (docs/method.md step 5).

    Modes:
        ``gaussian``: ``h'_ic = h_ic + M_ic * sigma * std_c * eps_ic``, eps ~ N(0, 1); needs ``std``
            (C, the noise scale, :func:`noise_scale` of ``VarianceTracker.std``).
        ``shuffle``: ``h'_ic = h_{pi(i) c}`` where ``M_ic``, with pi a random permutation of the
            batch without fixed points (for B > 1): the nuisance values of another image.

    With ``feature_map`` (``A``, B x C x H x W, whose spatial mean is ``h``), the same draw also perturbs the
    channels of ``A``: ``gaussian`` adds the one shift of (i, c) at every position, ``shuffle`` takes the whole
    map of channel c from image pi(i); so ``mean_xy(A') == h'``.

    Args:
        h: B x C features.
        mask: bool B x C nuisance mask (:func:`nuisance_mask`).

    Returns:
        ``h'`` (B x C, no gradient; unmasked entries equal ``h`` exactly), or ``(h', A')`` with ``feature_map``.
    """
    if mode not in PERTURBATION_MODES:
        raise ValueError(f"Unknown perturbation mode {mode!r}; choose one of {', '.join(PERTURBATION_MODES)}.")
    _check_matrix(h, "h")
    if mask.shape != h.shape:
        raise ValueError(f"mask must have the shape of h {tuple(h.shape)}, got {tuple(mask.shape)}.")
    if feature_map is not None and (feature_map.dim() != 4 or feature_map.shape[:2] != h.shape):
        raise ValueError(f"feature_map must be B x C x H x W with B x C = {tuple(h.shape)}, "
                         f"got {tuple(feature_map.shape)}.")
    h = h.detach()
    a = feature_map.detach() if feature_map is not None else None
    mask = mask.bool()
    if mode == "shuffle":
        pi = _derangement(h.shape[0], generator, h.device)
        h_new = torch.where(mask, h[pi], h)
        a_new = torch.where(mask[:, :, None, None], a[pi], a) if a is not None else None
    else:
        if std is None:
            raise ValueError("gaussian perturbation needs std (C): pass the noise scale, noise_scale(tracker.std).")
        if std.shape != h.shape[1:]:
            raise ValueError(f"std must have one entry per feature dimension (C = {h.shape[1]}), "
                             f"got {tuple(std.shape)}.")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        eps = _randn(tuple(h.shape), generator, h.device).to(h.dtype)
        shift = torch.where(mask, sigma * std.detach().to(h) * eps, torch.zeros_like(h))
        h_new = h + shift
        a_new = a + shift.to(a.dtype)[:, :, None, None] if a is not None else None
    return h_new if a is None else (h_new, a_new)


@dataclass
class Perturbation:
    """Steps 2-5 of one training step: the criteria, the mask, and the perturbed features."""

    variance_mask: Tensor  # bool C, the set V
    gradcam_scores: Tensor  # B x C, s_ic
    gradcam_mask: Tensor  # bool B x C, the sets G_i
    mask: Tensor  # bool B x C, M
    features: Tensor  # B x C, h'
    feature_map: Tensor | None  # B x C x H x W, A' (when a map was given)


def nuisance_perturbation(
    loss: Tensor,
    h: Tensor,
    tracker: VarianceTracker,
    *,
    rho_variance: float,
    rho_gradcam: float,
    mask_mode: str = "union",
    perturbation: str = "gaussian",
    sigma: float = 1.0,
    scale: str = "per_dim",
    feature_map: Tensor | None = None,
    update_statistics: bool = True,
    generator: torch.Generator | None = None,
) -> Perturbation:
    """docs/method.md steps 2-5 in one call, the only place they are composed (the trainer and the benchmarks call
    it with a run's knobs through ``training.methods.perturbation_step``).

    2. fold ``h`` into the running statistics (all-reduced across processes) and take V, the ``rho_variance``
       fraction of lowest-variance dims; 3. the Grad-CAM scores of the SSL ``loss`` (through the projector only)
       and G_i, the ``rho_gradcam`` fraction of lowest-scored dims per sample; 4. the mask M (``mask_mode``);
       5. perturb a detached copy of ``h`` (and of ``feature_map``, the same draw) where M.

    Args:
        loss: scalar loss whose gradient row i with respect to ``h`` is sample i's own gradient of L_C. MoCo: L_C
            itself. SimSiam: :func:`simsiam_scoring_loss` of heads re-run with frozen BatchNorm statistics on a
            detached copy of ``h`` (pass that copy as ``h``: its values are ``h``'s, so V and h' are unchanged).
        h: B x C features inside the autograd graph of ``loss``.
        tracker: the model's :class:`VarianceTracker`.
        update_statistics: False to read the statistics without folding this batch in (analysis code).
    """
    if update_statistics:
        tracker.update(h.detach())
    var_mask = variance_mask(tracker.var, rho_variance)
    scores = gradcam_scores(loss, h)
    grad_mask = gradcam_mask(scores, rho_gradcam)
    mask = nuisance_mask(var_mask, grad_mask, mask_mode, generator=generator)
    perturbed = perturb_features(h, mask, perturbation, sigma, std=noise_scale(tracker.std, scale),
                                 generator=generator, feature_map=feature_map)
    h_new, a_new = perturbed if feature_map is not None else (perturbed, None)
    return Perturbation(var_mask, scores, grad_mask, mask, h_new, a_new)


# --------------------------------------------------------------------------------------------
# Step 6: reconstruction loss
# --------------------------------------------------------------------------------------------


def reconstruction_loss(recon: Tensor, target: Tensor) -> Tensor:
    """``L_R = mean |D(h) - v1|^2`` with ``v1`` resized to the decoder's size S (docs/method.md step 6).

    Args:
        recon: B x 3 x S x S decoder output D(h).
        target: B x 3 x H x W input view v1 (a target: detached). It is resized with bilinear
            interpolation and antialiasing, so that downsampling averages rather than aliases.

    Returns:
        Scalar mean squared error.
    """
    if recon.dim() != 4 or target.dim() != 4 or recon.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"recon and target must be B x 3 x height x width with the same B and channels, "
            f"got {tuple(recon.shape)} and {tuple(target.shape)}."
        )
    # At least fp32: under bf16 autocast the decoder output is bf16, and CPU has no bf16 antialiased resize.
    dtype = torch.promote_types(recon.dtype, torch.float32)
    target = target.detach().to(dtype)
    if target.shape[-2:] != recon.shape[-2:]:
        target = F.interpolate(target, size=recon.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return F.mse_loss(recon.to(dtype), target)


# --------------------------------------------------------------------------------------------
# Steps 7-8: which samples are synthesized, and the weight nu of L_Cp
# --------------------------------------------------------------------------------------------


def synth_loss_weight(step: int, nu: float, warmup_steps: int, ramp_steps: int) -> float:
    """Weight of L_Cp at optimiser step ``step`` (0-based) (docs/method.md step 8).

    0 while ``step < warmup_steps`` (the decoder first learns to reconstruct), then rises linearly
    and reaches ``nu`` after ``ramp_steps`` steps: ``nu * min(1, (step - warmup_steps + 1) / ramp_steps)``.
    ``ramp_steps = 0`` switches straight to ``nu``.
    """
    if nu < 0 or warmup_steps < 0 or ramp_steps < 0:
        raise ValueError(
            f"nu, warmup_steps and ramp_steps must be >= 0, got nu={nu}, "
            f"warmup_steps={warmup_steps}, ramp_steps={ramp_steps}."
        )
    if step < warmup_steps:
        return 0.0
    if ramp_steps == 0:
        return float(nu)
    return float(nu) * min(1.0, (step - warmup_steps + 1) / ramp_steps)


def synth_subset(batch_size: int, fraction: float, generator: torch.Generator | None = None,
                 minimum: int = 1) -> Tensor:
    """Indices of the samples whose pair is synthesized in this step (docs/method.md step 7).

    ``round(fraction * batch_size)`` distinct indices drawn at random, at least ``minimum`` (capped at the batch)
    when ``fraction > 0`` (so a small batch still gets a pair; SimSiam's BatchNorm needs 2), none when
    ``fraction == 0``.

    Returns:
        Sorted LongTensor of indices (on the generator's device, CPU by default).
    """
    fraction = _check_fraction(fraction, "fraction (synthesized fraction of the batch)")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}.")
    n = _num_selected(fraction, batch_size)
    if fraction > 0:
        n = max(n, min(minimum, batch_size))
    device = generator.device if generator is not None else torch.device("cpu")
    chosen = torch.randperm(batch_size, generator=generator, device=device)[:n]
    return chosen.sort().values


# --------------------------------------------------------------------------------------------
# LCR baseline (CVPR 2023): Grad-CAM map of the SSL loss and the KL term of the screening module
# --------------------------------------------------------------------------------------------


def gradcam_map(loss: Tensor, feature_map: Tensor) -> Tensor:
    """Classic Grad-CAM of the score ``-loss`` on the feature map A (LCR baseline; pictures of step 3).

    ``alpha_ic = mean_xy d(-L)/dA_ic`` and ``cam_i = relu(sum_c alpha_ic A_ic)``. The gradient is
    taken with ``torch.autograd.grad(..., retain_graph=True)``: no ``.grad`` is filled and the graph
    stays for the later backward. With a mean loss every map is scaled by 1/B (irrelevant once the
    map is normalised, as :func:`lcr_loss` does). A ViT token grid B x N x C must be reshaped to
    B x C x H x W by the caller.

    Args:
        loss: scalar SSL loss computed from ``feature_map``.
        feature_map: B x C x H x W.

    Returns:
        B x H x W non-negative maps, detached.
    """
    if feature_map.dim() != 4:
        raise ValueError(f"feature_map must be B x C x H x W, got shape {tuple(feature_map.shape)}.")
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}; reduce it (mean) first.")
    if not feature_map.requires_grad:
        raise ValueError("feature_map does not require grad: compute the loss from it inside the autograd graph.")
    (grad_a,) = torch.autograd.grad(loss, feature_map, retain_graph=True)
    alpha = (-grad_a).mean(dim=(2, 3), keepdim=True)  # B x C x 1 x 1
    return F.relu((alpha * feature_map).sum(dim=1)).detach()


def lcr_loss(screening_logits: Tensor, cam: Tensor) -> Tensor:
    """LCR's KL term ``KL(cam_dist || screening_dist)`` over spatial positions (LCR baseline).

    ``cam_dist`` is the (detached) Grad-CAM map normalised to sum 1 over H x W; ``screening_dist`` is
    the softmax of the screening logits over H x W. Samples whose CAM is zero everywhere carry no
    spatial information and are left out of the mean (a uniform target would be a made-up signal);
    if every CAM is zero the loss is 0 (still connected to the graph).

    Args:
        screening_logits: B x H x W, output of the screening module (carries the gradient).
        cam: B x H x W non-negative maps (:func:`gradcam_map`).

    Returns:
        Scalar, the mean KL divergence over the samples with a non-zero CAM.
    """
    if screening_logits.dim() != 3 or screening_logits.shape != cam.shape:
        raise ValueError(
            f"screening_logits and cam must both be B x H x W, got {tuple(screening_logits.shape)} "
            f"and {tuple(cam.shape)}."
        )
    cam = cam.detach().to(screening_logits.dtype).flatten(1).clamp_min(0)  # B x HW
    mass = cam.sum(dim=1, keepdim=True)
    has_signal = mass.squeeze(1) > 0
    if not has_signal.any():
        return screening_logits.sum() * 0.0
    target = cam[has_signal] / mass[has_signal]
    log_screening = F.log_softmax(screening_logits.flatten(1)[has_signal], dim=1)
    kl = (torch.xlogy(target, target) - target * log_screening).sum(dim=1)  # 0 log 0 = 0
    return kl.mean()
