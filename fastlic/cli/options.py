"""What the subcommands share: model/engine, output and timing options, and loading
the codec they ask for (tests patch ``load_codec`` and ``share_onnxruntime_pool`` here)."""
from __future__ import annotations

import argparse
import sys

from ..errors import UsageError

BATCH_RULES = ("Several inputs: a failing file is reported (fastlic: error: INPUT: ...) and "
               "the others go on; the exit code is then the first failure's (see "
               "`fastlic --help`). A directory input is refused: pass its files (DIR/*.png).")
OUT_OF_MEMORY = ("out of memory; lower --max-pixels, code smaller images, or use a machine "
                 "with more memory")


def add_model_args(p: argparse.ArgumentParser, quality: bool = True) -> None:
    from ..engines import BACKENDS
    g = p.add_argument_group("model and engine")
    if quality:
        from ..modelfile import DEFAULT_QUALITY, shipped_ladder
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


def add_output_args(p: argparse.ArgumentParser, output_help: str) -> None:
    """-o, --out-dir, --force, --max-pixels and --tile: what compress and decompress share."""
    from ..runtime.bitstream import DEFAULT_MAX_PIXELS
    from ..runtime.codec import DEFAULT_TILE
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


def add_timing_args(p: argparse.ArgumentParser, repeat: int, repeat_help: str,
                     json_help: str) -> None:
    """The options profile and bench share: repetitions, a JSON report, the checksum."""
    p.add_argument("--repeat", type=int, default=repeat, help=f"{repeat_help} (default {repeat})")
    p.add_argument("--json", help=json_help)
    p.add_argument("--no-checksum", dest="checksum", action="store_false",
                   help="time compress --no-checksum (no reconstruction CRC: the encoder "
                        "skips g_s)")


def check_repeat(args) -> None:
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")


def check_engine_args(args) -> None:
    """Before any work: the backend's extra is installed, the pixel limit is sane."""
    from ..engines import require_backend
    require_backend(args.backend)
    if getattr(args, "max_pixels", 1) < 1:
        raise UsageError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    tile = getattr(args, "tile", 64)
    if tile < 64 or tile % 64:
        raise UsageError(f"--tile must be a positive multiple of 64, got {tile}")


# ---- codecs -------------------------------------------------------------------------

def engine_options(args) -> dict:
    """Only the options the user set, so a backend is not handed ones it does not take."""
    options = {}
    if args.dtype != "float32":
        options["dtype"] = args.dtype
    if args.cuda_graphs:
        options["cuda_graphs"] = True
    if args.threads:
        options["threads"] = args.threads
    return options


def share_onnxruntime_pool(threads: int) -> None:
    """One intra-op pool for the six stage sessions (this process is ours; see
    fastlic.engines.onnxruntime.engine.share_thread_pool)."""
    from ..engines.onnxruntime.engine import share_thread_pool
    share_thread_pool(threads)


def load_codec(args, weights=None):
    from ..runtime.bitstream import DEFAULT_MAX_PIXELS
    from ..runtime.codec import DEFAULT_TILE, Codec
    if args.backend == "onnxruntime":
        share_onnxruntime_pool(args.threads or 0)
    return Codec.load(weights or args.model, backend=args.backend, device=args.device,
                      quality=getattr(args, "quality", None), model_dir=args.model_dir,
                      log=lambda line: print(line, file=sys.stderr),
                      max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
                      tile=getattr(args, "tile", DEFAULT_TILE), **engine_options(args))


class CodecPerModel:
    """Decoders for files from any shipped model: with --model or --model-dir, that one
    model (``preload``); else the shipped weights each file's header names, each loaded
    once."""

    def __init__(self, args):
        self.args, self.codecs = args, {}

    def fixed(self) -> bool:
        return bool(self.args.model or self.args.model_dir)

    def preload(self) -> "CodecPerModel":
        """Load the one model now, so a bad --model stops a batch before its files."""
        if self.fixed():
            self.codecs[None] = load_codec(self.args)
        return self

    def __call__(self, data: bytes):
        if self.fixed():
            key = None
        else:
            from ..runtime.bitstream import peek_header
            from ..modelfile import shipped_weights_for
            header = peek_header(data)
            key = shipped_weights_for(header.model_name, header.weights_hash)
        if key not in self.codecs:
            self.codecs[key] = load_codec(self.args, key)
        return self.codecs[key]
