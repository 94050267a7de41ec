"""Building blocks: simplified GDN, residual blocks, the deformable residual module
and the checkerboard-masked context convolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform import ModulatedDeformConv


class GDN(nn.Module):
    """Simplified GDN (Johnston et al. 2019): ``x / (beta + gamma * |x|)``.

    With ``inverse=True`` it multiplies instead (IGDN, used in the decoder).
    ``beta`` and ``gamma`` are kept positive by taking absolute values; ``beta``
    is at least 1e-3 so the division stays finite.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x.abs(), self.gamma.abs(), self.beta.abs() + 1e-3)
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2,
                              output_padding=stride - 1)


class ResidualBlock(nn.Module):
    """``x + conv3x3(lrelu(conv3x3(lrelu(x))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv(channels, channels, 3, 1)
        self.conv2 = conv(channels, channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(x, 0.01))
        return x + self.conv2(F.leaky_relu(h, 0.01))


class DeformableResidualBlock(nn.Module):
    """The paper's deformable residual module (technique 1).

    ``x + conv3x3(lrelu(DCNv2_3x3(x)))``: offsets and masks are predicted from
    ``x`` and start at zero offset / unit mask, so the block starts as a plain
    residual block and learns where to sample. With ``deformable=False`` (the
    ablation) the same slot holds a plain 3x3 convolution, whose ``weight`` and
    ``bias`` have the deformable one's names and shapes.
    """

    def __init__(self, channels: int, deformable: bool = True):
        super().__init__()
        self.deform = (ModulatedDeformConv(channels, channels) if deformable
                       else conv(channels, channels, 3, 1))
        self.conv = conv(channels, channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.leaky_relu(self.deform(x), 0.01))


def checkerboard_mask(height: int, width: int, anchor: bool, device=None) -> torch.Tensor:
    """(1, 1, H, W) float mask: 1 at anchors ((i + j) even) or at non-anchors."""
    i = torch.arange(height, device=device).view(-1, 1)
    j = torch.arange(width, device=device).view(1, -1)
    m = ((i + j) % 2 == 0) if anchor else ((i + j) % 2 == 1)
    return m.float().view(1, 1, height, width)


class CheckerboardContext(nn.Conv2d):
    """5x5 context convolution that reads only anchor positions.

    Its input is the decoded latent with non-anchors zeroed; at a non-anchor the
    anchors are exactly the taps with odd ``dy + dx``, so the fixed kernel mask
    keeps those and zeroes the rest (the centre included).
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 5, padding=2)
        d = torch.arange(5) - 2
        self.register_buffer("kernel_mask", ((d.view(-1, 1) + d.view(1, -1)) % 2 != 0)
                             .float().view(1, 1, 5, 5), persistent=False)
        with torch.no_grad():   # taps never read start (and, with no gradient, stay) zero
            self.weight.mul_(self.kernel_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.kernel_mask, self.bias, padding=2)
