"""A worker pool with a bounded queue: ``workers`` threads run jobs, at most ``queue``
more wait, and a job beyond that is refused at once (QueueFullError) rather than
queued without bound.

A job's slot is held from admission until the job ends or is cancelled before it
starts, so the bound holds even when the caller stopped waiting (timeout, client
gone): a job already running on a worker cannot be interrupted and keeps its slot
until it finishes.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class QueueFullError(Exception):
    """Every worker is busy and the queue is full: answer 503, retry later."""


class BoundedPool:
    """``workers`` threads and room for ``queue`` waiting jobs."""

    def __init__(self, workers: int, queue: int):
        if workers < 1 or queue < 0:
            raise ValueError(f"need workers >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="fastlic-serve")
        self._lock = threading.Lock()
        self._waiting = self._running = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @property
    def full(self) -> bool:
        """Whether a job submitted now would be refused (a hint: no slot is reserved)."""
        return self._waiting + self._running >= self.workers + self.queue

    def submit(self, fn: Callable, *args) -> Future:
        """Admit fn(*args) or raise QueueFullError; cancel the future to give up a
        job that has not started."""
        with self._lock:
            if self._waiting + self._running >= self.workers + self.queue:
                raise QueueFullError(f"all {self.workers} workers are busy and "
                                     f"{self._waiting} jobs wait; retry later")
            self._waiting += 1
        try:
            future = self._executor.submit(self._job, fn, args)
        except RuntimeError:   # shut down
            self._release_waiting()
            raise
        future.add_done_callback(self._on_done)
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new jobs; with ``wait``, return when the admitted ones have ended."""
        self._executor.shutdown(wait=wait)

    def _job(self, fn: Callable, args: tuple):
        with self._lock:
            self._waiting -= 1
            self._running += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running -= 1

    def _on_done(self, future: Future) -> None:
        if future.cancelled():   # never started: its waiting slot is free
            self._release_waiting()

    def _release_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1
