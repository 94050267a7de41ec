"""``fastlic compress``, ``decompress``, ``info`` and ``demo``."""
from __future__ import annotations

import argparse
import time

from ..errors import UsageError
from . import options
from .batch import check_image_pixels, check_input, outputs, read_flic, run_batch, say
from .options import BATCH_RULES, add_model_args, add_output_args, check_engine_args


# ---- subcommands --------------------------------------------------------------------

def compress_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlic compress", description="Compress images to .flic files.",
                                epilog=BATCH_RULES)
    p.add_argument("inputs", nargs="+", help="8-bit RGB or greyscale images (PNG, JPEG, ...)")
    add_output_args(p, "output file (one input only)")
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
    add_model_args(p)
    return p


def compress_main(argv: list[str]) -> int:
    args = compress_parser().parse_args(argv)
    if args.frame is not None and args.frame < 0:
        raise UsageError(f"--frame counts from 0, got {args.frame}")
    check_engine_args(args)
    from ..runtime.image import check_output, read_image, write_atomic
    jobs = list(zip(args.inputs, outputs(args.inputs, args.output, args.out_dir, ".flic")))

    def check(job):
        check_input(job[0], "image", "*.png")
        check_output(job[1], args.force)
        check_image_pixels(job[0], args.max_pixels, args.frame)

    def run(job, codec):
        src, dst = job
        rgb, layout = read_image(src, drop_alpha=args.drop_alpha, frame=args.frame, icc=args.icc)
        image = rgb[:, :, 0] if layout == 1 else rgb
        data = codec.compress(image, checksum=args.checksum)
        write_atomic(dst, data, force=args.force)
        if len(jobs) == 1:
            bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
            print(f"{dst}: {len(data)} bytes, {bpp:.3f} bpp")

    return run_batch(jobs, check, lambda: options.load_codec(args), run, "compress")


def decompress_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic decompress", description="Decompress .flic files to PNG.",
                                epilog=BATCH_RULES.replace("*.png", "*.flic"))
    p.add_argument("inputs", nargs="+", help=".flic files")
    add_output_args(p, "output image (one input only; suffix picks the format)")
    p.add_argument("--strict", action="store_true",
                   help="refuse (exit 3) unless the image is the encoder's reconstruction bit for "
                        "bit; by default a file decodes on any backend, device and dtype, whose "
                        "g_s may round a few pixels by a level differently (noted on stderr)")
    add_model_args(p, quality=False)
    args = p.parse_args(argv)
    check_engine_args(args)
    from ..runtime.image import check_output, image_format, write_image
    jobs = list(zip(args.inputs, outputs(args.inputs, args.output, args.out_dir, ".png")))

    def check(job):
        check_input(job[0], ".flic", "*.flic")
        check_output(job[1], args.force)
        image_format(job[1])

    def run(job, codec_for):
        src, dst = job
        data = read_flic(src, args.max_pixels)
        codec = codec_for(data)
        image = codec.decompress(data, strict=args.strict)
        write_image(dst, image, force=args.force)
        if codec.matches_encoder(data, image) is False:
            say(f"fastlic: note: {dst} differs from the encoder's reconstruction in g_s's "
                 "float rounding (another backend, device or dtype); the symbols are exact")
        if len(jobs) == 1:
            print(f"{dst}: {image.shape[1]}x{image.shape[0]}")

    return run_batch(jobs, check, options.CodecPerModel(args).preload, run, "decompress")


def describe(src: str, data: bytes) -> str:
    """One line of ``fastlic info``: the header of a .flic file's bytes."""
    from ..runtime.bitstream import unpack
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
    return run_batch(jobs, lambda job: check_input(job[0], ".flic", "*.flic"), lambda: None,
                      lambda job, _: print(describe(job[0], read_flic(job[0], None))))


def demo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic demo",
                                description="Round-trip photos bundled with scikit-image and print "
                                            "bpp, PSNR and encode/decode milliseconds.")
    add_model_args(p)
    args = p.parse_args(argv)
    check_engine_args(args)
    import numpy as np
    from skimage import data as skdata
    from ..evaluation.metrics import psnr
    codec = options.load_codec(args)
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
