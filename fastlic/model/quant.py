"""Quantisation-aware training of the exact entropy path (:mod:`fastlic.model.exact`).

A FastLIC with ``model.qat`` set (:func:`enable_qat`) runs h_s, the context
convolution and both parameter networks with the integer formats of the exact path,
simulated in float: weights rounded to WEIGHT_MAX steps per output channel,
activations to their calibrated steps and clamped to ±ACT_MAX, the scale branch's
pre-softplus value and the means to 2^-6, all with straight-through gradients. So
the network trains against the arithmetic it will ship with, and
:func:`fastlic.model.exact.from_float` turns it into integers.

The activation steps are calibrated once, on training crops (:func:`calibrate`),
and stay fixed; they live in the buffer ``qat.scales`` (in :data:`ACT_POINTS`
order), so checkpoints and shipped files carry them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import NUM_SCALES
from .exact import (ACT_MAX, ACT_POINTS, LEAKY_SLOPE, MEAN_FRAC, MEAN_MAX, RAW_FRAC, RAW_HI,
                    RAW_LO, ExactEntropy, from_float, weight_steps)

CALIB_QUANTILE = 0.9999   # an activation step covers this quantile of |a| with ACT_MAX steps


def fake_quant(x: torch.Tensor, step: float, low: float, high: float) -> torch.Tensor:
    """clamp(round(x / step), low, high) * step, straight-through inside the clamp."""
    clamped = torch.clamp(x, low * step, high * step)
    return clamped + (torch.round(clamped / step) * step - clamped).detach()


def fake_quant_weight(weight: torch.Tensor, out_dim: int) -> torch.Tensor:
    """Per-output-channel symmetric integer weights (|w| <= WEIGHT_MAX steps), STE."""
    shape = [1] * weight.dim()
    shape[out_dim] = -1
    step = weight_steps(weight, out_dim).view(shape)
    return weight + (torch.round(weight / step) * step - weight).detach()


class QAT(nn.Module):
    """The activation steps of one model; ``record`` (a dict) switches to calibration:
    activations pass unquantised and their |values| are collected per point."""

    def __init__(self, scales: dict[str, float] | None = None):
        super().__init__()
        values = [float(scales[k]) if scales else 1.0 for k in ACT_POINTS]
        self.register_buffer("scales", torch.tensor(values, dtype=torch.float32))
        self.record: dict | None = None

    def steps(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(ACT_POINTS, self.scales.tolist())}

    def act(self, name: str, x: torch.Tensor, step_of: str | None = None) -> torch.Tensor:
        """x at activation point ``name`` (quantised with the step of ``step_of`` or its own)."""
        if self.record is not None:
            if step_of is None:
                self.record.setdefault(name, []).append(x.detach().abs().flatten().float())
            return x
        step = float(self.scales[ACT_POINTS.index(step_of or name)])
        return fake_quant(x, step, -ACT_MAX, ACT_MAX)

    def out(self, x: torch.Tensor, frac: int, low: float, high: float) -> torch.Tensor:
        return x if self.record is not None else fake_quant(x, 2.0 ** -frac, low, high)

    def weight(self, w: torch.Tensor, out_dim: int) -> torch.Tensor:
        return w if self.record is not None else fake_quant_weight(w, out_dim)


def enable_qat(model, scales: dict[str, float] | None = None):
    """Give ``model`` a QAT module (steps from ``scales``, or placeholders that a
    following ``load_state_dict`` overwrites); returns ``model``."""
    model.qat = QAT(scales).to(next(model.parameters()).device)
    return model


def prepare_for(model, state: dict) -> None:
    """Add to ``model`` the optional parts a state dict holds (``qat.``, ``exact.``), so
    that ``load_state_dict(state)`` fits."""
    if model.qat is None and any(k.startswith("qat.") for k in state):
        enable_qat(model)
    if model.exact is None and any(k.startswith("exact.") for k in state):
        cfg = model.cfg
        model.exact = ExactEntropy(cfg.latent_channels, cfg.hyper_channels, NUM_SCALES)


@torch.no_grad()
def calibrate(model, batches) -> dict[str, float]:
    """Activation steps of ``model`` (float, or already QAT) from image batches
    (iterable of (B, 3, H, W) in [0, 1]): the CALIB_QUANTILE of |a| over ACT_MAX."""
    had = model.qat
    model.qat = QAT()
    model.qat.record = {}
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
        record = model.qat.record
    finally:
        model.qat = had
        model.train(was_training)
    steps = {}
    for name in ACT_POINTS:
        values = torch.cat(record[name])
        values = values[values > 0] if name == "ctx_in" else values   # non-anchors are zeros
        if values.numel() > 1 << 24:
            values = values[torch.randperm(values.numel())[:1 << 24]]
        top = float(torch.quantile(values, CALIB_QUANTILE)) if values.numel() else 1.0
        steps[name] = max(top, 1e-6) / ACT_MAX
    return steps


# ---- the simulated stages (FastLIC calls these when model.qat is set) ---------------
def hyper_synthesis(model, z_hat: torch.Tensor) -> torch.Tensor:
    q = model.qat
    d1, d2, c3 = model.h_s[0], model.h_s[2], model.h_s[4]
    h = torch.clamp(z_hat, -ACT_MAX, ACT_MAX)
    for name, deconv in (("hs1", d1), ("hs2", d2)):
        h = F.conv_transpose2d(h, q.weight(deconv.weight, 1), deconv.bias, stride=2,
                               padding=2, output_padding=1)
        h = q.act(name, F.leaky_relu(h, LEAKY_SLOPE))
    h = F.conv2d(h, q.weight(c3.weight, 0), c3.bias, padding=1)
    return q.act("hyper", h)


def param_net(model, prefix: str, net: nn.Sequential, x: torch.Tensor):
    """(raw scale, mean) of a 1x1 parameter network, each (B, M, h, w)."""
    q = model.qat
    convs = (net[0], net[2], net[4])
    h = x
    for k, conv in enumerate(convs[:2], start=1):
        h = F.conv2d(h, q.weight(conv.weight, 0), conv.bias)
        h = q.act(f"{prefix}{k}", F.leaky_relu(h, LEAKY_SLOPE))
    out = F.conv2d(h, q.weight(convs[2].weight, 0), convs[2].bias)
    raw, mean = out.chunk(2, dim=1)
    return q.out(raw, RAW_FRAC, RAW_LO, RAW_HI), q.out(mean, MEAN_FRAC, -MEAN_MAX, MEAN_MAX)


def context(model, y_hat_anchor: torch.Tensor) -> torch.Tensor:
    q = model.qat
    ctx = model.context
    x = q.act("ctx_in", y_hat_anchor)
    out = F.conv2d(x, q.weight(ctx.weight * ctx.kernel_mask, 0), ctx.bias, padding=2)
    return q.act("ctx_out", out, step_of="hyper")


# ---- conversion ------------------------------------------------------------------------
def calibration_photos(size: int = 256) -> list[torch.Tensor]:
    """scikit-image's bundled colour photos as (1, 3, size, size) batches: the activation
    steps of a model converted without quantisation-aware training (post-training)."""
    from skimage import data  # noqa: PLC0415 - a runtime dependency, only needed here

    batches = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(data, name)()[:size, :size]
        batches.append(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255)
    return batches


def with_exact(model, tables, calib=None):
    """A copy of FastLIC ``model`` with its exact entropy path (``model.exact``), built
    from its QAT activation steps, or else calibrated on ``calib`` batches (default:
    :func:`calibration_photos`) after training. ``tables``: the model's EntropyTables."""
    import copy  # noqa: PLC0415

    model = copy.deepcopy(model).float().cpu().eval()
    if model.cfg.shared_params:
        from ..errors import ModelLoadError  # noqa: PLC0415
        raise ModelLoadError("the exact entropy path needs separate anchor and non-anchor "
                             "networks; the shared_params ablation is for training only")
    if model.qat is None:
        enable_qat(model, calibrate(model, calib if calib is not None else calibration_photos()))
    try:
        model.exact = from_float(model, model.qat.steps(), tables.scale_index,
                                 len(tables.scale_grid))
    except ValueError as exc:
        from ..errors import ModelLoadError  # noqa: PLC0415
        raise ModelLoadError(f"cannot convert this model to the exact entropy path: {exc}") from exc
    return model
