"""Bjøntegaard delta rate: the average bitrate difference of two RD curves at equal quality.

Both curves are turned into log-rate as a function of quality (PSNR in dB, or any
quality in dB such as -10 log10(1 - MS-SSIM)), each is interpolated, and the
difference is averaged over the quality interval the curves share::

    BD-rate = exp( mean over [q_lo, q_hi] of (log R_a(q) - log R_b(q)) ) - 1   (in %)

Negative means curve ``a`` needs fewer bits than ``b`` for the same quality.

Methods:

- ``"pchip"`` (default): a piecewise-cubic Hermite interpolant through the points
  (as in the JVET/AOM common-test-condition spreadsheets and most recent learned
  compression papers). It passes through every point, stays monotone where the
  data are, and does not overshoot, so it is stable with 4 to 8 points.
- ``"cubic"``: the original VCEG-M33 method, a least-squares cubic polynomial
  of log-rate in quality per curve (needs 4 points per curve).

Both give exactly ``100 * (s - 1)`` % for a curve whose rates are the other's times s.
"""
from __future__ import annotations

import numpy as np

METHODS = ("pchip", "cubic")
_MIN_POINTS = {"pchip": 2, "cubic": 4}


def _curve(rate, quality, method: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (quality ascending, log-rate) float64 arrays of one curve."""
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"curve {which}: {r.size} rates but {q.size} quality values")
    if r.size < _MIN_POINTS[method]:
        raise ValueError(f"curve {which}: BD-rate ({method}) needs at least "
                         f"{_MIN_POINTS[method]} points, got {r.size}")
    if not (np.isfinite(r).all() and np.isfinite(q).all()) or (r <= 0).any():
        raise ValueError(f"curve {which}: rates must be finite and > 0 and quality finite "
                         "(an inf PSNR means a lossless point: leave it out)")
    order = np.argsort(q, kind="stable")
    q, log_r = q[order], np.log(r[order])
    if method == "pchip" and (np.diff(q) <= 0).any():
        raise ValueError(f"curve {which}: two points have the same quality {q[:-1][np.diff(q) <= 0]}; "
                         "pchip needs distinct quality values")
    return q, log_r


def _integral(q: np.ndarray, log_r: np.ndarray, lo: float, hi: float, method: str) -> float:
    """Integral of the interpolated log-rate over quality in [lo, hi]."""
    if method == "cubic":
        poly = np.polyint(np.polyfit(q, log_r, 3))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    from scipy.interpolate import PchipInterpolator
    return float(PchipInterpolator(q, log_r).integrate(lo, hi))


def bd_rate(rate_a, psnr_a, rate_b, psnr_b, method: str = "pchip") -> float:
    """BD-rate in percent of curve a against curve b (negative: a saves bits).

    Rates in any unit (bpp, bytes) as long as both curves use the same one; at
    least 2 points per curve for "pchip", 4 for "cubic". ValueError if a curve
    is too short or malformed, or if the curves share no quality interval.
    """
    if method not in METHODS:
        raise ValueError(f"unknown BD-rate method {method!r}; choose one of {list(METHODS)}")
    qa, la = _curve(rate_a, psnr_a, method, "a")
    qb, lb = _curve(rate_b, psnr_b, method, "b")
    lo, hi = max(qa[0], qb[0]), min(qa[-1], qb[-1])
    if not hi > lo:
        raise ValueError(f"the curves share no quality interval: a spans {qa[0]:.3f}..{qa[-1]:.3f}, "
                         f"b spans {qb[0]:.3f}..{qb[-1]:.3f}")
    diff = (_integral(qa, la, lo, hi, method) - _integral(qb, lb, lo, hi, method)) / (hi - lo)
    return float((np.exp(diff) - 1.0) * 100.0)
