"""Evaluation: metrics, classical codecs at equal bpp, BD-rate, plots and tables.

    metrics.py    psnr, ms_ssim, bpp on uint8 images (numpy only)
    classical.py  JPEG / WebP / AVIF / JPEG XL through Pillow; sweep, match_bpp
    bdrate.py     Bjøntegaard delta rate (pchip by default, or the VCEG cubic fit)
    report.py     rd_plot (PNG, matplotlib imported only there), markdown_table

A typical comparison on a folder of images: code each image with fastlic, then
``match_bpp(codec, img, fastlic_bpp)`` for each classical codec, average bpp and
PSNR per codec, and ``bd_rate`` the fastlic curve against each classical curve.
"""
from __future__ import annotations

from .bdrate import bd_rate
from .classical import (CODECS, ClassicalCodec, Coded, CodecUnavailableError, RDPoint,
                        available_codecs, codec_versions, get_codec, match_bpp, sweep)
from .metrics import bpp, ms_ssim, psnr
from .report import PlotUnavailableError, markdown_table, rd_plot

__all__ = [
    "CODECS", "ClassicalCodec", "Coded", "CodecUnavailableError", "PlotUnavailableError",
    "RDPoint", "available_codecs", "bd_rate", "bpp", "codec_versions", "get_codec",
    "markdown_table", "match_bpp", "ms_ssim", "psnr", "rd_plot", "sweep",
]
