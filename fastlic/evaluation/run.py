"""``fastlic evaluate``: fastlic models and classical codecs on the same images.

    fastlic evaluate DIR [--model PATH ...] [--codecs jpeg,webp,avif,jxl] [--out REPORT_DIR]

::

    DIR ─▶ images (RGB uint8) ─┬─▶ each --model: compress, decompress    one RD point per model
                               │                                          (the rate ladder)
                               └─▶ each codec: settings whose mean bpp on a few images
                                   spans SPAN x fastlic's bpp range, then every image
                                   at each setting (classical.sweep)
    mean per (codec, setting) ─┬─▶ BD-rate of fastlic against each codec (PSNR; MS-SSIM in dB)
                               │   when there are >= 2 fastlic points
                               └─▶ each codec's PSNR at each fastlic point's bpp
                                   (linear in log bpp between the codec's points)
    ─▶ REPORT_DIR/points.csv (every image and every mean), report.md, rd_psnr.png, rd_ms_ssim.png

Means are means of per-image values. Lossless points (infinite PSNR) are left
out of BD-rate and interpolation.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import UsageError
from .bdrate import bd_rate
from .classical import CODECS, ClassicalCodec, CodecUnavailableError, get_codec, sweep
from .metrics import bpp, ms_ssim, psnr
from .report import markdown_table, rd_plot

SPAN = (0.7, 2.0)   # classical targets: 0.7 x lowest .. 2 x highest fastlic mean bpp
IMAGE_SUFFIXES = {".png", ".ppm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
FIELDS = ("codec", "setting", "image", "bpp", "psnr", "ms_ssim")


@dataclasses.dataclass(frozen=True)
class Point:
    """One image ("mean": the mean over images) coded by one codec at one setting."""

    codec: str      # "fastlic" or a classical codec name
    setting: str    # the model file's stem for fastlic, the quality setting otherwise
    image: str
    bpp: float
    psnr: float
    ms_ssim: float


def load_images(folder: str | Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(file name, uint8 (H, W, 3)) per image in ``folder``, sorted by name; alpha dropped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append((path.name, np.asarray(im.convert("RGB"))))
    return images


def _bar(items, desc: str):
    return tqdm(items, desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)


def fastlic_points(models: list[str | None], images, backend: str = "torch") -> list[Point]:
    """Compress and decompress every image with each model (None: the shipped default)."""
    from ..runtime.codec import Codec
    points = []
    for path in models:
        codec = Codec.load(path, backend=backend)
        label = Path(path).stem if path else codec.info.name
        for name, img in _bar(images, f"fastlic {label}"):
            data = codec.compress(img)
            rec = codec.decompress(data)
            points.append(Point("fastlic", label, name, bpp(len(data), *img.shape[:2]),
                                psnr(img, rec), ms_ssim(img, rec)))
    return points


def choose_settings(codec: ClassicalCodec, calib: list[np.ndarray], targets) -> list[int]:
    """Per target bpp, the setting whose mean bpp over ``calib`` is nearest (in log); sorted, unique.

    Binary search per target, assuming bpp grows with the setting; every file
    size is computed once.
    """
    sizes: dict[int, float] = {}

    def rate(s: int) -> float:
        if s not in sizes:
            sizes[s] = float(np.mean([bpp(len(codec.encode(im, s)), *im.shape[:2]) for im in calib]))
        return sizes[s]

    chosen = set()
    for t in targets:
        lo, hi = codec.lowest, codec.highest
        if rate(lo) >= t or rate(hi) <= t:
            chosen.add(lo if rate(lo) >= t else hi)
            continue
        while hi - lo > 1:   # rate(lo) < t < rate(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if rate(mid) <= t else (lo, mid)
        chosen.add(min((lo, hi), key=lambda s: abs(math.log(rate(s) / t))))
    return sorted(chosen)


def classical_points(codec: ClassicalCodec, images, settings: list[int]) -> list[Point]:
    """Every image at every setting."""
    points = []
    for name, img in _bar(images, codec.name):
        for s, p in zip(settings, sweep(codec, img, settings)):
            points.append(Point(codec.name, str(s), name, p.bpp, p.psnr, p.ms_ssim))
    return points


def mean_points(points: list[Point]) -> list[Point]:
    """One "mean" Point per (codec, setting), in first-seen order."""
    groups: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.codec, p.setting), []).append(p)
    return [Point(c, s, "mean", *(float(np.mean([getattr(p, k) for p in g]))
                                  for k in ("bpp", "psnr", "ms_ssim")))
            for (c, s), g in groups.items()]


def _db(ms: float) -> float:
    """MS-SSIM as -10 log10(1 - MS-SSIM) dB (inf when 1)."""
    return math.inf if ms >= 1 else -10 * math.log10(1 - ms)


def quality_at(curve: list[Point], target_bpp: float) -> float:
    """The curve's PSNR at ``target_bpp``, linear in log bpp; nan outside its bpp range."""
    pts = sorted((p.bpp, p.psnr) for p in curve if math.isfinite(p.psnr) and p.bpp > 0)
    if not pts or not pts[0][0] <= target_bpp <= pts[-1][0]:
        return math.nan
    rates, quality = zip(*pts)
    return float(np.interp(math.log(target_bpp), np.log(rates), quality))


def bd_cells(fast: list[Point], other: list[Point]) -> list[str]:
    """BD-rate of fastlic against ``other`` on PSNR and on MS-SSIM dB, as table cells."""
    if len(fast) < 2:
        return ["n/a (one fastlic point)"] * 2
    cells = []
    for quality in (lambda p: p.psnr, lambda p: _db(p.ms_ssim)):
        a = [(p.bpp, quality(p)) for p in fast if math.isfinite(quality(p))]
        b = [(p.bpp, quality(p)) for p in other if math.isfinite(quality(p))]
        try:
            cells.append(f"{bd_rate(*zip(*a), *zip(*b)):+.2f} %")
        except (ValueError, TypeError) as exc:
            cells.append(f"n/a ({exc})")
    return cells


def report_markdown(folder, n_images: int, means: list[Point], skipped: dict[str, str]) -> str:
    """The Markdown report: mean points, BD-rates, codec PSNR at fastlic's bpp."""
    fast = [p for p in means if p.codec == "fastlic"]
    codecs = list(dict.fromkeys(p.codec for p in means if p.codec != "fastlic"))
    curves = {c: [p for p in means if p.codec == c] for c in codecs}
    lines = [f"# fastlic evaluation: {folder} ({n_images} images)", ""]
    lines += [f"Skipped {c}: {why}" for c, why in skipped.items()] + [""] * bool(skipped)
    lines += ["## Mean rate-distortion points", "",
              markdown_table([(p.codec, p.setting, p.bpp, p.psnr, p.ms_ssim) for p in means],
                             ["codec", "setting", "bpp", "PSNR dB", "MS-SSIM"], [0, 0, 4, 2, 4]),
              "", "## BD-rate of fastlic (negative: fastlic needs fewer bits)", "",
              markdown_table([(c, *bd_cells(fast, curves[c])) for c in codecs],
                             ["codec", "BD-rate (PSNR)", "BD-rate (MS-SSIM dB)"]),
              "", "## Each codec's PSNR at fastlic's bpp", ""]
    rows = []
    for p in fast:
        for c in codecs:
            q = quality_at(curves[c], p.bpp)
            rows.append((p.setting, p.bpp, p.psnr, c, q, p.psnr - q))
    lines.append(markdown_table(rows, ["fastlic model", "bpp", "fastlic PSNR", "codec", "codec PSNR",
                                       "ΔPSNR"], [0, 4, 2, 0, 2, 2]))
    return "\n".join(lines) + "\n"


def write_report(out: Path, points: list[Point], means: list[Point], markdown: str) -> list[Path]:
    """points.csv, report.md, rd_psnr.png, rd_ms_ssim.png in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "points.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows(dataclasses.astuple(p) for p in points + means)
    (out / "report.md").write_text(markdown)
    names = list(dict.fromkeys(p.codec for p in means))
    curves = {n: [p for p in means if p.codec == n] for n in names}
    psnr_png = rd_plot({n: ([p.bpp for p in c], [p.psnr for p in c]) for n, c in curves.items()},
                       out / "rd_psnr.png", title="RGB PSNR, mean over images")
    ms_png = rd_plot({n: ([p.bpp for p in c], [_db(p.ms_ssim) for p in c]) for n, c in curves.items()},
                     out / "rd_ms_ssim.png", title="MS-SSIM, mean over images",
                     ylabel="MS-SSIM [-10 log10(1 - MS-SSIM) dB]")
    return [out / "points.csv", out / "report.md", psnr_png, ms_png]


def _codecs(names: str) -> tuple[list[ClassicalCodec], dict[str, str]]:
    """The usable codecs among comma-separated ``names``, and why the others are skipped."""
    usable, skipped = [], {}
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in CODECS:
            raise UsageError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}")
        try:
            usable.append(get_codec(name))
        except CodecUnavailableError as exc:
            skipped[name] = str(exc)
    return usable, skipped


def evaluate(folder, models: list[str | None], codec_names: str, out: str | Path,
             points_per_codec: int = 6, calib: int = 4, limit: int | None = None,
             backend: str = "torch") -> str:
    """Run everything, write the report files; returns the Markdown report."""
    codecs, skipped = _codecs(codec_names)
    images = load_images(folder, limit)
    points = fastlic_points(models, images, backend)
    rates = [p.bpp for p in mean_points(points)]
    targets = np.geomspace(SPAN[0] * min(rates), SPAN[1] * max(rates), points_per_codec)
    subset = [img for _, img in images[::max(1, len(images) // calib)][:calib]]
    for codec in codecs:
        print(f"{codec.name}: choosing settings on {len(subset)} images", file=sys.stderr)
        points += classical_points(codec, images, choose_settings(codec, subset, targets))
    means = mean_points(points)
    markdown = report_markdown(folder, len(images), means, skipped)
    for c, why in skipped.items():
        print(f"skipped {c}: {why}", file=sys.stderr)
    write_report(Path(out), points, means, markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastlic evaluate", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="folder of test images (e.g. Kodak)")
    p.add_argument("--model", action="append", metavar="PATH",
                   help="fastlic weights; repeat for a rate ladder (default: the shipped ladder)")
    p.add_argument("--codecs", default="jpeg,webp,avif,jxl",
                   help="classical codecs, comma-separated (unavailable ones are skipped with the "
                        "reason; default: jpeg,webp,avif,jxl)")
    p.add_argument("--out", default="eval_report", help="report folder (default: eval_report)")
    p.add_argument("--points", type=int, default=6, help="settings per classical codec (default: 6)")
    p.add_argument("--calib", type=int, default=4,
                   help="images used to choose the classical settings (default: 4)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--backend", default="torch", help="fastlic inference backend (default: torch)")
    args = p.parse_args(argv)
    if args.points < 2 or args.calib < 1:
        raise UsageError("--points must be >= 2 and --calib >= 1")
    if not args.model:
        from ..modelfile import shipped_ladder  # noqa: PLC0415
        args.model = [str(p) for p in shipped_ladder().values()]
    print(evaluate(args.folder, args.model, args.codecs, args.out, args.points,
                   args.calib, args.limit, args.backend))
    print(f"wrote {args.out}/points.csv, report.md, rd_psnr.png, rd_ms_ssim.png")
    return 0
