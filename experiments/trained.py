"""Kodak tables of the trained runs: technique ablations, the L1 sweep, distillation.

Conclusion: all four techniques stay and the defaults hold. Switching one off
(2,000-step fine-tunes of runs/small_q3 at quality 2 and 4) cost +1.49 % (deformable
module), +0.42 % (separate parameter networks), +4.13 % (different probability families)
and +0.55 % (L1 term) BD-rate (experiments/results/trained.txt); L1 0.5 instead of 0.02
cost +2.59 % over the fourth ladder's q2 and q4, so the weight stays 0.02
(experiments/results/trained_l1_ladder.txt); a distilled 32-channel decoder gained 0.01
dB over the same student trained alone and both lost 0.33 dB, so the ladder keeps the
64-channel decoder. Needs the git-ignored runs/ of docs/training.md; today's runtime
refuses the shared-parameter variant (the exact entropy path needs separate networks).

Each row is a training checkpoint, shipped as the runtime ships it (fp16 weights,
entropy tables built from them) into a temporary file, then every Kodak image is
compressed and decompressed by the torch backend on the CPU: bpp counts the whole
``.flic`` file, PSNR is on RGB, "channels coded" reads each bitstream's channel
mask, and encode / decode are the median milliseconds per image over the 24 images
(one round trip each; measure on a quiet machine).

    python -m experiments.trained all [--runs runs] [--kodak DIR]
    # or one table: techniques, l1, distill, l1_ladder

The runs are those of docs/training.md ("The CPU experiments"): in the first three
tables every one starts from the same trained checkpoint (runs/small_q3) and trains
2,000 steps under the same schedule, so each table compares like with like;
l1_ladder's two pairs continue the shipped q2 and q4 (runs/fourth) for 1,000 steps
each. A run in several tables is measured once.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._paths import KODAK
from fastlic.evaluation.bdrate import bd_rate
from fastlic.evaluation.metrics import bpp, ms_ssim, psnr
from fastlic.evaluation.report import markdown_table
from fastlic.evaluation.run import load_images
from fastlic.model import ModelConfig
from fastlic.runtime.bitstream import unpack
from fastlic.runtime.codec import Codec
from fastlic.training.checkpoint import load_checkpoint, ship_checkpoint
from fastlic.training.distill import decoder_macs_per_pixel


# label -> run folders (relative to --runs), one per λ (quality 2, 4)
TECHNIQUES = {
    "all four techniques (reference)": ["ladder/q2", "ladder/q4"],
    "plain 3x3 conv instead of deformable": ["abl/nodeform_q2", "abl/nodeform_q4"],
    "one shared parameter network": ["abl/shared_q2", "abl/shared_q4"],
    "same family (Gaussian / Gaussian)": ["abl/samefam_q2", "abl/samefam_q4"],
    "no L1 term (weight 0)": ["abl/l1off_q2", "abl/l1off_q4"],
}
L1_SWEEP = {(0.0, 2): "abl/l1off_q2", (0.02, 2): "ladder/q2", (0.1, 2): "abl/l1x5_q2",
            (0.5, 2): "abl/l1x25_q2",
            (0.0, 4): "abl/l1off_q4", (0.02, 4): "ladder/q4"}   # (L1 weight, quality)
L1_LADDER = {"L1 0.02, the default (control)": ["l1exp/q2_ctrl", "l1exp/q4_ctrl"],
             "L1 0.5": ["l1exp/q2_l1x25", "l1exp/q4_l1x25"]}   # from runs/fourth/q2, q4
DISTILL = {
    "teacher (the ladder's base model, 64-ch decoder)": "small_q3",
    "student (32-ch decoder), trained alone": "distill/slim_alone",
    "student (32-ch decoder), distilled": "distill/slim_distilled",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_MEASURED: dict[Path, dict] = {}


def kodak_row(run: Path, images) -> dict:
    """kodak_row, measured once per run folder in this process."""
    if run not in _MEASURED:
        _MEASURED[run] = _measure(run, images)
    return _MEASURED[run]


def _measure(run: Path, images) -> dict:
    """Ship ``run``'s checkpoint to a temp file; mean bpp/PSNR/MS-SSIM, channels, median ms."""
    ckpt = load_checkpoint(run / "checkpoint.pt")
    with tempfile.TemporaryDirectory() as tmp:
        path = ship_checkpoint(run / "checkpoint.pt", Path(tmp) / "m.safetensors", name=run.name)
        codec = Codec.load(path)
        rows = []
        for name, img in images:
            t0 = time.perf_counter()
            data = codec.compress(img, checksum=False)   # the techniques' cost, not the CRC's
            t1 = time.perf_counter()
            rec = codec.decompress(data)
            t2 = time.perf_counter()
            mask = unpack(data).header.channel_mask
            rows.append((bpp(len(data), *img.shape[:2]), psnr(img, rec), ms_ssim(img, rec),
                         sum(mask), len(mask), 1e3 * (t1 - t0), 1e3 * (t2 - t1)))
    a = np.array(rows)
    log(f"{run}: {a[:, 0].mean():.4f} bpp, {a[:, 1].mean():.2f} dB")
    args = ckpt.get("args", {})
    return {"steps": ckpt["step"], "lmbda": args.get("lmbda"), "l1": args.get("l1"),
            "bpp": a[:, 0].mean(), "psnr": a[:, 1].mean(),
            "ms_ssim": a[:, 2].mean(), "coded": a[:, 3].mean(), "channels": int(a[0, 4]),
            "enc_ms": float(np.median(a[:, 5])), "dec_ms": float(np.median(a[:, 6])),
            "dec_macs": decoder_macs_per_pixel(ModelConfig.from_json(ckpt["config"]))}


def techniques(runs: Path, images, variants: dict[str, list[str]] = TECHNIQUES) -> str:
    """BD-rate (PSNR, pchip over the two λ points) of each variant against the first."""
    curves = {label: [kodak_row(runs / f, images) for f in folders]
              for label, folders in variants.items()}
    ref = curves[next(iter(variants))]
    rows = []
    for label, points in curves.items():
        bd = bd_rate([p["bpp"] for p in points], [p["psnr"] for p in points],
                     [p["bpp"] for p in ref], [p["psnr"] for p in ref])
        rows.append([label, bd] + [v for p in points for v in (p["bpp"], p["psnr"])]
                    + [np.mean([p["dec_ms"] for p in points])])
    cols = ["variant", "BD-rate vs reference (%)", "q2 bpp", "q2 PSNR", "q4 bpp", "q4 PSNR",
            "decode ms (median)"]
    return markdown_table(rows, cols, digits=[0, 2, 4, 2, 4, 2, 0])


def l1_ladder(runs: Path, images) -> str:
    """The shipped ladder's quality 2 and 4, 1,000 more steps with L1 0.5 against the same
    steps with the default 0.02: does the heavier term the sweep favours pay over a curve?"""
    return techniques(runs, images, L1_LADDER)


def l1_sweep(runs: Path, images) -> str:
    """The L1 weight swept at quality 2 (on and off at quality 4): zero channels, rate,
    quality, time, and the rate-distortion cost the runs minimise (bpp + λ·255²·MSE at
    the run's own λ, MSE from the mean PSNR; lower is better) to rank single points."""
    rows = []
    for (weight, quality), folder in L1_SWEEP.items():
        p = kodak_row(runs / folder, images)
        if abs(p["l1"] - weight) > 1e-9:
            raise SystemExit(f"{folder} was trained with L1 weight {p['l1']}, not {weight}")
        cost = p["bpp"] + p["lmbda"] * 255 ** 2 * 10 ** (-p["psnr"] / 10)
        rows.append([quality, weight, 100 * (1 - p["coded"] / p["channels"]), p["coded"],
                     p["bpp"], p["psnr"], cost, p["enc_ms"], p["dec_ms"]])
    cols = ["quality", "L1 weight", "zero channels (%)", "channels coded", "bpp", "PSNR (dB)",
            "RD cost", "encode ms", "decode ms"]
    return markdown_table(rows, cols, digits=[0, 2, 1, 1, 4, 2, 4, 0, 0])


def distill(runs: Path, images) -> str:
    rows = []
    for label, folder in DISTILL.items():
        p = kodak_row(runs / folder, images)
        rows.append([label, p["steps"], p["bpp"], p["psnr"], p["ms_ssim"], p["dec_macs"],
                     p["dec_ms"]])
    cols = ["model", "steps", "bpp", "PSNR (dB)", "MS-SSIM", "decoder MACs/px", "decode ms"]
    return markdown_table(rows, cols, digits=[0, 0, 4, 2, 4, 0, 0])


TABLES = {"techniques": techniques, "l1": l1_sweep, "distill": distill, "l1_ladder": l1_ladder}


def all_tables(runs: Path, images) -> str:
    return "\n\n".join(f"## {name}\n\n{fn(runs, images)}" for name, fn in TABLES.items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=sorted(TABLES) + ["all"])
    p.add_argument("--runs", default="runs", help="folder holding the run folders (default: runs)")
    p.add_argument("--kodak", default=str(KODAK))
    p.add_argument("--limit", type=int, help="first N images only (a quick look)")
    args = p.parse_args()
    images = load_images(args.kodak, args.limit)
    table = (all_tables if args.table == "all" else TABLES[args.table])(Path(args.runs), images)
    print(f"# {args.table} on {len(images)} images of {args.kodak}")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
