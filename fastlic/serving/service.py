"""The HTTP service: a Starlette app around loaded codecs, a bounded worker pool and
metrics. ``fastlic serve`` (fastlic.serving.app) runs it on uvicorn.

    POST /v1/compress?quality=Q[&drop_alpha=1][&checksum=0]   image file ─▶ application/x-flic
    POST /v1/decompress[?format=png|raw]                        .flic      ─▶ image/png | raw
    GET  /healthz                                               JSON status
    GET  /metrics                                               Prometheus text

One request::

    body ─size limit─▶ room? ─▶ header check ─▶ admit ─▶ pool: N workers, ≤ Q waiting ─▶ response
         413 from       503      400/413/422     503 +     504 on timeout; a client     whole, or
         Content-Length          (no pixels      Retry-    gone cancels its waiting     a JSON
         or the stream           decoded)        After     job                          error

Errors are ``{"error": <type>, "message": <one line>}`` with the status of
:data:`STATUS`; the codec work runs on the pool's threads, off the event loop
(torch's kernels release the GIL). Shutdown lets uvicorn drain the requests in
flight, then waits for the pool's admitted jobs.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import (BitstreamError, FastlicError, ImageFormatError, ModelMismatchError,
                      OutOfMemoryError, PixelLimitError, UsageError)
from ..timing import StageTimer
from . import work
from .metrics import Metrics
from .pool import BoundedPool, QueueFullError


LOG = logging.getLogger("fastlic.serve")
FLIC_TYPE = "application/x-flic"
GONE = 499   # nginx's "client closed request": recorded in metrics, never seen by a client


class RequestTooLargeError(Exception):
    """The body is over the service's size limit."""


class RequestTimeoutError(Exception):
    """The job did not finish within the per-request timeout."""


class BodyTimeoutError(Exception):
    """The client did not send its body within the per-request timeout."""


class ClientGoneError(Exception):
    """The client disconnected before the answer."""


# First match wins: subclasses before their bases.
STATUS: tuple[tuple[type, int], ...] = (
    (QueueFullError, 503), (RequestTooLargeError, 413), (RequestTimeoutError, 504),
    (BodyTimeoutError, 408), (ClientGoneError, GONE), (ModelMismatchError, 422), (BitstreamError, 400),
    (ImageFormatError, 422), (PixelLimitError, 413), (OutOfMemoryError, 503),
    (UsageError, 400), (FastlicError, 500))


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    workers: int = 2                  # codec jobs at once
    queue: int = 8                    # jobs that may wait for a worker; beyond: 503
    max_body_bytes: int = 64 << 20
    timeout_s: float = 60.0           # to read the body; and admission to answer
    retry_after_s: int = 1            # the 503s' Retry-After


def status_of(exc: BaseException) -> int:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


def error_response(exc: BaseException, retry_after_s: int) -> JSONResponse:
    status = status_of(exc)
    if status == 500 and not isinstance(exc, FastlicError):
        LOG.error("internal error", exc_info=exc)
        body = {"error": "InternalError", "message": "internal error; see the service log"}
    else:
        body = {"error": type(exc).__name__, "message": (str(exc).splitlines() or [""])[0]}
    headers = {}
    if status == 503:
        headers["Retry-After"] = str(retry_after_s)
    if isinstance(exc, (RequestTooLargeError, BodyTimeoutError)):
        headers["Connection"] = "close"     # the rest of the body is not read
    return JSONResponse(body, status, headers)


def check_length(request: Request, limit: int) -> None:
    """RequestTooLargeError from Content-Length, before any of the body is read."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLargeError(f"the body is {length} bytes, over the limit of {limit}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; RequestTooLargeError as soon as a streamed body passes ``limit``."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGoneError("the client disconnected while sending the body") from None
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (its body already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise UsageError(f"{name} must be 1 or 0, got {value!r}")


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise UsageError(f"unknown query parameter {unknown[0]!r}; this endpoint takes "
                         f"{', '.join(allowed)}")
    return dict(request.query_params)


class Service:
    """The codecs (quality -> Codec, loaded once), the pool and the metrics of one app."""

    def __init__(self, codecs: dict, config: ServeConfig):
        if not codecs:
            raise UsageError("the service needs at least one codec")
        self.codecs, self.config = dict(codecs), config
        self.default_quality = next(iter(self.codecs))
        self.pool = BoundedPool(config.workers, config.queue)
        self.metrics = Metrics(lambda: self.pool.waiting, lambda: self.pool.running)

    # ---- endpoints ----------------------------------------------------------------
    async def compress(self, request: Request) -> Response:
        return await self._answer(request, "compress", self._compress_job)

    async def decompress(self, request: Request) -> Response:
        return await self._answer(request, "decompress", self._decompress_job)

    async def healthz(self, request: Request) -> Response:
        self.metrics.answered("healthz", 200, 0.0)
        return JSONResponse({"status": "ok", "qualities": sorted(self.codecs),
                             "workers": self.pool.workers, "queue": self.pool.queue,
                             "waiting": self.pool.waiting, "running": self.pool.running})

    async def metrics_text(self, request: Request) -> Response:
        self.metrics.answered("metrics", 200, 0.0)
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    # ---- one request ----------------------------------------------------------------
    def _compress_job(self, request: Request, body: bytes) -> Callable:
        """Check the query and the image header now; the work for a worker."""
        query = _query(request, ("quality", "drop_alpha", "checksum"))
        codec = self._codec(query.get("quality"))
        drop_alpha = _flag(query.get("drop_alpha", "0"), "drop_alpha")
        checksum = _flag(query.get("checksum", "1"), "checksum")
        work.check_image_header(body, codec.max_pixels)
        return lambda timer: (work.compress_body(codec, body, timer, drop_alpha, checksum),
                              {"Content-Type": FLIC_TYPE})

    def _decompress_job(self, request: Request, body: bytes) -> Callable:
        fmt = _query(request, ("format",)).get("format", "png")
        if fmt not in work.OUTPUT_FORMATS:
            raise UsageError(f"format must be one of {', '.join(work.OUTPUT_FORMATS)}, got {fmt!r}")
        codec = work.flic_codec(body, self.codecs)
        return lambda timer: work.decompress_body(codec, body, fmt, timer)

    def _codec(self, quality: str | None):
        if quality is None:
            return self.codecs[self.default_quality]
        if quality.isdigit() and int(quality) in self.codecs:
            return self.codecs[int(quality)]
        raise UsageError(f"quality must be one of {sorted(self.codecs)} (the loaded models), "
                         f"got {quality!r}")

    async def _answer(self, request: Request, endpoint: str, prepare: Callable) -> Response:
        start = time.perf_counter()
        try:
            check_length(request, self.config.max_body_bytes)
            if self.pool.full:   # refuse before reading a body there is no room for
                raise QueueFullError("all workers are busy and the queue is full; retry later")
            body = await self._read_body(request)
            content, headers = await self._run(request, endpoint, prepare(request, body))
            response, error = Response(content, headers=headers), None
        except Exception as exc:   # noqa: BLE001 - every failure becomes one JSON answer
            response, error = error_response(exc, self.config.retry_after_s), type(exc).__name__
            if isinstance(exc, ClientGoneError):
                self.metrics.disconnects.labels(endpoint).inc()
        self.metrics.answered(endpoint, response.status_code, time.perf_counter() - start, error)
        return response

    async def _read_body(self, request: Request) -> bytes:
        try:
            return await asyncio.wait_for(read_body(request, self.config.max_body_bytes),
                                          self.config.timeout_s)
        except asyncio.TimeoutError:   # TimeoutError from 3.11 on; not before
            raise BodyTimeoutError(f"the body did not arrive within {self.config.timeout_s:g} "
                                   "s") from None

    async def _run(self, request: Request, endpoint: str, job: Callable) -> tuple[bytes, dict]:
        """Run job(timer) on the pool; give it up when the client goes or time runs out
        (a job that has started runs to its end, holding its slot)."""
        admitted = time.perf_counter()

        def timed():
            self.metrics.queue_wait.labels(endpoint).observe(time.perf_counter() - admitted)
            timer = StageTimer()
            try:
                return job(timer)
            finally:
                self.metrics.observe_stages(endpoint, timer.times)

        future = self.pool.submit(timed)
        waiter = asyncio.wrap_future(future)
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())   # retrieved
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({waiter, gone}, timeout=self.config.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if waiter in done:
            return waiter.result()
        future.cancel()
        if gone in done:
            raise ClientGoneError("the client disconnected before the answer")
        raise RequestTimeoutError(f"no answer within {self.config.timeout_s:g} s; the service "
                                  "is overloaded or the image is too large for it")


def create_app(codecs: dict, config: ServeConfig | None = None) -> Starlette:
    """A Starlette app serving ``codecs`` (quality -> Codec; the first is the default)."""
    service = Service(codecs, config or ServeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(service.pool.shutdown, True)   # uvicorn drained requests

    app = Starlette(routes=[
        Route("/v1/compress", service.compress, methods=["POST"]),
        Route("/v1/decompress", service.decompress, methods=["POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.service = service
    return app
