"""Ray Serve deployment of the codec: HTTP ingress, replicas, autoscaling, request batching.

    POST /compress?quality=Q  (an image file: PNG, JPEG, ...)  ─▶ .flic bytes
    POST /decompress          (.flic bytes)  ─▶ PNG, or raw uint8 pixels with ?format=raw
    GET  /models              ─▶ JSON: the qualities and models this deployment serves

    client ─HTTP─▶ Serve proxy ─▶ CodecServer replica (its Codecs loaded once)
                                    __call__: parse the request into a _Job
                                    @serve.batch _batch(jobs) ─▶ thread pool ─▶ Codec.compress
                                                                                / .decompress

Each replica loads ``models`` (weights files or ``fastlic export`` folders; default the
shipped ladder) and serves every quality it holds; decompress uses the model the file's
header names. Requests that arrive together, up to ``max_batch_size`` within
``batch_wait_timeout_s``, form one batch call whose jobs run on ``workers`` threads
(Codec is thread-safe); both are ``user_config`` and can change without a restart.
Scale with ``num_replicas`` or ``autoscaling`` (``min_replicas``, ``max_replicas``,
``target_ongoing_requests``: Ray Serve's ``autoscaling_config``).

A fastlic error answers with ``{"error": type, "message": its one line}`` and status
400 (bad request or bitstream), 413 (pixel limit), 415 (image), 503 (out of memory), 500.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..engines import require_extra
from ..errors import (BitstreamError, FastlicError, ImageFormatError, ModelMismatchError,
                      OutOfMemoryError, PixelLimitError, UsageError)

require_extra("ray", "ray", "starlette", what="the Ray Serve deployment")   # typed, not ImportError
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

ROUTES = ("compress", "decompress", "models")
# most specific first: PixelLimitError is a ResourceLimitError, ModelMismatchError a BitstreamError
_STATUS = ((PixelLimitError, 413), (OutOfMemoryError, 503), (ImageFormatError, 415),
           (BitstreamError, 400), (UsageError, 400))


@dataclasses.dataclass(frozen=True)
class _Job:
    """One request, parsed: what to do with which bytes."""

    route: str              # "compress" or "decompress"
    body: bytes
    quality: int | None = None
    drop_alpha: bool = False
    raw: bool = False       # decompress: raw (H, W[, 3]) uint8 instead of PNG


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    media_type: str
    headers: dict = dataclasses.field(default_factory=dict)


def error_reply(exc: BaseException) -> _Reply:
    """A typed error -> its HTTP status and a JSON body naming it."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    body = json.dumps({"error": type(exc).__name__, "message": message}).encode()
    return _Reply(status, body, "application/json")


def load_codecs(models, backend: str, device: str, engine_options: dict) -> dict:
    """quality -> Codec for each weights file or export folder (default: the shipped ladder)."""
    from ..modelfile import shipped_ladder  # noqa: PLC0415
    from ..runtime.codec import Codec  # noqa: PLC0415

    codecs = {}
    for source in (models or list(shipped_ladder().values())):
        source = Path(source)
        where = {"model_dir": source} if source.is_dir() else {"weights": source}
        codec = Codec.load(backend=backend, device=device, **where, **engine_options)
        if codec.info.quality in codecs:
            raise UsageError(f"two models of quality {codec.info.quality} given ({source}); "
                             "one model per quality")
        codecs[codec.info.quality] = codec
    return codecs


def read_upload(body: bytes, drop_alpha: bool) -> np.ndarray:
    """An uploaded image file -> uint8 (H, W) or (H, W, 3), through fastlic's image reader
    (16-bit refused, EXIF orientation and ICC profile applied); it reads a path."""
    from ..runtime.bitstream import ColorLayout  # noqa: PLC0415
    from ..runtime.image import read_image  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="fastlic-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(body)
        try:
            rgb, layout = read_image(path, drop_alpha=drop_alpha)
        except ImageFormatError as exc:
            raise ImageFormatError(str(exc).replace(str(path), "the request body")) from None
    return rgb[:, :, 0] if layout == ColorLayout.GRAY else rgb


def _png(image: np.ndarray) -> bytes:
    from PIL import Image  # noqa: PLC0415

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _Service:
    """The codec work of one replica, without Ray: jobs in, replies out, never raising."""

    def __init__(self, codecs: dict):
        from ..modelfile import DEFAULT_QUALITY  # noqa: PLC0415

        self.codecs = codecs
        self.default_quality = DEFAULT_QUALITY if DEFAULT_QUALITY in codecs else min(codecs)

    def models(self) -> _Reply:
        info = {str(q): {"name": c.info.name, "weights": c.info.weights_hash.hex(),
                         "backend": c.backend, "device": c.device}
                for q, c in sorted(self.codecs.items())}
        body = {"default_quality": self.default_quality, "qualities": info}
        return _Reply(200, json.dumps(body).encode(), "application/json")

    def run(self, job: _Job) -> _Reply:
        try:
            return self._compress(job) if job.route == "compress" else self._decompress(job)
        except Exception as exc:  # noqa: BLE001 - a reply for every request
            return error_reply(exc)

    def _compress(self, job: _Job) -> _Reply:
        quality = self.default_quality if job.quality is None else job.quality
        if quality not in self.codecs:
            raise UsageError(f"quality {quality} is not served here; choose one of "
                             f"{sorted(self.codecs)}")
        image = read_upload(job.body, job.drop_alpha)
        return _Reply(200, self.codecs[quality].compress(image), "application/octet-stream")

    def _decompress(self, job: _Job) -> _Reply:
        from ..runtime.bitstream import peek_header  # noqa: PLC0415

        header = peek_header(job.body)
        codec = next((c for c in self.codecs.values()
                      if c.info.weights_hash == header.weights_hash), None)
        if codec is None:
            raise ModelMismatchError(f"bitstream was encoded with model {header.model_name} "
                                     f"(weights {header.weights_hash.hex()}), which this "
                                     f"service does not hold; it serves qualities "
                                     f"{sorted(self.codecs)}")
        image = codec.decompress(job.body)
        if job.raw:
            shape = ",".join(map(str, image.shape))
            return _Reply(200, image.tobytes(), "application/octet-stream",
                          {"X-Image-Shape": shape})
        return _Reply(200, _png(image), "image/png")


def parse_request(route: str, query, body: bytes) -> _Job:
    """URL route and query parameters -> a _Job; UsageError if they make no sense."""
    quality = query.get("quality")
    if quality is not None and not quality.strip().isdigit():
        raise UsageError(f"quality must be an integer, got {quality!r}")
    fmt = query.get("format", "png")
    if fmt not in ("png", "raw"):
        raise UsageError(f"format must be png or raw, got {fmt!r}")
    return _Job(route, body, None if quality is None else int(quality),
                query.get("drop_alpha", "0").lower() in ("1", "true", "yes"), fmt == "raw")


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
class CodecServer:
    """One replica: Codecs loaded once in ``__init__``, HTTP in ``__call__``."""

    def __init__(self, models: list[str] | None = None, backend: str = "torch",
                 device: str = "cpu", engine_options: dict | None = None, workers: int = 2):
        self.service = _Service(load_codecs(models, backend, device, engine_options or {}))
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, "fastlic-codec")

    def reconfigure(self, config: dict) -> None:
        """``user_config``: max_batch_size, batch_wait_timeout_s (changeable live)."""
        if "max_batch_size" in config:
            self._batch.set_max_batch_size(int(config["max_batch_size"]))
        if "batch_wait_timeout_s" in config:
            self._batch.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batch(self, jobs: list[_Job]) -> list[_Reply]:
        """The jobs of requests that arrived together, run on the thread pool."""
        loop = asyncio.get_running_loop()
        replies = await asyncio.gather(*(loop.run_in_executor(self.pool, self.service.run, j)
                                         for j in jobs))
        return [dataclasses.replace(r, headers={**r.headers, "X-Fastlic-Batch": str(len(jobs))})
                for r in replies]

    async def __call__(self, request: Request) -> Response:
        route = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if route not in ROUTES:
            return _response(error_reply(UsageError(
                f"no route {request.url.path}; use POST /compress, POST /decompress or "
                "GET /models")), 404)
        if route == "models":
            return _response(self.service.models())
        if request.method != "POST":
            return _response(error_reply(UsageError(f"{route} takes POST, not {request.method}")),
                             405)
        try:
            job = parse_request(route, request.query_params, await request.body())
        except UsageError as exc:
            return _response(error_reply(exc))
        return _response(await self._batch(job))


def _response(reply: _Reply, status: int | None = None) -> Response:
    return Response(reply.body, status_code=status or reply.status, media_type=reply.media_type,
                    headers=reply.headers)


def deployment_options(*, num_replicas: int = 1, autoscaling: dict | None = None,
                       max_batch_size: int = 8, batch_wait_timeout_s: float = 0.005,
                       max_ongoing_requests: int | None = None, num_cpus: float = 1.0) -> dict:
    """``CodecServer.options(...)`` keyword arguments.

    autoscaling: Ray Serve ``autoscaling_config`` (e.g. ``{"min_replicas": 1,
        "max_replicas": 4, "target_ongoing_requests": 2}``); replaces ``num_replicas``.
    max_ongoing_requests: per replica; default ``2 * max_batch_size`` (it must exceed
        the batch size, or batches never fill).
    num_cpus: Ray CPUs reserved per replica.
    """
    options = {"ray_actor_options": {"num_cpus": num_cpus},
               "max_ongoing_requests": max_ongoing_requests or 2 * max_batch_size,
               "user_config": {"max_batch_size": max_batch_size,
                               "batch_wait_timeout_s": batch_wait_timeout_s}}
    if autoscaling:
        options["autoscaling_config"] = dict(autoscaling)
    else:
        options["num_replicas"] = num_replicas
    return options


def codec_app(models=None, *, backend: str = "torch", device: str = "cpu",
              engine_options: dict | None = None, workers: int = 2, **options):
    """The Serve application: ``serve.run(codec_app([...]))``. ``models``: weights files
    or export folders (str or Path; Ray pickles the list to each replica); ``options``:
    :func:`deployment_options`."""
    return CodecServer.options(**deployment_options(**options)).bind(
        [str(m) for m in models] if models else None, backend=backend, device=device,
        engine_options=engine_options or {}, workers=workers)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlic serve-ray", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="weights file or export folder (repeatable; default: the shipped ladder)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="engine threads per replica (0: default)")
    p.add_argument("--workers", type=int, default=2, help="codec threads per replica")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--autoscale", metavar="MIN:MAX[:TARGET]",
                   help="autoscale between MIN and MAX replicas, TARGET ongoing requests each")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--num-cpus", type=float, default=1.0, help="Ray CPUs per replica")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    return p


def _autoscaling(text: str | None) -> dict | None:
    if not text:
        return None
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise UsageError(f"--autoscale {text!r}: give MIN:MAX or MIN:MAX:TARGET (integers)")
    config = {"min_replicas": int(parts[0]), "max_replicas": int(parts[1])}
    if len(parts) == 3:
        config["target_ongoing_requests"] = int(parts[2])
    return config


def main(argv: list[str] | None = None) -> int:
    """Start Ray (or join RAY_ADDRESS), deploy, serve until interrupted."""
    args = _parser().parse_args(argv)
    try:
        import ray  # noqa: PLC0415

        options = {"threads": args.threads} if args.threads else {}
        app = codec_app(args.model or None, backend=args.backend, device=args.device,
                        engine_options=options, workers=args.workers,
                        num_replicas=args.replicas, autoscaling=_autoscaling(args.autoscale),
                        max_batch_size=args.max_batch_size,
                        batch_wait_timeout_s=args.batch_wait_ms / 1000, num_cpus=args.num_cpus)
        ray.init(address=os.environ.get("RAY_ADDRESS"))
        serve.start(http_options={"host": args.host, "port": args.port})
        print(f"serving on http://{args.host}:{args.port}/compress and /decompress")
        serve.run(app, name="fastlic", route_prefix="/", blocking=True)
    except FastlicError as exc:
        print(f"fastlic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
