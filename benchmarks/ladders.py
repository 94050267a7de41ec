"""Two rate ladders on Kodak: each rung's bpp and PSNR, and the BD-rate (PSNR) of one
against the other. The check run before a new ladder replaces the shipped one.

A ladder is a folder of q1..qN files: shipped models (``q*.safetensors``) or training
runs (``q*/checkpoint.pt``, shipped to a temporary file first, fp16 and tables, as
``fastlic train-ship`` would).

    python -m benchmarks.ladders NEW [--old fastlic/weights] [--kodak DIR | --holdout] [--limit N]

e.g. an earlier shipped ladder from git:
    mkdir /tmp/old && for q in 1 2 3 4; do
      git show REV:fastlic/weights/q$q.safetensors > /tmp/old/q$q.safetensors; done
    python -m benchmarks.ladders fastlic/weights --old /tmp/old
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fastlic.evaluation.bdrate import bd_rate
from fastlic.evaluation.metrics import bpp, psnr
from fastlic.evaluation.report import markdown_table
from fastlic.runtime.codec import Codec
from fastlic.modelfile import WEIGHTS_DIR

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402
from benchmarks._paths import TRAIN  # noqa: E402

HOLDOUT = Path(__file__).resolve().parent / "holdout.txt"


def holdout_names() -> list[str]:
    """The hold-out photos' file names (training-folder photos no run trains on)."""
    lines = HOLDOUT.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def rungs(folder: Path, tmp: Path) -> list[Path]:
    """The model files of a ladder folder in quality order (checkpoints shipped into tmp)."""
    shipped = sorted(folder.glob("q*.safetensors"))
    if shipped:
        return shipped
    from fastlic.training.checkpoint import ship_checkpoint
    out = []
    for ckpt in sorted(folder.glob("q*/checkpoint.pt")):
        out.append(tmp / f"{folder.name}_{ckpt.parent.name}.safetensors")
        ship_checkpoint(ckpt, out[-1], name=f"fastlic-small-{ckpt.parent.name}")
    if not out:
        raise SystemExit(f"{folder}: no q*.safetensors and no q*/checkpoint.pt")
    return out


def mean_point(codec: Codec, images: list[np.ndarray]) -> np.ndarray:
    """(2,): mean bpp and PSNR of one codec's round trips of the images (no reconstruction CRC)."""
    per_image = []
    for img in images:
        data = codec.compress(img, checksum=False)
        per_image.append((bpp(len(data), *img.shape[:2]), psnr(img, codec.decompress(data))))
    return np.mean(per_image, axis=0)


def curve(paths: list[Path], images: list[np.ndarray]) -> np.ndarray:
    """(rungs, 2): :func:`mean_point` of each model."""
    points = []
    for path in paths:
        points.append(mean_point(Codec.load(path), images))
        print(f"  {path.name}: {points[-1][0]:.4f} bpp {points[-1][1]:.2f} dB", file=sys.stderr)
    return np.array(points)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", help="ladder folder to test")
    p.add_argument("--old", default=str(WEIGHTS_DIR), help="ladder to compare with (default: shipped)")
    p.add_argument("--kodak", default=str(DEFAULT_DIR))
    p.add_argument("--holdout", action="store_true",
                   help="the project's hold-out photos instead (benchmarks/holdout.txt, from "
                        "the training folder, never trained on)")
    p.add_argument("--limit", type=int, help="first N images only")
    args = p.parse_args(argv)
    if args.holdout:
        args.kodak = str(TRAIN)
        files = [TRAIN / name for name in holdout_names()][:args.limit]
    else:
        files = sorted(Path(args.kodak).glob("*.png"))[:args.limit]
    if not files or not all(f.is_file() for f in files):
        print(f"no images (or missing ones) in {args.kodak}", file=sys.stderr)
        return 1
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        old = curve(rungs(Path(args.old), Path(tmp)), images)
        new = curve(rungs(Path(args.new), Path(tmp)), images)
    if len(old) != len(new):
        print(f"the ladders have {len(old)} and {len(new)} rungs", file=sys.stderr)
        return 1
    rows = [[q + 1, *o, *n, n[0] < o[0] and n[1] > o[1]] for q, (o, n) in enumerate(zip(old, new))]
    print(f"# {len(images)} images from {args.kodak}; old {args.old}, new {args.new}")
    print(markdown_table(rows, ["rung", "old bpp", "old PSNR", "new bpp", "new PSNR",
                                "new better on both"], digits=[0, 4, 2, 4, 2, 0]))
    print(f"\nBD-rate (PSNR) of new against old: "
          f"{bd_rate(new[:, 0], new[:, 1], old[:, 0], old[:, 1]):+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
