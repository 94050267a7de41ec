"""Shared fixtures: tiny random models, real photos from scikit-image, the shared data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """Exports and onnxruntime's blocked graphs go to a folder of the test session, not
    to ~/.cache/fastlic (tests that need their own set FASTLIC_CACHE_DIR or cache_dir)."""
    import os
    before = os.environ.get("FASTLIC_CACHE_DIR")
    os.environ["FASTLIC_CACHE_DIR"] = str(tmp_path_factory.mktemp("fastlic-cache"))
    yield
    if before is None:
        os.environ.pop("FASTLIC_CACHE_DIR", None)
    else:
        os.environ["FASTLIC_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def _no_process_wide_onnxruntime_pool(monkeypatch):
    """In-process CLI runs must not create onnxruntime's process-wide pool: it would bind
    every later session of the test process (tests/engines/test_ort_pool.py checks the pool in
    subprocesses)."""
    import fastlic.cli.options
    monkeypatch.setattr(fastlic.cli.options, "share_onnxruntime_pool", lambda threads: None)


@pytest.fixture(scope="session")
def tiny_model():
    from fastlic.model import FastLIC, get_config
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny")).eval()
    with torch.no_grad():   # a random g_a gives |y| << 0.5: scale it so symbols are non-zero
        model.g_a[-1].weight.mul_(40.0)
        model.h_a[-1].weight.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def weights(tiny_model, tmp_path_factory) -> str:
    """tiny_model shipped as it is ("fastlic-tiny-test", quality 1): the CLI tests' model."""
    from fastlic.modelfile import ship_model
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    ship_model(tiny_model, path, name="fastlic-tiny-test", quality=1)
    return str(path)


@pytest.fixture()
def png(tmp_path, photo) -> Path:
    """The photo fixture written as a PNG."""
    from PIL import Image
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_exact(tiny_model):
    """tiny_model with its exact entropy path (what the engines run), as Codec.from_model
    converts it."""
    from fastlic.entropy.tables import build_tables
    from fastlic.model.quant import with_exact
    return with_exact(tiny_model, build_tables(tiny_model))


@pytest.fixture(scope="session")
def shipped_tiny(tiny_model, tmp_path_factory) -> Path:
    """A copy of tiny_model whose deformable conv really deforms, shipped (fp16 weights,
    tables, name "fastlic-tiny-test", quality 1) to a .safetensors file."""
    import copy

    from fastlic.model.deform import ModulatedDeformConv
    from fastlic.modelfile import ship_model
    model = copy.deepcopy(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulatedDeformConv):
                torch.nn.init.normal_(module.offset_mask.weight, std=0.5)
                torch.nn.init.normal_(module.offset_mask.bias, std=1.0)
    path = tmp_path_factory.mktemp("shipped") / "tiny.safetensors"
    ship_model(model, path, name="fastlic-tiny-test", quality=1)
    return path


@pytest.fixture(scope="session")
def tiny_export(shipped_tiny, tmp_path_factory) -> Path:
    """``fastlic export`` directory of shipped_tiny, with its weights copy; unchecked and
    without the GridSample g_a (about 15 s on one core: export once per session)."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from fastlic.export import export_model
    from fastlic.modelfile import load_model
    out = tmp_path_factory.mktemp("export")
    export_model(load_model(shipped_tiny)[0], out, weights_file=shipped_tiny, check=False,
                 gridsample=False, threads=1)
    return out


@pytest.fixture(scope="session")
def tiny_codec(tiny_model):
    from fastlic.runtime.codec import Codec
    return Codec.from_model(tiny_model)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (scikit-image's bundled 'coffee'), cropped small: (120, 150, 3) uint8."""
    from skimage import data
    return data.coffee()[100:220, 200:350].copy()


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    folder = SHARED_DATA / "kodak"
    if not folder.is_dir():
        pytest.skip(f"shared Kodak images not found at {folder}")
    return folder
