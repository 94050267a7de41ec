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
