"""The torch engine's ``dtype="bfloat16"`` (g_s in bf16, :mod:`fastlic.model.bfloat16`)
against float32 on this CPU: speed and what it costs in quality.

1. **g_s alone** on the latent of the first image: float32, a plain bf16 copy of g_s
   (``.bfloat16()``), and :class:`~fastlic.model.bfloat16.Bf16Synthesis`; the three
   take turns, medians after one warm-up.
2. **Whole decodes and encodes** (``--no-checksum`` as in ``benchmarks.peers``, and with
   the default checksum, which runs g_s in the encoder too), float32 and bfloat16 codecs
   taking turns, medians, and in how many turns bfloat16 was the faster.
3. **Every image of the folder**: the float32 codec encodes (no checksum); both decode
   that bitstream. PSNR against the original of each decode and of the plain bf16 copy,
   their differences, the share of pixels that differ from float32's image, and whether
   the bfloat16 codec writes the same bytes (it should: only g_s changes). Then with the
   checksum: bfloat16 streams decoded by bfloat16 (must verify) and by float32 (a
   ReconstructionMismatchError where the images differ).

The speed depends on the CPU having native bf16 (AMX or AVX512-BF16; printed in the
header). Run on a quiet machine.

    python -m benchmarks.cpu_bf16 [DIR] [--model W] [--repeat 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._paths import KODAK
from fastlic.errors import ReconstructionMismatchError
from fastlic.evaluation.metrics import psnr
from fastlic.evaluation.report import markdown_table
from fastlic.model.bfloat16 import Bf16Synthesis, native_bf16
from fastlic.model.subpixel import to_subpixel
from fastlic.modelfile import load_model
from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec, _to_uint8_hwc
from fastlic.runtime.memory import keep_freed_memory

DTYPES = ("float32", "bfloat16")


def stage_table(weights: Path, image: np.ndarray, repeat: int) -> str:
    model = to_subpixel(load_model(weights)[0]).to(memory_format=torch.channels_last)
    cl = torch.channels_last
    plain = copy.deepcopy(model.g_s).to(torch.bfloat16).to(memory_format=cl)
    ours = Bf16Synthesis(model.g_s).to(memory_format=cl)
    h, w = (-(-s // 64) * 4 for s in image.shape[:2])
    y = torch.round(4 * torch.randn(1, model.cfg.latent_channels, h, w)).to(memory_format=cl)
    variants = {"float32": lambda: model.g_s(y),
                "bf16, plain copy (.bfloat16())": lambda: plain(y.to(torch.bfloat16)),
                "bf16, Bf16Synthesis (dtype bfloat16)": lambda: ours(y)}
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for turn in range(repeat + 1):
            for k, fn in variants.items():
                t = time.perf_counter()
                fn()
                if turn:
                    times[k].append(1e3 * (time.perf_counter() - t))
    base = statistics.median(times["float32"])
    rows = [[k, statistics.median(v), statistics.median(v) / base] for k, v in times.items()]
    return markdown_table(rows, ["g_s", "ms", "time / float32's"], digits=[0, 1, 3])


def runtime_table(codecs: dict, image: np.ndarray, repeat: int) -> str:
    rows = []
    for checksum in (False, True):
        data = {k: c.compress(image, checksum=checksum) for k, c in codecs.items()}
        times = {k: ([], []) for k in codecs}
        for turn in range(repeat + 1):     # the first turn warms up and is dropped
            for k, codec in codecs.items():
                t0 = time.perf_counter()
                codec.compress(image, checksum=checksum)
                t1 = time.perf_counter()
                codec.decompress(data[k])
                t2 = time.perf_counter()
                if turn:
                    times[k][0].append(1e3 * (t1 - t0))
                    times[k][1].append(1e3 * (t2 - t1))
        for i, what in enumerate(("encode", "decode")):
            f32, b16 = (times[k][i] for k in DTYPES)
            wins = sum(b < f for f, b in zip(f32, b16))
            label = f"{what}, {'default checksum' if checksum else '--no-checksum'}"
            m32, m16 = statistics.median(f32), statistics.median(b16)
            rows.append([label, m32, m16, m16 / m32, f"{wins}/{len(f32)}"])
    return markdown_table(rows, ["", "float32 ms", "bfloat16 ms", "bfloat16 / float32",
                                 "turns bfloat16 faster"], digits=[0, 1, 1, 3, 0])


def quality(codecs: dict, weights: Path, images: list) -> tuple[str, str]:
    model = to_subpixel(load_model(weights)[0])
    plain = copy.deepcopy(model.g_s).to(torch.bfloat16).to(memory_format=torch.channels_last)
    seen = {}
    g_s = codecs["float32"].engines["g_s"]
    run = g_s.run

    def spy(inputs):   # the float32 decoder's ŷ, for the plain bf16 copy
        seen["y_hat"] = inputs["y_hat"]
        return run(inputs)
    g_s.run = spy
    rows, same_bytes, verified, refused, equal = [], 0, 0, 0, 0
    try:
        for name, image in images:
            data = codecs["float32"].compress(image, checksum=False)
            same_bytes += codecs["bfloat16"].compress(image, checksum=False) == data
            f32 = codecs["float32"].decompress(data)
            b16 = codecs["bfloat16"].decompress(data)
            with torch.inference_mode():
                y_hat = torch.from_numpy(seen["y_hat"]).to(torch.bfloat16)
                out = plain(y_hat.to(memory_format=torch.channels_last)).float()
            h, w = image.shape[:2]
            naive = _to_uint8_hwc(out[0, :, :h, :w].numpy())   # as the decoder converts
            p32, p16, pn = psnr(image, f32), psnr(image, b16), psnr(image, naive)
            rows.append([name, p32, p16 - p32, pn - p32, 100 * float(np.mean(f32 != b16))])
            checked = codecs["bfloat16"].compress(image)
            codecs["bfloat16"].decompress(checked)          # raises if bf16 is not repeatable
            verified += 1
            try:
                codecs["float32"].decompress(checked)
                equal += 1
            except ReconstructionMismatchError:
                refused += 1
    finally:
        g_s.run = run
    d16, dn = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
    rows.append(["mean", float(np.mean([r[1] for r in rows])), float(d16.mean()),
                 float(dn.mean()), float(np.mean([r[4] for r in rows]))])
    table = markdown_table(rows, ["image", "float32 PSNR dB", "bfloat16 - float32 dB",
                                  "plain bf16 copy - float32 dB", "pixels differing %"],
                           digits=[0, 3, 4, 4, 2])
    n = len(images)
    summary = (f"bfloat16 - float32 PSNR: mean {d16.mean():+.4f} dB, range {d16.min():+.4f} to "
               f"{d16.max():+.4f}; the plain bf16 copy: mean {dn.mean():+.4f}, "
               f"worst {dn.min():+.4f}\n"
               f"bfloat16 codec's --no-checksum bytes identical to float32's: {same_bytes}/{n}\n"
               f"checksummed bfloat16 streams verified by bfloat16: {verified}/{n}; by float32: "
               f"{refused} ReconstructionMismatchError, {equal} equal images")
    return table, summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(KODAK))
    p.add_argument("--model", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    args = p.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.folder).glob("*.png"))[:args.limit or None]
    if not paths:
        raise SystemExit(f"no .png images in {args.folder}")
    images = [(q.name, np.asarray(Image.open(q).convert("RGB"))) for q in paths]
    weights = Path(args.model)
    codecs = {d: Codec.load(weights, dtype=d) for d in DTYPES}
    flags = [f for f in ("amx_bf16", "avx512_bf16") if f in Path("/proc/cpuinfo").read_text()] \
        if Path("/proc/cpuinfo").exists() else []
    first, image = images[0]
    print(f"# {len(images)} image(s) of {args.folder}; model {weights.name}; "
          f"{platform.machine()}, {os.cpu_count()} cores, native bf16: {native_bf16()} "
          f"({', '.join(flags) or 'no flags'}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {args.repeat}\n")
    print(f"g_s on the latent of {first} ({image.shape[1]}x{image.shape[0]})\n")
    print(stage_table(weights, image, args.repeat))
    print(f"\nwhole encodes and decodes of {first}\n")
    print(runtime_table(codecs, image, args.repeat))
    table, summary = quality(codecs, weights, images)
    print(f"\nquality, every image\n\n{table}\n\n{summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
