"""The torch engines on a GPU, in one short run: what a session with a device runs
(through ``benchmarks/gpu_check.sh``), sized to fit its 15 minutes of device time.

The photos are scikit-image's (the shared Kodak folder does not travel to the device).
Setups: torch on ``--device`` in float32, float16 and bfloat16, with and without CUDA
graphs (bfloat16 without). For each:

1. **Round trips**: every photo encoded (default checksum) and decoded by the same
   codec, bit-exact or not, PSNR; encode and decode medians over ``--repeat`` after
   one warm-up (the codec returns numpy, so each call ends synchronised).
2. **Files from the CPU**: the CPU float32 codec encodes every photo; the setup
   decodes them with default flags: how many give an image, how many have the CPU's
   symbols and ŷ bit for bit (the exact entropy path: the target is all), how many
   images equal the CPU's reconstruction, and the worst PSNR against it.

A setup that cannot load here (no CUDA, float16 on the CPU) is listed with its error.
``--device cpu`` runs the same tables on the CPU (float32 and bfloat16), as the tests do.

    python -m benchmarks.gpu_check [--device cuda] [--repeat 5] [--model W]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from fastlic.errors import FastlicError
from fastlic.evaluation.metrics import psnr
from fastlic.evaluation.report import markdown_table
from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec
from fastlic.runtime.memory import keep_freed_memory

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")
SETUPS = (("float32", False), ("float32", True), ("float16", False), ("float16", True),
          ("bfloat16", False))


def photos() -> dict[str, np.ndarray]:
    from skimage import data
    return {name: getattr(data, name)() for name in PHOTOS}


def label(dtype: str, graphs: bool) -> str:
    return dtype + (", CUDA graphs" if graphs else "")


def load(weights, device: str, dtype: str, graphs: bool):
    options = {"dtype": dtype}
    if graphs:
        options["cuda_graphs"] = True
    return Codec.load(weights, device=device, **options)


def round_trips(codec, images: dict, repeat: int) -> list:
    enc, dec, exact, quality = [], [], 0, []
    for image in images.values():
        data, recon = codec.compress(image, return_reconstruction=True)
        out = codec.decompress(data)
        exact += np.array_equal(out, recon)
        quality.append(psnr(image, out))
    image = images[PHOTOS[0]]
    data = codec.compress(image)
    for turn in range(repeat + 1):     # the first turn warms up (and captures graphs)
        t0 = time.perf_counter()
        codec.compress(image)
        t1 = time.perf_counter()
        codec.decompress(data)
        t2 = time.perf_counter()
        if turn:
            enc.append(1e3 * (t1 - t0))
            dec.append(1e3 * (t2 - t1))
    return [f"{exact}/{len(images)}", statistics.mean(quality), statistics.median(enc),
            statistics.median(dec)]


def from_cpu(codec, cpu_files: dict) -> list:
    """Decodes of the CPU's files: [images, same ŷ, same image, worst PSNR vs the CPU's]."""
    images = same_latent = same_image = 0
    worst = float("inf")
    for data, latent, recon in cpu_files.values():
        try:
            out = codec.decompress(data)
        except FastlicError:
            continue
        images += 1
        same_latent += np.array_equal(codec.decode_latent(data), latent)
        same_image += np.array_equal(out, recon)
        if not np.array_equal(out, recon):
            worst = min(worst, psnr(recon, out))
    n = len(cpu_files)
    return [f"{images}/{n}", f"{same_latent}/{n}", f"{same_image}/{n}", worst]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--model", default=str(DEFAULT_WEIGHTS))
    args = p.parse_args(argv)
    keep_freed_memory()
    images = photos()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(f"# {args.device}: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"{platform.machine()}; {len(images)} scikit-image photos; medians of {args.repeat}\n")
    cpu = Codec.load(args.model)
    cpu_files = {}
    for name, image in images.items():
        data, recon = cpu.compress(image, return_reconstruction=True)
        cpu_files[name] = (data, cpu.decode_latent(data), recon)
    rows, cross, failed = [], [], []
    for dtype, graphs in SETUPS:
        try:
            codec = load(args.model, args.device, dtype, graphs)
            rows.append([label(dtype, graphs), *round_trips(codec, images, args.repeat)])
            cross.append([label(dtype, graphs), *from_cpu(codec, cpu_files)])
        except FastlicError as exc:
            failed.append(f"- {label(dtype, graphs)}: {type(exc).__name__}: {exc}")
    print(f"round trips on {args.device} ({PHOTOS[0]} timed)\n")
    print(markdown_table(rows, ["setup", "bit-exact", "mean PSNR dB", "encode ms", "decode ms"],
                         digits=[0, 0, 3, 1, 1]))
    print(f"\nthe CPU float32 codec's files decoded on {args.device}\n")
    print(markdown_table(cross, ["setup", "decoded", "same ŷ", "same image",
                                 "worst PSNR vs the CPU's image (inf: identical)"],
                         digits=[0, 0, 0, 0, 2]))
    if failed:
        print("\nnot loaded:\n" + "\n".join(failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
