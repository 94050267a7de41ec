"""The service's Prometheus metrics, in a registry of its own (one per app, so tests
can build several).

    fastlic_requests_total{endpoint, status}        counter
    fastlic_errors_total{endpoint, type}             counter (type: the error class)
    fastlic_request_seconds{endpoint}                histogram, arrival to response
    fastlic_queue_wait_seconds{endpoint}             histogram, admission to a worker
    fastlic_stage_seconds{endpoint, stage}           histogram, the codec's StageTimer
    fastlic_queue_depth                              gauge, jobs waiting for a worker
    fastlic_workers_busy                             gauge, jobs running
    fastlic_disconnects_total{endpoint}              counter, clients gone before the answer
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

# Seconds: the tiny test model takes milliseconds, a Kodak image on one core about 1 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """Counters, histograms and gauges of one service; ``render()`` is /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, waiting: Callable[[], int], running: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fastlic_requests", "HTTP requests answered",
                                ("endpoint", "status"), registry=r)
        self.errors = Counter("fastlic_errors", "Requests that failed, by error type",
                              ("endpoint", "type"), registry=r)
        self.disconnects = Counter("fastlic_disconnects", "Clients that left before the answer",
                                   ("endpoint",), registry=r)
        self.latency = Histogram("fastlic_request_seconds", "Arrival to response",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("fastlic_queue_wait_seconds", "Admission to a worker",
                                    ("endpoint",), buckets=LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("fastlic_stage_seconds", "Codec stage times (StageTimer)",
                                ("endpoint", "stage"), buckets=STAGE_BUCKETS, registry=r)
        Gauge("fastlic_queue_depth", "Jobs waiting for a worker",
              registry=r).set_function(waiting)
        Gauge("fastlic_workers_busy", "Jobs running on a worker",
              registry=r).set_function(running)

    def answered(self, endpoint: str, status: int, seconds: float,
                 error: str | None = None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if error:
            self.errors.labels(endpoint, error).inc()

    def observe_stages(self, endpoint: str, times: dict[str, list[float]]) -> None:
        """A StageTimer's ``times`` of one request (sub-stages, with a dot, included)."""
        for stage, values in times.items():
            histogram = self.stages.labels(endpoint, stage)
            for seconds in values:
                histogram.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
