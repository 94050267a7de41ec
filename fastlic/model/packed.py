"""The checkerboard parameter networks evaluated only where their outputs are used.

Training computes both parameter networks at every latent position and masks the
loss (:meth:`FastLIC.forward`); a decoder needs the anchor network's output only at
anchors and the non-anchor network's only at non-anchors. This module is the
inference form of the two stages, applied to copies of a model like
:mod:`fastlic.model.subpixel` (the torch engine and the exported graphs use it):

* The latent grid (h, w even, as the 64-pixel padding guarantees) splits into four
  phases ``(r_y, r_x)``: rows and columns of parity ``r_y``, ``r_x``, each an
  (h/2, w/2) grid. Anchors are phases (0, 0) and (1, 1), non-anchors (0, 1) and (1, 0).
* The 1x1 parameter networks run on the two phases of their pass, placed side by
  side: (B, C, h/2, w), half the positions of the full grid.
* The 5x5 context convolution becomes a 3x3 convolution from the two anchor
  phases (2M input channels) to the two non-anchor phases (2 x its output
  channels). A non-anchor ``(2a + r_y, 2b + r_x)`` reads the anchor of phase
  ``(s_y, s_x)`` at ``(a + d_a, b + d_b)`` through tap
  ``(dy, dx) = (2 d_a + s_y - r_y, 2 d_b + s_x - r_x)`` of the 5x5 kernel; every
  such offset has odd ``dy + dx``, the taps the checkerboard mask keeps, and
  ``d_a, d_b`` in {-1, 0, 1} cover all of them (:func:`packed_context_weight`).
  Zero padding of the full grid is zero padding of the phase grid.

MACs per image fall to a half for the anchor pass and, for the ``small`` config,
to 0.41 of the full computation for the non-anchor pass (the context convolution
reads only real anchors and writes only real non-anchors). Outputs keep the full (B, M, h, w)
layout with **zeros at the positions of the other pass**, so the runtime, the
bitstream and the graph interfaces are unchanged; nothing may read those positions.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .codec import FastLIC
from .exact import ANCHOR_PHASES, NONANCHOR_PHASES, context_taps
from .subpixel import SHUFFLES


def packed_context_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C, M, 5, 5) masked context kernel -> (2C, 2M, 3, 3) kernel on the phase grids.

    Input channels: the M channels of anchor phase (0, 0), then those of (1, 1).
    Output channels: the C context channels of non-anchor phase (0, 1), then (1, 0).
    """
    c, m = weight.shape[:2]
    out = weight.new_zeros(2, c, 2, m, 3, 3)
    for o, (ry, rx) in enumerate(NONANCHOR_PHASES):
        for i, da, db, dy, dx in context_taps(ry, rx):
            out[o, :, i, :, da + 1, db + 1] = weight[:, :, dy + 2, dx + 2]
    return out.reshape(2 * c, 2 * m, 3, 3)


def _phase(x: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    return x[:, :, ry::2, rx::2]


def _side_by_side(x: torch.Tensor, phases) -> torch.Tensor:
    """(B, C, h, w) -> the two phases' (B, C, h/2, w/2) grids along width: (B, C, h/2, w)."""
    return torch.cat([_phase(x, ry, rx) for ry, rx in phases], dim=3)


def _scatter(packed: torch.Tensor, phases, shuffle) -> torch.Tensor:
    """Inverse of :func:`_side_by_side`, zeros at the other two phases: (B, C, h, w).
    ``shuffle``: the pixel shuffle (a value of SHUFFLES) that interleaves the phases."""
    half = packed.shape[3] // 2   # slices, not chunk: chunk exports as SplitToSequence
    first, second = packed[..., :half], packed[..., half:]
    zero = torch.zeros_like(first)
    by_phase = {phases[0]: first, phases[1]: second}
    grids = [by_phase.get((ry, rx), zero) for ry in (0, 1) for rx in (0, 1)]
    # channel c * 4 + 2 r_y + r_x of pixel_shuffle's input is phase (r_y, r_x) of channel c
    return shuffle(torch.stack(grids, dim=2).flatten(1, 2))


class PackedFastLIC(FastLIC):
    """A FastLIC whose ``anchor_params`` and ``nonanchor_params`` run on the phase
    grids (see the module doc); made by :func:`to_packed`, for inference only."""

    packed_context_weight: torch.Tensor   # (2C, 2M, 3, 3), from packed_context_weight()
    packed_context_bias: torch.Tensor     # (2C,)
    #: how an ONNX export interleaves the phases, a key of fastlic.model.subpixel.SHUFFLES
    onnx_shuffle = "depth_to_space"

    def anchor_params(self, hyper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = _side_by_side(hyper, ANCHOR_PHASES)
        if self.anchor_net is None:   # shared network: the context of a zero latent is its bias
            b, _, h, w = inputs.shape
            bias = self.context.bias.view(1, -1, 1, 1).expand(b, -1, h, w).to(inputs.dtype)
            params = self.nonanchor_net(torch.cat((inputs, bias), dim=1))
        else:
            params = self.anchor_net(inputs)
        return self._scattered(params, ANCHOR_PHASES)

    def nonanchor_params(self, hyper: torch.Tensor, y_hat_anchor: torch.Tensor):
        anchors = torch.cat([_phase(y_hat_anchor, ry, rx) for ry, rx in ANCHOR_PHASES], dim=1)
        ctx = F.conv2d(anchors, self.packed_context_weight, self.packed_context_bias, padding=1)
        c = self.packed_context_bias.shape[0] // 2
        ctx = torch.cat((ctx[:, :c], ctx[:, c:]), dim=3)  # phase (0, 1) left, (1, 0) right
        params = self.nonanchor_net(torch.cat((_side_by_side(hyper, NONANCHOR_PHASES), ctx), 1))
        return self._scattered(params, NONANCHOR_PHASES)

    def _scattered(self, params: torch.Tensor, phases) -> tuple[torch.Tensor, torch.Tensor]:
        scale, mean = self._split(params)
        # eager mode runs F.pixel_shuffle (the depth_to_space entry), whatever exports write
        kind = self.onnx_shuffle if torch.onnx.is_in_onnx_export() else "depth_to_space"
        shuffle = SHUFFLES[kind]
        return _scatter(scale, phases, shuffle), _scatter(mean, phases, shuffle)

    def forward(self, *args, **kwargs):
        raise TypeError("a packed FastLIC is an inference copy; train the model it came from")


def to_packed(model: FastLIC, inplace: bool = False) -> PackedFastLIC:
    """A copy of ``model`` (or ``model`` itself) whose checkerboard stages compute
    only the positions they serve; for inference (the packed context kernel is a
    snapshot of the trained one)."""
    if not inplace:
        model = copy.deepcopy(model)
    ctx = model.context
    with torch.no_grad():
        weight = packed_context_weight(ctx.weight * ctx.kernel_mask)
        model.register_buffer("packed_context_weight", weight, persistent=False)
        model.register_buffer("packed_context_bias", ctx.bias.detach().repeat(2),
                              persistent=False)
    model.__class__ = PackedFastLIC
    return model
