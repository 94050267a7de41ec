"""Shared fixtures: tiny random models, real photos from scikit-image, the shared data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model():
    from fastlic.model import FastLIC, get_config
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny")).eval()
    with torch.no_grad():   # a random g_a gives |y| << 0.5: scale it so symbols are non-zero
        model.g_a[-1].weight.mul_(40.0)
        model.h_a[-1].weight.mul_(4.0)
    return model


@pytest.fixture(scope="session")
def tiny_codec(tiny_model):
    from fastlic.runtime.codec import Codec
    return Codec.from_model(tiny_model)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (scikit-image's bundled 'coffee'), cropped small: (120, 150, 3) uint8."""
    from skimage import data
    return data.coffee()[100:220, 200:350].copy()


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    folder = SHARED_DATA / "kodak"
    if not folder.is_dir():
        pytest.skip(f"shared Kodak images not found at {folder}")
    return folder
