"""Ray Serve load test: requests/s and p50/p99 latency of /compress and /decompress for
each number of replicas and of concurrent clients, on a local single-node Ray cluster.

    python benchmarks/ray_load.py [--quality 3 | --model PATH] [--image PNG] [--size 256]
        [--replicas 1 2] [--concurrency 1 4 16] [--requests 32] [--workers 1]

Per replica count: one deployment (each replica reserves cores / replicas Ray CPUs, runs
torch on one thread and ``--workers`` codec threads), warm-up requests dropped (two per
replica and route), then per concurrency ``--requests`` requests from that many client
threads of this process, each on its own HTTP session. Latency is the client's (HTTP,
proxy, queueing, batching, coding); "batch" is the mean batch the replicas ran. With
32 requests, p99 is close to the maximum. The clients share the machine's cores with
the replicas, so on a small machine the numbers bound what the service does, not more.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _paths import KODAK  # noqa: E402


def test_image(path: str | None, size: int) -> bytes:
    """A PNG: ``path``, else a size x size crop of kodim01 (or scikit-image's astronaut)."""
    from PIL import Image
    if path:
        return Path(path).read_bytes()
    kodim = KODAK / "kodim01.png"
    if kodim.is_file():
        image = np.asarray(Image.open(kodim).convert("RGB"))
    else:
        from skimage import data
        image = data.astronaut()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[:size, :size])).save(buf, format="PNG")
    return buf.getvalue()


def load(url: str, body: bytes, n: int, concurrency: int) -> dict:
    """``n`` POSTs of ``body`` from ``concurrency`` threads -> req/s, p50/p99 ms, mean batch."""
    import requests
    local = threading.local()

    def one(_):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        r = session.post(url, data=body, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - start, int(r.headers.get("x-fastlic-batch", 1)), r.content

    wall = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - wall
    lat = np.array([r[0] for r in results]) * 1000
    return {"rps": n / wall, "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99),
            "batch": float(np.mean([r[1] for r in results])), "reply": results[0][2]}


def run_replicas(args, replicas: int, port: int, png: bytes, cores: int) -> None:
    from ray import serve

    from fastlic.serving.ray_deployment import codec_app
    models = [args.model] if args.model else [_shipped(args.quality)]
    serve.run(codec_app(models, engine_options={"threads": 1}, workers=args.workers,
                        num_replicas=replicas, num_cpus=cores / replicas,
                        max_batch_size=args.max_batch_size,
                        batch_wait_timeout_s=args.batch_wait_ms / 1000),
              name="bench", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    flic = load(f"{base}/compress", png, 2 * replicas, replicas)["reply"]   # warm-up
    load(f"{base}/decompress", flic, 2 * replicas, replicas)
    for concurrency in args.concurrency:
        for route, body in (("compress", png), ("decompress", flic)):
            r = load(f"{base}/{route}", body, args.requests, concurrency)
            print(f"{replicas:>8} {concurrency:>11} {route:<10} {r['rps']:>7.2f} "
                  f"{r['p50']:>8.0f} {r['p99']:>8.0f} {r['batch']:>6.2f}", flush=True)
    serve.delete("bench")


def _shipped(quality: int) -> str:
    from fastlic.modelfile import shipped_weights
    return str(shipped_weights(quality))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quality", type=int, default=3, help="shipped rung (default 3)")
    p.add_argument("--model", help="weights file or export folder instead of --quality")
    p.add_argument("--image", help="PNG to compress (default: a --size crop of kodim01)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=32, help="requests per point")
    p.add_argument("--workers", type=int, default=1, help="codec threads per replica")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()

    import ray
    from ray import serve
    cores = os.cpu_count() or 1
    png = test_image(args.image, args.size)
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        port = args.port
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        print(f"{cores} cores, model {args.model or f'q{args.quality}'}, image {len(png)} B "
              f"PNG, {args.requests} requests per point, {args.workers} codec thread(s) per "
              f"replica, batches <= {args.max_batch_size} within {args.batch_wait_ms} ms")
        print(f"{'replicas':>8} {'concurrency':>11} {'route':<10} {'req/s':>7} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'batch':>6}")
        for replicas in args.replicas:
            run_replicas(args, replicas, port, png, cores)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
