"""Where a Codec's engines come from: a weights file, an export directory, the cache.

::

    weights.safetensors ──load_network──▶ FastLIC ──▶ torch engines
    export dir: manifest.json, weights.safetensors (a copy), *.onnx ──▶ onnxruntime, TensorRT
    weights, no dir ──cached_export──▶ <cache>/onnx-<sha256[:16]>/ (exported once, reused)
    a FastLIC in memory, graph backend ──exported_engines──▶ a temporary export directory

This is the one place that decides to export: engines only load what export wrote.

The identity and tables always come from a weights file (the original or its copy
in the export directory), so a Codec has the same ModelInfo and EntropyTables
whichever backend runs its networks.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..cache import cache_root
from ..engines import BACKENDS, load_engines
from ..errors import EngineError, ManifestError, ModelLoadError
from ..manifest import load_manifest
from ..modelfile import ShippedModel, exact_model, file_hash, load_network, read_shipped

OPTIONS = {"torch": {"dtype", "cuda_graphs", "threads", "subpixel", "packed", "channels_last"},
           "onnxruntime": {"providers", "threads", "verify", "spinning", "layout"},
           "tensorrt": {"precision", "deform", "min_size", "opt_size", "max_size", "max_batch",
                        "verify"}}
GRAPH_BACKENDS = ("onnxruntime", "tensorrt")   # run an export directory's ONNX graphs


def module_engines(backend: str, model, **options) -> dict:
    """The stage engines of an in-memory FastLIC (tests, training; its exact stages
    converted if it has none): torch runs the module; a graph backend loads the graphs
    exported, unchecked, to a temporary directory (TensorRT also gets the converted exact
    stages, so they are not read back from a weights file the directory lacks)."""
    model = exact_model(model)
    if backend not in GRAPH_BACKENDS:
        return load_engines(backend, model, **options)
    from ..export import export_model  # noqa: PLC0415 - needs torch + onnx

    with tempfile.TemporaryDirectory(prefix=f"fastlic-{backend}-") as tmp:
        if backend == "tensorrt":
            export_model(model, tmp, check=False, gridsample=False)
            return load_engines(backend, tmp, exact=model.exact, **options)
        export_model(model, tmp, check=False)
        return load_engines(backend, tmp, **options)


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
        from ..engines.tensorrt import engine as tensorrt_engine  # noqa: PLC0415 - not tensorrt

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
