"""The cross matrix: files written by one engine, decoded by every other, default flags.

Encoders: torch with 1 and 2 threads, onnxruntime. Decoders: torch with 1, 2 and 3
threads, onnxruntime, torch with ``dtype="bfloat16"`` (g_s in bf16), and on a machine
with CUDA also torch CUDA in float32, float16 and bfloat16. For each pair:

- ``decoded``: files that ``decompress`` returns an image for with default flags (the
  target: all of them);
- ``same ŷ``: files whose decoded symbols and ŷ (``decode_latent``) equal the
  encoder's own, bit for bit (the target: all);
- ``same image``: decoded images equal to the encoder's reconstruction bit for bit;
- the worst PSNR and the largest pixel difference of a decoded image against the
  encoder's reconstruction (g_s's float rounding; inf where every image is the same).

    python -m benchmarks.cross_backend [DIR ...] [--model W] [--limit N] [--out FILE.md]

DIR defaults to ../shared/data/kodak; scikit-image's photos are always added. A
missing folder is skipped. Thread counts are set per call (torch's count is
process-wide), so one process holds every engine.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing fastlic
    sys.path.insert(0, str(ROOT))

from benchmarks._paths import KODAK  # noqa: E402
from fastlic.errors import FastlicError  # noqa: E402
from fastlic.evaluation.metrics import psnr  # noqa: E402
from fastlic.runtime.codec import Codec  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera")


@dataclasses.dataclass
class Side:
    """One engine setting: a codec and the torch thread count to run it with (0: keep)."""

    name: str
    codec: Codec
    threads: int = 0

    def __call__(self, fn, *args, **kwargs):
        import torch
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(saved)


@dataclasses.dataclass
class Cell:
    total: int = 0
    decoded: int = 0
    same_latent: int = 0
    same_image: int = 0
    worst_psnr: float = float("inf")
    max_diff: int = 0
    errors: dict = dataclasses.field(default_factory=dict)


def sides(model, cuda: bool) -> tuple[list[Side], list[Side]]:
    torch_codec = Codec.load(model, backend="torch")
    ort_codec = Codec.load(model, backend="onnxruntime", threads=2)
    bf16 = Codec.load(model, backend="torch", dtype="bfloat16")
    encoders = [Side("torch 1 thread", torch_codec, 1), Side("torch 2 threads", torch_codec, 2),
                Side("onnxruntime", ort_codec)]
    decoders = [Side("torch 1 thread", torch_codec, 1), Side("torch 2 threads", torch_codec, 2),
                Side("torch 3 threads", torch_codec, 3), Side("onnxruntime", ort_codec),
                Side("torch bfloat16", bf16, 2)]
    if cuda:
        for dtype in ("float32", "float16", "bfloat16"):
            decoders.append(Side(f"torch cuda {dtype}",
                                 Codec.load(model, backend="torch", device="cuda", dtype=dtype)))
    return encoders, decoders


def images(folders: list[Path], limit: int) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    from fastlic.runtime.image import read_image
    out = []
    for folder in folders:
        if not folder.is_dir():
            print(f"# skipped: image folder not found: {folder}", file=sys.stderr)
            continue
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg"))
        out += [(f.name, read_image(f, drop_alpha=True)[0]) for f in files[:limit or None]]
    out += [(f"skimage.{n}", getattr(data, n)()) for n in SKIMAGE_PHOTOS]
    return out


def digest(latent: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(latent, dtype=np.float32).tobytes()).hexdigest()


def run(args) -> str:
    import torch
    encoders, decoders = sides(args.model, torch.cuda.is_available())
    photos = images([Path(f) for f in args.folders], args.limit)
    cells = {(e.name, d.name): Cell() for e in encoders for d in decoders}
    for name, image in photos:
        for enc in encoders:
            data, recon = enc(enc.codec.compress, image, return_reconstruction=True)
            want = digest(enc(enc.codec.decode_latent, data))
            for dec in decoders:
                cell = cells[enc.name, dec.name]
                cell.total += 1
                try:
                    out = dec(dec.codec.decompress, data)
                except FastlicError as exc:
                    cell.errors[type(exc).__name__] = cell.errors.get(type(exc).__name__, 0) + 1
                    continue
                cell.decoded += 1
                cell.same_latent += digest(dec(dec.codec.decode_latent, data)) == want
                diff = int(np.abs(out.astype(np.int16) - recon).max())
                cell.same_image += diff == 0
                cell.max_diff = max(cell.max_diff, diff)
                if diff:
                    cell.worst_psnr = min(cell.worst_psnr, psnr(recon, out))
        print(f"# {name} done", file=sys.stderr, flush=True)
    return report(cells, photos, encoders[0].codec, args)


def report(cells: dict, photos, codec: Codec, args) -> str:
    n = len(photos)
    lines = [f"`python -m benchmarks.cross_backend {' '.join(args.argv)}`".replace(" `", "`"),
             "",
             f"Model {codec.info.name} ({codec.info.weights_hash.hex()}); {n} images "
             f"({n - len(SKIMAGE_PHOTOS)} from {', '.join(args.folders)}, "
             f"{len(SKIMAGE_PHOTOS)} scikit-image photos); default flags (reconstruction "
             "CRC written, no --strict).",
             "",
             "| encoder | decoder | decoded | same ŷ | same image | worst PSNR vs encoder's "
             "image | max pixel diff | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for (enc, dec), c in cells.items():
        worst = "∞ (identical)" if c.worst_psnr == float("inf") else f"{c.worst_psnr:.2f} dB"
        errors = ", ".join(f"{k} {v}" for k, v in c.errors.items()) or "none"
        lines.append(f"| {enc} | {dec} | {c.decoded}/{c.total} | {c.same_latent}/{c.total} | "
                     f"{c.same_image}/{c.total} | {worst} | {c.max_diff} | {errors} |")
    total = sum(c.total for c in cells.values())
    lines += ["", f"All pairs: decoded {sum(c.decoded for c in cells.values())}/{total}, "
              f"same ŷ {sum(c.same_latent for c in cells.values())}/{total}, "
              f"same image {sum(c.same_image for c in cells.values())}/{total}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", default=[str(KODAK)])
    p.add_argument("--model", help="weights .safetensors (default: the shipped model)")
    p.add_argument("--limit", type=int, default=0, help="first N images of each folder")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    args.argv = argv
    try:
        text = run(args)
    except FastlicError as exc:
        print(f"cross_backend: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
