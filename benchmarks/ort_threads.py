"""onnxruntime's thread pools against torch: whole encodes and decodes of one Kodak
image, each setup in processes of its own.

onnxruntime's process-wide pool (:func:`fastlic.engines.onnxruntime.engine.share_thread_pool`,
what the ``fastlic`` command uses) binds every session of a process once it exists,
so it cannot take turns with the per-session pools in one process as
``experiments/decode_variants.py``'s setups do. Here every setup runs in a fresh
process per round, the setups alternating round by round (torch, a pool per stage,
one shared pool, torch, ...); each process loads the codec, runs one warm-up round
trip and times ``--repeat`` more. Reported: the median over all timed runs of each
setup and its ratio to torch's, then each process's median (the spread). Encodes are the default ``compress`` (with the
reconstruction checksum); both processes run ``keep_freed_memory()`` as the
``fastlic`` command does.

    python -m benchmarks.ort_threads [IMAGE] [--model W] [--rounds 3] [--repeat 10] [--threads 2]

``--paired N`` measures decoding only, and pairs the setups in time: one long-lived
process per setup decodes its own file of the image on request, and the parent asks
them in turn, N times (order reversed every other time, a pause before each
request so that no process's threads are still busy). Each onnxruntime decode is
divided by the torch decode of the same turn; drift of the machine over seconds
then cancels, where the process rounds above compare minutes apart. Reported: each
setup's median, the median of its per-turn ratios to torch with a bootstrap 95 %
interval, and how many turns it was faster than torch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._paths import KODAK, REPO

SETUPS = {
    "torch": "torch (default engines)",
    "ort-own": "onnxruntime, a pool per stage (library default)",
    "ort-shared": "onnxruntime, one shared pool (share_thread_pool; the fastlic command)",
}


def one(setup: str, image_path: str, model: str | None, repeat: int, threads: int) -> dict:
    """Time ``repeat`` encodes and decodes in this process -> {"encode": [ms], "decode": [ms]}."""
    import numpy as np
    from PIL import Image

    from fastlic.runtime.codec import Codec
    from fastlic.runtime.memory import keep_freed_memory
    keep_freed_memory()
    if setup == "ort-shared":
        from fastlic.engines.onnxruntime.engine import share_thread_pool
        share_thread_pool(threads)
    backend = "torch" if setup == "torch" else "onnxruntime"
    codec = Codec.load(model, backend=backend, threads=threads)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    codec.decompress(codec.compress(image))               # warm-up
    times: dict[str, list[float]] = {"encode": [], "decode": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        data = codec.compress(image)
        t1 = time.perf_counter()
        codec.decompress(data)
        t2 = time.perf_counter()
        times["encode"].append(1e3 * (t1 - t0))
        times["decode"].append(1e3 * (t2 - t1))
    return times


def serve(setup: str, image_path: str, model: str | None, threads: int) -> None:
    """A --paired worker: load, encode the image once, warm up, print "ready"; then
    one timed decode (its ms on a line) per "decode" line on stdin, until EOF."""
    import numpy as np
    from PIL import Image

    from fastlic.runtime.codec import Codec
    from fastlic.runtime.memory import keep_freed_memory
    keep_freed_memory()
    if setup == "ort-shared":
        from fastlic.engines.onnxruntime.engine import share_thread_pool
        share_thread_pool(threads)
    backend = "torch" if setup == "torch" else "onnxruntime"
    codec = Codec.load(model, backend=backend, threads=threads)
    data = codec.compress(np.asarray(Image.open(image_path).convert("RGB")))
    codec.decompress(data)                                 # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "decode":
            break
        t0 = time.perf_counter()
        codec.decompress(data)
        print(f"{1e3 * (time.perf_counter() - t0):.4f}", flush=True)


def paired_stats(times: dict[str, list[float]], base: str = "torch", resamples: int = 2000,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Per setup: median ms, and against ``base`` the median per-turn ratio, its
    bootstrap 95 % interval (turns resampled) and the share of turns it was faster."""
    import numpy as np
    rng = np.random.default_rng(seed)
    ref = np.asarray(times[base])
    stats = {}
    for setup, t in times.items():
        ratio = np.asarray(t) / ref
        picks = rng.integers(0, len(ratio), (resamples, len(ratio)))
        boot = np.median(ratio[picks], axis=1)
        stats[setup] = {"median_ms": float(np.median(t)), "ratio": float(np.median(ratio)),
                        "low": float(np.percentile(boot, 2.5)),
                        "high": float(np.percentile(boot, 97.5)),
                        "faster": float(np.mean(ratio < 1.0))}
    return stats


def paired(args, env: dict) -> int:
    """The --paired mode: workers per setup, decodes in turns; prints the table."""
    workers = {}
    try:
        for setup in SETUPS:
            cmd = [sys.executable, "-m", "benchmarks.ort_threads", args.image, "--serve", setup,
                   "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
            workers[setup] = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, text=True, bufsize=1)
            if workers[setup].stdout.readline().strip() != "ready":
                print(f"the {setup} worker failed to start", file=sys.stderr)
                return 1
        times: dict[str, list[float]] = {s: [] for s in SETUPS}
        order = list(SETUPS)
        for turn in range(args.paired):
            for setup in (order if turn % 2 == 0 else order[::-1]):
                time.sleep(args.pause)
                workers[setup].stdin.write("decode\n")
                times[setup].append(float(workers[setup].stdout.readline()))
            if (turn + 1) % 10 == 0:
                print(f"  turn {turn + 1}/{args.paired}", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait(timeout=60)
    from fastlic.evaluation.report import markdown_table
    stats = paired_stats(times)
    rows = [[SETUPS[s], st["median_ms"], st["ratio"], f"{st['low']:.3f}–{st['high']:.3f}",
             f"{round(st['faster'] * args.paired)}/{args.paired}"] for s, st in stats.items()]
    print(f"# {Path(args.image).name}, model {args.model or 'shipped q3'}, {args.threads} threads, "
          f"{args.paired} turns of one decode per setup, {args.pause * 1e3:.0f} ms pause before "
          f"each, {platform.machine()} with {os.cpu_count()} cores\n")
    print(markdown_table(rows, ["setup", "decode ms (median)", "decode / torch's, per turn",
                                "95 % interval", "turns faster than torch"], digits=[0, 1, 3, 0, 0]))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", nargs="?", default=str(KODAK / "kodim01.png"))
    p.add_argument("--model", help="weights .safetensors (default: the shipped quality 3)")
    p.add_argument("--rounds", type=int, default=3, help="processes per setup (default 3)")
    p.add_argument("--repeat", type=int, default=10, help="timed round trips per process")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads, every setup")
    p.add_argument("--paired", type=int, metavar="N", default=0,
                   help="decode only, N turns of one decode per setup (module docstring)")
    p.add_argument("--pause", type=float, default=0.05,
                   help="--paired: seconds of pause before each decode (default 0.05)")
    p.add_argument("--one", choices=sorted(SETUPS), help=argparse.SUPPRESS)   # a child process
    p.add_argument("--serve", choices=sorted(SETUPS), help=argparse.SUPPRESS)  # a --paired worker
    args = p.parse_args(argv)
    if not Path(args.image).is_file():
        print(f"skipped: image not found: {args.image}", file=sys.stderr)
        return 0
    if args.one:
        print(json.dumps(one(args.one, args.image, args.model, args.repeat, args.threads)))
        return 0
    if args.serve:
        serve(args.serve, args.image, args.model, args.threads)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.paired:
        return paired(args, env)
    runs: dict[str, dict[str, list[float]]] = {s: {"encode": [], "decode": []} for s in SETUPS}
    rounds: list[str] = []
    for r in range(args.rounds):
        for setup in SETUPS:
            cmd = [sys.executable, "-m", "benchmarks.ort_threads", args.image, "--one", setup,
                   "--repeat", str(args.repeat), "--threads", str(args.threads)]
            cmd += ["--model", args.model] if args.model else []
            out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            times = json.loads(out.stdout.strip().splitlines()[-1])
            for k in runs[setup]:
                runs[setup][k] += times[k]
            rounds.append(f"round {r + 1}/{args.rounds} {setup}: decode median "
                          f"{statistics.median(times['decode']):.1f} ms")
            print(f"  {rounds[-1]}", file=sys.stderr, flush=True)
    from fastlic.evaluation.report import markdown_table
    med = {s: {k: statistics.median(v) for k, v in t.items()} for s, t in runs.items()}
    rows = [[SETUPS[s], m["encode"], m["decode"], m["decode"] / med["torch"]["decode"]]
            for s, m in med.items()]
    print(f"# {Path(args.image).name}, model {args.model or 'shipped q3'}, {args.threads} threads, "
          f"{args.rounds} processes x {args.repeat} timed round trips per setup, "
          f"{platform.machine()} with {os.cpu_count()} cores\n")
    print(markdown_table(rows, ["setup", "encode ms", "decode ms", "decode / torch's"],
                         digits=[0, 1, 1, 3]))
    print("\n# per-round decode medians\n" + "\n".join(f"# {line}" for line in rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
