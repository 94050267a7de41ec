"""Inference engines: one small interface, one module per backend, imported lazily.

Each of the six stages of the codec is an engine that maps named numpy inputs to
named numpy outputs (the ONNX tensor names in :data:`STAGES`). Backends:

- ``torch``: the PyTorch modules (CPU; CUDA with float16 and CUDA graphs), see ``torch_engine.py``.
- ``onnxruntime``: sessions over a ``fastlic export`` directory (CPU; CUDA/TensorRT
  providers when installed), see ``onnxruntime_engine.py``.
- ``tensorrt``: TensorRT 10 engines built from a ``fastlic export`` directory (CUDA,
  FP16, cached), see ``tensorrt_engine.py``; ``tensorrt`` itself is imported only
  when this backend is chosen (``import_tensorrt``).

``load_engines(backend, ...)`` imports the backend module only when asked for.
"""
from __future__ import annotations

import importlib

from ..errors import EngineError
from .base import STAGES, Engine, StageSpec

BACKENDS = {"torch": "fastlic.engines.torch_engine",
            "onnxruntime": "fastlic.engines.onnxruntime_engine",
            "tensorrt": "fastlic.engines.tensorrt_engine"}


def load_engines(backend: str, model, **options) -> dict[str, Engine]:
    """All six stage engines of ``backend`` for ``model``; raises EngineError if unavailable."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    try:
        module = importlib.import_module(BACKENDS[backend])
    except ImportError as exc:
        raise EngineError(f"backend {backend!r} needs a package that is not installed: {exc}") from exc
    return module.load_engines(model, **options)


__all__ = ["STAGES", "Engine", "StageSpec", "BACKENDS", "load_engines"]
