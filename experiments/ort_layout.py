"""onnxruntime's CPU graphs as exported ("plain") against the blocked-layout rewrite
(:mod:`fastlic.engines.onnxruntime.layout`, the default), in one process on one shared pool.

Conclusion: the onnxruntime CPU engine runs g_a and g_s in the blocked layout by
default. On the float ladder it gave the same bitstream and image on 24/24 Kodak images,
and on kodim01 (one shared pool of 2 threads, 30 turns) decoded in 0.933x the plain
graphs' time (72.88 -> 67.99 ms, faster in 30/30 turns) and encoded in 0.920x (29/30);
``Codec.load`` takes 0.65 s when the cache is empty, 0.10 s once it is filled
(experiments/results/ort_layout.txt).

First every image of the folder is encoded and decoded with both: the bitstreams and
the decoded images must be identical (the rewrite only moves values). Then the first
image is encoded and decoded ``--repeat`` times by each, the two taking turns, every
stage timed (the codec's StageTimer): medians after one warm-up, and in how many turns
the blocked one was the faster. Also prints the ``Codec.load`` times: plain, blocked
with an empty cache of blocked graphs (the rewrite, and importing onnx), blocked again.

    python -m experiments.ort_layout [DIR] [--model W] [--repeat 30] [--threads 2]
    python -m experiments.ort_layout --self-test   # both layouts on a tiny model
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._paths import KODAK
from fastlic.evaluation.report import markdown_table
from fastlic.runtime.codec import DEFAULT_WEIGHTS, Codec
from fastlic.runtime.sources import cached_export
from fastlic.runtime.memory import keep_freed_memory
from fastlic.timing import StageTimer

LAYOUTS = ("plain", "blocked")


def load_codecs(weights: Path, directory: Path, cache: str) -> tuple[dict, dict]:
    """The two codecs on ``directory``'s graphs, and load times: plain, then blocked with
    an empty cache of blocked graphs (rewriting, importing onnx), then blocked again
    (reading the cache)."""
    codecs, load_s = {}, {}
    for label, layout in (("plain", "plain"), ("blocked, cache empty", "blocked"),
                          ("blocked, cached", "blocked")):
        t = time.perf_counter()
        codecs[layout] = Codec.load(weights, backend="onnxruntime", model_dir=directory,
                                    cache_dir=cache, layout=layout)
        load_s[label] = time.perf_counter() - t
    return codecs, load_s


def exactness(codecs: dict, images: list[tuple[str, np.ndarray]]) -> int:
    """How many images give the same bytes and the same decoded image with both."""
    same = 0
    for _, image in images:
        data = {k: c.compress(image) for k, c in codecs.items()}
        decoded = [c.decompress(data["plain"]) for c in codecs.values()]
        same += data["plain"] == data["blocked"] and np.array_equal(*decoded)
    return same


def timed(codecs: dict, image: np.ndarray, repeat: int, pause: float):
    """Per direction: stage medians per layout, and the turns the blocked one won."""
    data = codecs["plain"].compress(image)
    work = {"encode": lambda c, timer: c.compress(image, timer=timer),
            "decode": lambda c, timer: c.decompress(data, timer=timer)}
    timers = {(d, k): StageTimer() for d in work for k in codecs}
    won = dict.fromkeys(work, 0)
    for turn in range(repeat + 1):
        for direction, fn in work.items():
            totals = {}
            for layout in (LAYOUTS if turn % 2 else LAYOUTS[::-1]):
                time.sleep(pause)
                timer = timers[direction, layout]
                t = time.perf_counter()
                with timer.stage("total"):
                    fn(codecs[layout], timer)
                totals[layout] = time.perf_counter() - t
            won[direction] += turn > 0 and totals["blocked"] < totals["plain"]
    medians = {key: t.medians_ms(drop_first=1) for key, t in timers.items()}
    return {d: ({k: medians[d, k] for k in codecs}, won[d]) for d in work}


def _table(medians: dict) -> str:
    rows = [[stage, medians["plain"][stage], medians["blocked"][stage],
             medians["blocked"][stage] / medians["plain"][stage]]
            for stage in medians["plain"] if medians["plain"][stage] >= 0.5]
    return markdown_table(rows, ["stage", "plain ms", "blocked ms", "blocked / plain"],
                          digits=[0, 2, 2, 3])


def self_test() -> int:
    """This script on two crops of a photo with a tiny model: both layouts give the same
    files and images, and g_s is really blocked (was a test in tests/engines/test_ort_layout.py;
    needs onnxruntime's NCHWc blocks of 8 or 16, i.e. x86 with AVX2 or AVX-512)."""
    import contextlib
    import io

    from PIL import Image

    from experiments._selftest import photo, tiny_shipped
    image, out = photo(), io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["FASTLIC_CACHE_DIR"] = str(folder / "cache")
        for k, crop in enumerate((image[:64, :96], image[:37, :53])):
            Image.fromarray(crop).save(folder / f"p{k}.png")
        argv = [str(folder), "--model", str(tiny_shipped(folder)), "--threads", "1",
                "--repeat", "2", "--pause", "0"]
        with contextlib.redirect_stdout(out):
            code = main(argv)
    text = out.getvalue()
    checks = {"exit status 0": code == 0,
              "same files and images: 2/2":
                  "same bitstream and same decoded image with both layouts: 2/2" in text,
              "g_s blocked": "# blocked g_s: blocked (" in text,
              "stage tables": "| total |" in text}
    for name, ok in checks.items():
        print(f"{'ok' if ok else 'FAILED'}: {name}")
    return 0 if all(checks.values()) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, nargs="?", default=KODAK)
    p.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pause", type=float, default=0.05, help="seconds before each encode and decode")
    p.add_argument("--self-test", action="store_true", help="run on a tiny model and check the output")
    args = p.parse_args(argv)
    if args.self_test:
        return self_test()
    import onnxruntime as ort

    from fastlic.engines.onnxruntime.engine import share_thread_pool
    keep_freed_memory()
    share_thread_pool(args.threads)
    directory = cached_export(args.model)   # the graphs; the blocked ones go to a new cache
    with tempfile.TemporaryDirectory(prefix="fastlic-blocked-") as cache:
        codecs, load_s = load_codecs(args.model, directory, cache)
    from PIL import Image
    images = [(f.name, np.asarray(Image.open(f).convert("RGB")))
              for f in sorted(args.folder.glob("*.png"))]
    if not images:
        raise SystemExit(f"no PNG images in {args.folder}")
    print(f"# {len(images)} images from {args.folder}, model {args.model.name}, onnxruntime "
          f"{ort.__version__} on {platform.machine()} with {os.cpu_count()} cores, one shared "
          f"pool of {args.threads} threads")
    for stage, engine in codecs["blocked"].engines.items():
        if not engine.layout.startswith("plain"):
            print(f"# blocked {stage}: {engine.layout}")
    print("# Codec.load: " + ", ".join(f"{k} {v:.2f} s" for k, v in load_s.items()))
    same = exactness(codecs, images)
    print(f"\nsame bitstream and same decoded image with both layouts: {same}/{len(images)}\n")
    name, image = images[0]
    for direction, (medians, won) in timed(codecs, image, args.repeat, args.pause).items():
        print(f"{direction} of {name}, medians of {args.repeat} turns (stages under 0.5 ms "
              f"left out):\n\n{_table(medians)}\n\nblocked {direction} faster in "
              f"{won}/{args.repeat} turns\n")
    return 0 if same == len(images) else 1


if __name__ == "__main__":
    raise SystemExit(main())
