"""Import CompressAI (benchmark-only peer) without torchvision.

``import compressai`` imports ``compressai.registry.transforms``, which reads
``torchvision.transforms.__dict__`` to register image transforms. The peer
benchmark never uses those transforms, and torchvision has no CPU build for
this torch, so when the real package is missing an empty ``torchvision`` /
``torchvision.transforms`` pair is put in ``sys.modules`` first. A real
torchvision, if installed, is always preferred.

Install (keeps torch as it is; see benchmarks/README.md, "Peers")::

    pip install --no-deps compressai==1.2.8 einops pytorch-msssim requests urllib3 \\
        idna charset-normalizer certifi torch-geometric xxhash psutil pandas
"""
from __future__ import annotations

import importlib.util
import sys
import types

INSTALL_HINT = ("pip install --no-deps compressai==1.2.8 einops pytorch-msssim requests urllib3 "
                "idna charset-normalizer certifi torch-geometric xxhash psutil pandas")


def _stub_torchvision() -> bool:
    """Put empty torchvision modules in sys.modules if torchvision is absent; True if stubbed."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return False
    tv = types.ModuleType("torchvision")
    tvt = types.ModuleType("torchvision.transforms")
    tv.__path__ = []          # a package, so "import torchvision.transforms" resolves
    tv.transforms = tvt
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tvt
    return True


def import_compressai() -> types.ModuleType:
    """Import and return ``compressai`` (with its ``ans`` rANS extension) or raise ImportError.

    The error message names the install command.
    """
    if importlib.util.find_spec("compressai") is None:
        raise ImportError(f"compressai is not installed; install the peers with: {INSTALL_HINT}")
    _stub_torchvision()
    try:
        import compressai
        import compressai.ans  # noqa: F401  (C++ rANS coder used by compress/decompress)
        import compressai.models  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"compressai is installed but cannot be imported ({exc}); "
                          f"install its small dependencies with: {INSTALL_HINT}") from exc
    return compressai
