"""The ``fastlic`` command. Each subcommand is a function ``main(argv) -> int``.

    fastlic --version | -V
    fastlic compress IMAGE... [-o OUT | --out-dir DIR] [--force] [--no-checksum]
                     [--max-pixels N] [--tile PX] [--frame K] [--icc convert|ignore]
                     [--drop-alpha]
    fastlic decompress FILE.flic... [-o OUT | --out-dir DIR] [--force] [--strict]
                       [--max-pixels N] [--tile PX]
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
also caches its built engines there. onnxruntime and export need the export extra,
--plot the eval extra (pip install "fastlic[export]", "fastlic[eval]").

Outputs: IMAGE.flic / FILE.png beside each input, in --out-dir DIR (created), or -o
OUT (one input). Each is written to a temporary file beside it (mode 0666 less the
umask, as any new file) and renamed into place: never half-written. An existing
output is refused (exit 8) unless --force, also if it appears while coding; --force
replaces regular files only, never a directory, device, FIFO, socket or symlink.
What can be checked is checked before any coding: the output folder exists and is
writable, no two inputs write one output, inputs are files (a directory is refused:
pass its files, e.g. DIR/*.png), and compress checks each image's size in its
header against --max-pixels (decompress: the .flic header) before decoding pixels.

Batches (several inputs): a bad file is reported as ``fastlic: error: INPUT: ...``
and the others go on; at the end ``fastlic: K of N files failed`` and the exit code
of the first failure reported (every file's checks come before any coding). Bad
options, output collisions and an unusable --out-dir or model stop everything first.

Exit codes: 0 ok, 1 other error, 2 usage (options, missing input), 3 invalid .flic
or --strict mismatch, 4 image not codable, 5 model, 6 engine, 7 export, 8 output
path, 9 pixel limit or out of memory, 10 missing extra, 130 interrupted. Errors
print one line, ``fastlic: error: ...``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from .errors import (FastlicError, ImageFormatError, OutOfMemoryError, OutputError,
                     UsageError)
from .runtime.memory import keep_freed_memory

BATCH_RULES = ("Several inputs: a failing file is reported (fastlic: error: INPUT: ...) and "
               "the others go on; the exit code is then the first failure's (see "
               "`fastlic --help`). A directory input is refused: pass its files (DIR/*.png).")
OUT_OF_MEMORY = ("out of memory; lower --max-pixels, code smaller images, or use a machine "
                 "with more memory")


def _version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("fastlic")
    except PackageNotFoundError:
        from . import __version__
        return __version__


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
                   help="inference backend (default: torch; onnxruntime needs "
                        'pip install "fastlic[export]")')
    g.add_argument("--model-dir", help="`fastlic export` directory (onnxruntime, tensorrt; "
                                       "default: exported once to the cache)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    g.add_argument("--dtype", default="float32",
                   help="torch: float32; float16 (CUDA); bfloat16 (g_s only, for CPUs with "
                        "AMX or AVX512-BF16; the same bitstreams)")
    g.add_argument("--cuda-graphs", action="store_true", help="torch on CUDA: replay CUDA graphs")
    g.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (0: the backend decides)")


def _add_output_args(p: argparse.ArgumentParser, output_help: str) -> None:
    """-o, --out-dir, --force, --max-pixels and --tile: what compress and decompress share."""
    from .runtime.bitstream import DEFAULT_MAX_PIXELS
    from .runtime.codec import DEFAULT_TILE
    p.add_argument("-o", "--output", help=output_help)
    p.add_argument("--out-dir", help="folder for the outputs, created if missing "
                                     "(default: beside each input)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing outputs (regular files only)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images of more pixels, checked from the header before any "
                        f"decoding (default {DEFAULT_MAX_PIXELS}, bounds the memory)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="PX",
                   help="code larger images in tiles of PX pixels a side (a multiple of 64): "
                        f"memory grows with the tile, not the image (default {DEFAULT_TILE})")


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


def _check_engine_args(args) -> None:
    """Before any work: the backend's extra is installed, the pixel limit is sane."""
    from .engines import require_backend
    require_backend(args.backend)
    if getattr(args, "max_pixels", 1) < 1:
        raise UsageError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    tile = getattr(args, "tile", 64)
    if tile < 64 or tile % 64:
        raise UsageError(f"--tile must be a positive multiple of 64, got {tile}")


# ---- inputs and outputs -----------------------------------------------------------

def _check_input(src: str, kind: str, pattern: str) -> None:
    """UsageError unless ``src`` is a file; for a directory, one that says which files
    in it to pass (``kind`` files, e.g. DIR/``pattern``). Directories are not walked."""
    path = Path(src)
    if path.is_dir():
        raise UsageError(f"{src} is a directory; pass the {kind} files in it, "
                         f"e.g. {path / pattern}")
    if not path.is_file():
        raise UsageError(f"input not found: {src}")


def _same_file_key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _check_collisions(inputs: list[str], outputs: list[Path]) -> None:
    """OutputError if two inputs would write one output, or an output is an input."""
    sources = {_same_file_key(Path(src)): src for src in inputs}
    writers: dict[str, str] = {}
    for src, dst in zip(inputs, outputs):
        key = _same_file_key(dst)
        if key in writers and _same_file_key(Path(writers[key])) == _same_file_key(Path(src)):
            raise OutputError(f"{src} is given twice; pass each input once")
        if key in writers:
            raise OutputError(f"{writers[key]} and {src} would both write {dst}; rename one, "
                              "or code them in separate runs with other --out-dir folders")
        if key in sources:
            raise OutputError(f"{src} would write over the input {sources[key]}; pick "
                              "another -o/--out-dir")
        writers[key] = src


def _make_out_dir(out_dir: str) -> None:
    """--out-dir, created if missing; OutputError if it cannot be or is not writable."""
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"--out-dir {folder} is a file, not a folder; pick another") from None
    except OSError as exc:
        raise OutputError(f"cannot create --out-dir {folder}: {exc.strerror}; "
                          "pick another") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--out-dir {folder} is not writable; pick another")


def _outputs(inputs: list[str], output: str | None, out_dir: str | None,
             suffix: str) -> list[Path]:
    """Output path per input. Stops everything on conflicting options (UsageError) or
    outputs that collide (OutputError); creates --out-dir."""
    if output and len(inputs) > 1:
        raise UsageError("-o/--output takes one input; use --out-dir for several")
    if output and out_dir:
        raise UsageError("give -o/--output or --out-dir, not both")
    if output:
        paths = [Path(output)]
    else:
        paths = [(Path(out_dir) if out_dir else Path(i).parent) / (Path(i).stem + suffix)
                 for i in inputs]
    _check_collisions(inputs, paths)
    if out_dir:
        _make_out_dir(out_dir)
    return paths


def _check_image_pixels(src: str, max_pixels: int, frame: int | None) -> None:
    """PixelLimitError if the image's header gives more than ``max_pixels``: PIL reads
    the size without decoding a pixel."""
    from PIL import Image

    from .runtime.bitstream import check_pixels
    if Image.MAX_IMAGE_PIXELS is not None:   # Pillow must not refuse what the limit allows
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, max_pixels)
    try:
        with Image.open(src) as im:
            if frame:
                try:
                    im.seek(frame)
                except EOFError:
                    pass   # read_image names the frames there are
            width, height = im.size
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageFormatError(f"cannot read {src} as an image: {exc}") from exc
    check_pixels(width, height, max_pixels)


def _read_flic(src: str, max_pixels: int | None) -> bytes:
    """A .flic file, its header (and pixel limit) checked before its payloads are read."""
    from .runtime.bitstream import read_file
    try:
        return read_file(src, max_pixels)
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror or exc}") from None


# ---- batches ------------------------------------------------------------------------

def _say(line: str) -> None:
    """One line on stderr, above the progress bar if there is one."""
    from tqdm import tqdm
    tqdm.write(line, file=sys.stderr)


def _progress(items, desc: str):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="file", disable=len(items) < 2, file=sys.stderr)


def _failed(src: str, exc: BaseException) -> int:
    """Report one file's failure; its exit code."""
    if isinstance(exc, MemoryError):
        exc = OutOfMemoryError(OUT_OF_MEMORY)
    _say(f"fastlic: error: {src}: {exc}")
    return exc.exit_code


def _run_batch(jobs: list, check, setup, run, desc: str | None = None) -> int:
    """``check(job)`` on every job (cheap: paths, headers), then ``tool = setup()`` (the
    model) if any passed, then ``run(job, tool)`` on those; a job is (input, output or
    None). ``desc``: the progress bar's label (None: no bar).

    One job: errors propagate (``main`` prints them). Several: each failure is one line,
    the others go on, and the result is the first failure's exit code."""
    if len(jobs) == 1:
        check(jobs[0])
        run(jobs[0], setup())
        return 0
    codes, ready = [], []
    for job in jobs:
        try:
            check(job)
            ready.append(job)
        except FastlicError as exc:
            codes.append(_failed(job[0], exc))
    tool = setup() if ready else None
    for job in (_progress(ready, desc) if desc else ready):
        try:
            run(job, tool)
        except (FastlicError, MemoryError) as exc:
            codes.append(_failed(job[0], exc))
    if codes:
        _say(f"fastlic: {len(codes)} of {len(jobs)} files failed")
    return codes[0] if codes else 0


# ---- codecs -------------------------------------------------------------------------

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
    from .runtime.bitstream import DEFAULT_MAX_PIXELS
    from .runtime.codec import DEFAULT_TILE, Codec
    if args.backend == "onnxruntime":
        _share_onnxruntime_pool(args.threads or 0)
    return Codec.load(weights or args.model, backend=args.backend, device=args.device,
                      quality=getattr(args, "quality", None), model_dir=args.model_dir,
                      log=lambda line: print(line, file=sys.stderr),
                      max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
                      tile=getattr(args, "tile", DEFAULT_TILE), **_engine_options(args))


class _CodecPerModel:
    """Decoders for files from any shipped model: with --model or --model-dir, that one
    model (``preload``); else the shipped weights each file's header names, each loaded
    once."""

    def __init__(self, args):
        self.args, self.codecs = args, {}

    def fixed(self) -> bool:
        return bool(self.args.model or self.args.model_dir)

    def preload(self) -> "_CodecPerModel":
        """Load the one model now, so a bad --model stops a batch before its files."""
        if self.fixed():
            self.codecs[None] = _load_codec(self.args)
        return self

    def __call__(self, data: bytes):
        if self.fixed():
            key = None
        else:
            from .runtime.bitstream import peek_header
            from .runtime.models import shipped_weights_for
            header = peek_header(data)
            key = shipped_weights_for(header.model_name, header.weights_hash)
        if key not in self.codecs:
            self.codecs[key] = _load_codec(self.args, key)
        return self.codecs[key]


# ---- subcommands --------------------------------------------------------------------

def _compress_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlic compress", description="Compress images to .flic files.",
                                epilog=BATCH_RULES)
    p.add_argument("inputs", nargs="+", help="8-bit RGB or greyscale images (PNG, JPEG, ...)")
    _add_output_args(p, "output file (one input only)")
    p.add_argument("--drop-alpha", action="store_true", help="code RGB and discard transparency")
    p.add_argument("--frame", type=int, metavar="K",
                   help="code frame K (from 0) of a file of several frames or pages "
                        "(TIFF, GIF, APNG, WebP), which are refused without it")
    p.add_argument("--icc", choices=("convert", "ignore"), default="convert",
                   help="an embedded ICC profile: convert the image to sRGB (default), or "
                        "ignore it and code the values as they are")
    p.add_argument("--checksum", action=argparse.BooleanOptionalAction, default=True,
                   help="store a CRC32 of the reconstruction (4 bytes; on by default): a decoder "
                        "whose image differs (other backend or device) fails instead of "
                        "returning it. --no-checksum skips the encoder's g_s run: faster, "
                        "unchecked")
    _add_model_args(p)
    return p


def compress_main(argv: list[str]) -> int:
    args = _compress_parser().parse_args(argv)
    if args.frame is not None and args.frame < 0:
        raise UsageError(f"--frame counts from 0, got {args.frame}")
    _check_engine_args(args)
    from .runtime.image import check_output, read_image, write_atomic
    jobs = list(zip(args.inputs, _outputs(args.inputs, args.output, args.out_dir, ".flic")))

    def check(job):
        _check_input(job[0], "image", "*.png")
        check_output(job[1], args.force)
        _check_image_pixels(job[0], args.max_pixels, args.frame)

    def run(job, codec):
        src, dst = job
        rgb, layout = read_image(src, drop_alpha=args.drop_alpha, frame=args.frame, icc=args.icc)
        image = rgb[:, :, 0] if layout == 1 else rgb
        data = codec.compress(image, checksum=args.checksum)
        write_atomic(dst, data, force=args.force)
        if len(jobs) == 1:
            bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
            print(f"{dst}: {len(data)} bytes, {bpp:.3f} bpp")

    return _run_batch(jobs, check, lambda: _load_codec(args), run, "compress")


def decompress_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic decompress", description="Decompress .flic files to PNG.",
                                epilog=BATCH_RULES.replace("*.png", "*.flic"))
    p.add_argument("inputs", nargs="+", help=".flic files")
    _add_output_args(p, "output image (one input only; suffix picks the format)")
    p.add_argument("--strict", action="store_true",
                   help="refuse (exit 3) unless the image is the encoder's reconstruction bit for "
                        "bit; by default a file decodes on any backend, device and dtype, whose "
                        "g_s may round a few pixels by a level differently (noted on stderr)")
    _add_model_args(p, quality=False)
    args = p.parse_args(argv)
    _check_engine_args(args)
    from .runtime.image import check_output, image_format, write_image
    jobs = list(zip(args.inputs, _outputs(args.inputs, args.output, args.out_dir, ".png")))

    def check(job):
        _check_input(job[0], ".flic", "*.flic")
        check_output(job[1], args.force)
        image_format(job[1])

    def run(job, codec_for):
        src, dst = job
        data = _read_flic(src, args.max_pixels)
        codec = codec_for(data)
        image = codec.decompress(data, strict=args.strict)
        write_image(dst, image, force=args.force)
        if codec.matches_encoder(data, image) is False:
            _say(f"fastlic: note: {dst} differs from the encoder's reconstruction in g_s's "
                 "float rounding (another backend, device or dtype); the symbols are exact")
        if len(jobs) == 1:
            print(f"{dst}: {image.shape[1]}x{image.shape[0]}")

    return _run_batch(jobs, check, _CodecPerModel(args).preload, run, "decompress")


def _describe(src: str, data: bytes) -> str:
    """One line of ``fastlic info``: the header of a .flic file's bytes."""
    from .runtime.bitstream import unpack
    bs = unpack(data)
    h = bs.header
    coded = sum(h.channel_mask)
    recon = "none" if h.recon_crc is None else f"{h.recon_crc:#010x}"
    return (f"{src}: {h.width}x{h.height} {h.color.name}, model {h.model_name} "
            f"({h.weights_hash.hex()}), quality {h.quality}, {len(data)} bytes "
            f"({8 * len(data) / (h.width * h.height):.3f} bpp), channels coded "
            f"{coded}/{len(h.channel_mask)}, substreams {[len(s) for s in bs.substreams]}, "
            f"reconstruction checksum {recon}")


def info_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic info", description="Print the header of .flic files.",
                                epilog=BATCH_RULES.replace("*.png", "*.flic"))
    p.add_argument("inputs", nargs="+")
    args = p.parse_args(argv)
    jobs = [(src, None) for src in args.inputs]
    return _run_batch(jobs, lambda job: _check_input(job[0], ".flic", "*.flic"), lambda: None,
                      lambda job, _: print(_describe(job[0], _read_flic(job[0], None))))


def demo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic demo",
                                description="Round-trip photos bundled with scikit-image and print "
                                            "bpp, PSNR and encode/decode milliseconds.")
    _add_model_args(p)
    args = p.parse_args(argv)
    _check_engine_args(args)
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


def _check_reports(*paths: str | None) -> None:
    """Report files (--json, --plot) are replaced if they are regular files; anything
    else in the way, or a missing or read-only folder, is an OutputError now."""
    from .runtime.image import check_output
    for path in paths:
        if path:
            check_output(path, force=True)


def profile_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic profile",
                                description="Time every encode and decode stage of one image "
                                            "(device synchronised, warm-up dropped, medians).")
    p.add_argument("image", help="an 8-bit image")
    _add_timing_args(p, 5, "timed runs after the warm-up", "write the medians to this JSON file")
    p.add_argument("--plot", help='write a bar chart to this PNG file (needs pip install '
                                  '"fastlic[eval]")')
    _add_model_args(p)
    args = p.parse_args(argv)
    _check_repeat(args)
    _check_engine_args(args)
    from .runtime import profile
    from .runtime.image import read_image
    if args.plot:
        profile.require_plotting()
    _check_input(args.image, "image", "*.png")
    _check_reports(args.json, args.plot)
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
    _check_engine_args(args)
    _check_reports(args.json)
    import json
    from .runtime.bench import bench, format_report, image_files
    from .runtime.image import write_atomic
    files = image_files(args.folder)
    codec = _load_codec(args)
    enc, dec, bpp = bench(codec, files, args.repeat, checksum=args.checksum)
    print(format_report(codec, len(files), args.repeat, enc, dec, bpp, args.dtype))
    if args.json:
        summary = {"images": len(files), "repeat": args.repeat, "checksum": args.checksum,
                   "backend": codec.backend, "dtype": args.dtype,
                   "device": codec.device, "mean_bpp": bpp,
                   "encode": enc.summary(), "decode": dec.summary()}
        write_atomic(args.json, (json.dumps(summary, indent=2) + "\n").encode(), force=True)
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
    if argv[0] in ("-V", "--version"):
        print(f"fastlic {_version()}")
        return 0
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
    except MemoryError:
        print(f"fastlic: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return OutOfMemoryError.exit_code
    except KeyboardInterrupt:
        print("fastlic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
