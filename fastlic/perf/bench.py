"""``fastlic bench``: encode and decode latency over a folder of images.

Every image is compressed and decompressed ``repeat`` times, each call timed on its
own with the device synchronised; one warm-up round trip on the first image is
dropped. Reported per direction: p50, p90, p99 latency (ms), images per second
(calls / summed latency) and megapixels per second.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".webp", ".tif", ".tiff"}


@dataclasses.dataclass(frozen=True)
class Latency:
    """Seconds per call and pixels per call of one direction."""

    seconds: tuple[float, ...]
    pixels: tuple[int, ...]

    def summary(self) -> dict[str, float]:
        ms = 1e3 * np.asarray(self.seconds)
        total = float(np.sum(self.seconds))
        return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                "p99_ms": float(np.percentile(ms, 99)), "images_per_s": len(ms) / total,
                "megapixels_per_s": sum(self.pixels) / total / 1e6, "calls": len(ms)}


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def _timed(codec, fn, *args, **kwargs):
    codec.synchronize()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    codec.synchronize()
    return out, time.perf_counter() - start


def bench(codec, files: list[Path], repeat: int = 1, progress: bool = True,
          checksum: bool = True):
    """(encode Latency, decode Latency, mean bpp) over ``files``; compress with ``checksum``."""
    from tqdm import tqdm  # noqa: PLC0415

    from ..runtime.image import read_image  # noqa: PLC0415

    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    enc, dec, pix, bpp = [], [], [], []
    for i, path in enumerate(tqdm(files, desc="bench", unit="image", file=sys.stderr,
                                  disable=not progress)):
        image = read_image(path, drop_alpha=True)[0]
        if i == 0:   # warm-up: lazy initialisation, allocator, autotuning
            codec.decompress(codec.compress(image))
        for _ in range(repeat):
            data, t_enc = _timed(codec, codec.compress, image, checksum=checksum)
            _, t_dec = _timed(codec, codec.decompress, data)
            enc.append(t_enc)
            dec.append(t_dec)
            pix.append(image.shape[0] * image.shape[1])
        bpp.append(8 * len(data) / pix[-1])
    return Latency(tuple(enc), tuple(pix)), Latency(tuple(dec), tuple(pix)), float(np.mean(bpp))


def format_report(codec, n_files: int, repeat: int, enc: Latency, dec: Latency,
                  bpp: float, dtype: str = "float32") -> str:
    on = codec.device if dtype == "float32" else f"{codec.device} ({dtype})"
    lines = [f"{n_files} images x {repeat}, backend {codec.backend} on {on}, "
             f"model {codec.info.name}, mean {bpp:.3f} bpp",
             f"{'':<8}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'img/s':>10}{'MP/s':>9}"]
    for name, lat in (("encode", enc), ("decode", dec)):
        s = lat.summary()
        lines.append(f"{name:<8}{s['p50_ms']:>10.2f}{s['p90_ms']:>10.2f}{s['p99_ms']:>10.2f}"
                     f"{s['images_per_s']:>10.2f}{s['megapixels_per_s']:>9.2f}")
    return "\n".join(lines)
