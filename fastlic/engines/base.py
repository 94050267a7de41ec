"""The engine interface: named numpy inputs -> named numpy outputs for one stage.

h_s, anchor and nonanchor are the *exact* stages (:data:`EXACT_STAGES`): every engine
runs them in the integer arithmetic of :mod:`fastlic.model.exact`, in float32 and
float64 whatever its dtype, so they return the same bits everywhere.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import EngineError


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


class Engine:
    """Runs one stage. Subclasses implement ``_run``; ``run`` checks names once.

    Engines must be safe to call from several threads at once.
    """

    def __init__(self, spec: StageSpec):
        self.spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(inputs) != set(self.spec.inputs):
            raise EngineError(f"stage {self.spec.name} takes inputs {list(self.spec.inputs)}, "
                              f"got {sorted(inputs)}")
        outputs = self._run(inputs)
        missing = set(self.spec.outputs) - set(outputs)
        if missing:
            raise EngineError(f"stage {self.spec.name} engine did not return {sorted(missing)}")
        return outputs

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line on what runs this stage (shown by ``fastlic profile``)."""
        return type(self).__name__
