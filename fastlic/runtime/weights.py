"""Writing a model file the runtime can load: weights, entropy tables, identity."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..entropy.tables import build_tables
from ..model.weights import save_model


def ship_model(model, path: str | Path, name: str, quality: int, half: bool = True,
               metadata: dict | None = None) -> None:
    """Save ``model`` for the runtime: fp16 weights (if ``half``) and its probability tables.

    The tables are built from the weights exactly as they are stored (after fp16
    rounding), once, here; encoder and decoder both read them from the file.
    """
    model = copy.deepcopy(model).float().eval()
    if half:
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    tables = build_tables(model)
    save_model(model, path, extra_tensors=tables.to_tensors(), half=half,
               metadata={"name": name, "quality": str(quality), **(metadata or {})})
