"""Per-stage wall-clock timing for the codec pipelines."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Callable


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
        import statistics
        return {k: 1e3 * statistics.median(v[drop_first:] or v) for k, v in self.times.items()}


@contextlib.contextmanager
def maybe_stage(timer: StageTimer | None, name: str):
    if timer is None:
        yield
    else:
        with timer.stage(name):
            yield
