"""CPU decode choices measured side by side: transposed convs vs conv + pixel shuffle,
channels_last, checkerboard stages on the full grid vs packed
(:mod:`fastlic.model.packed`), onnxruntime's spinning thread pools and its blocked g_a and g_s
(:mod:`fastlic.engines.onnxruntime.layout`), on one Kodak
image. Runs with :func:`~fastlic.runtime.memory.keep_freed_memory`, as the ``fastlic``
command does (``experiments.allocator`` measures that setting on its own).

Conclusion: the torch engine runs h_s and g_s as conv + pixel shuffle, channels_last on
the CPU and the checkerboard stages packed; the onnxruntime sessions do not spin and run
g_a and g_s blocked. On kodim01 (float ladder, 2 threads) the torch decode went from
106.4 ms (transposed convs) to 74.5 ms with all three, and onnxruntime's from 147.9 ms
(spinning, graphs as exported) to 73.1 ms; the packed stages do 0.500 (anchor) and 0.409
(non-anchor) of the full grid's multiply-adds. Whole-image rows move by about +-10 %
between runs (experiments/results/decode_variants.txt).

Table 1 times h_s and g_s alone (the stages with transposed convolutions) on the
latent of a 768x512 image, in PyTorch and in onnxruntime (graphs exported here
with the TorchScript-based ``torch.onnx.export(dynamo=False)`` from the same
weights, not with ``fastlic export``'s dynamo exporter, which always writes the
subpixel form), each as ``ConvTranspose2d`` and as
:mod:`fastlic.model.subpixel`'s conv + pixel shuffle. Table 2 times whole
encodes and decodes of the image through the runtime, the setups taking turns.
Medians of ``--repeat`` runs after one warm-up; run on a quiet machine.

    python -m experiments.decode_variants [IMAGE] [--model W] [--repeat 10]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._paths import KODAK
from fastlic.evaluation.report import markdown_table
from fastlic.model.packed import to_packed
from fastlic.model.subpixel import to_subpixel
from fastlic.modelfile import load_model
from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec
from fastlic.runtime.memory import keep_freed_memory

DEFAULT_IMAGE = KODAK / "kodim01.png"


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def ort_session(module: torch.nn.Module, example: torch.Tensor, path: Path):
    from fastlic.engines.onnxruntime.engine import make_session
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), opset_version=19, dynamo=False,
                          input_names=["x"], output_names=["out"])
    return make_session(path, ["CPUExecutionProvider"])


def stage_table(model, h: int, w: int, repeat: int) -> str:
    inputs = {"h_s": torch.randn(1, model.cfg.hyper_channels, h // 64, w // 64),
              "g_s": torch.randn(1, model.cfg.latent_channels, h // 16, w // 16)}
    variants = {"transposed": model, "subpixel": to_subpixel(model)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, x in inputs.items():
            row = [stage]
            for name, m in variants.items():
                mod = getattr(m, stage)
                with torch.inference_mode():
                    row.append(median_ms(lambda: mod(x), repeat))
            for name, m in variants.items():
                sess = ort_session(getattr(m, stage), x, Path(tmp) / f"{stage}_{name}.onnx")
                feed = {"x": x.numpy()}
                row.append(median_ms(lambda: sess.run(None, feed), repeat))
            rows.append(row)
    cols = ["stage", "torch transposed ms", "torch subpixel ms", "onnxruntime transposed ms",
            "onnxruntime subpixel ms"]
    return markdown_table(rows, cols, digits=[0, 1, 1, 1, 1])


def mac_table(model, h: int, w: int) -> str:
    """Multiply-adds of the checkerboard stages on the full grid and packed, counted by
    torch's FlopCounterMode (flops / 2) on the latent of an h x w image."""
    from torch.utils.flop_counter import FlopCounterMode

    m = model.cfg.latent_channels
    hyper = torch.randn(1, 2 * m, h // 16, w // 16)
    y_hat = torch.randn(1, m, h // 16, w // 16)
    packed = to_packed(model)
    rows = []
    for stage, args in (("anchor", (hyper,)), ("nonanchor", (hyper, y_hat))):
        macs = []
        for variant in (model, packed):
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                getattr(variant, f"{stage}_params")(*args)
            macs.append(counter.get_total_flops() / 2 / 1e6)
        rows.append([stage, macs[0], macs[1], macs[1] / macs[0]])
    return markdown_table(rows, ["stage", "full grid MMAC", "packed MMAC", "packed / full"],
                          digits=[0, 1, 1, 3])


def runtime_table(weights: Path, image: np.ndarray, repeat: int) -> str:
    """Whole encodes and decodes; the setups take turns in every repetition, so a slow
    spell of the machine hits them all alike."""
    setups = {
        "torch, transposed convs": dict(backend="torch", subpixel=False, channels_last=False),
        "torch, subpixel": dict(backend="torch", channels_last=False),
        "torch, subpixel, channels_last, full-grid checkerboard stages":
            dict(backend="torch", packed=False),
        "torch, subpixel, channels_last, packed stages (default)": dict(backend="torch"),
        "onnxruntime, spinning threads, graphs as exported":
            dict(backend="onnxruntime", spinning=True, layout="plain"),
        "onnxruntime, no spinning, graphs as exported": dict(backend="onnxruntime", layout="plain"),
        "onnxruntime, no spinning, blocked g_a and g_s (default)": dict(backend="onnxruntime"),
    }
    codecs = {label: Codec.load(weights, **options) for label, options in setups.items()}
    data = {label: codec.compress(image) for label, codec in codecs.items()}
    times = {label: ([], []) for label in codecs}
    for _ in range(repeat + 1):   # the first round warms up and is dropped
        for label, codec in codecs.items():
            t0 = time.perf_counter()
            codec.compress(image)
            t1 = time.perf_counter()
            codec.decompress(data[label])
            t2 = time.perf_counter()
            times[label][0].append(1e3 * (t1 - t0))
            times[label][1].append(1e3 * (t2 - t1))
    rows = [[label, statistics.median(enc[1:]), statistics.median(dec[1:])]
            for label, (enc, dec) in times.items()]
    return markdown_table(rows, ["runtime", "encode ms", "decode ms"], digits=[0, 1, 1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE))
    p.add_argument("--model", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    keep_freed_memory()
    image = np.asarray(Image.open(args.image).convert("RGB"))
    model = load_model(args.model)[0]
    h, w = (-(-s // 64) * 64 for s in image.shape[:2])
    print(f"# {Path(args.image).name} {image.shape[1]}x{image.shape[0]}, model {Path(args.model).name}, "
          f"{platform.machine()} with {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), medians of {args.repeat}\n")
    print(mac_table(model, h, w))
    print()
    print(stage_table(model, h, w, args.repeat))
    print()
    print(runtime_table(Path(args.model), image, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
