"""The engine interface: named numpy inputs -> named numpy outputs for one stage
(the stages and their tensors: :mod:`fastlic.stages`).

Every engine runs the exact stages in the integer arithmetic of
:mod:`fastlic.model.exact`, in float32 and float64 whatever its dtype, so they return
the same bits everywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..stages import StageSpec


def export_directory(source) -> Path:
    """``source`` as the export directory an engine loads; EngineError for anything else
    (an in-memory model is exported by :mod:`fastlic.runtime.sources`, not by engines)."""
    if not isinstance(source, (str, Path)):
        raise EngineError(f"this backend loads a `fastlic export` directory, not a "
                          f"{type(source).__name__}; Codec.from_model exports one for it")
    return Path(source)


class Engine:
    """Runs one stage. Subclasses implement ``_run``; ``run`` checks the names, dtype
    (float) and rank (NCHW) of the inputs once, and the output names.

    Engines must be safe to call from several threads at once.
    """

    def __init__(self, spec: StageSpec):
        self.spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(inputs) != set(self.spec.inputs):
            raise EngineError(f"stage {self.spec.name} takes inputs {list(self.spec.inputs)}, "
                              f"got {sorted(inputs)}")
        for name, value in inputs.items():   # the contract: float NCHW (engines cast to theirs)
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != 4:
                what = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
                        else type(value).__name__)
                raise EngineError(f"stage {self.spec.name} input {name} must be a float "
                                  f"(N, C, H, W) numpy array, got {what}")
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
