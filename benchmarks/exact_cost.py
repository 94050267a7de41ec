"""What the exact entropy path costs: rate-distortion and speed against the float path.

For each rung, on Kodak (all 24 images, no reconstruction CRC):

- ``float``: the float ladder it was converted from (default: the shipped files of
  ``--float-rev`` in git), coded the way bitstream v1 did: h_s and the parameter
  networks in float32, σ mapped to a table by ``EntropyTables.scale_index`` (a round
  trip on one engine, which is all v1 could promise);
- ``post-training``: the same float weights converted without fine-tuning
  (activation steps calibrated on scikit-image's photos);
- ``exact``: the shipped, converted ladder (``--exact``, default fastlic/weights).

It prints each rung's bpp and PSNR, the BD-rate of ``exact`` and ``post-training``
against ``float`` over the ladder, and (``--repeat N``) encode and decode times of
``float`` against ``exact`` on kodim01, in N paired turns on this machine (median
ratio and turns won).

    python -m benchmarks.exact_cost [--float-rev REV | --float DIR] [--exact DIR]
        [--kodak DIR] [--limit N] [--repeat N] [--threads T]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing fastlic
    sys.path.insert(0, str(ROOT))

from benchmarks._paths import KODAK  # noqa: E402
from fastlic.stages import STAGES  # noqa: E402
from fastlic.engines.base import Engine  # noqa: E402
from fastlic.evaluation.bdrate import bd_rate  # noqa: E402
from fastlic.evaluation.metrics import bpp, psnr  # noqa: E402
from fastlic.runtime.codec import Codec  # noqa: E402
from fastlic.modelfile import ModelInfo  # noqa: E402

FLOAT_REV = "1d8c7f4"   # the last commit that shipped the float (seventh) ladder


class FloatParams(Engine):
    """A float parameter stage with bitstream v1's table lookup: σ -> index."""

    def __init__(self, stage: str, engine: Engine, tables):
        super().__init__(STAGES[stage])
        self.inner, self.tables = engine, tables

    def _run(self, inputs):
        out = self.inner.run(inputs)
        return {"index": self.tables.scale_index(out["scale"]).astype(np.float32),
                "mean": out["mean"]}


def float_codec(path: Path) -> Codec:
    """Bitstream v1's arithmetic for a float weights file, on the torch engines."""
    from fastlic.stages import StageSpec
    from fastlic.engines.pytorch.engine import TorchEngine
    from fastlic.entropy.tables import build_tables
    from fastlic.model.packed import to_packed
    from fastlic.model.quant import with_exact
    from fastlic.model.subpixel import to_subpixel
    from fastlic.modelfile import load_model, read_shipped

    shipped = read_shipped(path)
    model = load_model(path)[0]
    model.qat = model.exact = None
    codec = Codec.from_model(with_exact(model, shipped.tables), tables=shipped.tables)
    packed = to_packed(to_subpixel(model), inplace=True).eval()
    engines = dict(codec.engines)
    engines["h_s"] = TorchEngine(STAGES["h_s"], packed.hyper_synthesis)
    for stage in ("anchor", "nonanchor"):
        spec = StageSpec(stage, STAGES[stage].inputs, ("scale", "mean"))
        engines[stage] = FloatParams(stage, TorchEngine(spec, getattr(packed, f"{stage}_params")),
                                     shipped.tables)
    info = ModelInfo(shipped.info.name, shipped.info.weights_hash, shipped.info.quality,
                     *[getattr(shipped.info, k) for k in ("latent_channels", "anchor_family",
                                                          "nonanchor_family")])
    return Codec(info, engines, shipped.tables)


def post_training_codec(path: Path) -> Codec:
    from fastlic.modelfile import load_model, read_shipped
    model = load_model(path)[0]
    model.qat = model.exact = None
    return Codec.from_model(model, tables=read_shipped(path).tables)


def point(codec: Codec, images) -> tuple[float, float]:
    rates, quality = [], []
    for img in images:
        data = codec.compress(img, checksum=False)
        rates.append(bpp(len(data), *img.shape[:2]))
        quality.append(psnr(img, codec.decompress(data)))
    return float(np.mean(rates)), float(np.mean(quality))


def git_ladder(rev: str, out: Path) -> Path:
    for q in (1, 2, 3, 4):
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:fastlic/weights/q{q}.safetensors"],
                              check=True, capture_output=True).stdout
        (out / f"q{q}.safetensors").write_bytes(blob)
    return out


def paired_times(a: Codec, b: Codec, image, repeat: int) -> str:
    data = {id(c): c.compress(image, checksum=False) for c in (a, b)}
    enc, dec = [], []
    for _ in range(repeat):
        row_e, row_d = [], []
        for c in (a, b):
            t = time.perf_counter()
            c.compress(image, checksum=False)
            row_e.append(time.perf_counter() - t)
            t = time.perf_counter()
            c.decompress(data[id(c)])
            row_d.append(time.perf_counter() - t)
        enc.append(row_e)
        dec.append(row_d)
    lines = []
    for what, rows in (("encode", np.array(enc)), ("decode", np.array(dec))):
        ratio = rows[:, 1] / rows[:, 0]
        lines.append(f"{what}: float {1e3 * np.median(rows[:, 0]):.1f} ms, exact "
                     f"{1e3 * np.median(rows[:, 1]):.1f} ms; exact/float median {np.median(ratio):.3f}"
                     f" (range {ratio.min():.3f}-{ratio.max():.3f}), exact faster in "
                     f"{int((ratio < 1).sum())}/{len(ratio)} turns")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from fastlic.evaluation.run import load_images
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--float-rev", default=FLOAT_REV, help="git revision of the float ladder")
    p.add_argument("--float", dest="float_dir", help="folder of the float q*.safetensors instead")
    p.add_argument("--exact", default=str(ROOT / "fastlic" / "weights"))
    p.add_argument("--kodak", default=str(KODAK))
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--repeat", type=int, default=0, help="paired timing turns (0: none)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--timing-only", action="store_true",
                   help="skip the rate-distortion table: only the paired timing")
    args = p.parse_args(argv)
    if not Path(args.kodak).is_dir():
        print(f"skipped: {args.kodak} not found", file=sys.stderr)
        return 0
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    images = [img for _, img in load_images(args.kodak, args.limit or None)]
    print(f"# python -m benchmarks.exact_cost {' '.join(argv if argv is not None else sys.argv[1:])}")
    with tempfile.TemporaryDirectory() as tmp:
        float_dir = Path(args.float_dir) if args.float_dir else git_ladder(args.float_rev, Path(tmp))
        rows = {"float": [], "post-training": [], "exact": []}
        if not args.timing_only:
            rate_distortion(float_dir, Path(args.exact), images, rows)
        if args.repeat:
            q3 = float_dir / "q3.safetensors"
            print(f"kodim01, quality 3, {args.repeat} paired turns:")
            print(paired_times(float_codec(q3), Codec.load(Path(args.exact) / "q3.safetensors"),
                               images[0], args.repeat))
    return 0


def rate_distortion(float_dir: Path, exact_dir: Path, images, rows: dict) -> None:
    """Each rung's bpp and PSNR three ways, and BD-rates against float (printed)."""
    print(f"{'q':<3}{'float bpp':>10}{'PSNR':>8}{'post bpp':>10}{'PSNR':>8}"
          f"{'exact bpp':>10}{'PSNR':>8}{'Δbpp':>8}{'ΔPSNR':>8}")
    for q in (1, 2, 3, 4):
        f = float_codec(float_dir / f"q{q}.safetensors")
        pt = post_training_codec(float_dir / f"q{q}.safetensors")
        ex = Codec.load(exact_dir / f"q{q}.safetensors")
        for name, codec in (("float", f), ("post-training", pt), ("exact", ex)):
            rows[name].append(point(codec, images))
        (fb, fp), (pb, pp), (eb, ep) = (rows[k][-1] for k in rows)
        print(f"{q:<3}{fb:>10.4f}{fp:>8.3f}{pb:>10.4f}{pp:>8.3f}{eb:>10.4f}{ep:>8.3f}"
              f"{100 * (eb / fb - 1):>+7.2f}%{ep - fp:>+8.3f}", flush=True)
    ref = np.array(rows["float"])
    for name in ("post-training", "exact"):
        r = np.array(rows[name])
        print(f"BD-rate (PSNR) of {name} against float: "
              f"{bd_rate(r[:, 0], r[:, 1], ref[:, 0], ref[:, 1]):+.2f} %")


if __name__ == "__main__":
    raise SystemExit(main())
