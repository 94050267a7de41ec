"""Load and soak of ``fastlic serve`` on loopback: throughput and latency at several
concurrencies, the queue bound, RSS over a soak, and clients that disconnect.

    python -m benchmarks.serve_load [--image PNG] [--crop 256x384] [--quality 3 | --weights W]
        [--workers 2] [--queue 8] [--concurrency 1,4,16] [--duration-s 10] [--soak-s 600]
        [--in-process]

The service runs in a subprocess (its RSS is its own; ``--in-process``: a uvicorn
thread of this process, for tests). Each client thread posts in a loop, alternating
/v1/compress and /v1/decompress of one image, and on a 503 waits the Retry-After it
was given (as a well-behaved client does). Per concurrency: requests answered by
status, successful requests/s, p50 and p99 latency of the successful ones.

Checks, each printed PASS/FAIL (exit status 1 if any fails):
  * every request gets an answer, 200 or 503 only (concurrency beyond workers + queue
    must see 503s, never an error or a lost request);
  * RSS at the end of the soak is within --rss-growth-mb of its start;
  * clients that disconnect mid-request leave the queue and the workers at 0.
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks._paths import KODAK

SERVE = "import sys; from fastlic.serving.app import serve_main; sys.exit(serve_main(sys.argv[1:]))"


def test_image(path: Path | None, crop: str) -> bytes:
    """A PNG of the image's top-left crop (HxW)."""
    height, width = (int(v) for v in crop.split("x"))
    if path is not None and path.exists():
        array = np.asarray(Image.open(path).convert("RGB"))
    else:
        from skimage import data
        array = data.astronaut()
    buf = io.BytesIO()
    Image.fromarray(array[:height, :width]).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the service --------------------------------------------------------------------

class Service:
    """The service under test: url, pid (for RSS), stop()."""

    def __init__(self, args):
        serve = ["--workers", str(args.workers), "--queue", str(args.queue),
                 "--threads", str(args.threads), "--log-level", "warning"]
        serve += ["--weights", args.weights] if args.weights else ["--quality", str(args.quality)]
        if args.in_process:
            self._start_in_process(serve)
        else:
            port = free_port()
            self.proc = subprocess.Popen([sys.executable, "-c", SERVE, *serve, "--port", str(port)])
            self.url, self.pid, self.background = f"http://127.0.0.1:{port}", self.proc.pid, None
        self._wait_healthy()

    def _start_in_process(self, serve):
        from fastlic.serving.app import load_codecs, parser
        from fastlic.serving.server import BackgroundServer
        from fastlic.serving.service import ServeConfig, create_app
        opts = parser().parse_args(serve)
        app = create_app(load_codecs(opts), ServeConfig(workers=opts.workers, queue=opts.queue))
        self.background = BackgroundServer(app).start()
        self.url, self.pid, self.proc = self.background.url, os.getpid(), None

    def _wait_healthy(self, timeout_s: float = 300.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not become healthy")

    def health(self) -> dict:
        return httpx.get(self.url + "/healthz", timeout=10).json()

    def rss_mb(self) -> float:
        """Resident set of the service process (Linux /proc), MB."""
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def stop(self):
        if self.background is not None:
            self.background.stop()
        else:
            self.proc.terminate()      # SIGTERM: the graceful drain
            self.proc.wait(60)


# ---- clients ------------------------------------------------------------------------

def client_loop(url: str, png: bytes, flic: bytes, until: float, out: list) -> None:
    """Post until ``until`` (at least once), alternating endpoints; append (status or
    error, seconds)."""
    with httpx.Client(base_url=url, timeout=120) as client:
        turn = 0
        while turn == 0 or time.monotonic() < until:
            path, body = (("/v1/compress", png), ("/v1/decompress", flic))[turn % 2]
            turn += 1
            start = time.perf_counter()
            try:
                r = client.post(path, content=body)
                status = r.status_code
            except httpx.HTTPError as exc:
                out.append((type(exc).__name__, time.perf_counter() - start))
                continue
            out.append((status, time.perf_counter() - start))
            if status == 503:
                time.sleep(float(r.headers.get("retry-after", "1")))


def load(url: str, png: bytes, flic: bytes, concurrency: int, seconds: float,
         on_tick=None) -> tuple[list, float]:
    """(results, wall seconds) of ``concurrency`` clients posting for ``seconds``."""
    start = time.monotonic()
    until = start + seconds
    out: list = []
    threads = [threading.Thread(target=client_loop, args=(url, png, flic, until, out))
               for _ in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_tick:
            on_tick()
        time.sleep(1.0 if on_tick else 0.05)
    return out, time.monotonic() - start


def summarise(results: list, seconds: float) -> tuple[str, bool]:
    ok = sorted(t for s, t in results if s == 200)
    counts: dict = {}
    for status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    p50 = 1e3 * statistics.median(ok) if ok else float("nan")
    p99 = 1e3 * ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else float("nan")
    line = (f"{len(results):5d} answered {counts}  {len(ok) / seconds:6.2f} ok/s  "
            f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    return line, bool(ok) and set(counts) <= {200, 503}


# ---- checks -------------------------------------------------------------------------

def soak(service: Service, png: bytes, flic: bytes, concurrency: int, seconds: float,
         growth_mb: float) -> bool:
    samples = [service.rss_mb()]
    results, wall = load(service.url, png, flic, concurrency, seconds,
                         on_tick=lambda: samples.append(service.rss_mb()))
    samples.append(service.rss_mb())
    line, statuses_ok = summarise(results, wall)
    grown = samples[-1] - samples[0]
    print(f"soak {seconds:g} s at concurrency {concurrency}: {line}")
    print(f"  RSS MB start {samples[0]:.0f}  max {max(samples):.0f}  end {samples[-1]:.0f}  "
          f"({len(samples)} samples, growth {grown:+.0f} MB, bound {growth_mb:g})")
    return statuses_ok and grown <= growth_mb


def disconnects(service: Service, png: bytes, count: int) -> bool:
    """``count`` clients send a whole request and hang up at once; the queue and the
    workers must return to 0 and the service must still answer."""
    port = int(service.url.rsplit(":", 1)[1])
    head = f"POST /v1/compress HTTP/1.1\r\nHost: x\r\nContent-Length: {len(png)}\r\n\r\n"
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head.encode() + png)
        socks.append(sock)
    time.sleep(0.5)
    for sock in socks:
        sock.close()
    deadline = time.monotonic() + 120
    health = service.health()
    while (health["waiting"] or health["running"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        health = service.health()
    after = httpx.post(service.url + "/v1/compress", content=png, timeout=120).status_code
    print(f"{count} clients hung up: waiting {health['waiting']}, running {health['running']}, "
          f"next request {after}")
    return health["waiting"] == 0 and health["running"] == 0 and after == 200


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load")
    p.add_argument("--image", type=Path, default=KODAK / "kodim01.png")
    p.add_argument("--crop", default="256x384", help="HxW of the image posted")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--weights", help="a .safetensors model instead of a shipped quality")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--duration-s", type=float, default=10.0, help="per concurrency")
    p.add_argument("--soak-s", type=float, default=0.0, help="0: no soak")
    p.add_argument("--soak-concurrency", type=int, default=16)
    p.add_argument("--rss-growth-mb", type=float, default=64.0)
    p.add_argument("--disconnects", type=int, default=6)
    p.add_argument("--in-process", action="store_true")
    args = p.parse_args(argv)
    png = test_image(args.image, args.crop)
    service = Service(args)
    checks = {}
    try:
        flic = httpx.post(service.url + "/v1/compress", content=png, timeout=120).content
        print(f"image {args.crop} ({len(png)} B PNG, {len(flic)} B .flic); workers "
              f"{args.workers}, queue {args.queue}, torch threads {args.threads}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        for c in (int(v) for v in args.concurrency.split(",")):
            line, ok = summarise(*load(service.url, png, flic, c, args.duration_s))
            print(f"concurrency {c:3d}: {line}")
            checks[f"concurrency {c}: answers 200 or 503 only"] = ok
        if args.soak_s > 0:
            checks["soak: RSS bounded, 200 or 503 only"] = soak(
                service, png, flic, args.soak_concurrency, args.soak_s, args.rss_growth_mb)
        if args.disconnects:
            checks["disconnects leave the queue at 0"] = disconnects(service, png, args.disconnects)
    finally:
        service.stop()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
