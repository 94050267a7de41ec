"""Modulated deformable 3x3 convolution (DCNv2) in plain PyTorch ops.

The sampling follows ONNX ``DeformConv`` (opset 19) and torchvision's
``deform_conv2d``: for output position ``p`` and kernel tap ``k``,

    out[p] = sum_k  w_k * mask[k, p] * bilinear(x, p + p_k + offset[k, p]) + bias

where ``offset`` has ``2 * 9`` channels laid out ``(dy_0, dx_0, dy_1, dx_1, ...)``,
``mask`` has 9 channels, and samples outside the image read zeros. The bilinear
read uses ``grid_sample(align_corners=False)`` so it runs on any CPU build and any
size, including 1x1; :func:`deform_conv2d_reference` is a direct loop used by tests.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3, stride 1, padding 1, dilation 1, one offset group.

    x: (B, C, H, W); offset: (B, 18, H, W); mask: (B, 9, H, W);
    weight: (O, C, 3, 3); returns (B, O, H, W).
    """
    b, c, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    out = None
    for k in range(9):
        ky, kx = k // 3 - 1, k % 3 - 1
        py = ys + ky + offset[:, 2 * k]          # (B, H, W) sample rows
        px = xs + kx + offset[:, 2 * k + 1]      # (B, H, W) sample cols
        grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
        sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        sampled = sampled * mask[:, k:k + 1]
        term = F.conv2d(sampled, weight[:, :, k // 3, k % 3, None, None])
        out = term if out is None else out + term
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def deform_conv2d_reference(x, offset, mask, weight, bias):
    """Direct per-position bilinear sampling (numpy, float64); slow, for tests."""
    x, offset, mask, weight = (t.detach().double().numpy() for t in (x, offset, mask, weight))
    b, c, h, w = x.shape
    out = np.zeros((b, weight.shape[0], h, w))

    def read(img, yy, xx):
        if 0 <= yy < h and 0 <= xx < w:
            return img[:, yy, xx]
        return np.zeros(c)

    for n in range(b):
        for i in range(h):
            for j in range(w):
                for k in range(9):
                    py = i + k // 3 - 1 + offset[n, 2 * k, i, j]
                    px = j + k % 3 - 1 + offset[n, 2 * k + 1, i, j]
                    y0, x0 = int(np.floor(py)), int(np.floor(px))
                    fy, fx = py - y0, px - x0
                    v = ((1 - fy) * (1 - fx) * read(x[n], y0, x0) + (1 - fy) * fx * read(x[n], y0, x0 + 1)
                         + fy * (1 - fx) * read(x[n], y0 + 1, x0) + fy * fx * read(x[n], y0 + 1, x0 + 1))
                    out[n, :, i, j] += weight[:, :, k // 3, k % 3] @ (v * mask[n, k, i, j])
    if bias is not None:
        out += bias.detach().double().numpy()[None, :, None, None]
    return torch.from_numpy(out)


class ModulatedDeformConv(nn.Module):
    """3x3 modulated deformable conv whose offsets and masks come from the input.

    A zero-initialised 3x3 conv predicts 18 offsets and 9 mask logits; the mask is
    ``2 * sigmoid(logit)``, so at initialisation offsets are 0, masks are 1 and the
    layer equals an ordinary 3x3 convolution.
    """

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels_out, channels_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels_out))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.offset_mask = nn.Conv2d(channels_in, 27, 3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        om = self.offset_mask(x)
        return om[:, :18], 2.0 * torch.sigmoid(om[:, 18:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(x, offset, mask, self.weight, self.bias)
