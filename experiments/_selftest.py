"""What an experiment's ``--self-test`` runs on: a tiny random-initialised model shipped to
a file, and a small real photo (the recipes of ``tests/conftest.py``'s ``shipped_tiny``
and ``photo``). The test suite imports no experiment, so these checks run only by hand:

    python -m experiments.NAME --self-test
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def tiny_shipped(folder: Path) -> Path:
    """The ``tiny`` config, random weights scaled so that symbols are non-zero and the
    deformable convolution deforms, shipped (fp16 weights, tables, quality 1) to
    ``folder/tiny.safetensors``."""
    from fastlic.model import FastLIC, get_config
    from fastlic.model.deform import ModulatedDeformConv
    from fastlic.modelfile import ship_model
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny")).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
        model.h_a[-1].weight.mul_(4.0)
        torch.manual_seed(1)
        for module in model.modules():
            if isinstance(module, ModulatedDeformConv):
                torch.nn.init.normal_(module.offset_mask.weight, std=0.5)
                torch.nn.init.normal_(module.offset_mask.bias, std=1.0)
    path = Path(folder) / "tiny.safetensors"
    ship_model(model, path, name="fastlic-tiny-test", quality=1)
    return path


def photo() -> np.ndarray:
    """scikit-image's 'coffee', cropped: (120, 150, 3) uint8."""
    from skimage import data
    return data.coffee()[100:220, 200:350].copy()
