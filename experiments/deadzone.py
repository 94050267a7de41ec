"""Encoder rounding offsets on Kodak: BD-rate of each against round-to-nearest.

Conclusion: the encoder keeps rounding to nearest (``Codec._symbols``): on the float
ladder every offset cost rate-distortion, +1.77 % (d = +0.05), +6.56 % (+0.10), +0.91 %
(-0.03) and +3.87 % (-0.06) BD-rate against d = 0. The numbers are those of
docs/performance.md ("Encoder rounding"); the committed experiments/results/deadzone.txt
holds only the run's header.

The decoder reads whatever integers the encoder wrote, so the encoder is free to
round the residual y - μ differently: a deadzone (offset d > 0, symbols pulled
towards zero: fewer bits, more distortion, as in classical codecs' quantisers) or
the opposite (d < 0): symbol = sign(r) * floor(|r| + 0.5 - d). d = 0 is the
shipped encoder, unchanged (round to nearest). Each offset runs the whole shipped
ladder on the same images.

    python -m experiments.deadzone [KODAK_DIR] [--offsets 0.05,0.1,-0.03,-0.06] [--every 1]
    python -m experiments.deadzone --self-test   # a deadzone file still decodes exactly
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastlic.evaluation.bdrate import bd_rate
from fastlic.evaluation.report import markdown_table
from fastlic.runtime.codec import Codec
from fastlic.modelfile import WEIGHTS_DIR

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402
from benchmarks.ladders import mean_point


def offset_codec(path: Path, offset: float) -> Codec:
    """The shipped codec at ``path`` whose encoder rounds with ``offset`` (0: unchanged)."""
    codec = Codec.load(path)
    if offset:
        def symbols(residual: np.ndarray) -> np.ndarray:
            return np.sign(residual) * np.floor(np.abs(residual) + np.float32(0.5 - offset))

        codec._symbols = symbols     # an instance attribute: only this codec changes
    return codec


def self_test() -> int:
    """A deadzone codes fewer bits, other symbols, and any shipped decoder reads its file
    back to the encoder's reconstruction (was tests/entropy/test_deadzone.py)."""
    import tempfile

    from experiments._selftest import photo, tiny_shipped
    image = photo()
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_shipped(Path(tmp))
        plain, pulled = offset_codec(path, 0.0), offset_codec(path, 0.3)
        data, recon = pulled.compress(image, return_reconstruction=True)
        reference = plain.compress(image)
        checks = {"fewer bytes": len(data) < len(reference),
                  "decoded = reconstruction": np.array_equal(plain.decompress(data), recon),
                  "other symbols": (plain.decode_latent(data).tolist()
                                    != plain.decode_latent(reference).tolist())}
    for name, ok in checks.items():
        print(f"{'ok' if ok else 'FAILED'}: {name}")
    return 0 if all(checks.values()) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    p.add_argument("--offsets", default="0.05,0.1,-0.03,-0.06", help="d values besides 0")
    p.add_argument("--qualities", default="1,2,3,4")
    p.add_argument("--every", type=int, default=1, help="every N-th image only")
    p.add_argument("--self-test", action="store_true", help="check offset_codec on a tiny model")
    args = p.parse_args(argv)
    if args.self_test:
        return self_test()
    files = sorted(Path(args.folder).glob("*.png"))[::args.every]
    if not files:
        print(f"no PNG images in {args.folder}", file=sys.stderr)
        return 1
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    paths = [WEIGHTS_DIR / f"q{q}.safetensors" for q in args.qualities.split(",")]
    print(f"# {len(images)} images from {args.folder}; rungs {args.qualities}")
    curves = {}
    for d in [0.0] + [float(s) for s in args.offsets.split(",")]:
        curves[d] = np.array([mean_point(offset_codec(path, d), images) for path in paths])
        print(f"  d={d:+.2f} done", file=sys.stderr)
    base = curves[0.0]
    rows = [[f"{d:+.2f}", *(f"{b:.4f} / {q:.2f}" for b, q in c),
             bd_rate(c[:, 0], c[:, 1], base[:, 0], base[:, 1])] for d, c in curves.items()]
    print(markdown_table(rows, ["offset d", *(f"q{q} bpp / PSNR" for q in args.qualities.split(",")),
                                "BD-rate vs d = 0 (%)"], digits=[0] * (1 + len(paths)) + [2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
