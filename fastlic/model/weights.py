"""Saving and loading model weights as ``.safetensors`` with the config in the metadata."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .codec import FastLIC
from .config import ModelConfig
from .quant import prepare_for


# The checkerboard context convolution reads 12 of its 25 kernel taps (a fixed
# mask); a file stores only those, under this name, which saves 13/25 of the
# largest tensor (0.85 MB of a `small` model in fp16).
_CONTEXT = "context.weight"
_CONTEXT_TAPS = "context.weight_live_taps"


def _live_taps(model: FastLIC) -> torch.Tensor:
    return model.context.kernel_mask.flatten().bool()


def _pack_context(tensors: dict, model: FastLIC) -> None:
    weight = tensors.pop(_CONTEXT)
    tensors[_CONTEXT_TAPS] = weight.flatten(2)[:, :, _live_taps(model)].contiguous()


def _unpack_context(tensors: dict, model: FastLIC) -> None:
    """Expand the stored taps to the full kernel, zeros where the mask is (files
    written before the packing hold the full kernel and pass unchanged)."""
    if _CONTEXT_TAPS in tensors:
        taps = tensors.pop(_CONTEXT_TAPS)
        weight = taps.new_zeros(*taps.shape[:2], 25)
        weight[:, :, _live_taps(model)] = taps
        tensors[_CONTEXT] = weight.view(*taps.shape[:2], 5, 5)


def save_model(model: FastLIC, path: str | Path, extra_tensors: dict | None = None,
               half: bool = False, metadata: dict | None = None) -> None:
    """Write the state dict (fp16 if ``half``; the context kernel's live taps only)
    plus ``extra_tensors`` (kept as given)."""
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    _pack_context(tensors, model)
    tensors.update(extra_tensors or {})
    meta = {"config": model.cfg.to_json(), **(metadata or {})}
    # One key holding sorted JSON: safetensors writes several keys in a random
    # order, and the file's sha256 is the model's identity in every bitstream.
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


_META_KEY = "fastlic"


def read_metadata(path: str | Path) -> dict:
    """The metadata dict given to :func:`save_model` (values are strings)."""
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata() or {})
    return json.loads(raw[_META_KEY]) if _META_KEY in raw else raw


def load_model(path: str | Path) -> tuple[FastLIC, dict, dict]:
    """Returns (model in eval mode, float32; tensors not in the state dict; metadata)."""
    meta = read_metadata(path)
    model = FastLIC(ModelConfig.from_json(meta["config"]))
    tensors = load_file(str(path))
    _unpack_context(tensors, model)
    prepare_for(model, tensors)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own}
    model.load_state_dict(state)
    extra = {k: v for k, v in tensors.items() if k not in own}
    return model.eval(), extra, meta


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
