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
    fastlic export --out DIR [--model W] [--fp16] [--triton REPO]
    fastlic profile IMAGE [--repeat N] [--json OUT] [--plot OUT.png]
    fastlic bench DIR [--repeat N] [--json OUT]
    fastlic train-ship RUN/checkpoint.pt OUT.safetensors [--name N] [--quality Q]
    fastlic distill DATA --out RUN --teacher T --pass 2|3
    fastlic evaluate DIR [--model W ...] [--codecs jpeg,webp,avif,jxl] [--out REPORT]
    fastlic serve [--host H] [--port P] [--workers N] ...   (pip install "fastlic[serve]")

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
import importlib
import sys

from ..errors import FastlicError, OutOfMemoryError
from ..runtime.memory import keep_freed_memory
from .coding import compress_main, decompress_main, demo_main, info_main
from .options import OUT_OF_MEMORY
from .perf import bench_main, profile_main


def _version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("fastlic")
    except PackageNotFoundError:
        from . import __version__
        return __version__


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
    "serve": _delegate("fastlic.serving.app:serve_main"),
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
