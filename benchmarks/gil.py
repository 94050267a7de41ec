"""Which codec stages release the GIL, measured two ways, for the range coder
(constriction through SymbolCoder, on the symbols of a real Kodak image), a torch
network stage (g_s, torch threads=1) and two controls: hashlib.sha256 of 8 MB
(releases the GIL) and a sort of 200k floats (one C call that holds it).

    python -m benchmarks.gil [IMAGE] [--calls 40] [--turns 3]

* held: while one call runs, a heartbeat thread sleeps 1 ms at a time and needs the
  GIL to wake. Its longest gap divided by the call's time is ~1 for a call that holds
  the GIL throughout and ~0 for one that releases it (median over calls). This does
  not depend on free cores, so it is the finding on a shared machine.
* speedup = time(1 thread) / time(2 threads) for N calls: about 2 for GIL-free code
  on two free cores, about 1 for code that holds it. On a busy machine the GIL-free
  control shows what two threads can get at all; compare each row to it. Turns
  alternate 1-thread and 2-thread runs; medians over turns.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import threading
import time

import numpy as np
from PIL import Image

from benchmarks._paths import KODAK
from fastlic.entropy.coder import AnsCoder
from fastlic.runtime.codec import Codec


def capture_coder_calls(codec: Codec, image: np.ndarray) -> list[tuple]:
    """The (coder, symbols, table_index) of every SymbolCoder.encode one compress makes."""
    calls = []
    for name in ("z_coder", "anchor_coder", "nonanchor_coder"):
        coder = getattr(codec, name)
        original = coder.encode

        def spy(symbols, table_index, _orig=original, _coder=coder):
            calls.append((_coder, np.array(symbols), np.array(table_index)))
            return _orig(symbols, table_index)
        coder.encode = spy
    codec.compress(image, checksum=False)
    for name in ("z_coder", "anchor_coder", "nonanchor_coder"):
        del getattr(codec, name).encode
    return calls


def workloads(codec: Codec, image: np.ndarray) -> dict:
    """name -> a callable doing one unit of work."""
    calls = capture_coder_calls(codec, image)
    streams = [(coder, coder.encode(s, t), t) for coder, s, t in calls]
    y_hat = codec.decode_latent(codec.compress(image, checksum=False))
    g_s = codec.engines["g_s"]
    blob = np.random.default_rng(0).bytes(8 << 20)

    floats = np.random.default_rng(1).random(200_000).tolist()
    coder = calls[-1][0]
    entries = (np.arange(1_000_000) % (2 * int(coder.radius[0]) + 1)).astype(np.int32)
    model = coder._models[0]   # one group of 1M symbols: one constriction call

    def one_call():
        ans = AnsCoder()
        ans.encode_reverse(entries, model)
        return ans.get_compressed()

    return {
        "range encode (1 image, 3 calls)": lambda: [c.encode(s, t) for c, s, t in calls],
        "range decode (1 image, 3 calls)": lambda: [c.decode(d, t) for c, d, t in streams],
        "constriction: 1 call of 1M symbols": one_call,
        "torch g_s (512x768)": lambda: g_s.run({"y_hat": y_hat}),
        "control: sha256 8 MB (frees GIL)": lambda: hashlib.sha256(blob).digest(),
        "control: sorted() 200k (holds GIL)": lambda: sorted(floats),
    }


def run_threads(fn, calls: int, threads: int) -> float:
    """Wall seconds for ``calls`` calls of fn split evenly over ``threads`` threads."""
    share = [calls // threads + (i < calls % threads) for i in range(threads)]
    workers = [threading.Thread(target=lambda n=n: [fn() for _ in range(n)]) for n in share]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def held_fraction(fn, calls: int) -> float:
    """Median over calls of (longest heartbeat gap during the call) / (call time)."""
    fractions = []
    for _ in range(calls):
        gaps, running = [], threading.Event()
        running.set()

        def heartbeat():
            last = time.perf_counter()
            while running.is_set():
                time.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
        beat = threading.Thread(target=heartbeat)
        beat.start()
        time.sleep(0.01)
        gaps.clear()
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        running.clear()
        beat.join()
        fractions.append(min(1.0, max(gaps) / took))
    return statistics.median(fractions)


def measure(fn, calls: int, turns: int) -> tuple[float, float]:
    """Median per-call ms in 1 thread and (wall) in 2 threads, alternating turns."""
    fn()   # warm-up
    one, two = [], []
    for _ in range(turns):
        one.append(run_threads(fn, calls, 1) / calls)
        two.append(run_threads(fn, calls, 2) / calls)
    return 1e3 * statistics.median(one), 1e3 * statistics.median(two)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gil")
    parser.add_argument("image", nargs="?", default=str(KODAK / "kodim01.png"))
    parser.add_argument("--calls", type=int, default=40, help="calls per turn (g_s: a tenth)")
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args(argv)
    codec = Codec.load(quality=3, threads=1)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    print(f"image {args.image} {image.shape}, torch threads 1, {args.calls} calls x "
          f"{args.turns} turns")
    print(f"{'work':36s} {'held':>5s} {'1 thread ms/call':>17s} {'2 threads ms/call':>18s} "
          f"{'speedup':>8s}")
    for name, fn in workloads(codec, image).items():
        calls = max(4, args.calls // 10) if "g_s" in name else args.calls
        one, two = measure(fn, calls, args.turns)
        held = held_fraction(fn, max(4, calls // 4))
        print(f"{name:36s} {held:5.2f} {one:17.2f} {two:18.2f} {one / two:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
