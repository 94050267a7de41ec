"""Cases in worker processes, each case under a timeout, for benchmarks/fuzz.py.

A worker is spawned (it imports torch itself, nothing is forked), limits its own
address space, runs ``setup(options)`` once and then ``run(state, options, case)``
for each case the parent sends, one at a time::

    parent ──case──▶ worker ──result──▶ parent ─▶ on_result(result)
       │ no result by the deadline: kill it, "hang"; pipe closed: "crash"
       └──▶ the case is counted, a new worker is started, the run goes on
"""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import resource
import signal
import time
import warnings
from multiprocessing.connection import wait

START_TIMEOUT = 600.0   # seconds for a worker to import torch and load its model


def _worker(conn, setup, run, options, memory: int) -> None:
    warnings.simplefilter("ignore", RuntimeWarning)   # numpy's overflow notes on hostile ŷ
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    state = setup(options)
    conn.send(("ready", None))
    while (case := conn.recv()) is not None:
        conn.send(("done", run(state, options, case)))


class _Process:
    """One worker: starting (not ready), idle (case None) or on a case until ``deadline``."""

    def __init__(self, ctx, args: tuple):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, *args), daemon=True)
        self.process.start()
        child.close()
        self.case, self.ready = None, False
        self.deadline = time.monotonic() + START_TIMEOUT

    @property
    def idle(self) -> bool:
        return self.ready and self.case is None

    def send(self, case: int, timeout: float) -> None:
        self.case, self.deadline = case, time.monotonic() + timeout
        self.conn.send(case)

    def end(self) -> str:
        """Stop the process (an idle one is asked to, others are killed); how it ended."""
        if self.idle and self.process.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
        else:
            self.process.kill()
        self.process.join(10)
        self.conn.close()
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"worker killed by {signal.Signals(-code).name}"
        return f"worker exited with code {code}"


@dataclasses.dataclass
class PoolRun:
    """How a run went: cases finished, seconds from the first case sent to the last
    result, workers replaced."""

    cases: int = 0
    elapsed: float = 0.0
    restarts: int = 0


@dataclasses.dataclass
class _Pool:
    ctx: object
    args: tuple
    timeout: float
    on_result: object
    run: PoolRun

    def step(self, p: _Process, readable: bool) -> _Process:
        """One worker after a wait: its message, its death or its timeout."""
        if readable:
            try:
                kind, value = p.conn.recv()
            except (EOFError, OSError):
                return self.renew(p, "crash")
            if kind == "done":
                self.deliver(value)
            p.ready, p.case, p.deadline = True, None, float("inf")
        elif time.monotonic() >= p.deadline:
            return self.renew(p, "hang")
        return p

    def deliver(self, result: dict) -> None:
        self.run.cases += 1
        self.on_result(result)

    def renew(self, p: _Process, outcome: str) -> _Process:
        """Count a dead ("crash") or overrunning ("hang") worker's case; a new worker."""
        how = p.end()
        if p.case is None:
            raise RuntimeError(f"a fuzz worker did not start ({how}, or over {START_TIMEOUT:g} s)")
        message = f"no result in {self.timeout:g} s" if outcome == "hang" else how
        self.deliver({"case": p.case, "outcome": outcome, "stage": outcome, "mutations": [],
                      "notes": [], "message": message,
                      "seconds": self.timeout if outcome == "hang" else 0.0})
        self.run.restarts += 1
        return _Process(self.ctx, self.args)


def run_pool(cases: int, setup, run, options, on_result, *, workers: int = 1,
             timeout: float = 60.0, memory: int = 0, time_limit: float | None = None,
             log=None) -> PoolRun:
    """Cases 0..cases-1, no new one sent ``time_limit`` seconds after the first.

    setup, run: module-level functions (spawned workers import them by name);
    on_result gets each case's result dict, or for a lost case {"case", "outcome":
    "crash" | "hang", "stage", "message", "mutations": [], "notes": [], "seconds"}.
    memory: RLIMIT_AS of each worker in bytes (0: none).
    """
    ctx = multiprocessing.get_context("spawn")
    args = (setup, run, options, memory)
    done = PoolRun()
    pool = _Pool(ctx, args, timeout, on_result, done)
    procs = [_Process(ctx, args) for _ in range(workers)]
    next_case, started, last_log = 0, None, time.monotonic()
    try:
        while True:
            now = time.monotonic()
            open_ = started is None or time_limit is None or now - started < time_limit
            for p in procs:
                if p.idle and open_ and next_case < cases:
                    started = started or now
                    p.send(next_case, timeout)
                    next_case += 1
            if (next_case >= cases or not open_) and all(p.case is None for p in procs):
                break
            ready = wait([p.conn for p in procs], max(0.0, min(p.deadline for p in procs) - now))
            procs = [pool.step(p, p.conn in ready) for p in procs]
            if log and started and time.monotonic() - last_log > 30:
                last_log = time.monotonic()
                rate = done.cases / (last_log - started)
                log(f"# {done.cases}/{cases} cases, {rate:.1f} cases/s")
    finally:
        for p in procs:
            p.end()
    done.elapsed = time.monotonic() - (started or time.monotonic())
    return done
