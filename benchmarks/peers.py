"""Kodak: fastlic's encode/decode time against CompressAI peers, same machine, one run.

Peers (CompressAI, benchmark-only; install: benchmarks/README.md, "Peers"):

- ``mbt2018`` quality 3 (N=M=192): serial autoregressive context model, one
  masked-conv + entropy-parameter step per latent position when decoding.
- ``cheng2020-anchor-checkerboard`` (``compressai.models.Cheng2020AnchorCheckerboard``,
  N=128 as the zoo's cheng2020-anchor at quality 3): two-pass checkerboard context.

Peer weights are random-initialised (CompressAI's pretrained files cannot be
fetched here): the timing depends on the architecture, not the weights, but
their bpp is meaningless. Every codec's time includes its uint8 -> float
conversion and padding (encode) and its crop -> uint8 (decode).

fastlic runs four times: on the torch engines without and with its reconstruction
checksum, on the torch engines with ``dtype="bfloat16"`` (g_s in bf16,
:mod:`fastlic.model.bfloat16`; fast where the CPU has AMX or AVX512-BF16, the header says)
without it, and (when onnxruntime is installed) on the onnxruntime engines without it.
With ``--peers-bf16`` the peers also run a second time under
``torch.autocast("cpu", torch.bfloat16)`` (their convolutions in bf16), so that the
bfloat16 row has a same-precision comparison too.

Per image, the codecs run in turn (interleaved); a warm-up run of the first
image per codec comes first and is not counted. Reported: medians per codec, the
speed-up ratio of medians (peer ms / fastlic ms), decoder parameter counts. The
process runs with :func:`fastlic.runtime.memory.keep_freed_memory`, as the
``fastlic`` command does; the setting is process-wide, so the peers run with it too.

    python -m benchmarks.peers [KODAK_DIR] [--limit 24] [--model PATH | --random-small]
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE.parent):     # _compressai_shim; fastlic when run as a script
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402
PEER_STRIDE = 64
# Modules a decoder does not run: analysis transforms, and the factorized z prior
# (fastlic ships it as tables; CompressAI keeps it as CDF buffers after update()).
ENCODER_ONLY = {"g_a", "h_a", "entropy_bottleneck", "z_prior"}


@dataclasses.dataclass
class Runner:
    """One codec: ``encode(uint8 HxWx3) -> payload``, ``decode(payload) -> uint8 HxWx3``."""

    name: str
    encode: Callable[[np.ndarray], object]
    decode: Callable[[object], np.ndarray]
    size: Callable[[object], int]          # payload bytes
    decoder_params: int
    note: str


def decoder_param_count(model: torch.nn.Module) -> int:
    """Parameters outside ``ENCODER_ONLY`` modules (g_s, h_s, context and parameter nets)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not ENCODER_ONLY.intersection(name.split(".")))


# ---- fastlic -------------------------------------------------------------------------
def random_small_weights(folder: Path) -> Path:
    """Ship a random-initialised ``small`` FastLIC whose latents code every channel.

    g_a's last layer is scaled (as the tests' tiny model) so that no channel is all
    zeros: the entropy coder then decodes every channel, fastlic's worst case.
    """
    from fastlic.model import FastLIC, get_config
    from fastlic.modelfile import ship_model
    torch.manual_seed(0)
    model = FastLIC(get_config("small")).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
        model.h_a[-1].weight.mul_(4.0)
    path = folder / "fastlic-small-random.safetensors"
    ship_model(model, path, name="fastlic-small-random", quality=0)
    return path


def fastlic_runners(weights: Path | None, cache_dir: Path | None = None,
                    threads: int = 0) -> list[Runner]:
    """fastlic as the peers run (no reconstruction checksum: their bitstreams carry none,
    and this is the base of every ratio), then fastlic's default, whose encoder also runs
    g_s to store the reconstruction CRC and whose decoder checks it, then the same weights
    with ``dtype="bfloat16"`` (g_s in bf16) without the checksum, then (if onnxruntime
    is installed) the onnxruntime engines without the checksum, on a pool per stage of
    ``threads`` threads (the library default; the export goes to ``cache_dir``)."""
    from fastlic.model.bfloat16 import native_bf16
    from fastlic.modelfile import load_model
    from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec
    codec = Codec.load(weights)
    model, _, _ = load_model(weights or DEFAULT_WEIGHTS)
    note = f"{codec.info.name} ({model.cfg.name} config), weights {codec.info.weights_hash.hex()}"
    if codec.info.name == "fastlic-small-random":
        note += "; random-initialised, every latent channel coded (worst case; bpp meaningless)"
    params = decoder_param_count(model)
    bf16 = Codec.load(weights, dtype="bfloat16")
    native = "native" if native_bf16() else "emulated: no AMX or AVX512-BF16 here"
    return [Runner("fastlic", lambda img: codec.compress(img, checksum=False), codec.decompress,
                   len, params, note + "; --no-checksum, as the peers (the base of the ratios)"),
            Runner("fastlic (default)", codec.compress, codec.decompress, len, params,
                   "the same codec with its default reconstruction checksum: encode also "
                   "runs g_s, decode checks the CRC"),
            Runner("fastlic (bfloat16)", lambda img: bf16.compress(img, checksum=False),
                   bf16.decompress, len, params,
                   f"the same codec with dtype bfloat16: g_s in bf16 ({native}), the other "
                   "stages float32, the same bitstreams; --no-checksum"),
            *_onnxruntime_runner(weights, cache_dir, threads, params)]


def _onnxruntime_runner(weights, cache_dir, threads: int, params: int) -> list[Runner]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: no fastlic (onnxruntime) row", file=sys.stderr)
        return []
    from fastlic.runtime.codec import Codec
    codec = Codec.load(weights, backend="onnxruntime", cache_dir=cache_dir, threads=threads,
                       log=lambda line: print(line, file=sys.stderr))
    layout = codec.engines["g_s"].layout
    return [Runner("fastlic (onnxruntime)", lambda img: codec.compress(img, checksum=False),
                   codec.decompress, len, params,
                   f"the same weights on the onnxruntime engines (CPU provider, a pool of "
                   f"{threads} threads per stage, g_s {layout.split()[0]}); --no-checksum")]


# ---- CompressAI peers ----------------------------------------------------------------
def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H', W') in [0, 1], edge-padded to multiples of 64."""
    h, w = img.shape[:2]
    ph, pw = -(-h // PEER_STRIDE) * PEER_STRIDE, -(-w // PEER_STRIDE) * PEER_STRIDE
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    if (ph, pw) != (h, w):
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
    return x


def _payload_bytes(strings) -> int:
    if isinstance(strings, (bytes, bytearray)):
        return len(strings)
    return sum(_payload_bytes(s) for s in strings)


def compressai_runner(name: str, model: torch.nn.Module, note: str,
                      bf16: bool = False) -> Runner:
    """Wrap a CompressAI model; ``update()`` builds its CDF tables first. bf16: run it
    under CPU autocast to bfloat16."""
    model = model.eval()
    model.update(force=True)

    def mode():
        return torch.autocast("cpu", torch.bfloat16, enabled=bf16)

    def encode(img):
        with torch.inference_mode(), mode():
            out = model.compress(_to_tensor(img))
        return out["strings"], out["shape"], img.shape[:2]

    def decode(payload):
        strings, shape, (h, w) = payload
        with torch.inference_mode(), mode():
            x_hat = model.decompress(strings, shape)["x_hat"]
        rgb = x_hat[0, :, :h, :w].float().clamp(0, 1).mul(255).round().to(torch.uint8)
        return rgb.permute(1, 2, 0).numpy()

    return Runner(name, encode, decode, lambda p: _payload_bytes(p[0]),
                  decoder_param_count(model), note)


def peer_runners(bf16: bool = False) -> list[Runner]:
    """mbt2018 and cheng2020-ckbd; with ``bf16`` each a second time under autocast."""
    from _compressai_shim import import_compressai
    compressai = import_compressai()
    from compressai.models import Cheng2020AnchorCheckerboard
    from compressai.zoo import mbt2018
    torch.manual_seed(0)
    peers = [("mbt2018", mbt2018(quality=3, pretrained=False),
              f"CompressAI {compressai.__version__} mbt2018 q3 (N=M=192), serial context"),
             ("cheng2020-ckbd", Cheng2020AnchorCheckerboard(N=128),
              f"CompressAI {compressai.__version__} Cheng2020AnchorCheckerboard N=128")]
    runners = [compressai_runner(name, model, note) for name, model, note in peers]
    if bf16:
        runners += [compressai_runner(f"{name} (bf16 autocast)", model,
                                      f"the same {name} under torch.autocast('cpu', bfloat16)",
                                      bf16=True) for name, model, _ in peers]
    return runners


# ---- timing --------------------------------------------------------------------------
@dataclasses.dataclass
class Timings:
    """Seconds per counted image, per codec."""

    encode: list[float] = dataclasses.field(default_factory=list)
    decode: list[float] = dataclasses.field(default_factory=list)
    bpp: list[float] = dataclasses.field(default_factory=list)


def time_one(runner: Runner, img: np.ndarray) -> tuple[float, float, int]:
    """(encode s, decode s, payload bytes) of one image."""
    t0 = time.perf_counter()
    payload = runner.encode(img)
    t1 = time.perf_counter()
    out = runner.decode(payload)
    t2 = time.perf_counter()
    if out.shape[:2] != img.shape[:2]:
        raise RuntimeError(f"{runner.name} decoded {out.shape}, expected {img.shape}")
    return t1 - t0, t2 - t1, runner.size(payload)


def run_all(runners: list[Runner], files: list[Path], warmup: int) -> dict[str, Timings]:
    """Codecs in turn on each image; ``warmup`` uncounted runs of the first image first."""
    results = {r.name: Timings() for r in runners}
    first = np.asarray(Image.open(files[0]).convert("RGB"))
    for i in range(warmup):
        for r in runners:
            enc, dec, _ = time_one(r, first)
            print(f"  warm-up {i + 1}/{warmup} {r.name}: enc {1e3 * enc:.0f} ms, dec {1e3 * dec:.0f} ms",
                  file=sys.stderr, flush=True)
    for n, path in enumerate(files, 1):
        img = np.asarray(Image.open(path).convert("RGB"))
        parts = []
        for r in runners:
            enc, dec, size = time_one(r, img)
            t = results[r.name]
            t.encode.append(enc)
            t.decode.append(dec)
            t.bpp.append(8 * size / (img.shape[0] * img.shape[1]))
            parts.append(f"{r.name} {1e3 * enc:.0f}/{1e3 * dec:.0f}")
        print(f"  [{n}/{len(files)}] {path.name} enc/dec ms: " + ", ".join(parts),
              file=sys.stderr, flush=True)
    return results


# ---- report --------------------------------------------------------------------------
def _median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def report(runners: list[Runner], results: dict[str, Timings]) -> str:
    from fastlic.evaluation.report import markdown_table
    base = results["fastlic"]
    base_enc, base_dec = _median_ms(base.encode), _median_ms(base.decode)
    rows = []
    for r in runners:
        t = results[r.name]
        enc, dec = _median_ms(t.encode), _median_ms(t.decode)
        rows.append([r.name, enc, dec, enc / base_enc, dec / base_dec, r.decoder_params / 1e6,
                     statistics.median(t.bpp)])
    table = markdown_table(rows, ["codec", "encode ms", "decode ms", "encode time / fastlic's",
                                  "decode time / fastlic's", "decoder params (M)", "bpp (median)"],
                           digits=[0, 1, 1, 2, 2, 3, 3])
    notes = "\n".join(f"- {r.name}: {r.note}" for r in runners)
    peers = [r.name for r in runners if not r.name.startswith("fastlic")]
    default = results.get("fastlic (default)")
    speedups = "; ".join(
        f"fastlic vs {p}: decode {_median_ms(results[p].decode) / base_dec:.1f}x faster, "
        f"encode {_median_ms(results[p].encode) / base_enc:.1f}x faster"
        + (f" ({_median_ms(results[p].encode) / _median_ms(default.encode):.1f}x with the "
           "default checksum)" if default else "") for p in peers)
    for variant in ("fastlic (bfloat16)", "fastlic (onnxruntime)"):
        other = results.get(variant)
        if other:
            speedups += "\n" + "; ".join(
                f"{variant} vs {p}: decode "
                f"{_median_ms(results[p].decode) / _median_ms(other.decode):.1f}x faster, encode "
                f"{_median_ms(results[p].encode) / _median_ms(other.encode):.1f}x faster"
                for p in peers)
    return (f"{table}\n\n**peer weights random-initialised (timing only; their bpp is meaningless)**\n"
            f"{notes}\n- decoder params: everything but g_a, h_a and the factorized z prior\n"
            f"- ratios are ratios of medians; > 1 means fastlic is faster\n\n{speedups}")


# ---- CLI -----------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(DEFAULT_DIR), help="folder of PNG images (Kodak)")
    p.add_argument("--limit", type=int, default=24,
                   help="counted images (default 24, all of Kodak: about 7 minutes on 2 cores, "
                        "mostly mbt2018's serial decoder, seconds per image)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="fastlic weights (default: the shipped model)")
    src.add_argument("--random-small", action="store_true",
                     help="fastlic: a random-initialised 'small' model coding every channel "
                          "(timing only, for when no shipped weights exist)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch threads for every codec (default: torch's, i.e. all cores "
                        "unless OMP_NUM_THREADS says otherwise)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted runs of the first image per codec")
    p.add_argument("--peers-bf16", action="store_true",
                   help="also run each peer under CPU autocast to bfloat16 (doubles the peers' time)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from fastlic.errors import ModelLoadError
    from fastlic.runtime.memory import keep_freed_memory
    args = parse_args(argv)
    folder = Path(args.folder)
    files = sorted(folder.glob("*.png"))[:args.limit] if folder.is_dir() else []
    if not files:
        print(f"no PNG images in {folder}: nothing to compare (skipped)", file=sys.stderr)
        return 0
    try:
        peers = peer_runners(args.peers_bf16)
    except ImportError as exc:
        print(f"CompressAI peers unavailable, skipped: {exc}", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    keep_freed_memory()   # as the fastlic command does; process-wide, so peers get it too
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_small_weights(Path(tmp)) if args.random_small else args.model
        try:
            cache = Path(tmp) if args.random_small else None   # the shipped model's stays
            runners = [*fastlic_runners(Path(weights) if weights else None, cache, args.threads),
                       *peers]
        except ModelLoadError as exc:
            print(f"{exc}; pass --model PATH, or --random-small to time the architecture",
                  file=sys.stderr)
            return 1
        print(f"# peers on {folder}, {len(files)} image(s) counted + {args.warmup} warm-up run(s) of "
              f"{files[0].name}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
              f"{platform.processor() or platform.machine()}, {platform.node()}")
        results = run_all(runners, files, args.warmup)
    print()
    print(report(runners, results))
    print(f"\nruntime: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
