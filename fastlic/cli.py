"""The ``fastlic`` command. Each subcommand is a function ``main(argv) -> int``.

    fastlic compress IMAGE... [-o OUT | --out-dir DIR] [--no-checksum]
    fastlic decompress FILE.flic... [-o OUT | --out-dir DIR] [--strict]
    fastlic info FILE.flic...
    fastlic demo
    fastlic train DATA --out RUN
    fastlic export --out DIR [--model W]
    fastlic profile IMAGE [--repeat N] [--json OUT] [--plot OUT.png]
    fastlic bench DIR [--repeat N] [--json OUT]
    fastlic train-ship RUN/checkpoint.pt OUT.safetensors [--name N] [--quality Q]
    fastlic distill DATA --out RUN --teacher T --pass 2|3
    fastlic evaluate DIR [--model W ...] [--codecs jpeg,webp,avif,jxl] [--out REPORT]

Model and engine options (compress, decompress, demo, profile, bench):
    -q/--quality N (not decompress: it picks each file's shipped model)
    --model W.safetensors  --backend torch|onnxruntime|tensorrt  --model-dir EXPORT_DIR
    --device cpu|cuda[:N]  --dtype float32|float16|bfloat16  --cuda-graphs  --threads N
With --backend onnxruntime or tensorrt and no --model-dir, the model is exported once
to ~/.cache/fastlic (or $FASTLIC_CACHE_DIR) and reused; tensorrt (needs --device cuda)
also caches its built engines there.

Errors print one line, ``fastlic: error: ...``, and exit non-zero; no output file
is left half-written (outputs are written to a temporary name, then renamed).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from .errors import FastlicError, UsageError
from .runtime.memory import keep_freed_memory


def _add_model_args(p: argparse.ArgumentParser, quality: bool = True) -> None:
    from .engines import BACKENDS
    g = p.add_argument_group("model and engine")
    if quality:
        from .runtime.models import DEFAULT_QUALITY, shipped_ladder
        g.add_argument("-q", "--quality", type=int,
                       help=f"rate point of the shipped ladder: {', '.join(map(str, shipped_ladder()))}"
                            f" (higher: larger files, better images; default {DEFAULT_QUALITY})")
    g.add_argument("--model", help="weights .safetensors (default: the shipped model "
                                   + ("of --quality)" if quality else "that made each file)"))
    g.add_argument("--backend", default="torch", choices=sorted(BACKENDS),
                   help="inference backend (default: torch)")
    g.add_argument("--model-dir", help="`fastlic export` directory (onnxruntime, tensorrt; "
                                       "default: exported once to the cache)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--dtype", default="float32",
                   help="torch: float32; float16 (CUDA); bfloat16 (g_s only, for CPUs with "
                        "AMX or AVX512-BF16; the same bitstreams)")
    g.add_argument("--cuda-graphs", action="store_true", help="torch on CUDA: replay CUDA graphs")
    g.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (0: the backend decides)")


def _add_timing_args(p: argparse.ArgumentParser, repeat: int, repeat_help: str,
                     json_help: str) -> None:
    """The options profile and bench share: repetitions, a JSON report, the checksum."""
    p.add_argument("--repeat", type=int, default=repeat, help=f"{repeat_help} (default {repeat})")
    p.add_argument("--json", help=json_help)
    p.add_argument("--no-checksum", dest="checksum", action="store_false",
                   help="time compress --no-checksum (no reconstruction CRC: the encoder "
                        "skips g_s)")


def _check_repeat(args) -> None:
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")


def _outputs(inputs: list[str], output: str | None, out_dir: str | None, suffix: str,
             force: bool) -> list[Path]:
    """Output path per input; refuses to overwrite unless ``force``."""
    if output and len(inputs) > 1:
        raise UsageError("-o/--output takes one input; use --out-dir for several")
    if output and out_dir:
        raise UsageError("give -o/--output or --out-dir, not both")
    if output:
        paths = [Path(output)]
    else:
        folder = Path(out_dir) if out_dir else None
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        paths = [(folder or Path(i).parent) / (Path(i).stem + suffix) for i in inputs]
    for src, dst in zip(inputs, paths):
        if not Path(src).is_file():
            raise UsageError(f"input not found: {src}")
        if dst.exists() and not force:
            raise UsageError(f"{dst} exists; pass --force to overwrite")
    return paths


def _progress(items, desc: str):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="file", disable=len(items) < 2, file=sys.stderr)


def _engine_options(args) -> dict:
    """Only the options the user set, so a backend is not handed ones it does not take."""
    options = {}
    if args.dtype != "float32":
        options["dtype"] = args.dtype
    if args.cuda_graphs:
        options["cuda_graphs"] = True
    if args.threads:
        options["threads"] = args.threads
    return options


def _share_onnxruntime_pool(threads: int) -> None:
    """One intra-op pool for the six stage sessions (this process is ours; see
    fastlic.engines.onnxruntime_engine.share_thread_pool)."""
    from .engines.onnxruntime_engine import share_thread_pool
    share_thread_pool(threads)


def _load_codec(args, weights=None):
    from .runtime.codec import Codec
    if args.backend == "onnxruntime":
        _share_onnxruntime_pool(args.threads or 0)
    return Codec.load(weights or args.model, backend=args.backend, device=args.device,
                      quality=getattr(args, "quality", None), model_dir=args.model_dir,
                      log=lambda line: print(line, file=sys.stderr), **_engine_options(args))


class _CodecPerModel:
    """Decoders for files from any shipped model: with --model or --model-dir, that one
    model; else the shipped weights each file's header names, each loaded once."""

    def __init__(self, args):
        self.args, self.codecs = args, {}

    def __call__(self, data: bytes):
        if self.args.model or self.args.model_dir:
            key = None
        else:
            from .runtime.bitstream import peek_header
            from .runtime.models import shipped_weights_for
            header = peek_header(data)
            key = shipped_weights_for(header.model_name, header.weights_hash)
        if key not in self.codecs:
            self.codecs[key] = _load_codec(self.args, key)
        return self.codecs[key]


def compress_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic compress", description="Compress images to .flic files.")
    p.add_argument("inputs", nargs="+", help="8-bit RGB or greyscale images (PNG, JPEG, ...)")
    p.add_argument("-o", "--output", help="output file (one input only)")
    p.add_argument("--out-dir", help="folder for the outputs (default: beside each input)")
    p.add_argument("--drop-alpha", action="store_true", help="code RGB and discard transparency")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--checksum", action=argparse.BooleanOptionalAction, default=True,
                   help="store a CRC32 of the reconstruction (4 bytes; on by default): a decoder "
                        "whose image differs (other backend or device) fails instead of "
                        "returning it. --no-checksum skips the encoder's g_s run: faster, "
                        "unchecked")
    _add_model_args(p)
    args = p.parse_args(argv)
    from .runtime.image import read_image, write_atomic
    outputs = _outputs(args.inputs, args.output, args.out_dir, ".flic", args.force)
    codec = _load_codec(args)
    for src, dst in _progress(list(zip(args.inputs, outputs)), "compress"):
        rgb, layout = read_image(src, drop_alpha=args.drop_alpha)
        image = rgb[:, :, 0] if layout == 1 else rgb
        data = codec.compress(image, checksum=args.checksum)
        write_atomic(dst, data)
        if len(outputs) == 1:
            bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
            print(f"{dst}: {len(data)} bytes, {bpp:.3f} bpp")
    return 0


def decompress_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic decompress", description="Decompress .flic files to PNG.")
    p.add_argument("inputs", nargs="+", help=".flic files")
    p.add_argument("-o", "--output", help="output image (one input only; suffix picks the format)")
    p.add_argument("--out-dir", help="folder for the outputs (default: beside each input)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--strict", action="store_true",
                   help="refuse (exit 3) unless the image is the encoder's reconstruction bit for "
                        "bit; by default a file decodes on any backend, device and dtype, whose "
                        "g_s may round a few pixels by a level differently (noted on stderr)")
    _add_model_args(p, quality=False)
    args = p.parse_args(argv)
    from .runtime.image import write_image
    outputs = _outputs(args.inputs, args.output, args.out_dir, ".png", args.force)
    codec_for = _CodecPerModel(args)
    for src, dst in _progress(list(zip(args.inputs, outputs)), "decompress"):
        data = Path(src).read_bytes()
        codec = codec_for(data)
        image = codec.decompress(data, strict=args.strict)
        write_image(dst, image)
        if codec.matches_encoder(data, image) is False:
            print(f"fastlic: note: {dst} differs from the encoder's reconstruction in g_s's "
                  "float rounding (another backend, device or dtype); the symbols are exact",
                  file=sys.stderr)
        if len(outputs) == 1:
            print(f"{dst}: {image.shape[1]}x{image.shape[0]}")
    return 0


def info_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic info", description="Print the header of .flic files.")
    p.add_argument("inputs", nargs="+")
    args = p.parse_args(argv)
    from .runtime.bitstream import unpack
    for src in args.inputs:
        if not Path(src).is_file():
            raise UsageError(f"input not found: {src}")
        data = Path(src).read_bytes()
        bs = unpack(data)
        h = bs.header
        coded = sum(h.channel_mask)
        recon = "none" if h.recon_crc is None else f"{h.recon_crc:#010x}"
        print(f"{src}: {h.width}x{h.height} {h.color.name}, model {h.model_name} "
              f"({h.weights_hash.hex()}), quality {h.quality}, {len(data)} bytes "
              f"({8 * len(data) / (h.width * h.height):.3f} bpp), channels coded "
              f"{coded}/{len(h.channel_mask)}, substreams {[len(s) for s in bs.substreams]}, "
              f"reconstruction checksum {recon}")
    return 0


def demo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic demo",
                                description="Round-trip photos bundled with scikit-image and print "
                                            "bpp, PSNR and encode/decode milliseconds.")
    _add_model_args(p)
    args = p.parse_args(argv)
    import numpy as np
    from skimage import data as skdata
    from .evaluation.metrics import psnr
    codec = _load_codec(args)
    dtype = "" if args.dtype == "float32" else f", dtype {args.dtype}"
    print(f"model {codec.info.name} ({codec.info.weights_hash.hex()}), "
          f"backend {args.backend}{dtype}")
    print(f"{'image':<12}{'size':>10}{'bpp':>8}{'PSNR dB':>9}{'enc ms':>9}{'dec ms':>9}  bit-exact")
    for name in ("astronaut", "coffee", "chelsea", "camera", "rocket"):
        image = getattr(skdata, name)()
        t0 = time.perf_counter()
        data, recon = codec.compress(image, return_reconstruction=True)
        t1 = time.perf_counter()
        out = codec.decompress(data)
        t2 = time.perf_counter()
        exact = "yes" if np.array_equal(out, recon) else "NO"
        size = f"{image.shape[1]}x{image.shape[0]}"
        print(f"{name:<12}{size:>10}{8 * len(data) / (image.shape[0] * image.shape[1]):>8.3f}"
              f"{psnr(image, out):>9.2f}{1e3 * (t1 - t0):>9.1f}{1e3 * (t2 - t1):>9.1f}  {exact}")
    return 0


def profile_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic profile",
                                description="Time every encode and decode stage of one image "
                                            "(device synchronised, warm-up dropped, medians).")
    p.add_argument("image", help="an 8-bit image")
    _add_timing_args(p, 5, "timed runs after the warm-up", "write the medians to this JSON file")
    p.add_argument("--plot", help="write a bar chart to this PNG file")
    _add_model_args(p)
    args = p.parse_args(argv)
    from .runtime import profile
    from .runtime.image import read_image
    if not Path(args.image).is_file():
        raise UsageError(f"input not found: {args.image}")
    _check_repeat(args)
    image = read_image(args.image, drop_alpha=True)[0]
    codec = _load_codec(args)
    result = profile.profile_codec(codec, image, args.repeat, name=Path(args.image).name,
                                   checksum=args.checksum)
    print(profile.format_table(result))
    if args.json:
        profile.write_json(result, args.json)
    if args.plot:
        profile.plot(result, args.plot)
    return 0


def bench_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic bench",
                                description="Encode/decode latency percentiles and throughput "
                                            "over a folder of images.")
    p.add_argument("folder", help="folder of images (PNG, JPEG, ...)")
    _add_timing_args(p, 1, "round trips per image", "write the summary to this JSON file")
    _add_model_args(p)
    args = p.parse_args(argv)
    _check_repeat(args)
    import json
    from .runtime.bench import bench, format_report, image_files
    files = image_files(args.folder)
    codec = _load_codec(args)
    enc, dec, bpp = bench(codec, files, args.repeat, checksum=args.checksum)
    print(format_report(codec, len(files), args.repeat, enc, dec, bpp, args.dtype))
    if args.json:
        summary = {"images": len(files), "repeat": args.repeat, "checksum": args.checksum,
                   "backend": codec.backend, "dtype": args.dtype,
                   "device": codec.device, "mean_bpp": bpp,
                   "encode": enc.summary(), "decode": dec.summary()}
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _delegate(target: str):
    """A subcommand implemented as ``main(argv)`` elsewhere, imported only when run."""
    def run(argv: list[str]) -> int:
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(argv)
    return run


COMMANDS = {
    "compress": compress_main,
    "decompress": decompress_main,
    "info": info_main,
    "demo": demo_main,
    "train": _delegate("fastlic.training.loop:main"),
    "export": _delegate("fastlic.export:main"),
    "profile": profile_main,
    "bench": bench_main,
    "train-ship": _delegate("fastlic.training.checkpoint:ship_main"),
    "distill": _delegate("fastlic.training.distill:main"),
    "evaluate": _delegate("fastlic.evaluation.run:main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"fastlic: error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    keep_freed_memory()   # decode/encode reuse their buffers (fastlic.runtime.memory)
    try:
        return COMMANDS[argv[0]](argv[1:])
    except FastlicError as exc:
        print(f"fastlic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastlic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
