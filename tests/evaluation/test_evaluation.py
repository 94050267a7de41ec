"""fastlic.evaluation: metrics with oracles, BD-rate, classical codecs, report helpers."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from PIL import Image

from fastlic.evaluation import (CODECS, CodecUnavailableError, available_codecs, bd_rate, bpp,
                                get_codec, markdown_table, match_bpp, ms_ssim, psnr, rd_plot, sweep)
from fastlic.evaluation import classical
from fastlic.evaluation.metrics import ms_ssim_scales

AVAILABLE = available_codecs()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """skimage's astronaut, 128x128 uint8 RGB."""
    from skimage import data
    return np.asarray(Image.fromarray(data.astronaut()).resize((128, 128), Image.LANCZOS))


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# --- metrics ---------------------------------------------------------------

def test_psnr_identical_is_inf(astronaut):
    assert psnr(astronaut, astronaut.copy()) == math.inf


def test_psnr_constant_offset_known_value():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5))


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_bpp():
    assert bpp(1000, 100, 80) == 1.0
    with pytest.raises(ValueError):
        bpp(10, 0, 5)


def test_ms_ssim_identity_and_noise(astronaut):
    assert ms_ssim(astronaut, astronaut) == pytest.approx(1.0, abs=1e-12)
    light, heavy = ms_ssim(astronaut, _noisy(astronaut, 5)), ms_ssim(astronaut, _noisy(astronaut, 25))
    assert 1.0 > light > heavy > 0.0


def test_ms_ssim_one_scale_equals_skimage_ssim():
    """A 20x20 image fits one scale, where MS-SSIM is SSIM (skimage is the oracle)."""
    from skimage.metrics import structural_similarity
    a = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    b = _noisy(a, 20, seed=2)
    ref = structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert ms_ssim_scales(20, 20) == 1
    assert ms_ssim(a, b) == pytest.approx(ref, abs=1e-10)


def test_ms_ssim_five_scales_match_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    import torch
    a = np.random.default_rng(3).integers(0, 256, (192, 176, 3), dtype=np.uint8)
    b = _noisy(a, 10, seed=4)
    ta, tb = (torch.from_numpy(v.copy()).permute(2, 0, 1)[None].double() for v in (a, b))
    ref = pytorch_msssim.ms_ssim(ta, tb, data_range=255).item()
    assert ms_ssim(a, b) == pytest.approx(ref, abs=1e-5)  # it builds its window in float32


def test_ms_ssim_scales_for_small_images():
    assert ms_ssim_scales(512, 768) == 5
    assert ms_ssim_scales(176, 300) == 5
    assert ms_ssim_scales(175, 300) == 4
    with pytest.raises(ValueError, match=">= 11"):
        ms_ssim(np.zeros((8, 30, 3), np.uint8), np.zeros((8, 30, 3), np.uint8))


# --- BD-rate -----------------------------------------------------------------

RATES = [0.12, 0.25, 0.48, 0.9]
PSNRS = [28.1, 30.4, 32.9, 35.6]


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_self_and_scaled(method):
    assert bd_rate(RATES, PSNRS, RATES, PSNRS, method=method) == pytest.approx(0.0, abs=1e-9)
    cheaper = [0.9 * r for r in RATES]
    assert bd_rate(cheaper, PSNRS, RATES, PSNRS, method=method) == pytest.approx(-10.0, abs=1e-6)


@pytest.mark.parametrize("method,expected", [("pchip", -4.4174853506), ("cubic", -4.4204627061)])
def test_bd_rate_known_values(method, expected):
    """Values from the `bjontegaard` package (pchip / cubic) on its README example."""
    ra, pa = [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]
    rt, pt = [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]
    assert bd_rate(rt, pt, ra, pa, method=method) == pytest.approx(expected, abs=1e-6)


def test_bd_rate_errors():
    with pytest.raises(ValueError, match="at least 4 points"):
        bd_rate(RATES[:3], PSNRS[:3], RATES, PSNRS, method="cubic")
    with pytest.raises(ValueError, match="at least 2 points"):
        bd_rate(RATES[:1], PSNRS[:1], RATES, PSNRS)
    with pytest.raises(ValueError, match="share no quality interval"):
        bd_rate(RATES, [p + 20 for p in PSNRS], RATES, PSNRS)
    with pytest.raises(ValueError, match="choose one of"):
        bd_rate(RATES, PSNRS, RATES, PSNRS, method="akima")


# --- classical codecs ------------------------------------------------------

def _codec_or_skip(name: str):
    if AVAILABLE[name] is not None:
        pytest.skip(AVAILABLE[name])
    return get_codec(name)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_codec_round_trip(name, astronaut):
    codec = _codec_or_skip(name)
    rec = codec.decode(codec.encode(astronaut, codec.highest - 10))
    assert rec.shape == astronaut.shape and rec.dtype == np.uint8
    assert psnr(astronaut, rec) > 30.0
    low, high = sweep(codec, astronaut, [codec.lowest + 20, codec.highest - 10])
    assert low.bpp < high.bpp and low.psnr < high.psnr and low.ms_ssim < high.ms_ssim


@pytest.mark.parametrize("name", sorted(CODECS))
def test_match_bpp_lands_near_target(name, astronaut):
    codec = _codec_or_skip(name)
    target = 1.5
    below = match_bpp(codec, astronaut, target)
    assert 0.85 * target < below.bpp <= target
    assert below.bpp == bpp(len(below.data), 128, 128)
    nearest = match_bpp(codec, astronaut, target, not_above=False)
    assert abs(nearest.bpp - target) <= abs(below.bpp - target)


def test_missing_plugin_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_jxl", None)  # import pillow_jxl now fails
    assert "pip install pillow-jxl-plugin" in available_codecs()["jxl"]
    with pytest.raises(CodecUnavailableError, match="pillow-jxl-plugin"):
        get_codec("jxl")


def test_missing_pillow_format_is_reported(monkeypatch):
    fake = classical.ClassicalCodec("fake", "NO-SUCH-FORMAT", 0, 100, ())
    monkeypatch.setitem(classical.CODECS, "fake", fake)
    with pytest.raises(CodecUnavailableError, match="Pillow cannot code NO-SUCH-FORMAT"):
        get_codec("fake")


def test_bad_codec_arguments(astronaut):
    with pytest.raises(ValueError, match="choose one of"):
        get_codec("bpg")
    jpeg = get_codec("jpeg")
    with pytest.raises(ValueError, match="1..100"):
        jpeg.encode(astronaut, 0)
    with pytest.raises(ValueError, match="> 0"):
        match_bpp(jpeg, astronaut, 0.0)


# --- report ------------------------------------------------------------------

def test_markdown_table():
    table = markdown_table([("jpeg", 50, np.float64(0.81234), math.inf)], ["codec", "q", "bpp", "psnr"],
                           digits=[0, 0, 3, 2])
    assert table.splitlines() == ["| codec | q | bpp | psnr |", "|---|---|---|---|",
                                  "| jpeg | 50 | 0.812 | inf |"]
    with pytest.raises(ValueError, match="cells"):
        markdown_table([(1, 2)], ["a"])


def test_rd_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = rd_plot({"a": ([0.3, 0.1, 0.2], [34, 30, 32]), "b": ([0.1, 0.4], [29, 33])},
                   tmp_path / "rd.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
