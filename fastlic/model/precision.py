"""FP16 FastLIC with the layers the FP16 graphs keep in FP32 (``fastlic.export.fp16``).

Two places need FP32 for the same reasons as in the graphs:

- the deformable convolution's bilinear sampling (and the convolution of the sampled
  values): FP16 sampling positions lose sub-pixel precision as images grow
  (``benchmarks/fp16.py`` part 3b measures g_a's error both ways at three sizes).
  Offsets and masks are still predicted in FP16;
- the last convolution of each entropy parameter network and what follows it
  (scale and mean): the scales pick the probability tables, so the encoder and the
  decoder should derive them as precisely as they can.

Everything else runs in FP16; stage inputs and outputs are cast by the caller.
"""
from __future__ import annotations

import torch
from torch import nn

from .deform import ModulatedDeformConv, deform_conv2d


class Fp32SamplingDeform(ModulatedDeformConv):
    """Offsets and mask in the module's dtype; sampling and its convolution in FP32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(x.float(), offset.float(), mask.float(), self.weight.float(),
                             self.bias.float()).to(x.dtype)


class Fp32(nn.Module):
    """Runs ``inner`` in FP32 on any float input and returns FP32."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float())


def to_half(model: nn.Module, fp32_layers: bool = True) -> nn.Module:
    """``model`` (a FastLIC, full-grid or packed) converted in place to FP16; with
    ``fp32_layers``, the layers above in FP32. Returns ``model``."""
    model.half()
    if not fp32_layers:
        return model
    for module in model.modules():
        if type(module) is ModulatedDeformConv:
            module.__class__ = Fp32SamplingDeform
    for name in ("anchor_net", "nonanchor_net"):
        net = getattr(model, name, None)
        if net is not None and not isinstance(net[-1], Fp32):
            net[-1] = Fp32(net[-1])
    return model
