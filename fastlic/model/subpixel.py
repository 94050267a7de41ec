"""Stride-2 transposed convolutions rewritten as a dense convolution + pixel shuffle.

``ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)`` writes output row
``o = 2i - 2 + t`` from input row ``i`` and kernel tap ``t``. For an output row of
parity ``r`` (``o = 2m + r``) only the taps ``t = r + 2 - 2d`` read it, from input
row ``m + d`` with ``d`` in {-1, 0, 1} (for ``r = 1`` and ``d = -1``, ``t = 5`` is
outside the kernel: a zero tap). In 2-D each of the four output phases
``(r_y, r_x)`` is therefore an ordinary 3x3 convolution (padding 1) of the input,
and the four phases interleave by ``PixelShuffle(2)``::

    W_sub[4 co + 2 r_y + r_x, ci, d_y + 1, d_x + 1] = W_t[ci, co, r_y + 2 - 2 d_y, r_x + 2 - 2 d_x]

The result is the same function (up to float summation order) with 36 instead of
25 multiply-adds per input tap group, but as a dense convolution, which CPU
libraries (oneDNN in PyTorch, MLAS in ONNX Runtime) run much faster than a
transposed one. ``experiments/decode_variants.py`` measures it; the runtime applies it to
the inference copies of g_s and h_s (:func:`to_subpixel`), never to training.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

PHASES = 2


def _convertible(m: nn.Module) -> bool:
    return (isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (5, 5) and m.stride == (2, 2)
            and m.padding == (2, 2) and m.output_padding == (1, 1) and m.dilation == (1, 1)
            and m.groups == 1)


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_in, C_out, 5, 5) transposed-conv kernel -> (4 C_out, C_in, 3, 3) conv kernel."""
    cin, cout = weight.shape[:2]
    out = weight.new_zeros(cout, PHASES, PHASES, cin, 3, 3)
    for ry in range(PHASES):
        for rx in range(PHASES):
            for dy in (-1, 0, 1):
                ty = ry + 2 - 2 * dy
                for dx in (-1, 0, 1):
                    tx = rx + 2 - 2 * dx
                    if ty <= 4 and tx <= 4:
                        out[:, ry, rx, :, dy + 1, dx + 1] = weight[:, :, ty, tx].t()
    return out.reshape(cout * PHASES * PHASES, cin, 3, 3)


class SubPixelConvTranspose(nn.Module):
    """The function of one convertible ConvTranspose2d as conv3x3 + PixelShuffle(2)."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        if not _convertible(deconv):
            raise ValueError(f"only ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) "
                             f"converts, got {deconv}")
        w = deconv.weight.detach()
        self.weight = nn.Parameter(subpixel_weight(w), requires_grad=False)
        bias = deconv.bias.detach() if deconv.bias is not None else w.new_zeros(w.shape[1])
        self.bias = nn.Parameter(bias.repeat_interleave(PHASES * PHASES), requires_grad=False)

    #: how an ONNX export writes the pixel shuffle, a key of :data:`SHUFFLES`;
    #: eager mode always runs F.pixel_shuffle
    onnx_shuffle = "deconv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.conv2d(x, self.weight, self.bias, padding=1)
        if torch.onnx.is_in_onnx_export():
            return SHUFFLES[self.onnx_shuffle](h)
        return F.pixel_shuffle(h, PHASES)


def shuffle_as_deconv(x: torch.Tensor) -> torch.Tensor:
    """``pixel_shuffle(x, 2)`` as a grouped stride-2 2x2 transposed convolution with
    one-hot kernels: the same values exactly (each output reads one input times 1).

    The exported graphs for TensorRT use it (onnxruntime's CPU ``ConvTranspose`` also
    runs it faster than its ``DepthToSpace``: ``experiments/shuffle_ops.py``)."""
    groups = x.shape[1] // (PHASES * PHASES)
    eye = torch.eye(PHASES * PHASES, dtype=x.dtype, device=x.device)
    weight = eye.view(PHASES * PHASES, 1, PHASES, PHASES).repeat(groups, 1, 1, 1)
    return F.conv_transpose2d(x, weight, stride=PHASES, groups=groups)


def shuffle_as_col2im(x: torch.Tensor) -> torch.Tensor:
    """``pixel_shuffle(x, 2)`` as ``F.fold`` (ONNX ``Col2Im``, opset 18): the 2x2 blocks
    of the (B, 4C, h w) columns are written side by side, each value copied once.

    onnxruntime's CPU ``Col2Im`` is one pass over the tensor where the grouped
    ``ConvTranspose`` is a GEMM plus a col2im; every exported stage with a shuffle
    runs faster with it (``experiments/shuffle_ops.py``). Graphs for TensorRT keep
    :func:`shuffle_as_deconv`: its ONNX parser does not list ``Col2Im``."""
    h, w = x.shape[-2:]
    return F.fold(x.flatten(2), (PHASES * h, PHASES * w), kernel_size=PHASES, stride=PHASES)


SHUFFLES = {"deconv": shuffle_as_deconv, "col2im": shuffle_as_col2im,
            "depth_to_space": lambda x: F.pixel_shuffle(x, PHASES)}   # ONNX DepthToSpace


def to_subpixel(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every convertible ConvTranspose2d replaced."""
    module = copy.deepcopy(module)
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if _convertible(sub):
                setattr(child, attr, SubPixelConvTranspose(sub))
    return module
