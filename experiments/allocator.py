"""Encode and decode time with glibc's default malloc thresholds and with
:func:`fastlic.runtime.memory.keep_freed_memory`, per backend, on Kodak images.

Conclusion: the ``fastlic`` command calls ``keep_freed_memory()`` at start and the
README recommends it to services on Linux. With it, torch encoded and decoded 1.32x
faster (decode 111.1 -> 84.4 ms, 4 Kodak images, 3 rounds of 3); onnxruntime, which
keeps its own arena, measured 0.93x (101.3 -> 108.6 ms), within this machine's noise.
Measured on the second ladder (the weights at commit e6b4e96), not the shipped one
(experiments/results/allocator.txt).

The setting is process-wide, so every measurement runs in a child process; the
children of the setups take turns, ``--rounds`` times, so a slow spell of the machine
hits them all alike. Each child loads the shipped default model, codes every image
once to warm up, then ``--repeat`` more times; the table shows medians over all
images, repetitions and rounds. Run on a quiet machine.

    python -m experiments.allocator [KODAK_DIR] [--images 4] [--rounds 3] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._paths import KODAK
from fastlic.evaluation.report import markdown_table

BACKENDS = ("torch", "onnxruntime")
SETTINGS = {"glibc defaults": "off", "keep_freed_memory()": "on"}


def child(args) -> int:
    import numpy as np
    from PIL import Image

    from fastlic.runtime.codec import Codec
    from fastlic.runtime.memory import keep_freed_memory

    if args.child == "on" and not keep_freed_memory():
        print(json.dumps({"error": "no glibc mallopt here"}))
        return 1
    codec = Codec.load(backend=args.backend)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in args.paths]
    streams = [codec.compress(img) for img in images]
    for data in streams:   # warm-up: first decode of each size
        codec.decompress(data)
    enc, dec = [], []
    for _ in range(args.repeat):
        for img, data in zip(images, streams):
            t0 = time.perf_counter()
            codec.compress(img)
            t1 = time.perf_counter()
            codec.decompress(data)
            t2 = time.perf_counter()
            enc.append(1e3 * (t1 - t0))
            dec.append(1e3 * (t2 - t1))
    print(json.dumps({"encode": enc, "decode": dec}))
    return 0


def run_child(setting: str, backend: str, paths: list[Path], repeat: int) -> dict:
    cmd = [sys.executable, "-m", "experiments.allocator", "--child", setting, "--backend", backend,
           "--repeat", str(repeat), "--paths", *map(str, paths)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kodak", nargs="?", default=str(KODAK))
    p.add_argument("--images", type=int, default=4, help="the first N images of the folder")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--paths", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    paths = sorted(Path(args.kodak).glob("*.png"))[: args.images]
    if not paths:
        raise SystemExit(f"no PNG images in {args.kodak}")
    times = {(label, b): ([], []) for label in SETTINGS for b in BACKENDS}
    start = time.perf_counter()
    for r in range(args.rounds):
        for backend in BACKENDS:
            for label, setting in SETTINGS.items():
                result = run_child(setting, backend, paths, args.repeat)
                times[label, backend][0].extend(result["encode"])
                times[label, backend][1].extend(result["decode"])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"# {len(paths)} images of {args.kodak}, {args.rounds} rounds x {args.repeat} repeats "
          f"per setup; {platform.machine()} with {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    rows = []
    for backend in BACKENDS:
        base = [statistics.median(t) for t in times["glibc defaults", backend]]
        for label in SETTINGS:
            enc, dec = (statistics.median(t) for t in times[label, backend])
            rows.append([backend, label, enc, dec, base[0] / enc, base[1] / dec])
    print(markdown_table(rows, ["backend", "malloc", "encode ms", "decode ms",
                                "encode speed-up", "decode speed-up"],
                         digits=[0, 0, 1, 1, 2, 2]))
    print(f"\nruntime: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
