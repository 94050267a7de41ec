"""Where a Codec's model comes from: a shipped weights file or an exported directory.

::

    weights.safetensors ──read_shipped──▶ ShippedModel (ModelInfo, EntropyTables)
                        ──load_model────▶ FastLIC ──▶ torch engines
    export dir: manifest.json, weights.safetensors (a copy), *.onnx ──▶ onnxruntime, TensorRT
    weights, no dir ──cached_export──▶ <cache>/onnx-<sha256[:16]>/ (exported once, reused)

The identity and tables always come from a weights file (the original or its copy
in the export directory), so a Codec has the same ModelInfo and EntropyTables
whichever backend runs its networks.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import BACKENDS
from ..entropy.tables import EntropyTables
from ..errors import EngineError, ManifestError, ModelLoadError, ModelMismatchError, UsageError
from .cache import cache_root  # noqa: F401 - also fastlic.runtime.models.cache_root

if TYPE_CHECKING:
    from .codec import ModelInfo

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
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
    from ..model.weights import file_hash  # noqa: PLC0415
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


OPTIONS = {"torch": {"dtype", "cuda_graphs", "threads", "subpixel", "packed", "channels_last"},
           "onnxruntime": {"providers", "threads", "verify", "spinning", "layout"},
           "tensorrt": {"precision", "deform", "min_size", "opt_size", "max_size", "max_batch",
                        "verify"}}
GRAPH_BACKENDS = ("onnxruntime", "tensorrt")   # run an export directory's ONNX graphs


@dataclasses.dataclass(frozen=True)
class ShippedModel:
    """What a shipped .safetensors says about itself (no network weights loaded)."""

    path: Path
    info: ModelInfo
    tables: EntropyTables


def read_shipped(path: str | Path) -> ShippedModel:
    """Identity (name, sha256[:8], quality, config) and entropy tables of a weights file."""
    from safetensors import safe_open  # noqa: PLC0415

    from ..model.config import ModelConfig  # noqa: PLC0415
    from ..model.weights import file_hash, read_metadata  # noqa: PLC0415
    from .codec import ModelInfo  # noqa: PLC0415 - codec imports this module lazily

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
    from ..model.weights import load_model  # noqa: PLC0415

    try:
        model = load_model(path)[0]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{path} is not a fastlic model: {exc}") from exc
    problem = "it has no exact entropy path" if model.exact is None else model.exact.check()
    if problem:
        raise ModelLoadError(f"{path} cannot be used: {problem}; ship it again with "
                             "`fastlic train-ship` (which converts the entropy networks)")
    return model


def engine_options(backend: str, device: str, options: dict) -> dict:
    """``load_engines`` keyword arguments for ``backend`` on ``device``; EngineError if an
    option does not apply to the backend."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    extra = set(options) - OPTIONS[backend]
    if extra:
        raise EngineError(f"backend {backend} does not take {sorted(extra)}; "
                          f"its options are {sorted(OPTIONS[backend])}")
    if backend == "tensorrt":   # package and GPU first, before any export
        from ..engines import tensorrt_engine  # noqa: PLC0415 - imports torch, not tensorrt

        tensorrt_engine.import_tensorrt()
        tensorrt_engine.check_device(device)
    if backend in ("torch", "tensorrt"):
        return {"device": device, **options}
    if "providers" in options:
        return dict(options)
    return {"providers": ort_providers(device), **options}


def ort_providers(device: str) -> list | None:
    """onnxruntime providers for ``device``: cpu -> None (CPU), cuda[:N] -> CUDA then CPU."""
    if device == "cpu":
        return None
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise EngineError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    import onnxruntime as ort  # noqa: PLC0415 - lazy backend

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise EngineError(f"CUDA is not available to onnxruntime {ort.__version__} (providers: "
                          f"{ort.get_available_providers()}); install onnxruntime-gpu or use "
                          "device cpu")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def shipped_from_dir(directory: Path, weights: Path | None, verify: bool = True) -> ShippedModel:
    """The weights copy of an export directory; ``weights``, if given, must be its source."""
    from ..export.manifest import load_manifest  # noqa: PLC0415 - stdlib only
    from ..model.weights import file_hash  # noqa: PLC0415

    manifest = load_manifest(directory, verify=verify)
    if not manifest.weights_file:
        raise ModelLoadError(f"{directory} holds no weights file, so it lacks the model identity "
                             f"and tables; export again with `fastlic export --model WEIGHTS "
                             f"--out {directory}`")
    if weights is not None and file_hash(weights) != manifest.weights_sha256:
        raise ModelLoadError(f"{directory} was exported from another model than {weights}; "
                             "pass the matching --model-dir or export this model")
    return read_shipped(directory / manifest.weights_file)


def cached_export(weights: Path, cache_dir: str | Path | None = None, log=None) -> Path:
    """The export directory of ``weights`` in the cache, exporting it first if needed.

    Keyed by the weights' sha256; a directory whose manifest does not load or names
    other weights is exported again. Written to a temporary sibling, then renamed.
    """
    from ..model.weights import file_hash  # noqa: PLC0415

    log = log or _stderr
    if not Path(weights).is_file():
        raise ModelLoadError(f"model weights not found: {weights}")
    digest = file_hash(weights)
    target = cache_root(cache_dir) / f"onnx-{digest[:16]}"
    if _usable(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"exporting {weights} to ONNX once, into {target} (reused afterwards)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _export(weights, tmp, digest, log)
        _install(tmp, target, digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export(weights: Path, out: Path, digest: str, log) -> None:
    from ..export import export_model  # noqa: PLC0415 - needs torch + onnx

    check = importlib.util.find_spec("skimage") is not None   # validation photos
    export_model(load_network(Path(weights)), out, weights_sha256=digest, weights_file=weights,
                 check=check, log=log)


def _usable(directory: Path, digest: str) -> bool:
    from ..export.manifest import load_manifest  # noqa: PLC0415

    if not directory.is_dir():
        return False
    try:
        manifest = load_manifest(directory, verify=False)
    except ManifestError:
        return False
    return manifest.weights_sha256 == digest and bool(manifest.weights_file)


def _install(tmp: Path, target: Path, digest: str) -> None:
    """Move a finished export into place; another process's equal export may win the race."""
    if target.exists() and not _usable(target, digest):
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not _usable(target, digest):
            raise


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
