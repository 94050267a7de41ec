"""The shipped encoder rounds y - μ to nearest (experiments/deadzone.py measured the
offsets against it; its own check: ``python -m experiments.deadzone --self-test``)."""
from __future__ import annotations

import numpy as np


def test_the_shipped_encoder_rounds_to_nearest():
    from fastlic.runtime.codec import Codec
    r = np.array([-1.6, -0.4, 0.49, 0.51, 2.5], dtype=np.float32)
    assert Codec._symbols(r).tolist() == [-2.0, -0.0, 0.0, 1.0, 2.0]
