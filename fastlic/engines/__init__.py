"""Inference engines: one small interface, one module per backend, imported lazily.

Each of the six stages of the codec is an engine that maps named numpy inputs to
named numpy outputs (the ONNX tensor names in :data:`STAGES`). Backends:

- ``torch``: the PyTorch modules (CPU; CUDA with float16 and CUDA graphs), see ``pytorch/``.
- ``onnxruntime``: sessions over a ``fastlic export`` directory (CPU; CUDA/TensorRT
  providers when installed), see ``onnxruntime/``.
- ``tensorrt``: TensorRT 10 engines built from a ``fastlic export`` directory (CUDA,
  FP16, cached), see ``tensorrt/``; ``tensorrt`` itself is imported only
  when this backend is chosen (``import_tensorrt``).

``load_engines(backend, ...)`` imports the backend module only when asked for; a backend
whose pip extra is not installed (onnxruntime: ``fastlic[export]``) is a
MissingExtraError naming it (``require_backend``, which the CLI calls before any work).
"""
from __future__ import annotations

import importlib

from ..errors import EngineError, MissingExtraError
from ..stages import STAGES, StageSpec
from .base import Engine

BACKENDS = {"torch": "fastlic.engines.pytorch.engine",
            "onnxruntime": "fastlic.engines.onnxruntime.engine",
            "tensorrt": "fastlic.engines.tensorrt.engine"}


# backend -> (the pip extra that installs it, the packages it imports)
EXTRAS = {"onnxruntime": ("export", ("onnxruntime",))}


def require_extra(extra: str, *modules: str, what: str) -> None:
    """Import each of ``modules``, or raise MissingExtraError naming the pip extra that
    installs them (``what`` needs them: "fastlic export", "--plot", ...)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = isinstance(exc, ModuleNotFoundError) and exc.name == name
            state = "is not installed" if missing else f"does not import ({exc})"
            raise MissingExtraError(f"{what} needs the {name} package, which {state}; "
                                    f'pip install "fastlic[{extra}]"') from None


def require_backend(backend: str) -> None:
    """MissingExtraError if ``backend`` needs packages of an extra that are not installed."""
    if backend in EXTRAS:
        extra, modules = EXTRAS[backend]
        require_extra(extra, *modules, what=f"backend {backend}")


def load_engines(backend: str, model, **options) -> dict[str, Engine]:
    """All six stage engines of ``backend`` for ``model``; raises EngineError if unavailable,
    MissingExtraError if its extra is not installed."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    require_backend(backend)
    try:
        module = importlib.import_module(BACKENDS[backend])
    except ImportError as exc:
        raise EngineError(f"backend {backend!r} needs a package that is not installed: {exc}") from exc
    return module.load_engines(model, **options)


__all__ = ["STAGES", "Engine", "StageSpec", "BACKENDS", "EXTRAS", "load_engines",
           "require_backend", "require_extra"]
