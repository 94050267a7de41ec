"""Per-stage wall-clock timing for the codec pipelines.

The codec times its own stages (``maybe_stage``); an engine times its host↔device
copies as sub-stages named ``<stage>.h2d`` / ``<stage>.d2h`` (``sub_stage``), found
through the timer that :func:`activate` made current for this thread. Sub-stages
(names with a dot) lie inside their parent stage and are not added to totals.
"""
from __future__ import annotations

import contextlib
import contextvars
import statistics
import time
from collections import defaultdict
from typing import Callable

_ACTIVE: contextvars.ContextVar["StageTimer | None"] = contextvars.ContextVar(
    "fastlic_active_timer", default=None)


class StageTimer:
    """Collects durations (seconds) per named stage over repeated runs.

    ``sync`` is called before each clock read so asynchronous devices are timed
    honestly (e.g. ``torch.cuda.synchronize``); on the CPU it is a no-op.
    """

    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync = sync or (lambda: None)
        self.times: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def stage(self, name: str):
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.times[name].append(time.perf_counter() - start)

    def medians_ms(self, drop_first: int = 0) -> dict[str, float]:
        """Median milliseconds per stage, ignoring the first ``drop_first`` runs (warm-up)."""
        return {k: 1e3 * statistics.median(v[drop_first:] or v) for k, v in self.times.items()}


@contextlib.contextmanager
def maybe_stage(timer: StageTimer | None, name: str):
    if timer is None:
        yield
    else:
        with timer.stage(name):
            yield


@contextlib.contextmanager
def activate(timer: StageTimer | None):
    """Make ``timer`` the one :func:`sub_stage` records into, in this thread/context."""
    token = _ACTIVE.set(timer)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def sub_stage(name: str):
    """A stage of the active timer (a no-op context when none is active)."""
    return maybe_stage(_ACTIVE.get(), name)
