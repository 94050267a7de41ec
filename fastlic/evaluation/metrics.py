"""Distortion and rate metrics on 8-bit images: PSNR, MS-SSIM, bits per pixel.

Conventions (the ones CompressAI and most learned-compression papers use):

- ``psnr``: one MSE over every pixel of every channel (RGB PSNR), peak 255.
  Identical images give ``inf``. A data-set mean is the mean of per-image PSNRs.
- ``ms_ssim``: Wang, Simoncelli & Bovik (2003), 5 scales, Gaussian window 11 with
  sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Computed on each RGB channel, then
  the mean over channels (as ``pytorch_msssim.ms_ssim``). Filtering is "valid"
  (no padding); contrast-structure and SSIM terms are clamped at 0 before the
  product (as ``pytorch_msssim``). Between scales the image is averaged over
  2x2 blocks; an odd side is first padded by repeating its last row/column
  (``pytorch_msssim`` zero-pads there instead; even sizes such as Kodak give
  identical results).
- Small images: a scale needs both sides >= 11 pixels. When the image is too
  small for 5 scales, the first ``n`` scales that fit are used and their weights
  renormalised to sum to 1 (5 scales need a short side of at least 176). A short
  side under 11 raises ``ValueError``.
"""
from __future__ import annotations

import math

import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5
_K1, _K2, _PEAK = 0.01, 0.03, 255.0


def bpp(num_bytes: int, h: int, w: int) -> float:
    """Bits per pixel of ``num_bytes`` for an h x w image."""
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    if num_bytes < 0:
        raise ValueError(f"byte count must be >= 0, got {num_bytes}")
    return 8.0 * num_bytes / (h * w)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    """Both uint8, same shape, (H, W) or (H, W, C); else ValueError."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
            raise ValueError(f"{name} must be a uint8 numpy array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim not in (2, 3):
            raise ValueError(f"{name} must be HxW or HxWxC, got shape {x.shape}")
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 (H, W[, C]) images over all channels, peak 255; inf if equal."""
    _check_pair(a, b)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(_PEAK ** 2 / mse))


def _gaussian() -> np.ndarray:
    """Normalised 1-D Gaussian taps, float64 (WINDOW,)."""
    x = np.arange(WINDOW, dtype=np.float64) - (WINDOW - 1) / 2
    g = np.exp(-(x ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (H, W, C) float64 -> (H-10, W-10, C)."""
    n = len(g)
    h, w = x.shape[0] - n + 1, x.shape[1] - n + 1
    rows = sum(g[k] * x[k:k + h] for k in range(n))
    return sum(g[k] * rows[:, k:k + w] for k in range(n))


def _ssim_cs(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and contrast-structure of (H, W, C) float64 images -> (C,), (C,)."""
    c1, c2 = (_K1 * _PEAK) ** 2, (_K2 * _PEAK) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x ** 2
    var_y = _filter_valid(y * y, g) - mu_y ** 2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (lum * cs_map).mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def _downsample(x: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks of (H, W, C); an odd side is edge-padded by one first."""
    pad = ((0, x.shape[0] % 2), (0, x.shape[1] % 2), (0, 0))
    if any(p[1] for p in pad):
        x = np.pad(x, pad, mode="edge")
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim_scales(h: int, w: int) -> int:
    """How many MS-SSIM scales (at most 5) fit an h x w image; 0 if not even one."""
    n = 0
    while n < len(MS_SSIM_WEIGHTS) and min(h, w) // (2 ** n) >= WINDOW:
        n += 1
    return n


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM in [0, 1] of uint8 (H, W[, C]) images: per channel, then channel mean.

    Uses fewer than 5 scales (weights renormalised) for short sides under 176;
    raises ValueError if the short side is under 11. See the module docstring.
    """
    _check_pair(a, b)
    n = ms_ssim_scales(a.shape[0], a.shape[1])
    if n == 0:
        raise ValueError(f"MS-SSIM needs both sides >= {WINDOW} pixels, got {a.shape[:2]}")
    weights = np.asarray(MS_SSIM_WEIGHTS[:n])
    if n < len(MS_SSIM_WEIGHTS):  # the standard 5 weights sum to 1.0001: keep them as they are
        weights = weights / weights.sum()
    x, y = (v.astype(np.float64).reshape(v.shape[0], v.shape[1], -1) for v in (a, b))
    g = _gaussian()
    terms = []
    for scale in range(n):
        ssim_c, cs_c = _ssim_cs(x, y, g)
        if scale < n - 1:
            terms.append(np.maximum(cs_c, 0.0))
            x, y = _downsample(x), _downsample(y)
    terms.append(np.maximum(ssim_c, 0.0))
    per_channel = np.prod(np.stack(terms) ** weights[:, None], axis=0)
    return float(per_channel.mean())
