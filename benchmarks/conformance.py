"""Write the conformance files: small .flic files of the shipped ladder with the
digests of their decoded symbols and ŷ, which every backend's tests must reproduce
(``tests/runtime/test_conformance.py``). Run again only when the shipped weights change.

    python -m benchmarks.conformance [--out tests/conformance]

Images: crops of scikit-image's photos (RGB and one greyscale), one per rung.
``expected.json``: per file its model (quality, weights hash), image shape and the
sha256 of its decoded ŷ (float32, (1, M, h, w)).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastlic.runtime.codec import Codec  # noqa: E402

CASES = (("astronaut", (slice(0, 64), slice(96, 224)), 1),
         ("coffee", (slice(100, 228), slice(200, 328)), 2),
         ("camera", (slice(200, 280), slice(150, 222)), 3),
         ("chelsea", (slice(50, 146), slice(180, 340)), 4))


def sha(array: np.ndarray, dtype) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=dtype).tobytes()).hexdigest()


def latent_digest(codec: Codec, data: bytes) -> str:
    """sha256 of the decoded ŷ = symbol + μ (float32, (1, M, h, w)); the header's index
    CRCs have already checked every table index on the way."""
    return sha(codec.decode_latent(data), np.float32)


def main(argv=None) -> int:
    from skimage import data as photos
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "tests" / "conformance"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (rows, cols), quality in CASES:
        codec = Codec.load(quality=quality)
        image = np.ascontiguousarray(getattr(photos, name)()[rows, cols])
        stream = codec.compress(image)
        file = f"{name}_q{quality}.flic"
        (out / file).write_bytes(stream)
        expected[file] = {"quality": quality, "weights": codec.info.weights_hash.hex(),
                          "shape": list(image.shape), "y_hat_sha256": latent_digest(codec, stream)}
        print(f"{file}: {len(stream)} bytes, {expected[file]['y_hat_sha256'][:16]}")
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
