"""Channel sparsity on Kodak: how many latent channels each bitstream codes.

A channel is coded when any of its symbols is non-zero in that image (the
bitstream's channel mask); the L1 term in training drives whole channels to zero.

    python -m benchmarks.sparsity [KODAK_DIR] [--model PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastlic.runtime.bitstream import unpack
from fastlic.runtime.codec import Codec

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    p.add_argument("--model", help="weights (default: shipped)")
    args = p.parse_args()
    files = sorted(Path(args.folder).glob("*.png"))
    if not files:
        print(f"no PNG images in {args.folder}", file=sys.stderr)
        return 1
    codec = Codec.load(args.model)
    masks = []
    for path in files:
        data = codec.compress(np.asarray(Image.open(path).convert("RGB")))
        masks.append(np.array(unpack(data).header.channel_mask))
        print(f"{path.name}: {masks[-1].sum()}/{masks[-1].size} channels coded")
    masks = np.array(masks)
    print(f"\nmean channels coded: {masks.sum(axis=1).mean():.1f} of {masks.shape[1]} "
          f"({100 * (1 - masks.mean()):.1f}% of channel slots skipped)")
    print(f"channels coded in no image: {(~masks.any(axis=0)).sum()}; in every image: "
          f"{masks.all(axis=0).sum()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
