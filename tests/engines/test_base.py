"""The engine interface checks its inputs once, for every backend."""
import numpy as np
import pytest

from fastlic.engines.base import Engine
from fastlic.errors import EngineError
from fastlic.stages import STAGES


class Echo(Engine):
    def __init__(self, outputs=("y",)):
        super().__init__(STAGES["g_a"])
        self.outputs = outputs

    def _run(self, inputs):
        return {name: inputs["image"] for name in self.outputs}


def test_a_float_nchw_input_runs():
    x = np.zeros((1, 3, 8, 8), np.float32)
    assert Echo().run({"image": x})["y"] is x


@pytest.mark.parametrize("bad", [{"img": np.zeros((1, 3, 8, 8), np.float32)},
                                 {"image": np.zeros((3, 8, 8), np.float32)},
                                 {"image": np.zeros((1, 3, 8, 8), np.uint8)},
                                 {"image": [[0.0]]}])
def test_wrong_names_ranks_and_dtypes_are_engine_errors(bad):
    with pytest.raises(EngineError, match="g_a"):
        Echo().run(bad)


def test_a_missing_output_is_an_engine_error():
    with pytest.raises(EngineError, match="did not return"):
        Echo(outputs=()).run({"image": np.zeros((1, 3, 8, 8), np.float32)})
