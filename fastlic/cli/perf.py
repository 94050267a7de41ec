"""``fastlic profile`` and ``fastlic bench``."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import options
from .batch import check_input
from .options import add_model_args, add_timing_args, check_engine_args, check_repeat


def check_reports(*paths: str | None) -> None:
    """Report files (--json, --plot) are replaced if they are regular files; anything
    else in the way, or a missing or read-only folder, is an OutputError now."""
    from ..runtime.image import check_output
    for path in paths:
        if path:
            check_output(path, force=True)


def profile_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastlic profile",
                                description="Time every encode and decode stage of one image "
                                            "(device synchronised, warm-up dropped, medians).")
    p.add_argument("image", help="an 8-bit image")
    add_timing_args(p, 5, "timed runs after the warm-up", "write the medians to this JSON file")
    p.add_argument("--plot", help='write a bar chart to this PNG file (needs pip install '
                                  '"fastlic[eval]")')
    add_model_args(p)
    args = p.parse_args(argv)
    check_repeat(args)
    check_engine_args(args)
    from ..perf import profile
    from ..runtime.image import read_image
    if args.plot:
        profile.require_plotting()
    check_input(args.image, "image", "*.png")
    check_reports(args.json, args.plot)
    image = read_image(args.image, drop_alpha=True)[0]
    codec = options.load_codec(args)
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
    add_timing_args(p, 1, "round trips per image", "write the summary to this JSON file")
    add_model_args(p)
    args = p.parse_args(argv)
    check_repeat(args)
    check_engine_args(args)
    check_reports(args.json)
    import json
    from ..perf.bench import bench, format_report, image_files
    from ..runtime.image import write_atomic
    files = image_files(args.folder)
    codec = options.load_codec(args)
    enc, dec, bpp = bench(codec, files, args.repeat, checksum=args.checksum)
    print(format_report(codec, len(files), args.repeat, enc, dec, bpp, args.dtype))
    if args.json:
        summary = {"images": len(files), "repeat": args.repeat, "checksum": args.checksum,
                   "backend": codec.backend, "dtype": args.dtype,
                   "device": codec.device, "mean_bpp": bpp,
                   "encode": enc.summary(), "decode": dec.summary()}
        write_atomic(args.json, (json.dumps(summary, indent=2) + "\n").encode(), force=True)
    return 0
