"""Kodak: fastlic against JPEG (4:4:4) and WebP (method 6) at the same bpp, one run.

For each image: fastlic's bpp, PSNR, bit-exactness of the round trip (decoder
output == encoder reconstruction), per-stage encode/decode milliseconds; JPEG and
WebP at the quality whose bpp is nearest fastlic's on that image. Then means,
per-stage medians, and entropy-decoding nanoseconds per coded symbol.

    python benchmarks/kodak.py [KODAK_DIR] [--model PATH] [--repeat 1]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastlic.evaluation.classical import match_bpp
from fastlic.evaluation.metrics import psnr
from fastlic.evaluation.report import markdown_table
from fastlic.runtime.codec import Codec
from fastlic.runtime.memory import keep_freed_memory
from fastlic.timing import StageTimer

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402


def run(folder: Path, model: str | None, repeat: int) -> int:
    codec = Codec.load(model)
    files = sorted(folder.glob("*.png"))
    if not files:
        print(f"no PNG images in {folder}", file=sys.stderr)
        return 1
    print(f"# Kodak, {len(files)} images; model {codec.info.name} ({codec.info.weights_hash.hex()}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {platform.processor() or platform.machine()}")
    enc_t, dec_t = StageTimer(), StageTimer()
    rows, exact, ns_per_symbol = [], 0, []
    for path in files:
        img = np.asarray(Image.open(path).convert("RGB"))
        for _ in range(repeat):
            t0 = time.perf_counter()
            data, recon = codec.compress(img, timer=enc_t, return_reconstruction=True)
            enc_t.times["total"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = codec.decompress(data, timer=dec_t)
            dec_t.times["total"].append(time.perf_counter() - t0)
        decode_s = sum(dec_t.times[f"entropy_decode_{p}"][-1] for p in ("z", "anchor", "nonanchor"))
        ns_per_symbol.append(1e9 * decode_s / codec.coded_symbols(data))
        exact += bool(np.array_equal(out, recon))
        bpp = 8 * len(data) / (img.shape[0] * img.shape[1])
        jpeg = match_bpp("jpeg", img, bpp, not_above=False)
        webp = match_bpp("webp", img, bpp, not_above=False)
        rows.append([path.name, bpp, psnr(img, out), jpeg.bpp, jpeg.psnr, webp.bpp, webp.psnr])
        print(f"  {path.name}: {bpp:.3f} bpp {rows[-1][2]:.2f} dB", file=sys.stderr)
    mean = ["mean", *np.mean([r[1:] for r in rows], axis=0)]
    print(markdown_table(rows + [mean], ["image", "fastlic bpp", "fastlic PSNR", "JPEG bpp",
                                         "JPEG PSNR", "WebP bpp", "WebP PSNR"],
                         digits=[0, 3, 2, 3, 2, 3, 2]))
    print(f"\nbit-exact round trips: {exact}/{len(files)}")
    print(f"entropy decoding: {statistics.median(ns_per_symbol):.1f} ns per coded symbol (median over images)")
    print("\nper-stage milliseconds (median over images):")
    enc, dec = enc_t.medians_ms(), dec_t.medians_ms()
    print(markdown_table([[k, v] for k, v in enc.items()], ["encode stage", "ms"], digits=[0, 1]))
    print()
    print(markdown_table([[k, v] for k, v in dec.items()], ["decode stage", "ms"], digits=[0, 1]))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    p.add_argument("--model", help="weights (default: shipped)")
    p.add_argument("--repeat", type=int, default=1, help="codec runs per image (timing)")
    args = p.parse_args()
    if not Path(args.folder).is_dir():
        print(f"Kodak folder not found: {args.folder}", file=sys.stderr)
        return 1
    keep_freed_memory()   # as the fastlic command does
    return run(Path(args.folder), args.model, args.repeat)


if __name__ == "__main__":
    raise SystemExit(main())
