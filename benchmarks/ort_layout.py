"""onnxruntime's CPU graphs as exported ("plain") against the blocked-layout rewrite
(:mod:`fastlic.engines.ort_layout`, the default), in one process on one shared pool.

First every image of the folder is encoded and decoded with both: the bitstreams and
the decoded images must be identical (the rewrite only moves values). Then the first
image is decoded ``--repeat`` times by each, the two taking turns, every stage timed
(the codec's StageTimer); medians after one warm-up, and in how many turns the
blocked decode was the faster. Also prints each layout's ``Codec.load`` time (plain
first, so that the blocked load includes importing onnx).

    python -m benchmarks.ort_layout [DIR] [--model W] [--repeat 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._paths import KODAK
from fastlic.evaluation.report import markdown_table
from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec
from fastlic.runtime.memory import keep_freed_memory
from fastlic.runtime.profiling import StageTimer

LAYOUTS = ("plain", "blocked")


def exactness(codecs: dict, images: list[tuple[str, np.ndarray]]) -> int:
    """How many images give the same bytes and the same decoded image with both."""
    same = 0
    for _, image in images:
        data = {k: c.compress(image) for k, c in codecs.items()}
        decoded = [c.decompress(data["plain"]) for c in codecs.values()]
        same += data["plain"] == data["blocked"] and np.array_equal(*decoded)
    return same


def timed(codecs: dict, image: np.ndarray, repeat: int, pause: float):
    """Stage medians per layout and the turns the blocked decode won."""
    data = codecs["plain"].compress(image)
    timers = {k: StageTimer() for k in codecs}
    won = 0
    for turn in range(repeat + 1):
        order = LAYOUTS if turn % 2 else LAYOUTS[::-1]
        totals = {}
        for layout in order:
            time.sleep(pause)
            t = time.perf_counter()
            with timers[layout].stage("total"):
                codecs[layout].decompress(data, timer=timers[layout])
            totals[layout] = time.perf_counter() - t
        won += turn > 0 and totals["blocked"] < totals["plain"]
    return {k: t.medians_ms(drop_first=1) for k, t in timers.items()}, won


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, nargs="?", default=KODAK)
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pause", type=float, default=0.05, help="seconds before each decode")
    args = p.parse_args(argv)
    import onnxruntime as ort

    from fastlic.engines.onnxruntime_engine import share_thread_pool
    keep_freed_memory()
    share_thread_pool(args.threads)
    onnx_before = "onnx" in sys.modules
    codecs, load_s = {}, {}
    for layout in LAYOUTS:   # plain first: the blocked load then pays the onnx import
        t = time.perf_counter()
        codecs[layout] = Codec.load(args.model, backend="onnxruntime", layout=layout)
        load_s[layout] = time.perf_counter() - t
    from PIL import Image
    images = [(f.name, np.asarray(Image.open(f).convert("RGB")))
              for f in sorted(args.folder.glob("*.png"))]
    if not images:
        raise SystemExit(f"no PNG images in {args.folder}")
    print(f"# {len(images)} images from {args.folder}, model {args.model.name}, onnxruntime "
          f"{ort.__version__} on {platform.machine()} with {os.cpu_count()} cores, one shared "
          f"pool of {args.threads} threads")
    for stage, engine in codecs["blocked"].engines.items():
        if engine.layout != "plain":
            print(f"# blocked {stage}: {engine.layout}")
    print(f"# Codec.load: plain {load_s['plain']:.2f} s, blocked {load_s['blocked']:.2f} s "
          f"({'onnx imported before' if onnx_before else 'including the onnx import'})")
    same = exactness(codecs, images)
    print(f"\nsame bitstream and same decoded image with both layouts: {same}/{len(images)}\n")
    name, image = images[0]
    medians, won = timed(codecs, image, args.repeat, args.pause)
    rows = [[stage, medians["plain"][stage], medians["blocked"][stage],
             medians["blocked"][stage] / medians["plain"][stage]]
            for stage in medians["plain"] if medians["plain"][stage] >= 0.5]
    print(f"decode of {name}, medians of {args.repeat} turns (stages under 0.5 ms left out):\n")
    print(markdown_table(rows, ["stage", "plain ms", "blocked ms", "blocked / plain"],
                         digits=[0, 2, 2, 3]))
    print(f"\nblocked decode faster in {won}/{args.repeat} turns")
    return 0 if same == len(images) else 1


if __name__ == "__main__":
    raise SystemExit(main())
