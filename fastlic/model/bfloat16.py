"""g_s in bfloat16 for CPUs with native bf16 convolutions (AMX, AVX512-BF16).

On such a CPU oneDNN runs bf16 convolutions several times faster than float32
(``benchmarks/cpu_bf16.py``), and g_s is most of a decode. Three places lose more
than bf16's 8-bit mantissa has to, so they are done differently:

- **IGDN's bias** ``beta.abs() + 1e-3``: computed in bf16 it is rounded twice
  (``beta``, then the sum), a whole bf16 step (up to 0.8 %) off in many channels,
  a gain error that every pixel of such a channel shares.
  :class:`FrozenGDN` adds in float32 and rounds once.
- **The output image.** bf16 has a spacing of 2^-8 just below 1.0, a whole 8-bit
  level at 255, so a bf16 image is visibly coarse. :class:`CompensatedSubPixel` runs
  the last convolution twice: ``o1`` is the output rounded to bf16, and the second
  convolution computes ``conv(h) - o1`` (``o1`` as extra input channels under a −1
  centre tap) with float32 accumulation. That residual is small, so its bf16
  rounding is too, and ``o1 + residual`` in float32 is close to the float32 output.
- **ŷ** (symbol + mean, up to tens): its bf16 rounding is up to 1/16 of a
  quantisation step at |ŷ| ≥ 16. The first convolution reads ``hi = bf16(ŷ)`` and
  ``lo = bf16(ŷ − hi)`` side by side under the same kernel, so it sees ŷ to about 16 bits
  (:class:`SplitInputSubPixel`).

Everything else (the other convolutions, IGDN's ``x · norm``, the shuffles, residual
blocks if any) runs in bf16. The entropy-parameter stages are untouched: they pick
the probability tables and must match the encoder's exactly, so they stay float32
and a bf16 decoder reads every bitstream. Only the image differs from a float32
decoder's, by float noise; the encoder's reconstruction checksum notices that.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GDN
from .subpixel import PHASES, SubPixelConvTranspose


def native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX tiles or AVX512-BF16).
    Without, oneDNN emulates them, slower than float32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class FrozenGDN(nn.Module):
    """Inference (I)GDN with its normalisation weight and bias computed once in float32."""

    def __init__(self, gdn: GDN):
        super().__init__()
        self.inverse = gdn.inverse
        self.register_buffer("weight", gdn.gamma.detach().abs().clone())
        self.register_buffer("bias", gdn.beta.detach().abs() + 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x.abs(), self.weight, self.bias)
        return x * norm if self.inverse else x / norm


class SplitInputSubPixel(nn.Module):
    """A SubPixelConvTranspose on a float32 input split into two bf16 halves."""

    def __init__(self, layer: SubPixelConvTranspose):
        super().__init__()
        w = layer.weight.detach()
        self.register_buffer("weight", torch.cat([w, w], dim=1))
        self.register_buffer("bias", layer.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hi = x.to(self.weight.dtype)
        lo = (x - hi.float()).to(self.weight.dtype)
        h = F.conv2d(torch.cat([hi, lo], dim=1), self.weight, self.bias, padding=1)
        return F.pixel_shuffle(h, PHASES)


class CompensatedSubPixel(nn.Module):
    """A SubPixelConvTranspose on a bf16 input whose float32 output is accurate to
    about 16 bits: the bf16 output plus the bf16-rounded remainder (module docstring)."""

    def __init__(self, layer: SubPixelConvTranspose, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        w = layer.weight.detach()
        out_ch, in_ch = w.shape[:2]
        comp = w.new_zeros(out_ch, in_ch + out_ch, 3, 3)
        comp[:, :in_ch] = w
        comp[torch.arange(out_ch), in_ch + torch.arange(out_ch), 1, 1] = -1.0
        self.register_buffer("weight", w.to(dtype))
        self.register_buffer("compensation", comp.to(dtype))
        # added to the float32 sum, so kept float32
        self.register_buffer("bias", layer.bias.detach().float().view(1, -1, 1, 1).clone())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        o1 = F.conv2d(h, self.weight, None, padding=1)
        rest = F.conv2d(torch.cat([h, o1], dim=1), self.compensation, None, padding=1)
        return F.pixel_shuffle(o1.float() + rest.float() + self.bias, PHASES)


class Bf16Synthesis(nn.Module):
    """g_s (subpixel form, :func:`~fastlic.model.subpixel.to_subpixel`) in bfloat16:
    float32 ŷ in, float32 image out."""

    def __init__(self, g_s: nn.Module):
        super().__init__()
        first, out = g_s.stages[0][0], g_s.out
        if not all(isinstance(m, SubPixelConvTranspose) for m in (first, out)):
            raise ValueError("Bf16Synthesis needs g_s in subpixel form (to_subpixel)")
        stages = copy.deepcopy(g_s.stages)
        for stage in stages:
            for i, layer in enumerate(stage):
                if isinstance(layer, GDN):
                    stage[i] = FrozenGDN(layer)
        stages[0][0] = SplitInputSubPixel(first)
        self.stages = stages.to(torch.bfloat16)
        self.out = CompensatedSubPixel(out, torch.bfloat16)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        h = y_hat.float()
        for stage in self.stages:
            h = stage(h)
        return self.out(h)


def to_bf16_synthesis(model: nn.Module) -> nn.Module:
    """``model`` (a subpixel FastLIC inference copy) with g_s replaced by
    :class:`Bf16Synthesis`, in place. Returns ``model``."""
    model.g_s = Bf16Synthesis(model.g_s)
    return model
