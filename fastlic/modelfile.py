"""Model files: what a ``.safetensors`` holds, how one is written, read and shipped.

::

    FastLIC ──ship_model──▶ q<N>.safetensors: fp16 weights, entropy tables, exact.* integers,
                            metadata (config, name, quality)
    q<N>.safetensors ──read_shipped──▶ ShippedModel (ModelInfo, EntropyTables): no network
                     ──load_network──▶ FastLIC with its exact stages (eval, float32, CPU)

A model's identity in every bitstream is its name and the first 8 bytes of the file's
sha256 (:class:`ModelInfo`). The package's rate ladder is ``fastlic/weights/q<N>``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .entropy.tables import EntropyTables, build_tables
from .errors import ModelLoadError, ModelMismatchError, UsageError
from .model import FastLIC
from .model.config import ModelConfig
from .model.quant import calibrate, calibration_photos, enable_qat, prepare_for, with_exact


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What identifies a model in a bitstream."""

    name: str
    weights_hash: bytes  # 8 bytes
    quality: int
    latent_channels: int
    anchor_family: str
    nonanchor_family: str



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


def exact_model(model, tables=None):
    """``model`` if it has its exact stages, else a converted copy (:func:`with_exact`;
    ``tables``: its EntropyTables, built here if not given)."""
    if model.exact is not None:
        return model
    if tables is None:
        tables = build_tables(model)
    return with_exact(model, tables)


# ---- the package's ladder

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_QUALITY = 3


def shipped_ladder() -> dict[int, Path]:
    """The rate ladder in the package: quality -> ``fastlic/weights/q<quality>.safetensors``."""
    found = {int(p.stem[1:]): p for p in WEIGHTS_DIR.glob("q*.safetensors") if p.stem[1:].isdigit()}
    return dict(sorted(found.items()))


def shipped_weights(quality: int | None = None) -> Path:
    """The package's weights file of ``quality`` (default: DEFAULT_QUALITY)."""
    quality = DEFAULT_QUALITY if quality is None else quality
    ladder = shipped_ladder()
    if quality not in ladder:
        raise UsageError(f"quality {quality} is not shipped; choose one of "
                         f"{', '.join(map(str, ladder)) or '(none: the package has no weights)'}")
    return ladder[quality]


@functools.lru_cache(maxsize=None)
def _hash8(path: Path, mtime_ns: int) -> bytes:
    return bytes.fromhex(file_hash(path))[:8]


def shipped_weights_for(model_name: str, weights_hash: bytes) -> Path:
    """The shipped weights file a bitstream names (by its 8-byte weights hash);
    ModelMismatchError if no shipped model made it."""
    for path in shipped_ladder().values():
        if _hash8(path, path.stat().st_mtime_ns) == bytes(weights_hash):
            return path
    raise ModelMismatchError(f"bitstream was encoded with model {model_name} (weights "
                             f"{bytes(weights_hash).hex()}), which this package does not ship; "
                             f"decode with --model pointing to those weights")


@dataclasses.dataclass(frozen=True)
class ShippedModel:
    """What a shipped .safetensors says about itself (no network weights loaded)."""

    path: Path
    info: ModelInfo
    tables: EntropyTables


def read_shipped(path: str | Path) -> ShippedModel:
    """Identity (name, sha256[:8], quality, config) and entropy tables of a weights file."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model weights not found: {path}")
    try:
        meta = read_metadata(path)
        with safe_open(str(path), framework="pt") as f:
            tables = {k: f.get_tensor(k) for k in f.keys() if k.startswith("tables.")}
        cfg = ModelConfig.from_json(meta["config"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(f"{path} is not a fastlic model: {exc}") from exc
    info = ModelInfo(meta.get("name") or f"fastlic-{cfg.name}", bytes.fromhex(file_hash(path))[:8],
                     int(meta.get("quality", 0)), cfg.latent_channels, cfg.anchor_family,
                     cfg.nonanchor_family)
    return ShippedModel(path, info, EntropyTables.from_tensors(tables))


def load_network(path: Path):
    """The FastLIC module of a weights file (eval, float32, CPU)."""
    try:
        model = load_model(path)[0]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{path} is not a fastlic model: {exc}") from exc
    problem = "it has no exact entropy path" if model.exact is None else model.exact.check()
    if problem:
        raise ModelLoadError(f"{path} cannot be used: {problem}; ship it again with "
                             "`fastlic train-ship` (which converts the entropy networks)")
    return model
