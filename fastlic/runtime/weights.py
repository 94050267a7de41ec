"""Writing a model file the runtime can load: weights, entropy tables, identity."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..entropy.tables import build_tables
from ..model.quant import calibrate, calibration_photos, enable_qat, with_exact
from ..model.weights import save_model


def ship_model(model, path: str | Path, name: str, quality: int, half: bool = True,
               metadata: dict | None = None) -> None:
    """Save ``model`` for the runtime: fp16 weights (if ``half``), its probability
    tables and its exact entropy path (``exact.*``, integers).

    The tables and the integer networks are built from the weights exactly as they are
    stored (after fp16 rounding), once, here; encoder and decoder both read them from
    the file. A model trained without ``--qat`` is converted after training, its
    activation steps calibrated on scikit-image's photos (``metadata`` says which).
    """
    model = copy.deepcopy(model).float().eval()
    model.exact = None   # rebuilt below from the stored weights
    conversion = "qat" if model.qat is not None else "post-training"
    if model.qat is None:
        enable_qat(model, calibrate(model, calibration_photos()))
    if half:
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    tables = build_tables(model)
    model = with_exact(model, tables)
    metadata = {"exact_conversion": conversion, **(metadata or {})}
    save_model(model, path, extra_tensors=tables.to_tensors(), half=half,
               metadata={"name": name, "quality": str(quality), **(metadata or {})})
