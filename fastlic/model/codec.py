"""The fastlic network: g_a with a deformable residual module, hyperprior, improved
checkerboard entropy parameters, and g_s.

Stage functions map one-to-one onto the exported ONNX graphs::

    x ──g_a──▶ y ──h_a──▶ z ─(round)─▶ ẑ ──h_s──▶ hyper
    hyper ──anchor_params──▶ (scale_a, mean_a)              pass 1: anchors
    ŷ_anchor ─ctx─┐
    hyper ────────┴─nonanchor_params──▶ (scale_n, mean_n)   pass 2: non-anchors
    ŷ ──g_s──▶ x̂

Anchors ((i + j) even in the latent grid) and non-anchors have *separate*
parameter networks and *different* probability families (``config.anchor_family``,
``config.nonanchor_family``). Decoding is two passes over whole tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import quant
from .config import ModelConfig
from .distributions import SCALE_MIN, likelihood
from .factorized import FactorizedPrior
from .layers import (GDN, CheckerboardContext, DeformableResidualBlock, ResidualBlock,
                     checkerboard_mask, conv, deconv)



class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or not x.requires_grad:
        return x.clamp_min(bound)
    return _LowerBound.apply(x, bound)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


def _param_net(cin: int, cout: int) -> nn.Sequential:
    mid = (cin + cout) // 2
    return nn.Sequential(nn.Conv2d(cin, mid, 1), nn.LeakyReLU(0.01),
                         nn.Conv2d(mid, mid, 1), nn.LeakyReLU(0.01),
                         nn.Conv2d(mid, cout, 1))


class Decoder(nn.Module):
    """g_s: four stride-2 transposed convs with IGDN, optional residual blocks."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, m = cfg.dec_channels, cfg.latent_channels
        self.stages = nn.ModuleList()
        cin = m
        for _ in range(3):
            blocks = [deconv(cin, d), GDN(d, inverse=True)]
            blocks += [ResidualBlock(d) for _ in range(cfg.dec_blocks)]
            self.stages.append(nn.Sequential(*blocks))
            cin = d
        self.out = deconv(d, 3)

    def forward(self, y_hat: torch.Tensor, return_features: bool = False):
        feats = []
        h = y_hat
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        x_hat = self.out(h)
        return (x_hat, feats) if return_features else x_hat


class FastLIC(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n, m, nh = cfg.enc_channels, cfg.latent_channels, cfg.hyper_channels
        self.g_a = nn.Sequential(
            conv(3, n), GDN(n), conv(n, n), GDN(n),
            DeformableResidualBlock(n, deformable=cfg.deformable),
            conv(n, n), GDN(n), conv(n, m))
        self.h_a = nn.Sequential(
            conv(m, nh, 3, 1), nn.LeakyReLU(0.01), conv(nh, nh), nn.LeakyReLU(0.01), conv(nh, nh))
        self.h_s = nn.Sequential(
            deconv(nh, nh), nn.LeakyReLU(0.01), deconv(nh, m * 3 // 2), nn.LeakyReLU(0.01),
            conv(m * 3 // 2, 2 * m, 3, 1))
        # cfg.shared_params (ablation): no anchor network; nonanchor_net serves both passes.
        self.anchor_net = None if cfg.shared_params else _param_net(2 * m, 2 * m)
        self.context = CheckerboardContext(m, 2 * m)
        self.nonanchor_net = _param_net(4 * m, 2 * m)
        self.g_s = Decoder(cfg)
        self.z_prior = FactorizedPrior(nh)
        # Optional parts: ``qat`` (fastlic.model.quant.QAT) makes h_s, the context and the
        # parameter networks train in the exact path's integer formats; ``exact``
        # (fastlic.model.exact.ExactEntropy) is their integer form, which the runtime runs.
        self.qat = None
        self.exact = None

    # ---- stages (one ONNX graph each) -------------------------------------------
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) float in [0, 1], H and W multiples of 64 -> y: (B, M, H/16, W/16)."""
        return self.g_a(x)

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        """y -> z: (B, Nh, H/64, W/64)."""
        return self.h_a(y)

    def hyper_synthesis(self, z_hat: torch.Tensor) -> torch.Tensor:
        """ẑ -> hyper features (B, 2M, H/16, W/16)."""
        if self.qat is not None:
            return quant.hyper_synthesis(self, z_hat)
        return self.h_s(z_hat)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split_raw(*params.chunk(2, dim=1))

    @staticmethod
    def _split_raw(raw: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lower_bound(F.softplus(raw), SCALE_MIN), mean

    def anchor_params(self, hyper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1: hyper -> (scale, mean) of the anchors, each (B, M, h, w)."""
        if self.anchor_net is None:   # shared network: the context of an all-zero latent
            b, _, h, w = hyper.shape
            return self.nonanchor_params(hyper, hyper.new_zeros(b, self.cfg.latent_channels, h, w))
        if self.qat is not None:
            return self._split_raw(*quant.param_net(self, "a", self.anchor_net, hyper))
        return self._split(self.anchor_net(hyper))

    def nonanchor_params(self, hyper: torch.Tensor, y_hat_anchor: torch.Tensor):
        """Pass 2: hyper and ŷ with non-anchors zeroed -> (scale, mean) of the non-anchors."""
        if self.qat is not None:
            ctx = quant.context(self, y_hat_anchor)
            return self._split_raw(*quant.param_net(self, "n", self.nonanchor_net,
                                                    torch.cat((hyper, ctx), dim=1)))
        ctx = self.context(y_hat_anchor)
        return self._split(self.nonanchor_net(torch.cat((hyper, ctx), dim=1)))

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        """ŷ -> x̂ (B, 3, H, W), not clamped."""
        return self.g_s(y_hat)

    # ---- training ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, return_features: bool = False) -> dict:
        """Rate estimate with uniform noise, distortion through rounded (STE) latents.

        Returns x_hat, bits (per image, y and z), y, and the decoder features and
        entropy parameters that distillation uses.
        """
        y = self.analysis(x)
        z = self.hyper_analysis(y)
        z_hat = ste_round(z)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else z_hat
        hyper = self.hyper_synthesis(z_hat)
        am = checkerboard_mask(y.shape[2], y.shape[3], anchor=True, device=y.device)
        scale_a, mean_a = self.anchor_params(hyper)
        y_hat_a = ste_round(y - mean_a) + mean_a
        scale_n, mean_n = self.nonanchor_params(hyper, y_hat_a * am)
        y_hat_n = ste_round(y - mean_n) + mean_n
        y_hat = y_hat_a * am + y_hat_n * (1 - am)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else y_hat
        lik_a = likelihood(self.cfg.anchor_family, y_noisy - mean_a, scale_a)
        lik_n = likelihood(self.cfg.nonanchor_family, y_noisy - mean_n, scale_n)
        bits_y = -(torch.log2(lik_a) * am + torch.log2(lik_n) * (1 - am)).sum(dim=(1, 2, 3))
        bits_z = -torch.log2(self.z_prior.likelihood(z_noisy)).sum(dim=(1, 2, 3))
        x_hat, feats = self.g_s(y_hat, return_features=True)
        out = {"x_hat": x_hat, "bits_y": bits_y, "bits_z": bits_z, "y": y, "y_hat": y_hat}
        if return_features:
            out.update(dec_features=feats, scale=scale_a * am + scale_n * (1 - am),
                       mean=mean_a * am + mean_n * (1 - am))
        return out
