"""Choose the anchor / non-anchor probability families by measured rate.

The transforms (g_a, h_a, h_s, g_s, z_prior) stay frozen. Their outputs are
computed once; for each family pair only the entropy-parameter networks
(``anchor_net``, ``context``, ``nonanchor_net``) are fine-tuned, then the rate of
y is measured with rounding, as the coder sees it::

    image ─g_a─▶ y ─h_a─▶ z ─round─▶ ẑ ─h_s─▶ hyper            once, no_grad
    (y, hyper) ─▶ heads(anchor_family, nonanchor_family)
               ─▶ bits of the anchors, bits of the non-anchors  per pair
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Iterable

import torch

from ..model import FastLIC
from ..model.codec import ste_round
from ..model.distributions import likelihood
from ..model.layers import checkerboard_mask

HEADS = ("anchor_net", "context", "nonanchor_net")


@dataclasses.dataclass
class Latents:
    """Frozen-transform outputs of N images, in chunks of equal-sized images.

    y: chunks of (B, M, h, w) float32; hyper: chunks of (B, 2M, h, w) float32;
    bits_z: (N,) bits of ẑ under the factorized prior; pixels: (N,) unpadded pixels.
    """

    y: list[torch.Tensor]
    hyper: list[torch.Tensor]
    bits_z: torch.Tensor
    pixels: torch.Tensor


@torch.no_grad()
def encode_latents(model: FastLIC, batches: Iterable[torch.Tensor],
                   pixels: Iterable[int] | None = None) -> Latents:
    """Run g_a, h_a, round, h_s on each batch (B, 3, H, W) in [0, 1] (H, W multiples of 64).

    ``pixels`` gives each image's unpadded pixel count (default: H * W).
    """
    model.eval()
    ys, hypers, bits_z, npix = [], [], [], []
    for x in batches:
        y = model.analysis(x)
        z_hat = torch.round(model.hyper_analysis(y))
        ys.append(y)
        hypers.append(model.hyper_synthesis(z_hat))
        bits_z.append(-torch.log2(model.z_prior.likelihood(z_hat)).sum(dim=(1, 2, 3)))
        npix += [x.shape[2] * x.shape[3]] * x.shape[0]
    npix = list(pixels) if pixels is not None else npix
    return Latents(ys, hypers, torch.cat(bits_z), torch.tensor(npix, dtype=torch.float64))


def with_families(model: FastLIC, anchor_family: str, nonanchor_family: str) -> FastLIC:
    """A deep copy of ``model`` with the given families; only the HEADS require grad."""
    out = copy.deepcopy(model)
    out.cfg = dataclasses.replace(model.cfg, anchor_family=anchor_family,
                                  nonanchor_family=nonanchor_family)
    for name, p in out.named_parameters():
        p.requires_grad_(name.split(".")[0] in HEADS)
    return out


def rate_y(model: FastLIC, y: torch.Tensor, hyper: torch.Tensor,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bits of y's anchors and non-anchors, each (B,), for y (B, M, h, w), hyper (B, 2M, h, w).

    The non-anchor context sees ŷ anchors (STE-rounded around their mean), as in
    ``FastLIC.forward``. With a ``generator`` the rate uses uniform noise (training);
    without, the rounded residuals the coder codes (evaluation).
    """
    am = checkerboard_mask(y.shape[2], y.shape[3], anchor=True, device=y.device)
    scale_a, mean_a = model.anchor_params(hyper)
    y_hat_a = ste_round(y - mean_a) + mean_a
    scale_n, mean_n = model.nonanchor_params(hyper, y_hat_a * am)
    if generator is None:
        res_a, res_n = torch.round(y - mean_a), torch.round(y - mean_n)
    else:
        y_noisy = y + torch.rand(y.shape, generator=generator) - 0.5
        res_a, res_n = y_noisy - mean_a, y_noisy - mean_n
    bits_a = -(torch.log2(likelihood(model.cfg.anchor_family, res_a, scale_a)) * am)
    bits_n = -(torch.log2(likelihood(model.cfg.nonanchor_family, res_n, scale_n)) * (1 - am))
    return bits_a.sum(dim=(1, 2, 3)), bits_n.sum(dim=(1, 2, 3))


def fine_tune(model: FastLIC, pool: Latents, steps: int, batch: int = 8, lr: float = 1e-3,
              seed: int = 0, log: Callable[[int, float], None] | None = None) -> float:
    """Minimise the noisy rate of y (bits per pixel) over ``pool`` with Adam on the HEADS.

    Batches and noise come from ``seed``, so every pair sees the same data. The
    learning rate decays with a cosine to zero. Returns the mean bpp of the last
    10% of steps; ``log(step, bpp)`` is called every 50 steps.
    """
    y, hyper = torch.cat(pool.y), torch.cat(pool.hyper)
    pix = float(pool.pixels[0])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    tail = []
    for step in range(steps):
        idx = torch.randint(y.shape[0], (batch,), generator=gen)
        bits_a, bits_n = rate_y(model, y[idx], hyper[idx], gen)
        bpp = (bits_a + bits_n).mean() / pix
        opt.zero_grad(set_to_none=True)
        bpp.backward()
        opt.step()
        sched.step()
        if step >= steps - max(1, steps // 10):
            tail.append(bpp.item())
        if log and (step % 50 == 0 or step == steps - 1):
            log(step, bpp.item())
    model.eval()
    return sum(tail) / len(tail)


@torch.no_grad()
def measure(model: FastLIC, latents: Latents) -> dict[str, float]:
    """Mean bits per pixel over images, with rounding: keys anchor, nonanchor, z, total."""
    model.eval()
    bits_a, bits_n = zip(*(rate_y(model, y, h) for y, h in zip(latents.y, latents.hyper)))
    pix = latents.pixels
    out = {"anchor": torch.cat(bits_a).double() / pix, "nonanchor": torch.cat(bits_n).double() / pix,
           "z": latents.bits_z.double() / pix}
    out["total"] = out["anchor"] + out["nonanchor"] + out["z"]
    return {k: v.mean().item() for k, v in out.items()}


def head_free_optimizer_state(opt_state: dict, model: FastLIC) -> dict:
    """A copy of a training-loop Adam state with the HEADS' moments dropped.

    The transforms keep their moments; the re-tuned heads restart Adam from zero
    when training resumes. ``opt_state`` indexes ``model.parameters()`` in order.
    """
    state = copy.deepcopy(opt_state)
    for i, (name, _) in enumerate(model.named_parameters()):
        if name.split(".")[0] in HEADS:
            state["state"].pop(i, None)
    return state
