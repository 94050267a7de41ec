"""fastlic evaluate: 2 tiny images, tiny shipped models, JPEG and WebP."""
from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastlic.cli import main as cli
from fastlic.evaluation import get_codec, run
from fastlic.evaluation.classical import CodecUnavailableError
from fastlic.evaluation.run import Point, bd_cells, choose_settings, quality_at
from fastlic.modelfile import ship_model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from skimage import data
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(data.coffee()[100:164, 200:296]).save(folder / "a.png")
    Image.fromarray(data.astronaut()[:64, 180:244]).save(folder / "b.png")
    return folder


@pytest.fixture(scope="module")
def ladder(tiny_model, tmp_path_factory):
    """Two tiny shipped models at different rates (the second's latents are 3x larger)."""
    folder = tmp_path_factory.mktemp("ladder")
    paths = [folder / "q1.safetensors", folder / "q2.safetensors"]
    ship_model(tiny_model, paths[0], name="tiny-q1", quality=1)
    big = copy.deepcopy(tiny_model)
    with torch.no_grad():
        big.g_a[-1].weight.mul_(3.0)
    ship_model(big, paths[1], name="tiny-q2", quality=2)
    return [str(p) for p in paths]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_model_reports_codec_psnr_at_its_bpp(images, ladder, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli(["evaluate", str(images), "--model", ladder[0], "--codecs", "jpeg,webp",
                "--points", "4", "--out", str(out)]) == 0
    assert "n/a (one fastlic point)" in capsys.readouterr().out
    rows = _rows(out / "points.csv")
    per_image = [r for r in rows if r["image"] != "mean"]
    means = [r for r in rows if r["image"] == "mean"]
    assert {r["image"] for r in per_image} == {"a.png", "b.png"}
    assert len(per_image) == 2 * len(means)                 # every point on both images
    assert {r["codec"] for r in means} == {"fastlic", "jpeg", "webp"}
    for codec in ("jpeg", "webp"):
        n = sum(r["codec"] == codec for r in means)
        assert 2 <= n <= 4
    fast = next(r for r in means if r["codec"] == "fastlic")
    assert float(fast["bpp"]) == pytest.approx(np.mean([float(r["bpp"]) for r in per_image
                                                        if r["codec"] == "fastlic"]))
    report = (out / "report.md").read_text()
    assert "Each codec's PSNR at fastlic's bpp" in report and "| q1 |" in report
    for png in ("rd_psnr.png", "rd_ms_ssim.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_settings_span_the_fastlic_range(images, ladder, tmp_path):
    out = tmp_path / "report"
    assert cli(["evaluate", str(images), "--model", ladder[0], "--model", ladder[1],
                "--codecs", "jpeg", "--out", str(out)]) == 0
    means = [r for r in _rows(out / "points.csv") if r["image"] == "mean"]
    fast = sorted(float(r["bpp"]) for r in means if r["codec"] == "fastlic")
    jpeg = sorted((float(r["bpp"]), int(r["setting"])) for r in means if r["codec"] == "jpeg")
    assert fast[0] < fast[1]
    assert jpeg[0][0] <= fast[0] or jpeg[0][1] == 1     # JPEG's headers alone may be above it
    assert jpeg[-1][0] >= fast[1]
    report = (out / "report.md").read_text()
    assert "one fastlic point" not in report
    assert "| jpeg | " in report.split("## BD-rate")[1]


def test_bd_cells_and_interpolation_oracles():
    codec = [Point("c", str(i), "mean", r, q, 1 - 10 ** (-q / 20))
             for i, (r, q) in enumerate([(0.2, 28.0), (0.4, 31.0), (0.8, 34.0), (1.6, 37.0)])]
    cheaper = [Point("fastlic", str(i), "mean", 0.8 * p.bpp, p.psnr, p.ms_ssim) for i, p in enumerate(codec)]
    assert bd_cells(cheaper, codec) == ["-20.00 %", "-20.00 %"]
    assert bd_cells(cheaper[:1], codec) == ["n/a (one fastlic point)"] * 2
    assert bd_cells([Point("fastlic", "x", "mean", 1, 5, 0.1), Point("fastlic", "y", "mean", 2, 6, 0.2)],
                    codec)[0].startswith("n/a (the curves share no quality interval")
    assert quality_at(codec, math.sqrt(0.2 * 0.4)) == pytest.approx(29.5)   # halfway in log bpp
    assert math.isnan(quality_at(codec, 0.1)) and math.isnan(quality_at(codec, 2.0))


def test_choose_settings_brackets_targets(images):
    imgs = [np.asarray(Image.open(images / n).convert("RGB")) for n in ("a.png", "b.png")]
    jpeg = get_codec("jpeg")
    settings = choose_settings(jpeg, imgs, [0.5, 1.0, 2.0, 1e-6, 1e3])
    assert settings == sorted(set(settings))
    assert jpeg.lowest in settings and jpeg.highest in settings   # unreachable targets clamp


def test_unavailable_codec_is_skipped_with_the_reason(images, ladder, tmp_path, monkeypatch, capsys):
    real = run.get_codec

    def fake(name):
        if name == "webp":
            raise CodecUnavailableError("webp: not built here")
        return real(name)

    monkeypatch.setattr(run, "get_codec", fake)
    out = tmp_path / "report"
    assert cli(["evaluate", str(images), "--model", ladder[0], "--codecs", "jpeg,webp",
                "--points", "2", "--out", str(out)]) == 0
    assert "Skipped webp: webp: not built here" in (out / "report.md").read_text()
    assert {r["codec"] for r in _rows(out / "points.csv")} == {"fastlic", "jpeg"}


def test_usage_errors(images, tmp_path, capsys):
    assert cli(["evaluate", str(images), "--codecs", "jpeg,png", "--out", str(tmp_path)]) == 2
    assert "unknown codec 'png'" in capsys.readouterr().err
    assert cli(["evaluate", str(tmp_path / "missing"), "--codecs", "jpeg"]) == 2
