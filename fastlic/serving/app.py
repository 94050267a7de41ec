"""``fastlic serve``: load the models once, then serve them over HTTP on uvicorn.

    fastlic serve [--host 127.0.0.1] [--port 8080] [--quality 3 ...] [--workers 2]
                  [--queue 8] [--threads 1] [--max-body-mb 64] [--max-pixels N]
                  [--timeout-s 60] [--drain-s 30]

The endpoints and the request path are in :mod:`fastlic.serving.service`. This module
imports nothing of the ``serve`` extra (uvicorn, starlette, prometheus-client) until
``serve_main`` runs, so the CLI can register it in a bare install.
"""
from __future__ import annotations

import argparse
import importlib.util

from ..errors import MissingExtraError, UsageError
from ..runtime.bitstream import DEFAULT_MAX_PIXELS

EXTRA = ("uvicorn", "starlette", "prometheus_client")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlic serve",
                                description="Serve compress and decompress over HTTP.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--quality", type=int, action="append",
                   help="a shipped rate point to load (repeat for several; default 3); the "
                        "first is the default of /v1/compress")
    p.add_argument("--weights", action="append", help="a .safetensors model instead (repeatable)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per job; workers x threads ~ free cores (default 1)")
    p.add_argument("--workers", type=int, default=2, help="codec jobs at once (default 2)")
    p.add_argument("--queue", type=int, default=8,
                   help="jobs that may wait for a worker; beyond, 503 (default 8)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections uvicorn accepts, beyond: 503 (default "
                        "4 x (workers + queue)); bounds the memory of bodies being read")
    p.add_argument("--max-body-mb", type=float, default=64.0)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (Codec.load)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per request, admission to answer")
    p.add_argument("--retry-after-s", type=int, default=1)
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, how long requests in flight may finish")
    p.add_argument("--log-level", default="info")
    return p


def check_extra() -> None:
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"fastlic serve needs {', '.join(missing)}: "
                                "pip install 'fastlic[serve]'")


def load_codecs(args) -> dict:
    """quality -> Codec, in the order given (the first is the default)."""
    from ..runtime.codec import Codec

    options = dict(backend=args.backend, device=args.device, max_pixels=args.max_pixels)
    if args.tile:
        options["tile"] = args.tile
    if args.threads > 0:
        options["threads"] = args.threads
    if args.weights and args.quality:
        raise UsageError("--quality picks shipped models; do not combine it with --weights")
    sources = [{"weights": w} for w in args.weights or ()] or [
        {"quality": q} for q in args.quality or [3]]
    codecs = {}
    for source in sources:
        codec = Codec.load(**source, **options)
        if codec.info.quality in codecs:
            raise UsageError(f"two models of quality {codec.info.quality}; load one per quality")
        codecs[codec.info.quality] = codec
    return codecs


def serve_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    for name in ("workers", "port", "retry_after_s"):
        if getattr(args, name) < (1 if name != "port" else 0):
            raise UsageError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    if args.queue < 0:
        raise UsageError(f"--queue must be at least 0, got {args.queue}")
    check_extra()
    import uvicorn

    from ..runtime.memory import keep_freed_memory
    from .server import uvicorn_config
    from .service import ServeConfig, create_app

    keep_freed_memory()   # each job reuses the last one's buffers (fastlic.runtime.memory)
    config = ServeConfig(workers=args.workers, queue=args.queue,
                         max_body_bytes=int(args.max_body_mb * 2**20),
                         timeout_s=args.timeout_s, retry_after_s=args.retry_after_s)
    app = create_app(load_codecs(args), config)
    connections = args.max_connections or 4 * (args.workers + args.queue)
    uvicorn.Server(uvicorn_config(app, drain_s=args.drain_s, max_connections=connections,
                                  log_level=args.log_level, host=args.host,
                                  port=args.port)).run()
    return 0
