"""What the classical codecs do on a folder of images (Kodak by default) on this machine.

For each available codec (JPEG 4:4:4, WebP method 6, AVIF 4:4:4, JPEG XL) and
each quality setting (``--settings``) or target bpp (``--bpp``, matched per image
with ``match_bpp``), prints the mean over images of bpp, RGB PSNR and MS-SSIM
(means of per-image values), and the median single-thread encode and decode
times (first image dropped as warm-up; the time of a ``--bpp`` row is that of
the final setting only, not the search).

    python benchmarks/classical_kodak.py [DIR] [--codecs jpeg,webp] [--settings 30,60,90]
    python benchmarks/classical_kodak.py --bpp 0.25,0.5,1.0 --limit 6

DIR defaults to ../shared/data/kodak next to the repository; if it is absent the
script says so and exits 0. Unavailable codecs are listed with the reason.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing fastlic
    sys.path.insert(0, str(REPO))

from fastlic.evaluation import (available_codecs, codec_versions, get_codec, markdown_table,
                                match_bpp)
from fastlic.evaluation.classical import ClassicalCodec, Coded, measure
from benchmarks._paths import KODAK as DEFAULT_DIR

EXTENSIONS = {".png", ".ppm", ".bmp", ".tif", ".tiff"}
COLUMNS = ["codec", "setting", "mean bpp", "mean PSNR", "mean MS-SSIM", "enc ms", "dec ms"]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    p.add_argument("--codecs", default="jpeg,webp,avif,jxl", help="comma-separated codec names")
    p.add_argument("--settings", type=lambda s: [int(v) for v in _floats(s)], default=[30, 60, 90],
                   help="quality settings, one row each (clipped to each codec's range)")
    p.add_argument("--bpp", type=_floats, default=None,
                   help="target bpps, matched per image (not above); replaces --settings")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    return p.parse_args(argv)


def load_images(folder: Path, limit: int | None) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 HxWx3) for each image file in ``folder``, sorted by name."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)[:limit]
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append((path.name, np.asarray(im.convert("RGB"))))
    return images


def _timed_point(codec: ClassicalCodec, img: np.ndarray, setting: int) -> tuple[Coded, float, float]:
    """Code ``img`` at ``setting``: (measurements, encode seconds, decode seconds)."""
    t0 = time.perf_counter()
    data = codec.encode(img, setting)
    t1 = time.perf_counter()
    codec.decode(data)
    t2 = time.perf_counter()
    return measure(codec, img, setting, data), t1 - t0, t2 - t1


def run_row(codec: ClassicalCodec, images, setting: int | None, target: float | None) -> list:
    """One table row: mean bpp / PSNR / MS-SSIM and median times over ``images``."""
    coded, enc, dec = [], [], []
    for _, img in images:
        s = setting if target is None else match_bpp(codec, img, target).setting
        c, te, td = _timed_point(codec, img, s)
        coded.append(c)
        enc.append(te)
        dec.append(td)
    timed = slice(1, None) if len(images) > 1 else slice(None)
    label = str(setting) if target is None else f"bpp<={target:g}"
    return [codec.name, label, float(np.mean([c.bpp for c in coded])),
            float(np.mean([c.psnr for c in coded])), float(np.mean([c.ms_ssim for c in coded])),
            1e3 * statistics.median(enc[timed]), 1e3 * statistics.median(dec[timed])]


def _header(argv: list[str], folder: Path, images) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in codec_versions().items())
    h, w = images[0][1].shape[:2]
    return (f"$ python benchmarks/classical_kodak.py {' '.join(argv)}\n"
            f"# {len(images)} images from {folder} (first {h}x{w}); {platform.platform()}, "
            f"{os.cpu_count()} CPUs, python {platform.python_version()}\n# {versions}\n"
            "# means are over images of per-image values; times are medians, one thread, "
            "on a machine that may be busy")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.folder.is_dir():
        print(f"skipped: image folder {args.folder} not found (pass DIR)")
        return 0
    images = load_images(args.folder, args.limit)
    if not images:
        print(f"skipped: no images in {args.folder}")
        return 0
    print(_header(argv, args.folder, images), flush=True)
    reasons = available_codecs()
    rows = []
    for name in args.codecs.split(","):
        if name not in reasons:
            print(f"# {name}: unknown codec; choose from {sorted(reasons)}")
            continue
        if reasons[name] is not None:
            print(f"# {name}: unavailable: {reasons[name]}")
            continue
        codec = get_codec(name)
        for target in args.bpp or []:
            rows.append(run_row(codec, images, None, target))
        for s in [] if args.bpp else args.settings:
            rows.append(run_row(codec, images, min(max(s, codec.lowest), codec.highest), None))
        print(markdown_table(rows[-1:], COLUMNS, digits=[0, 0, 3, 2, 4, 1, 1]).splitlines()[-1],
              file=sys.stderr, flush=True)  # progress
    print(markdown_table(rows, COLUMNS, digits=[0, 0, 3, 2, 4, 1, 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
