"""benchmarks/peers.py: the CompressAI peer comparison runs end to end on tiny images.

Skipped when CompressAI (a benchmark-only tool, not a fastlic dependency) is absent.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str, module_name: str):
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peers():
    shim = _load("_compressai_shim", "_compressai_shim")  # the name peers.py imports
    try:
        shim.import_compressai()
    except ImportError as exc:
        pytest.skip(f"CompressAI not installed: {exc}")
    return _load("peers", "fastlic_benchmarks_peers")


def test_rans_extension_round_trip(peers):
    from compressai.ans import RansDecoder, RansEncoder
    cdf, symbols = [[0, 20000, 65536]], [0, 1, 1, 0, 1]
    data = RansEncoder().encode_with_indexes(symbols, [0] * 5, cdf, [3], [0])
    assert RansDecoder().decode_with_indexes(data, [0] * 5, cdf, [3], [0]) == symbols


def test_peer_runner_pads_and_crops(peers):
    img = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)  # not x64
    runners = peers.peer_runners(bf16=True)
    assert [r.name for r in runners][2:] == ["mbt2018 (bf16 autocast)",
                                             "cheng2020-ckbd (bf16 autocast)"]
    for runner in runners:
        enc, dec, size = peers.time_one(runner, img)
        assert enc > 0 and dec > 0 and size > 0
        assert 0 < runner.decoder_params


def test_main_reports_every_codec(peers, tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    assert peers.main([str(tmp_path), "--limit", "1", "--random-small", "--threads", "1",
                       "--peers-bf16"]) == 0
    out = capsys.readouterr().out
    assert "peer weights random-initialised (timing only; their bpp is meaningless)" in out
    assert "x with the default checksum)" in out
    assert "fastlic (bfloat16) vs mbt2018 (bf16 autocast): decode" in out
    for name in ("| fastlic |", "| fastlic (default) |", "| fastlic (bfloat16) |",
                 "| fastlic (onnxruntime) |", "| mbt2018 |", "| cheng2020-ckbd |",
                 "| mbt2018 (bf16 autocast) |"):
        assert name in out


def test_missing_folder_skips_cleanly(peers, tmp_path):
    assert peers.main([str(tmp_path / "absent")]) == 0
