"""TensorRT backend: one engine per stage of an exported model directory, FP16, cached.

::

    export dir ─▶ .build: graph ─▶ serialized engine (built once, cached)
               ─▶ trt.Runtime.deserialize_cuda_engine ─▶ execution context per stage
    run: float32 numpy ─h2d─▶ torch CUDA tensors ─▶ set_input_shape / set_tensor_address
         ─▶ execute_async_v3(current torch stream) ─▶ torch.empty outputs ─d2h─▶ numpy

Options of :func:`load_engines`: ``device`` ("cuda" or "cuda:N"), ``precision``
("fp16": FP16 with the FP32 nodes of :mod:`fastlic.export.fp16` pinned; "fp32"),
``deform`` ("auto", "plugin": fastlic's Python plugin running the PyTorch math,
TensorRT >= 10.6; "native": the parser's DeformConv, >= 10.1; see
:mod:`fastlic.engines.tensorrt.plugin`), the profile (``min_size``, ``opt_size``,
``max_size`` as (H, W) pixels, multiples of 64, and ``max_batch``), ``cache_dir``
(default :func:`fastlic.cache.cache_root`, i.e. ~/.cache/fastlic) and
``verify`` (check the graph hashes of the manifest).

``tensorrt`` is imported only when this backend is chosen (:func:`import_tensorrt`,
called by :func:`load_engines` and, to fail before any export, by the runtime's
option check); without it the error is an
EngineError saying what to install. An execution context is not safe to share, so
each engine runs one call at a time (a lock); the copies are timed as the
sub-stages ``<stage>.h2d`` / ``<stage>.d2h`` like the torch engine's on CUDA.

Written against TensorRT 10's documented Python API; this module has never run on a
real TensorRT (only on a fake ``tensorrt`` module, see tests/engines/test_tensorrt_engine.py).
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import torch

from ...cache import cache_root
from ...errors import EngineError
from ...manifest import load_manifest
from ...modelfile import load_network
from ...stages import EXACT_STAGES, STAGES, StageSpec
from ...timing import sub_stage
from ..base import Engine, export_directory
from .build import (BuildOptions, Profile, check_version, load_or_build,
                             register_plugins, resolve_deform, stage_graph)

INSTALL = ("backend 'tensorrt' needs NVIDIA TensorRT 10.1 or newer for Python and a CUDA GPU: "
           "pip install tensorrt (or tensorrt-cu12 / tensorrt-cu11 for one CUDA major)")


class TensorRTEngine(Engine):
    """Runs one deserialized engine (``trt.ICudaEngine``) on ``device``; float32 numpy I/O."""

    def __init__(self, spec: StageSpec, trt, engine, device: torch.device, profile: Profile,
                 file: str):
        super().__init__(spec)
        self.engine = engine
        self.device = device
        self.profile = profile
        self.file = file
        _check_io(trt, engine, spec, file)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"TensorRT could not create an execution context for {file} "
                              "(out of GPU memory?)")
        self._lock = threading.Lock()

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        return f"TensorRT engine of {self.file} on {self.device}"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock, on_device(self.device):
            stream = torch.cuda.current_stream(self.device)
            with sub_stage(f"{self.spec.name}.h2d"):
                feed = {n: torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=np.float32))
                        .to(self.device) for n in self.spec.inputs}
            for name, tensor in feed.items():
                self._bind_input(name, tensor)
            outputs = {n: self._bind_output(n) for n in self.spec.outputs}
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run {self.file} (its log above says why)")
            stream.synchronize()   # so that d2h below times the copies, not the network
            with sub_stage(f"{self.spec.name}.d2h"):
                return {n: t.cpu().numpy() for n, t in outputs.items()}

    def _bind_input(self, name: str, tensor: torch.Tensor) -> None:
        shape = tuple(tensor.shape)
        if not self.context.set_input_shape(name, shape):
            raise EngineError(f"{self.spec.name} input {name} of shape {shape} is outside the "
                              f"TensorRT profile ({self.profile.describe()}); load the engines "
                              "with a larger max_size or max_batch")
        self.context.set_tensor_address(name, tensor.data_ptr())

    def _bind_output(self, name: str) -> torch.Tensor:
        shape = tuple(self.context.get_tensor_shape(name))
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        self.context.set_tensor_address(name, out.data_ptr())
        return out


def _check_io(trt, engine, spec: StageSpec, file: str) -> None:
    """The engine's I/O tensors must be the stage's, float32, inputs as inputs."""
    found = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        found[name] = (engine.get_tensor_mode(name), engine.get_tensor_dtype(name))
    want = {n: trt.TensorIOMode.INPUT for n in spec.inputs}
    want.update({n: trt.TensorIOMode.OUTPUT for n in spec.outputs})
    bad = sorted(n for n in set(want) | set(found)
                 if n not in found or n not in want or found[n] != (want[n], trt.float32))
    if bad:
        raise EngineError(f"the TensorRT engine of {file} does not have the float32 tensors "
                          f"{sorted(want)} of stage {spec.name} (wrong: {bad}); delete the "
                          "engine cache and export the model again")


def import_tensorrt():
    """The ``tensorrt`` module, or EngineError saying what to install."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional backend, imported when chosen
    except ImportError:
        raise EngineError(INSTALL) from None
    check_version(trt)
    return trt


def check_device(device: str) -> torch.device:
    """The CUDA torch device for ``device``; EngineError for another device or without CUDA."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type != "cuda":
        raise EngineError(f"TensorRT runs on a CUDA GPU, not {device!r}; pass device cuda or "
                          "cuda:N")
    if not torch.cuda.is_available():
        raise EngineError(f"TensorRT needs a CUDA GPU, but torch {torch.__version__} (CUDA "
                          f"{torch.version.cuda or 'none'}) sees none; use the torch or "
                          "onnxruntime backend on the CPU")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EngineError(f"no GPU {dev}: {torch.cuda.device_count()} visible; use cuda:0..")
    return dev


def on_device(device: torch.device):
    """Make ``device`` CUDA's current device (TensorRT builds and runs on the current one)."""
    return torch.cuda.device(device)


def gpu_name(device: torch.device) -> str:
    """Name and compute capability of ``device`` (part of the engine cache key)."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"


def load_engines(directory, device: str = "cuda", *, precision: str = "fp16", deform: str = "auto",
                 min_size=(64, 64), opt_size=(512, 768), max_size=(2048, 2048),
                 max_batch: int = 1, cache_dir: str | Path | None = None, verify: bool = True,
                 log=None, exact=None) -> dict[str, Engine]:
    """One engine per stage from an exported directory (engines never export:
    :mod:`fastlic.runtime.sources` does). Builds missing engines (minutes), else loads cached ones.
    The exact stages run on torch CUDA (:func:`exact_engines`), from ``exact`` (an
    ExactEntropy) or the directory's weights file."""
    trt = import_tensorrt()
    dev = check_device(device)
    profile = Profile(min_size, opt_size, max_size, max_batch)
    directory = export_directory(directory)
    manifest = load_manifest(directory, verify=verify)
    options = BuildOptions(precision, resolve_deform(trt, deform), profile)
    logger = trt.Logger(trt.Logger.WARNING)
    register_plugins(trt, logger, options.deform)
    runtime = trt.Runtime(logger)
    cache, log = cache_root(cache_dir), log or _stderr
    if exact is None:   # first: a missing weights file fails before any build
        exact = _exact_from_dir(directory, manifest)
    exact = exact_engines(exact, dev)
    with on_device(dev):
        gpu = gpu_name(dev)
        engines = {stage: _stage_engine(trt, logger, runtime, directory,
                                        stage_graph(manifest, stage, precision), options, gpu,
                                        cache, dev, log)
                   for stage in STAGES if stage not in EXACT_STAGES}
    return {**engines, **exact}


def _exact_from_dir(directory: Path, manifest):
    if not manifest.weights_file:
        raise EngineError(f"{directory} holds no weights file, so the exact entropy stages "
                          f"cannot run; export again with `fastlic export --model WEIGHTS`")
    return load_network(directory / manifest.weights_file).exact


def exact_engines(exact, device: torch.device) -> dict[str, Engine]:
    """The exact stages on torch CUDA beside TensorRT, from the export's weights copy.

    Not TensorRT layers: its builder picks kernels per GPU (reduced-precision tactics
    under the FP16 flag, transform-based convolutions) and no documented setting rules
    out every one that rounds, while the exact path's argument needs GEMMs over
    integers (docs/exact.md)."""
    from ..pytorch.engine import METHODS, TorchEngine  # noqa: PLC0415

    return {name: TorchEngine(STAGES[name], getattr(exact, METHODS[name]), str(device))
            for name in EXACT_STAGES}


def _stage_engine(trt, logger, runtime, directory: Path, graph, options: BuildOptions, gpu: str,
                  cache: Path, device: torch.device, log) -> TensorRTEngine:
    """Deserialize the cached engine; a cached file TensorRT rejects is rebuilt once."""
    blob, built = load_or_build(trt, logger, directory, graph, options, gpu, cache, log)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None and not built:          # stale or corrupt cache file
        blob, _ = load_or_build(trt, logger, directory, graph, options, gpu, cache, log, True)
        engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise EngineError(f"TensorRT {trt.__version__} cannot load the engine it built from "
                          f"{graph.file} (its log above says why)")
    return TensorRTEngine(STAGES[graph.stage], trt, engine, device, options.profile, graph.file)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
