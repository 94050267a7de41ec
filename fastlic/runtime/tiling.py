"""Tiles: run a stage on overlapping windows of a large input, so memory grows with
the tile, not the image.

    input (1, C, H, W) ──▶ windows: core + halo ──stage──▶ output ──crop core──▶ paste

A window is a core (the part of the output it owns) grown by a halo on every side
(clipped at the input's borders) that the stage reads but whose outputs are thrown
away. When the halo covers the stage's receptive field, every kept output sees
exactly the inputs it would see untiled, with the same zero padding at the image
borders:

* the exact stages (h_s, anchor, nonanchor) then return the same bits tiled or not
  (integer arithmetic; tests/runtime/test_tiling.py checks it), provided window origins keep
  the checkerboard's parity: every origin is a multiple of the latent tile, an even
  number;
* the float stages (g_a, g_s) differ by float summation order only, and g_a also by
  what its deformable convolution samples beyond the halo (``python -m
  benchmarks.memory`` measures the PSNR and bpp difference).

An input no larger than one tile is one window: the stage runs on it whole, as
before tiling existed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Window:
    """One tile in input units: ``core`` rows/columns it owns, ``outer`` what it reads."""

    core: tuple[slice, slice]
    outer: tuple[slice, slice]

    def inner(self, scale: float) -> tuple[slice, slice]:
        """The core within the stage's output of ``outer``, the output being ``scale``
        times the input's size (1/16 for g_a, 4 for h_s, 16 for g_s)."""
        return tuple(slice(_scaled(c.start - o.start, scale), _scaled(c.stop - o.start, scale))
                     for c, o in zip(self.core, self.outer))

    def target(self, scale: float) -> tuple[slice, slice]:
        """The core in the stage's whole output."""
        return tuple(slice(_scaled(c.start, scale), _scaled(c.stop, scale)) for c in self.core)


def _scaled(n: int, scale: float) -> int:
    value = n * scale
    if value != int(value):
        raise ValueError(f"tile edge {n} is not a multiple of 1/{scale}")
    return int(value)


def windows(height: int, width: int, tile: int, halo: int) -> list[Window]:
    """Cover an input of height x width with tiles of ``tile`` (the last row and column
    of tiles may be smaller), each grown by ``halo``; raster order."""
    if tile < 1 or halo < 0:
        raise ValueError(f"tile must be >= 1 and halo >= 0, got {tile} and {halo}")

    def spans(n: int) -> list[tuple[slice, slice]]:
        return [(slice(a, min(a + tile, n)), slice(max(a - halo, 0), min(a + tile + halo, n)))
                for a in range(0, n, tile)]

    return [Window((rc, cc), (ro, co)) for rc, ro in spans(height) for cc, co in spans(width)]


def run_tiled(run: Callable[[dict], dict], inputs: dict[str, np.ndarray], scale: float,
              tile: int, halo: int) -> dict[str, np.ndarray]:
    """``run`` (one stage: name -> (1, C, H, W) array in, name -> array out) on windows of
    its inputs (all of one height and width), the outputs' cores pasted into arrays of
    ``scale`` times that size. One window: ``run(inputs)`` itself."""
    height, width = next(iter(inputs.values())).shape[-2:]
    tiles = windows(height, width, tile, halo)
    if len(tiles) == 1:
        return run(inputs)
    out: dict[str, np.ndarray] = {}
    for win in tiles:
        part = run({k: np.ascontiguousarray(v[(..., *win.outer)]) for k, v in inputs.items()})
        for name, value in part.items():
            value = np.asarray(value)
            if name not in out:
                shape = (*value.shape[:-2], _scaled(height, scale), _scaled(width, scale))
                out[name] = np.empty(shape, value.dtype)
            out[name][(..., *win.target(scale))] = value[(..., *win.inner(scale))]
    return out
