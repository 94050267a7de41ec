"""Peak memory and time of compressing and decompressing large images, tiled and not.

For each size (megapixels) a photo-like test image is made from scikit-image's
astronaut (mirrored tiles, so it has edges, texture and smooth areas at every
scale) and written as PNG. Each measurement is one fresh process doing what
``fastlic compress`` / ``fastlic decompress`` do (read the PNG, code, write the
output) with the shipped model, which reports its own peak RSS (``VmHWM``) and
wall time. ``untiled`` is the same with a tile larger than the image (how fastlic
coded before tiling existed); sizes above ``--untiled-up-to`` are not run untiled.
For the sizes run both ways it also prints what tiling changes: bpp and PSNR
(tiled g_a writes other symbols where its deformable convolution reaches past a
halo), and what tiled g_s alone changes: the untiled file decoded with tiles
against its untiled decode (pixels differing, largest level difference).

    python -m benchmarks.memory [--sizes 1,5,20,100] [--tile 1024] [--untiled-up-to 20]
        [--quality 3] [--threads 1] [--out benchmarks/results/memory.md]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing fastlic
    sys.path.insert(0, str(ROOT))

from fastlic.evaluation.metrics import psnr  # noqa: E402
from fastlic.runtime.codec import DEFAULT_TILE  # noqa: E402

UNTILED = 1 << 15   # a tile larger than any image the format allows

# One child process: read, code, write; then its peak RSS and wall time as JSON.
_CHILD = r"""
import json, re, sys, time
t0 = time.perf_counter()
from fastlic.runtime.memory import keep_freed_memory
keep_freed_memory()                      # as the fastlic command does
from fastlic.runtime.codec import Codec
from fastlic.runtime.image import read_image, write_atomic, write_image
from fastlic.runtime.bitstream import read_file
mode, src, dst, quality, threads, tile = sys.argv[1:7]
codec = Codec.load(quality=int(quality), threads=int(threads), tile=int(tile),
                   max_pixels=1 << 28)
t1 = time.perf_counter()
if mode == "compress":
    rgb, layout = read_image(src)
    write_atomic(dst, codec.compress(rgb))
else:
    write_image(dst, codec.decompress(read_file(src, 1 << 28)))
t2 = time.perf_counter()
hwm = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"peak_mb": hwm / 1024, "code_s": t2 - t1, "load_s": t1 - t0}))
"""


def test_image(megapixels: float) -> np.ndarray:
    """A photo-like uint8 (H, W, 3) of about ``megapixels``, 5:4 like a camera's."""
    from skimage import data
    a = data.astronaut()
    block = np.concatenate([np.concatenate([a, a[:, ::-1]], 1),
                            np.concatenate([a[::-1], a[::-1, ::-1]], 1)], 0)
    height = int(round((megapixels * 1e6 * 4 / 5) ** 0.5))
    width = int(round(megapixels * 1e6 / height))
    reps = (-(-height // block.shape[0]), -(-width // block.shape[1]), 1)
    return np.ascontiguousarray(np.tile(block, reps)[:height, :width])


def run_child(mode: str, src: Path, dst: Path, quality: int, threads: int, tile: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(src), str(dst), str(quality),
                          str(threads), str(tile)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:100]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(megapixels: float, tiles: list[int], folder: Path, quality: int,
            threads: int) -> list[dict]:
    from PIL import Image
    image = test_image(megapixels)
    png = folder / f"{megapixels:g}mpx.png"
    Image.fromarray(image).save(png)
    rows, decoded = [], {}
    for tile in tiles:
        flic, out = folder / f"{megapixels:g}-{tile}.flic", folder / f"{megapixels:g}-{tile}.png"
        enc = run_child("compress", png, flic, quality, threads, tile)
        dec = run_child("decompress", flic, out, quality, threads, tile) if "error" not in enc \
            else {"error": "no file"}
        row = {"mpx": image.shape[0] * image.shape[1] / 1e6, "size": f"{image.shape[1]}x"
               f"{image.shape[0]}", "tile": tile, "encode": enc, "decode": dec}
        if "error" not in dec:
            decoded[tile] = np.asarray(Image.open(out))
            row["bpp"] = 8 * flic.stat().st_size / (image.shape[0] * image.shape[1])
            row["psnr"] = psnr(image, decoded[tile])
        rows.append(row)
        print(format_row(row), flush=True)
    if len(decoded) == 2:   # g_s alone: the untiled file decoded tiled, against untiled
        out = folder / f"{megapixels:g}-cross.png"
        if "error" not in run_child("decompress", flic, out, quality, threads, tiles[0]):
            a, b = decoded[UNTILED], np.asarray(Image.open(out))
            rows[-1]["max_level_diff"] = int(np.abs(a.astype(np.int16) - b).max())
            rows[-1]["pixels_differing"] = int((a != b).any(axis=-1).sum())
    return rows


def _mb(part: dict) -> str:
    return part.get("error", f"{part.get('peak_mb', 0):,.0f}")


def format_row(row: dict) -> str:
    tile = "untiled" if row["tile"] >= UNTILED else str(row["tile"])
    enc, dec = row["encode"], row["decode"]
    per = (lambda part: f"{part['code_s'] / row['mpx']:.2f}" if "code_s" in part else "-")
    quality = (f"{row['bpp']:.4f} | {row['psnr']:.3f}" if "bpp" in row else "- | -")
    return (f"| {row['size']} ({row['mpx']:.1f} Mpx) | {tile} | {_mb(enc)} | {per(enc)} | "
            f"{_mb(dec)} | {per(dec)} | {quality} |")


HEADER = ("| image | tile | encode peak MB | encode s/Mpx | decode peak MB | decode s/Mpx "
          "| bpp | PSNR dB |\n|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,5,20,100", help="megapixels, comma-separated")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile side in pixels")
    p.add_argument("--untiled-up-to", type=float, default=20,
                   help="also run untiled up to this many megapixels")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="also write the table and differences to this Markdown file")
    args = p.parse_args(argv)
    print(HEADER)
    all_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mpx in (float(s) for s in args.sizes.split(",")):
            tiles = [args.tile] + ([UNTILED] if mpx <= args.untiled_up_to else [])
            all_rows += measure(mpx, tiles, Path(tmp), args.quality, args.threads)
    diffs = [f"- {r['size']}: the untiled file decoded with tiles differs from its untiled "
             f"decode in {r['pixels_differing']} pixels, by at most {r['max_level_diff']} levels"
             for r in all_rows if "max_level_diff" in r]
    print("\n".join(diffs))
    if args.out:
        text = "\n".join([f"`python -m benchmarks.memory --sizes {args.sizes} --tile {args.tile} "
                          f"--quality {args.quality} --threads {args.threads}`", "", HEADER,
                          *map(format_row, all_rows), "", *diffs, ""])
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
