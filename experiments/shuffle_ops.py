"""How the exported pixel shuffle is written, measured in onnxruntime on the CPU.

Conclusion: ``fastlic export`` writes g_s's pixel shuffles as ``Col2Im`` in
``g_s_col2im.onnx``, which the manifest names for onnxruntime, and keeps the grouped
one-hot ``ConvTranspose`` in the default graphs for TensorRT: in onnxruntime 1.32 Col2Im
was the fastest spelling for every stage, g_s in 0.91 of the default graph's time (73.65
against 80.97 ms; DepthToSpace 1.30). Measured on the float path; h_s, anchor and
nonanchor are integer MatMul graphs since the exact entropy path, so only the g_s row
applies to the current export (experiments/results/shuffle_ops.txt).

h_s and g_s run their stride-2 transposed convolutions as conv + pixel shuffle
(:mod:`fastlic.model.subpixel`); anchor and nonanchor interleave their two phase
grids with one (:mod:`fastlic.model.packed`). ONNX has no pixel-shuffle op that
every runtime runs well, so the exporter can write it three ways, all exactly
equal: ``DepthToSpace``, a grouped one-hot ``ConvTranspose`` and ``Col2Im``. The
default graphs (TensorRT's) use ConvTranspose in h_s and g_s and DepthToSpace in
anchor and nonanchor; the ``*_col2im.onnx`` graphs, onnxruntime's, use Col2Im.
This script exports the four stages of one model each way with ``fastlic
export``'s exporter (dynamic shapes), checks each against PyTorch, and times them
on the latent of a 768x512 image, the variants taking turns in every repetition;
the PyTorch eager stage (the torch engine's module) is timed alongside. Medians
after one warm-up.

    python -m experiments.shuffle_ops [--model W] [--repeat 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastlic.engines.onnxruntime.engine import make_session
from fastlic.evaluation.report import markdown_table
from fastlic.export.graphs import STAGE_METHODS, export_stage
from fastlic.model.packed import PackedFastLIC, to_packed
from fastlic.model.subpixel import SubPixelConvTranspose, to_subpixel
from fastlic.modelfile import load_model
from fastlic.runtime.codec import DEFAULT_WEIGHTS
from fastlic.runtime.memory import keep_freed_memory

KINDS = ("depth_to_space", "deconv", "col2im")
LABELS = {"depth_to_space": "DepthToSpace", "deconv": "ConvTranspose (grouped, one-hot)",
          "col2im": "Col2Im"}
# the shuffle of each stage's default (TensorRT) graph: the modules' export defaults
DEFAULT = {"h_s": SubPixelConvTranspose.onnx_shuffle, "anchor": PackedFastLIC.onnx_shuffle,
           "nonanchor": PackedFastLIC.onnx_shuffle, "g_s": SubPixelConvTranspose.onnx_shuffle}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = p.parse_args()
    import onnxruntime as ort

    keep_freed_memory()
    model = load_model(args.model)[0]
    fast = to_packed(to_subpixel(model), inplace=True)
    cfg = model.cfg
    latent = (512 // 16, 768 // 16)
    inputs = {"h_s": {"z_hat": torch.randn(1, cfg.hyper_channels, 512 // 64, 768 // 64)},
              "anchor": {"hyper": torch.randn(1, 2 * cfg.latent_channels, *latent)},
              "nonanchor": {"hyper": torch.randn(1, 2 * cfg.latent_channels, *latent),
                            "y_hat_anchor": torch.randn(1, cfg.latent_channels, *latent)},
              "g_s": {"y_hat": torch.randn(1, cfg.latent_channels, *latent)}}
    print(f"# model {args.model.name}, {platform.machine()} with {os.cpu_count()} cores, "
          f"onnxruntime {ort.__version__} ({args.threads} threads, no spinning), torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), latent of 768x512, "
          f"medians of {args.repeat}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, x in inputs.items():
            method = getattr(fast, STAGE_METHODS[stage])
            with torch.inference_mode():
                want = method(*x.values())
            want = want if isinstance(want, tuple) else (want,)
            feed = {k: v.numpy() for k, v in x.items()}
            runs = {}
            for kind in KINDS:
                path = export_stage(model, stage, Path(tmp) / f"{stage}_{kind}.onnx",
                                    shuffle=kind)
                session = make_session(path, ["CPUExecutionProvider"], args.threads)
                got = session.run(None, feed)
                err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
                if err > 1e-3:
                    raise SystemExit(f"{stage} with {kind} differs from PyTorch by {err:.3g}")
                runs[kind] = lambda s=session: s.run(None, feed)
            with torch.inference_mode():
                runs["torch"] = lambda: method(*x.values())
                times = {k: [] for k in runs}
                for _ in range(args.repeat + 1):
                    for kind, fn in runs.items():
                        t = time.perf_counter()
                        fn()
                        times[kind].append(1e3 * (time.perf_counter() - t))
            med = {k: statistics.median(v[1:]) for k, v in times.items()}
            base = med[DEFAULT[stage]]
            for kind in KINDS:
                default = " (default graph)" if kind == DEFAULT[stage] else ""
                rows.append([stage, f"onnxruntime, {LABELS[kind]}{default}", med[kind],
                             med[kind] / base])
            rows.append([stage, "PyTorch eager (F.pixel_shuffle)", med["torch"],
                         med["torch"] / base])
    print(markdown_table(rows, ["stage", "pixel shuffle as", "ms", "vs default graph"],
                         digits=[0, 0, 2, 2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
