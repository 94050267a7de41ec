"""The six-graph contract every part of fastlic shares: stage names, tensor names and
their spatial factors. Plain Python: no torch, no backend.

    image ─g_a─▶ y ─h_a─▶ z ─round─▶ ẑ ─h_s─▶ hyper ─anchor─▶ (index, mean) at anchors
    (hyper, ŷ at anchors) ─nonanchor─▶ (index, mean) at non-anchors;  ŷ ─g_s─▶ image_hat

h_s, anchor and nonanchor are the *exact* stages (:data:`EXACT_STAGES`): every engine
runs them in the integer arithmetic of :mod:`fastlic.model.exact`, so they return the
same bits everywhere. Images are padded to a multiple of :data:`STRIDE`.
"""
from __future__ import annotations

import dataclasses

STRIDE = 64   # g_a downsamples by 16, h_a by 4 more: inputs are padded to a multiple


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One codec stage: its graph name and tensor names (all float32, NCHW)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


# anchor's index and mean are defined at anchors ((i + j) even), nonanchor's at
# non-anchors, and zero at the other pass's positions. index: probability-table
# index (an integer in float32); mean: a multiple of 2^-6.
STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("g_a", ("image",), ("y",)),                          # (B,3,H,W) -> (B,M,H/16,W/16)
    StageSpec("h_a", ("y",), ("z",)),                              # -> (B,Nh,H/64,W/64)
    StageSpec("h_s", ("z_hat",), ("hyper",)),                      # -> (B,2M,H/16,W/16)
    StageSpec("anchor", ("hyper",), ("index", "mean")),            # pass 1
    StageSpec("nonanchor", ("hyper", "y_hat_anchor"), ("index", "mean")),  # pass 2
    StageSpec("g_s", ("y_hat",), ("image_hat",)),                  # -> (B,3,H,W)
)}
EXACT_STAGES = ("h_s", "anchor", "nonanchor")

# tensor name -> downsampling factor of its spatial dims relative to the (padded) image
SPATIAL_FACTOR = {"image": 1, "image_hat": 1, "y": 16, "y_hat": 16, "y_hat_anchor": 16,
                  "hyper": 16, "index": 16, "mean": 16, "z": 64, "z_hat": 64}
