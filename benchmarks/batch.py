"""Images/s of the sequential loop against fastlic.serving.batch (compress_many and
decompress_many) on Kodak images, the shipped model, torch threads=1.

    python -m benchmarks.batch [KODAK_DIR] [--images 16] [--turns 3] [--workers 2]

Each turn runs the sequential loop and the pipelined one back to back (their order
alternates between turns), encode and decode, after one warm-up of each; the table
gives median images/s over turns and the median of the per-turn ratios
(pipelined / sequential, > 1: the pipeline is faster). The load average is printed:
on cores busy with other work there is little to overlap into.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._paths import KODAK
from fastlic.runtime.codec import Codec
from fastlic.serving.batch import compress_many, decompress_many


def load_images(folder: Path, count: int) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.png"))[:count]
    if not paths:
        from skimage import data   # no Kodak: crops of scikit-image's photos
        return [data.astronaut()[:512, :]] * count
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def sequential(fn: str, codec: Codec, items: list) -> list:
    return [getattr(codec, fn)(item) for item in items]


def pipelined(fn: str, codec: Codec, items: list, workers: int) -> list:
    many = compress_many if fn == "compress" else decompress_many
    results = list(many(codec, items, workers=workers))
    bad = [r for r in results if not r.ok]
    if bad:
        raise bad[0].error
    return [r.value for r in results]


def rate(run, items: list) -> float:
    start = time.perf_counter()
    run()
    return len(items) / (time.perf_counter() - start)


def turns(fn: str, codec: Codec, items: list, workers: int, count: int) -> dict:
    """Per-turn images/s of both loops, order alternating; one warm-up each first."""
    loops = {"sequential": lambda: sequential(fn, codec, items),
             "pipelined": lambda: pipelined(fn, codec, items, workers)}
    for run in loops.values():
        run()
    rates = {name: [] for name in loops}
    for turn in range(count):
        order = list(loops) if turn % 2 == 0 else list(loops)[::-1]
        for name in order:
            rates[name].append(rate(loops[name], items))
    return rates


def report(fn: str, rates: dict) -> None:
    ratios = [p / s for p, s in zip(rates["pipelined"], rates["sequential"])]
    seq, pipe = (statistics.median(rates[k]) for k in ("sequential", "pipelined"))
    print(f"{fn:10s} sequential {seq:6.3f} img/s   pipelined {pipe:6.3f} img/s   "
          f"ratio {statistics.median(ratios):.2f} (turns: "
          + ", ".join(f"{r:.2f}" for r in ratios) + ")")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch")
    parser.add_argument("folder", nargs="?", type=Path, default=KODAK)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quality", type=int, default=3)
    args = parser.parse_args(argv)
    codec = Codec.load(quality=args.quality, threads=args.threads)
    images = load_images(args.folder, args.images)
    print(f"{len(images)} images {images[0].shape}, quality {args.quality}, torch threads "
          f"{args.threads}, workers {args.workers}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    datas = sequential("compress", codec, images)
    report("compress", turns("compress", codec, images, args.workers, args.turns))
    report("decompress", turns("decompress", codec, datas, args.workers, args.turns))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
