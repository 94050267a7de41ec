"""Rate overhead on Kodak: the file's size against the rate the model itself predicts.

Training minimises the model's rate, -log2 of its continuous likelihoods of ẑ and ŷ.
A .flic file spends more than that: the shipped integer tables approximate those
likelihoods (64 scales per family, 16-bit probabilities, an escape entry), ANS
ends on whole 32-bit words, and the container adds a header (magic, model id and
hash, channel mask, CRCs, substream lengths). It also spends less: channels
whose symbols are all zero are left out (the channel mask), while the model still
counts their bits. This prints, per quality, both rates and each of these parts.

    python -m benchmarks.rate_overhead [KODAK_DIR] [--qualities 1,2,3,4] [--limit N]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastlic.evaluation.report import markdown_table
from fastlic.model.distributions import likelihood
from fastlic.model.layers import checkerboard_mask
from fastlic.modelfile import load_model
from fastlic.runtime.bitstream import unpack
from fastlic.runtime.codec import Codec
from fastlic.runtime.image import model_input
from fastlic.modelfile import WEIGHTS_DIR

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402


def model_bits(model, img: np.ndarray) -> tuple[float, np.ndarray]:
    """The model's own rate for one image, on the codec's padded input: bits of ẑ
    (a float) and of ŷ per latent channel (float64 (M,))."""
    x = torch.from_numpy(model_input(img))
    with torch.no_grad():
        out = model(x, return_features=True)
        residual = out["y_hat"] - out["mean"]
        am = checkerboard_mask(*residual.shape[2:], anchor=True).bool()
        lik = torch.where(am, likelihood(model.cfg.anchor_family, residual, out["scale"]),
                          likelihood(model.cfg.nonanchor_family, residual, out["scale"]))
        bits_y = -torch.log2(lik).double().sum(dim=(0, 2, 3))
    return float(out["bits_z"]), bits_y.numpy()


def measure(path: Path, images: list[np.ndarray]) -> dict[str, float]:
    """Sums over the images: model bits of ẑ, of the coded and the skipped channels of
    ŷ, and the file's bits of ẑ, ŷ and the container."""
    codec = Codec.load(path)
    model = load_model(path)[0].eval()
    keys = ("model_z", "model_y", "model_skipped", "file_z", "file_y", "container", "pixels")
    sums = dict.fromkeys(keys, 0.0)
    for img in images:
        data = codec.compress(img)
        bits_z, bits_y = model_bits(model, img)
        bs = unpack(data)
        coded = np.array(bs.header.channel_mask, dtype=bool)
        parts = bs.substreams
        sums["model_z"] += bits_z
        sums["model_y"] += bits_y[coded].sum()
        sums["model_skipped"] += bits_y[~coded].sum()
        sums["file_z"] += 8 * len(parts[0])
        sums["file_y"] += 8 * (len(parts[1]) + len(parts[2]))
        sums["container"] += 8 * (len(data) - sum(len(p) for p in parts))
        sums["pixels"] += img.shape[0] * img.shape[1]
    return sums


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    p.add_argument("--qualities", default="1,2,3,4", help="shipped rungs to measure")
    p.add_argument("--limit", type=int, help="first N images only")
    args = p.parse_args()
    files = sorted(Path(args.folder).glob("*.png"))[:args.limit]
    if not files:
        print(f"no PNG images in {args.folder}", file=sys.stderr)
        return 1
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    print(f"# {len(images)} images from {args.folder}; checksum on (the default file)")
    rows = []
    for q in (int(s) for s in args.qualities.split(",")):
        s = measure(WEIGHTS_DIR / f"q{q}.safetensors", images)
        model = s["model_z"] + s["model_y"] + s["model_skipped"]
        file = s["file_z"] + s["file_y"] + s["container"]
        rows.append([q, model / s["pixels"], file / s["pixels"],
                     100 * (s["file_z"] / s["model_z"] - 1), 100 * (s["file_y"] / s["model_y"] - 1),
                     -100 * s["model_skipped"] / model, 100 * s["container"] / model,
                     100 * (file / model - 1)])
        print(f"  q{q} done", file=sys.stderr)
    print(markdown_table(rows, ["quality", "model bpp", "file bpp", "z tables (%)", "y tables (%)",
                                "skipped channels (% of model)", "container (% of model)",
                                "file vs model (%)"],
                         digits=[0, 4, 4, 2, 2, 2, 2, 2]))
    print("\nz / y tables: a substream's bits over the model's bits of the same symbols, minus 1 "
          "(y: the coded channels only); skipped channels: the model's bits of the all-zero "
          "channels the file leaves out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
