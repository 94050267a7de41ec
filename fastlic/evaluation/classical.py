"""Classical codecs through Pillow, for rate-distortion comparisons at equal bpp.

Every codec maps an integer quality setting (bpp grows with it) to a file:

=====  ==========  ========================================================
name   settings    what is fixed
=====  ==========  ========================================================
jpeg   1..100      libjpeg(-turbo), 4:4:4 (``subsampling=0``), optimised
                   Huffman tables (``optimize=True``), baseline
webp   0..100      libwebp, ``method=6``; lossy WebP is always 4:2:0 (the
                   format has no 4:4:4), Pillow exposes no sharp-YUV switch
avif   0..100      Pillow's built-in AVIF plugin (Pillow >= 11.2, libavif),
                   4:4:4, full range, ``speed=6`` (Pillow's default), 1 thread
jxl    0..99       ``pillow-jxl-plugin`` (libjxl; GPL-3.0, optional),
                   JPEG-style quality mapped by libjxl to a distance,
                   ``effort=7`` (libjxl's default), 1 encoder thread
=====  ==========  ========================================================

The rate is the whole file (container and headers included), as a user would
store it. A codec that cannot run here is reported by :func:`available_codecs`
with the reason, and :func:`get_codec` raises :class:`CodecUnavailableError`.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
from typing import Iterable, NamedTuple

import numpy as np
from PIL import Image

from ..errors import FastlicError, ImageFormatError
from .metrics import bpp, ms_ssim, psnr


class CodecUnavailableError(FastlicError):
    """A classical codec cannot run here (plugin or library missing); the message says why."""


class RDPoint(NamedTuple):
    """One rate-distortion point: bits per pixel, RGB PSNR (dB), MS-SSIM."""

    bpp: float
    psnr: float
    ms_ssim: float


@dataclasses.dataclass(frozen=True)
class Coded:
    """One image coded by a classical codec at one setting, with its measurements."""

    codec: str
    setting: int
    data: bytes = dataclasses.field(repr=False)
    bpp: float
    psnr: float
    ms_ssim: float


@dataclasses.dataclass(frozen=True)
class ClassicalCodec:
    """A Pillow format with fixed options and an integer quality ``lowest..highest``."""

    name: str
    pil_format: str
    lowest: int
    highest: int
    options: tuple[tuple[str, object], ...]
    plugin: str | None = None  # module that registers the format, imported before use
    install_hint: str = ""

    def encode(self, img: np.ndarray, setting: int) -> bytes:
        """uint8 (H, W, 3) image -> file bytes at quality ``setting``."""
        _check_image(img)
        if not isinstance(setting, (int, np.integer)) or not self.lowest <= setting <= self.highest:
            raise ValueError(f"{self.name} setting must be an integer in "
                             f"{self.lowest}..{self.highest}, got {setting!r}")
        self._load_plugin()
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=self.pil_format, quality=int(setting),
                                         **dict(self.options))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """File bytes -> uint8 (H, W, 3)."""
        self._load_plugin()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def _load_plugin(self) -> None:
        if self.plugin is not None:
            importlib.import_module(self.plugin)


CODECS: dict[str, ClassicalCodec] = {c.name: c for c in (
    ClassicalCodec("jpeg", "JPEG", 1, 100, (("subsampling", 0), ("optimize", True))),
    ClassicalCodec("webp", "WEBP", 0, 100, (("method", 6),)),
    ClassicalCodec("avif", "AVIF", 0, 100,
                   (("subsampling", "4:4:4"), ("speed", 6), ("range", "full"), ("max_threads", 1)),
                   install_hint="needs Pillow >= 11.2 built with libavif and an AV1 encoder"),
    ClassicalCodec("jxl", "JXL", 0, 99, (("effort", 7), ("num_threads", 1)), plugin="pillow_jxl",
                   install_hint="pip install pillow-jxl-plugin"),
)}


def _check_image(img: np.ndarray) -> None:
    """Raise ImageFormatError unless ``img`` is uint8 (H, W, 3)."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ImageFormatError(f"classical codecs take uint8 HxWx3 arrays, got "
                               f"{getattr(img, 'dtype', type(img).__name__)} "
                               f"{getattr(img, 'shape', '')}")


def _unavailable_reason(codec: ClassicalCodec) -> str | None:
    """None if ``codec`` round-trips a 16x16 image here, else why not (one line)."""
    probe = np.zeros((16, 16, 3), np.uint8)
    try:
        out = codec.decode(codec.encode(probe, (codec.lowest + codec.highest) // 2))
    except ImportError as exc:
        return f"{codec.name}: plugin {codec.plugin!r} is not installed ({exc}); {codec.install_hint}"
    except (KeyError, OSError, ValueError, RuntimeError) as exc:
        hint = f"; {codec.install_hint}" if codec.install_hint else ""
        return f"{codec.name}: Pillow cannot code {codec.pil_format} here ({exc!r}){hint}"
    if out.shape != probe.shape:
        return f"{codec.name}: probe decoded to shape {out.shape}, expected {probe.shape}"
    return None


def available_codecs() -> dict[str, str | None]:
    """Each codec name -> None if it works here, else the reason it does not."""
    return {name: _unavailable_reason(codec) for name, codec in CODECS.items()}


def get_codec(name: str) -> ClassicalCodec:
    """The codec called ``name``; ValueError if unknown, CodecUnavailableError if it cannot run."""
    if name not in CODECS:
        raise ValueError(f"unknown classical codec {name!r}; choose one of {sorted(CODECS)}")
    reason = _unavailable_reason(CODECS[name])
    if reason is not None:
        raise CodecUnavailableError(reason)
    return CODECS[name]


def _as_codec(codec: ClassicalCodec | str) -> ClassicalCodec:
    return get_codec(codec) if isinstance(codec, str) else codec


def measure(codec: ClassicalCodec, img: np.ndarray, setting: int, data: bytes) -> Coded:
    """Decode ``data`` (``img`` coded at ``setting``) and measure bpp, PSNR and MS-SSIM."""
    rec = codec.decode(data)
    if rec.shape != img.shape:
        raise ValueError(f"{codec.name} decoded shape {rec.shape}, expected {img.shape}")
    return Coded(codec.name, int(setting), data, bpp(len(data), img.shape[0], img.shape[1]),
                 psnr(img, rec), ms_ssim(img, rec))


def sweep(codec: ClassicalCodec | str, img: np.ndarray, settings: Iterable[int]) -> list[RDPoint]:
    """One RDPoint(bpp, psnr, ms_ssim) per setting, in the order given."""
    codec = _as_codec(codec)
    points = []
    for s in settings:
        c = measure(codec, img, s, codec.encode(img, s))
        points.append(RDPoint(c.bpp, c.psnr, c.ms_ssim))
    return points


def _search(codec: ClassicalCodec, img: np.ndarray, target: float) -> dict[int, bytes]:
    """Binary search for the highest setting with bpp <= target; returns every file tried."""
    h, w = img.shape[:2]
    tried: dict[int, bytes] = {}

    def rate(s: int) -> float:
        if s not in tried:
            tried[s] = codec.encode(img, s)
        return bpp(len(tried[s]), h, w)

    lo, hi = codec.lowest, codec.highest
    if rate(lo) > target or rate(hi) <= target:
        return tried
    while hi - lo > 1:  # invariant: rate(lo) <= target < rate(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if rate(mid) <= target else (lo, mid)
    return tried


def match_bpp(codec: ClassicalCodec | str, img: np.ndarray, target_bpp: float,
              not_above: bool = True) -> Coded:
    """``img`` coded at the setting whose bpp best matches ``target_bpp``.

    With ``not_above`` (default), the largest bpp <= target among the settings
    tried, or the smallest bpp if even the lowest setting is above it; otherwise
    the nearest bpp. The search assumes bpp grows with the setting; where it does
    not quite (JPEG, WebP), the answer is the best of the ~8 settings tried.
    """
    if not target_bpp > 0:
        raise ValueError(f"target bpp must be > 0, got {target_bpp}")
    codec = _as_codec(codec)
    _check_image(img)
    tried = _search(codec, img, target_bpp)
    h, w = img.shape[:2]
    rates = {s: bpp(len(d), h, w) for s, d in tried.items()}
    below = [s for s in rates if rates[s] <= target_bpp]
    if not_above:
        best = max(below, key=rates.get) if below else min(rates, key=rates.get)
    else:
        best = min(rates, key=lambda s: abs(rates[s] - target_bpp))
    return measure(codec, img, best, tried[best])


def codec_versions() -> dict[str, str]:
    """Library versions behind each codec (for the header of a benchmark), 'absent' if none."""
    from PIL import __version__ as pil_version
    from PIL import features
    versions = {"pillow": pil_version}
    for key, feature in (("libjpeg-turbo", "libjpeg_turbo"),):
        versions[key] = features.version_feature(feature) or "absent"
    for key, module in (("libwebp", "webp"), ("libavif", "avif")):
        try:
            versions[key] = features.version_module(module) or "absent"
        except ValueError:  # a Pillow that does not know the module
            versions[key] = "absent"
    try:
        from PIL import AvifImagePlugin
        versions["aom"] = AvifImagePlugin.get_codec_version("aom") or "absent"
    except (ImportError, AttributeError, ValueError):
        versions["aom"] = "absent"
    try:
        from importlib.metadata import version
        versions["pillow-jxl-plugin"] = version("pillow-jxl-plugin")
    except ImportError:
        versions["pillow-jxl-plugin"] = "absent"
    return versions
