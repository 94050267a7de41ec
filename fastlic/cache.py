"""Where fastlic keeps what it derives once per machine: ONNX exports of weights files,
TensorRT engines, onnxruntime's blocked graphs. Stdlib only, so that every engine
can ask without importing torch."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else $FASTLIC_CACHE_DIR, else $XDG_CACHE_HOME/fastlic or ~/.cache/fastlic."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("FASTLIC_CACHE_DIR"):
        return Path(os.environ["FASTLIC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastlic"
