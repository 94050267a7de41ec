"""Compress or decompress many images with their stages overlapped: a bounded window
of whole-image jobs on a thread pool, results in input order.

Why threads, and whole images (``python -m benchmarks.gil``): torch's kernels release
the GIL (a heartbeat thread is blocked for 3 % of a g_s call), constriction's range
coder holds it for the whole call (100 %), and range coding is under 1 % of an image's
time on the CPU (about 3 ms of 900 ms for a 512x768 Kodak image). So while one image
is range-coded, holding the GIL, another image's networks run: two threads overlap
coding, copies and networks of consecutive images with no step-level API, and
processes would buy nothing but copies of the model::

    images ──▶ window of ≤ max_in_flight jobs ──▶ pool of `workers` threads ──▶ results
    (lazy)        (bounded memory)                  image i:   g_a … g_s │ code      (in order)
                                                    image i+1:      g_a … g_s │ code

Each job is one ``codec.compress`` / ``codec.decompress``; at most ``max_in_flight``
inputs are taken from the iterable ahead of the result being yielded, so memory is
bounded by the window, not the batch. A failed item yields a Result holding its
typed error (a FastlicError) and the rest go on; any other exception is a bug and is
raised, after the jobs already started finish.

Set torch's thread count (``Codec.load(threads=...)``) so that workers × threads is
about the number of free cores: on a machine whose cores are busy there is nothing to
overlap into, and the pipelined loop runs at the sequential loop's speed
(``python -m benchmarks.batch``).
"""
from __future__ import annotations

import collections
import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import FastlicError, UsageError


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one item: ``value`` (bytes or a uint8 image) or ``error``."""

    index: int                         # position in the input iterable
    value: Any = None                  # None when error is set
    error: FastlicError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def compress_many(codec, images: Iterable[np.ndarray], *, workers: int = 2,
                  max_in_flight: int | None = None, **options) -> Iterator[Result]:
    """uint8 images (H, W[, 3|4]) -> Results of .flic bytes, in input order.

    options: passed to ``codec.compress`` (``drop_alpha``, ``checksum``).
    """
    return _run_many(lambda image: codec.compress(image, **options), images, workers,
                     max_in_flight)


def decompress_many(codec, datas: Iterable[bytes], *, workers: int = 2,
                    max_in_flight: int | None = None, **options) -> Iterator[Result]:
    """.flic bytes -> Results of uint8 images (H, W, 3) or (H, W), in input order.

    options: passed to ``codec.decompress`` (``strict``).
    """
    return _run_many(lambda data: codec.decompress(data, **options), datas, workers,
                     max_in_flight)


def _run_many(job: Callable, items: Iterable, workers: int,
              max_in_flight: int | None) -> Iterator[Result]:
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    window = 2 * workers if max_in_flight is None else max_in_flight
    if window < workers:
        raise UsageError(f"max_in_flight must be at least workers ({workers}), got {window}")
    return _ordered(job, items, workers, window)


def _ordered(job: Callable, items: Iterable, workers: int, window: int) -> Iterator[Result]:
    """Keep ``window`` jobs submitted; yield the oldest when it is done."""
    pending: collections.deque[Future] = collections.deque()
    source = enumerate(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="fastlic-batch") as pool:
        try:
            for index, item in source:
                pending.append(pool.submit(_one, job, index, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:   # the consumer stopped early or a job raised: drop what has not started
            for future in pending:
                future.cancel()


def _one(job: Callable, index: int, item) -> Result:
    try:
        return Result(index, job(item))
    except FastlicError as exc:
        return Result(index, error=exc)
