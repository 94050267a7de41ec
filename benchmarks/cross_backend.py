"""Cross-backend decoding: encode with torch, decode with onnxruntime, and back.

Per image and direction the result is ``bit-exact`` (the decoded image equals the
encoder's own reconstruction, bit for bit), ``BackendMismatchError`` (the header's
table-index CRCs caught a decoder that derived other probability tables),
``ReconstructionMismatchError`` (the header's reconstruction CRC, fastlic's default,
caught an image that differs), or the largest pixel difference and how many pixels
differ (a silently different image: only with ``--no-checksum``).
Two diagnostics say where a difference comes from:

- ``|Δŷ|``: max difference between the two decoders' latents ŷ = symbol + mean (the
  symbols are equal whenever decoding succeeds; the means differ by float noise);
- ``g_s px``: pixels that differ when both backends' g_s synthesise the *same* ŷ
  (the synthesis network's own float noise).

``--no-checksum`` encodes with ``compress(..., checksum=False)`` (``fastlic compress
--no-checksum``); the summary counts each outcome per direction.
``--quantize-means K`` simulates a proposal without changing the model: both codecs
round every mean to a multiple of 2^-K (encoder and decoder alike) and the bpp cost
is printed against unrounded means.

    python benchmarks/cross_backend.py [DIR] [--model W] [--model-dir EXPORT_DIR]
        [--limit N] [--threads T] [--quantize-means K] [--no-checksum]

DIR defaults to ../shared/data/kodak relative to the repository root; a missing
folder is skipped (exit 0). Without --model-dir the export cache is used.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing fastlic
    sys.path.insert(0, str(ROOT))

from fastlic.engines import Engine  # noqa: E402
from fastlic.errors import (BackendMismatchError, FastlicError,  # noqa: E402
                            ReconstructionMismatchError)
from fastlic.runtime.codec import Codec  # noqa: E402
from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402



class RoundMeans(Engine):
    """Wraps a parameter engine and rounds its ``mean`` output to multiples of 2^-bits."""

    def __init__(self, inner: Engine, bits: int):
        super().__init__(inner.spec)
        self.inner, self.step = inner, np.float32(2.0 ** -bits)

    def _run(self, inputs):
        out = dict(self.inner.run(inputs))
        out["mean"] = (np.round(out["mean"] / self.step) * self.step).astype(np.float32)
        return out


def round_means(codec: Codec, bits: int | None) -> Codec:
    if bits is None:
        return codec
    engines = {k: RoundMeans(e, bits) if k in ("anchor", "nonanchor") else e
               for k, e in codec.engines.items()}
    return Codec(codec.info, engines, codec.tables, codec.backend, codec.device)


@dataclasses.dataclass
class Outcome:
    result: str            # "bit-exact", an error class name, or "max diff D (N px)"
    exact: bool
    dy: float = float("nan")
    gs_px: int = -1
    bytes: int = 0


def _pixels(codec: Codec, y_hat: np.ndarray, like: np.ndarray) -> np.ndarray:
    x = codec.engines["g_s"].run({"y_hat": y_hat})["image_hat"][0]
    rgb = x[:, :like.shape[0], :like.shape[1]].transpose(1, 2, 0)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def _diagnostics(enc: Codec, dec: Codec, data: bytes, image: np.ndarray) -> tuple[float, int]:
    """(|Δŷ|, g_s px) for a stream whose symbols both codecs decode."""
    y_enc = enc.decode_latent(data)   # = the encoder's ŷ (same-backend round trips are exact)
    dy = float(np.abs(dec.decode_latent(data) - y_enc).max())
    gs = int((_pixels(enc, y_enc, image) != _pixels(dec, y_enc, image)).any(axis=-1).sum())
    return dy, gs


def cross(enc: Codec, dec: Codec, image: np.ndarray, checksum: bool = True) -> Outcome:
    data, recon = enc.compress(image, return_reconstruction=True, checksum=checksum)
    try:
        out = dec.decompress(data)
    except ReconstructionMismatchError:   # symbols matched: the diagnostics still apply
        return Outcome("ReconstructionMismatchError", False,
                       *_diagnostics(enc, dec, data, image), len(data))
    except BackendMismatchError:
        return Outcome("BackendMismatchError", False, bytes=len(data))
    diff = np.abs(out.astype(np.int16) - recon)
    dy, gs = _diagnostics(enc, dec, data, image)
    if not diff.any():
        return Outcome("bit-exact", True, dy, gs, len(data))
    count = int((diff.reshape(diff.shape[0], diff.shape[1], -1) > 0).any(axis=-1).sum())
    return Outcome(f"max diff {int(diff.max())} ({count} px)", False, dy, gs, len(data))


def load_pair(args) -> tuple[Codec, Codec]:
    opts = {"threads": args.threads} if args.threads else {}
    torch_codec = Codec.load(args.model, backend="torch", **opts)
    ort_codec = Codec.load(args.model, backend="onnxruntime", model_dir=args.model_dir, **opts)
    return round_means(torch_codec, args.quantize_means), round_means(ort_codec, args.quantize_means)


def _row(name: str, a: Outcome, b: Outcome) -> str:
    return (f"{name:<14}{a.result:<29}{b.result:<29}{a.dy:>10.2e}{b.dy:>10.2e}"
            f"{a.gs_px:>7}{b.gs_px:>7}")


def _tally(outcomes: list[Outcome]) -> str:
    """"bit-exact 20, ReconstructionMismatchError 4, ..." in first-seen order."""
    counts: dict[str, int] = {}
    for o in outcomes:
        key = "differing image" if o.result.startswith("max diff") else o.result
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def run(files: list[Path], args) -> int:
    from fastlic.runtime.image import read_image

    t, o = load_pair(args)
    plain = Codec.load(args.model, backend="torch") if args.quantize_means is not None else None
    print(f"# model {t.info.name} ({t.info.weights_hash.hex()}), {len(files)} images"
          + (f", means rounded to 2^-{args.quantize_means}" if plain else "")
          + (", reconstruction checksum on" if args.checksum else ", no reconstruction checksum"))
    print(f"{'image':<14}{'torch→onnxruntime':<29}{'onnxruntime→torch':<29}"
          f"{'|Δŷ| t→o':>10}{'|Δŷ| o→t':>10}{'g_s px':>7}{'g_s px':>7}")
    results: tuple[list[Outcome], list[Outcome]] = ([], [])
    sizes = [0, 0]
    for path in files:
        image = read_image(path, drop_alpha=True)[0]
        a, b = cross(t, o, image, args.checksum), cross(o, t, image, args.checksum)
        results[0].append(a)
        results[1].append(b)
        if plain:
            plain_bytes = len(plain.compress(image, checksum=args.checksum))
            sizes = [sizes[0] + a.bytes, sizes[1] + plain_bytes]
        print(_row(path.name, a, b), flush=True)
    n = len(files)
    exact = [sum(o.exact for o in r) for r in results]
    print(f"\nbit-exact: torch→onnxruntime {exact[0]}/{n} ({100 * exact[0] / n:.0f}%), "
          f"onnxruntime→torch {exact[1]}/{n} ({100 * exact[1] / n:.0f}%)")
    print(f"outcomes: torch→onnxruntime: {_tally(results[0])}; "
          f"onnxruntime→torch: {_tally(results[1])}")
    if plain:
        print(f"rate cost of rounded means: {100 * (sizes[0] / sizes[1] - 1):+.3f}% bytes")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    p.add_argument("--model", help="weights .safetensors (default: the shipped model)")
    p.add_argument("--model-dir", help="export directory of --model (default: the cache)")
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads per backend")
    p.add_argument("--quantize-means", type=int, default=None, metavar="K",
                   help="simulate means rounded to multiples of 2^-K in encoder and decoder")
    p.add_argument("--no-checksum", dest="checksum", action="store_false",
                   help="encode without the reconstruction CRC (fastlic compress --no-checksum)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"skipped: image folder not found: {folder}", file=sys.stderr)
        return 0
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".ppm"))
    files = files[:args.limit] if args.limit else files
    try:
        return run(files, args)
    except FastlicError as exc:
        print(f"cross_backend: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
