"""benchmarks/rate_overhead.py splits the file's size against the model's own rate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastlic.modelfile import load_model
from fastlic.runtime.codec import DEFAULT_WEIGHTS

rate_overhead = pytest.importorskip("benchmarks.rate_overhead")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()[:192, 64:320].copy()


def test_per_channel_bits_add_up_to_the_models_rate(astronaut):
    model = load_model(DEFAULT_WEIGHTS)[0].eval()
    bits_z, bits_y = rate_overhead.model_bits(model, astronaut)
    x = torch.from_numpy(astronaut.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.no_grad():
        out = model(x)
    assert bits_y.shape == (model.cfg.latent_channels,)
    assert bits_z == pytest.approx(float(out["bits_z"]), rel=1e-6)
    assert bits_y.sum() == pytest.approx(float(out["bits_y"]), rel=1e-4)


def test_shipped_tables_code_the_coded_channels_at_the_models_rate(astronaut):
    s = rate_overhead.measure(DEFAULT_WEIGHTS, [astronaut])
    assert s["pixels"] == astronaut.shape[0] * astronaut.shape[1]
    assert abs(s["file_y"] / s["model_y"] - 1) < 0.02      # 64 scales, 16-bit probabilities
    assert s["model_skipped"] >= 0 and s["container"] > 0
